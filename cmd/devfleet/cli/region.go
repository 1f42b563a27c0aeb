package cli

import (
	"context"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func newRegionCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "region",
		Short: "Manage regions (groups of sites)",
	})
	cmd.AddCommand(regionAddCmd(a), regionListCmd(a), regionShowCmd(a), regionUpdateCmd(a), regionDeleteCmd(a))
	return cmd
}

func regionAddCmd(a *app) *cobra.Command {
	var desc string
	cmd := &cobra.Command{
		Use:   "add NAME",
		Short: "Create a region",
		Args:  exactArgs("NAME"),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			r, err := c.fleet.CreateRegion(ctx, &v1.CreateRegionRequest{Region: &v1.Region{Name: args[0], Description: desc}})
			if err != nil {
				return err
			}
			return a.done(r, "region %s created", r.GetName())
		}),
	}
	cmd.Flags().StringVar(&desc, "description", "", "what the region is")
	return cmd
}

func regionListCmd(a *app) *cobra.Command {
	var rf readFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List regions",
		Args:  exactArgs(),
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			regions, err := listRegions(ctx, c, rf)
			if err != nil {
				return err
			}
			return printList(a, regions, []string{"NAME", "RESERVE", "DESCRIPTION"}, func(r *v1.Region) []string {
				return []string{r.GetName(), reserve(r.GetReserve()), r.GetDescription()}
			})
		}),
	}
	addReadFlags(cmd, &rf, true)
	return cmd
}

func listRegions(ctx context.Context, c client, rf readFlags) ([]*v1.Region, error) {
	return listAll(ctx, func(ctx context.Context, token string) ([]*v1.Region, string, error) {
		resp, err := c.fleet.ListRegions(ctx, &v1.ListRegionsRequest{PageSize: rf.pageSize, PageToken: token, Stale: rf.stale})
		return resp.GetRegions(), resp.GetNextPageToken(), err
	})
}

func regionShowCmd(a *app) *cobra.Command {
	var rf readFlags
	cmd := &cobra.Command{
		Use:               "show NAME",
		Short:             "Show a region",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(regionNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			r, err := c.fleet.GetRegion(ctx, &v1.GetRegionRequest{Name: args[0], Stale: rf.stale})
			if err != nil {
				return err
			}
			return printObject(a, r, append([]field{
				{"name", r.GetName()},
				{"description", r.GetDescription()},
				{"reserve", reserve(r.GetReserve())},
			}, timestamps(r.GetCreateTime(), r.GetUpdateTime(), r.GetCreateIndex(), r.GetModifyIndex())...))
		}),
	}
	addReadFlags(cmd, &rf, false)
	return cmd
}

func regionUpdateCmd(a *app) *cobra.Command {
	var (
		desc      string
		fraction  float64
		hosts     int32
		noReserve bool
	)
	fields := []string{"description", "reserve-fraction", "reserve-hosts", "no-reserve"}
	cmd := &cobra.Command{
		Use:   "update NAME [--description D] [--reserve-fraction F | --reserve-hosts N | --no-reserve]",
		Short: "Change a region's description or capacity reserve",
		Long: `Change what the flags name, and nothing else. The reserve is room the region keeps free for
evacuations (losing another region or site): a fraction of its eligible capacity
(--reserve-fraction 0.1), or the capacity of its N largest hosts (--reserve-hosts 2). Placement
refuses devservers that would eat into it.`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(regionNames)),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			if !anyChanged(cmd, fields...) {
				return usagef("nothing to change: give %s", flagList(fields...))
			}
			if cmd.Flags().Changed("no-reserve") && !noReserve {
				return usagef("--no-reserve=false changes nothing; leave it out")
			}
			return exclusive(cmd, "reserve-fraction", "reserve-hosts", "no-reserve")
		},
	}
	cmd.RunE = a.action(func(ctx context.Context, c client, args []string) error {
		fl := cmd.Flags()
		in := &v1.Region{Name: args[0], Description: desc}
		var paths []string
		if fl.Changed("description") {
			paths = append(paths, "description")
		}
		switch {
		case fl.Changed("reserve-fraction"):
			in.Reserve = &v1.CapacityReserve{Fraction: fraction}
		case fl.Changed("reserve-hosts"):
			in.Reserve = &v1.CapacityReserve{Hosts: hosts}
		}
		if anyChanged(cmd, "reserve-fraction", "reserve-hosts", "no-reserve") {
			paths = append(paths, "reserve") // --no-reserve: an empty reserve
		}
		r, err := c.fleet.UpdateRegion(ctx, &v1.UpdateRegionRequest{Region: in, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}})
		if err != nil {
			return err
		}
		res := reserve(r.GetReserve())
		if res == "" {
			res = "none"
		}
		return a.done(r, "region %s updated; reserve %s", r.GetName(), res)
	})
	f := cmd.Flags()
	f.StringVar(&desc, "description", "", "what the region is")
	f.Float64Var(&fraction, "reserve-fraction", 0, "keep this fraction (0-0.9) of the region's capacity free")
	f.Int32Var(&hosts, "reserve-hosts", 0, "keep the capacity of the region's N largest hosts free")
	f.BoolVar(&noReserve, "no-reserve", false, "keep no reserve")
	return cmd
}

func regionDeleteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:               "delete NAME",
		Short:             "Delete a region that has no sites or devservers",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(regionNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			resp, err := c.fleet.DeleteRegion(ctx, &v1.DeleteRegionRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return a.done(resp, "region %s deleted", args[0])
		}),
	}
}

// regionNames lists region names for shell completion.
func regionNames(ctx context.Context, c client) ([]string, error) {
	regions, err := listRegions(ctx, c, readFlags{stale: true, pageSize: defaultPageSize})
	if err != nil {
		return nil, err
	}
	return names(regions), nil
}

// names keeps the names of objects.
func names[T interface{ GetName() string }](rows []T) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.GetName()
	}
	return out
}

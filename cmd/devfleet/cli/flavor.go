package cli

import (
	"context"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func newFlavorCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "flavor",
		Short: "Manage flavors (the sizes developers pick for devservers)",
	})
	cmd.AddCommand(flavorAddCmd(a), flavorListCmd(a), flavorShowCmd(a), flavorUpdateCmd(a), flavorDeleteCmd(a))
	return cmd
}

func flavorAddCmd(a *app) *cobra.Command {
	var (
		fl   = &v1.Flavor{Resources: &v1.Resources{}}
		kind = newEnumFlag(v1.FlavorKind_FLAVOR_KIND_UNSPECIFIED)
		rp   repairFlag
	)
	cmd := &cobra.Command{
		Use:   "add NAME --cpus N --memory-mib M --disk-gib D [--allowed-regions R1,R2] [--repair recreate|notify-only]",
		Short: "Create a flavor",
		Long: `Create a flavor. --repair says what devfleet does when a devserver of the flavor is lost (its
guest vanished or stopped behind devfleet's back on a healthy host): recreate it on a host with
room and tell the owner (recreate, the default), or only mark it lost and tell the owner
(notify-only).`,
		Args: exactArgs("NAME"),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			return nonEmptyList(cmd, "allowed-regions", fl.AllowedRegions)
		},
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			fl.Name, fl.Kind, fl.Repair = args[0], v1.FlavorKind(kind.num), rp.value
			out, err := c.fleet.CreateFlavor(ctx, &v1.CreateFlavorRequest{Flavor: fl})
			if err != nil {
				return err
			}
			return a.done(out, "flavor %s created (%s: %s; regions %s)", out.GetName(), short(out.GetKind()), resources(out.GetResources()), allowedRegions(out))
		}),
	}
	f := cmd.Flags()
	f.Int64Var(&fl.Resources.Vcpus, "cpus", 0, "vCPUs of a devserver of this flavor (required)")
	f.Int64Var(&fl.Resources.MemoryMib, "memory-mib", 0, "memory, in MiB (required)")
	f.Int64Var(&fl.Resources.DiskGib, "disk-gib", 0, "disk, in GiB (required)")
	f.Int64Var(&fl.Resources.Gpus, "gpus", 0, "GPUs")
	f.Var(kind, "kind", "vm or physical (server default: vm)")
	f.StringVar(&fl.Description, "description", "", "what the flavor is for")
	f.StringSliceVar(&fl.AllowedRegions, "allowed-regions", nil, "regions devservers of this flavor may live in, comma-separated (default: any region)")
	f.Var(&rp, "repair", "when a devserver of this flavor is lost: recreate (elsewhere, and tell the owner) or notify-only (only tell the owner)")
	for _, name := range []string{"cpus", "memory-mib", "disk-gib"} {
		_ = cmd.MarkFlagRequired(name)
	}
	_ = cmd.RegisterFlagCompletionFunc("kind", kind.complete)
	_ = cmd.RegisterFlagCompletionFunc("repair", rp.complete)
	_ = cmd.RegisterFlagCompletionFunc("allowed-regions", a.completeNames(regionNames))
	return cmd
}

func flavorListCmd(a *app) *cobra.Command {
	var rf readFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List flavors",
		Args:  exactArgs(),
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			flavors, err := listFlavors(ctx, c, rf)
			if err != nil {
				return err
			}
			header := []string{"NAME", "KIND", "CPUS", "MEMORY_MIB", "DISK_GIB", "GPUS", "ALLOWED_REGIONS", "REPAIR", "DESCRIPTION"}
			return printList(a, flavors, header, func(f *v1.Flavor) []string {
				r := f.GetResources()
				return []string{
					f.GetName(), short(f.GetKind()),
					i64(r.GetVcpus()), i64(r.GetMemoryMib()), i64(r.GetDiskGib()), i64(r.GetGpus()),
					allowedRegions(f), repair(f.GetRepair()), f.GetDescription(),
				}
			})
		}),
	}
	addReadFlags(cmd, &rf, true)
	return cmd
}

func listFlavors(ctx context.Context, c client, rf readFlags) ([]*v1.Flavor, error) {
	return listAll(ctx, func(ctx context.Context, token string) ([]*v1.Flavor, string, error) {
		resp, err := c.fleet.ListFlavors(ctx, &v1.ListFlavorsRequest{PageSize: rf.pageSize, PageToken: token, Stale: rf.stale})
		return resp.GetFlavors(), resp.GetNextPageToken(), err
	})
}

func flavorShowCmd(a *app) *cobra.Command {
	var rf readFlags
	cmd := &cobra.Command{
		Use:               "show NAME",
		Short:             "Show a flavor",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(flavorNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			f, err := c.fleet.GetFlavor(ctx, &v1.GetFlavorRequest{Name: args[0], Stale: rf.stale})
			if err != nil {
				return err
			}
			return printObject(a, f, append([]field{
				{"name", f.GetName()},
				{"kind", short(f.GetKind())},
				{"resources", resources(f.GetResources())},
				{"allowed_regions", allowedRegions(f)},
				{"repair", repair(f.GetRepair())},
				{"description", f.GetDescription()},
			}, timestamps(f.GetCreateTime(), f.GetUpdateTime(), f.GetCreateIndex(), f.GetModifyIndex())...))
		}),
	}
	addReadFlags(cmd, &rf, false)
	return cmd
}

func flavorUpdateCmd(a *app) *cobra.Command {
	var (
		in        v1.Flavor
		anyRegion bool
	)
	fields := []string{"description", "allowed-regions", "any-region"}
	cmd := &cobra.Command{
		Use:   "update NAME [--description D] [--allowed-regions R1,R2 | --any-region]",
		Short: "Change a flavor's description or the regions it may live in",
		Long: `Change what the flags name, and nothing else. The allowed regions bound where devservers of
the flavor are placed, and where they may move when their region is lost; a list that leaves out
a region where such devservers live now is refused.`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(flavorNames)),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			if !anyChanged(cmd, fields...) {
				return usagef("nothing to change: give %s", flagList(fields...))
			}
			if err := exclusive(cmd, "allowed-regions", "any-region"); err != nil {
				return err
			}
			if cmd.Flags().Changed("any-region") && !anyRegion {
				return usagef("--any-region=false changes nothing; leave it out")
			}
			return nonEmptyList(cmd, "allowed-regions", in.AllowedRegions)
		},
	}
	cmd.RunE = a.action(func(ctx context.Context, c client, args []string) error {
		in.Name = args[0]
		var paths []string
		if cmd.Flags().Changed("description") {
			paths = append(paths, "description")
		}
		if anyChanged(cmd, "allowed-regions", "any-region") {
			paths = append(paths, "allowed_regions") // --any-region: an empty list
		}
		out, err := c.fleet.UpdateFlavor(ctx, &v1.UpdateFlavorRequest{Flavor: &in, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}})
		if err != nil {
			return err
		}
		return a.done(out, "flavor %s updated; regions %s", out.GetName(), allowedRegions(out))
	})
	f := cmd.Flags()
	f.StringVar(&in.Description, "description", "", "what the flavor is for")
	f.StringSliceVar(&in.AllowedRegions, "allowed-regions", nil, "the only regions devservers of this flavor may live in, comma-separated")
	f.BoolVar(&anyRegion, "any-region", false, "let devservers of this flavor live in any region")
	_ = cmd.RegisterFlagCompletionFunc("allowed-regions", a.completeNames(regionNames))
	return cmd
}

func flavorDeleteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:               "delete NAME",
		Short:             "Delete a flavor that no devserver uses",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(flavorNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			resp, err := c.fleet.DeleteFlavor(ctx, &v1.DeleteFlavorRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return a.done(resp, "flavor %s deleted", args[0])
		}),
	}
}

// flavorNames lists flavor names for shell completion.
func flavorNames(ctx context.Context, c client) ([]string, error) {
	flavors, err := listFlavors(ctx, c, readFlags{stale: true, pageSize: defaultPageSize})
	if err != nil {
		return nil, err
	}
	return names(flavors), nil
}

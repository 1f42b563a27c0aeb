package cli

import (
	"context"

	"github.com/spf13/cobra"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func newSiteCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "site",
		Short: "Manage sites (data centers in a region)",
	})
	cmd.AddCommand(siteAddCmd(a), siteListCmd(a), siteShowCmd(a), siteDeleteCmd(a))
	return cmd
}

func siteAddCmd(a *app) *cobra.Command {
	var region, desc string
	cmd := &cobra.Command{
		Use:   "add NAME --region REGION",
		Short: "Create a site in a region",
		Args:  exactArgs("NAME"),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			s, err := c.fleet.CreateSite(ctx, &v1.CreateSiteRequest{Site: &v1.Site{Name: args[0], Region: region, Description: desc}})
			if err != nil {
				return err
			}
			return a.done(s, "site %s created in region %s", s.GetName(), s.GetRegion())
		}),
	}
	f := cmd.Flags()
	f.StringVar(&region, "region", "", "region the site belongs to; fixed once created (required)")
	f.StringVar(&desc, "description", "", "what the site is")
	_ = cmd.MarkFlagRequired("region")
	_ = cmd.RegisterFlagCompletionFunc("region", a.completeNames(regionNames))
	return cmd
}

func siteListCmd(a *app) *cobra.Command {
	var (
		rf     readFlags
		region string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List sites",
		Args:  exactArgs(),
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			sites, err := listSites(ctx, c, region, rf)
			if err != nil {
				return err
			}
			return printList(a, sites, []string{"NAME", "REGION", "DESCRIPTION"}, func(s *v1.Site) []string {
				return []string{s.GetName(), s.GetRegion(), s.GetDescription()}
			})
		}),
	}
	cmd.Flags().StringVar(&region, "region", "", "only sites of this region")
	_ = cmd.RegisterFlagCompletionFunc("region", a.completeNames(regionNames))
	addReadFlags(cmd, &rf, true)
	return cmd
}

func listSites(ctx context.Context, c client, region string, rf readFlags) ([]*v1.Site, error) {
	return listAll(ctx, func(ctx context.Context, token string) ([]*v1.Site, string, error) {
		resp, err := c.fleet.ListSites(ctx, &v1.ListSitesRequest{Region: region, PageSize: rf.pageSize, PageToken: token, Stale: rf.stale})
		return resp.GetSites(), resp.GetNextPageToken(), err
	})
}

func siteShowCmd(a *app) *cobra.Command {
	var rf readFlags
	cmd := &cobra.Command{
		Use:               "show NAME",
		Short:             "Show a site",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(siteNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			s, err := c.fleet.GetSite(ctx, &v1.GetSiteRequest{Name: args[0], Stale: rf.stale})
			if err != nil {
				return err
			}
			return printObject(a, s, append([]field{
				{"name", s.GetName()},
				{"region", s.GetRegion()},
				{"description", s.GetDescription()},
			}, timestamps(s.GetCreateTime(), s.GetUpdateTime(), s.GetCreateIndex(), s.GetModifyIndex())...))
		}),
	}
	addReadFlags(cmd, &rf, false)
	return cmd
}

func siteDeleteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:               "delete NAME",
		Short:             "Delete a site that has no hosts",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(siteNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			resp, err := c.fleet.DeleteSite(ctx, &v1.DeleteSiteRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return a.done(resp, "site %s deleted", args[0])
		}),
	}
}

// siteNames lists site names for shell completion.
func siteNames(ctx context.Context, c client) ([]string, error) {
	sites, err := listSites(ctx, c, "", readFlags{stale: true, pageSize: defaultPageSize})
	if err != nil {
		return nil, err
	}
	return names(sites), nil
}

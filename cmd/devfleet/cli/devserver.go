package cli

import (
	"context"
	"strings"

	"github.com/spf13/cobra"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func newDevserverCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "devserver",
		Short: "Inspect devservers (developers' machines)",
	})
	cmd.AddCommand(devserverListCmd(a), devserverShowCmd(a))
	return cmd
}

func devserverListCmd(a *app) *cobra.Command {
	var (
		rf  readFlags
		req v1.ListDevserversRequest
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List devservers",
		Args:  exactArgs(),
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			req.Stale = rf.stale
			devservers, err := listDevservers(ctx, c, &req, rf.pageSize)
			if err != nil {
				return err
			}
			header := []string{"NAME", "OWNER", "FLAVOR", "REGION", "SITE", "HOST", "STATE", "LIFESPAN", "EXPIRES"}
			return printList(a, devservers, header, func(d *v1.Devserver) []string {
				return []string{
					d.GetName(), d.GetOwner(), d.GetFlavor(), d.GetRegion(), d.GetSite(), d.GetHost(),
					short(d.GetState()), short(d.GetLifespan()), ts(d.GetExpireTime()),
				}
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.Region, "region", "", "only devservers in this region")
	f.StringVar(&req.Site, "site", "", "only devservers in this site")
	f.StringVar(&req.Host, "host", "", "only devservers on this host")
	f.StringVar(&req.Owner, "owner", "", "only devservers of this user")
	_ = cmd.RegisterFlagCompletionFunc("region", a.completeNames(regionNames))
	_ = cmd.RegisterFlagCompletionFunc("site", a.completeNames(siteNames))
	_ = cmd.RegisterFlagCompletionFunc("host", a.completeNames(hostNames))
	_ = cmd.RegisterFlagCompletionFunc("owner", cobra.NoFileCompletions)
	addReadFlags(cmd, &rf, true)
	return cmd
}

func listDevservers(ctx context.Context, c client, req *v1.ListDevserversRequest, pageSize int32) ([]*v1.Devserver, error) {
	return listAll(ctx, func(ctx context.Context, token string) ([]*v1.Devserver, string, error) {
		req.PageSize, req.PageToken = pageSize, token
		resp, err := c.fleet.ListDevservers(ctx, req)
		return resp.GetDevservers(), resp.GetNextPageToken(), err
	})
}

func devserverShowCmd(a *app) *cobra.Command {
	var rf readFlags
	cmd := &cobra.Command{
		Use:               "show NAME",
		Short:             "Show a devserver",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(devserverNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			d, err := c.fleet.GetDevserver(ctx, &v1.GetDevserverRequest{Name: args[0], Stale: rf.stale})
			if err != nil {
				return err
			}
			return printObject(a, d, append([]field{
				{"name", d.GetName()},
				{"id", d.GetId()},
				{"owner", d.GetOwner()},
				{"sharers", strings.Join(d.GetSharers(), ",")},
				{"flavor", d.GetFlavor()},
				{"region", d.GetRegion()},
				{"site", d.GetSite()},
				{"host", d.GetHost()},
				{"lifespan", short(d.GetLifespan())},
				{"expire_time", ts(d.GetExpireTime())},
				{"state", short(d.GetState())},
				{"state_reason", d.GetStateReason()},
			}, timestamps(d.GetCreateTime(), d.GetUpdateTime(), d.GetCreateIndex(), d.GetModifyIndex())...))
		}),
	}
	addReadFlags(cmd, &rf, false)
	return cmd
}

// devserverNames lists devserver names for shell completion.
func devserverNames(ctx context.Context, c client) ([]string, error) {
	devservers, err := listDevservers(ctx, c, &v1.ListDevserversRequest{Stale: true}, defaultPageSize)
	if err != nil {
		return nil, err
	}
	return names(devservers), nil
}

package cli

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func newBannersCmd(a *app) *cobra.Command {
	var (
		rf  readFlags
		req v1.ListBannersRequest
	)
	cmd := &cobra.Command{
		Use:   "banners [--region R]",
		Short: "Show the maintenance under way or announced (drains, decommissions), by region",
		Args:  exactArgs(),
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			req.Stale = rf.stale
			resp, err := c.drains.ListBanners(ctx, &req)
			if err != nil {
				return err
			}
			return printList(a, resp.GetBanners(), []string{"REGION", "KIND", "START", "END", "HOSTS", "TEXT"}, func(b *v1.Banner) []string {
				end := "-"
				if b.GetEndTime() != nil {
					end = b.GetEndTime().AsTime().UTC().Format(time.RFC3339)
				}
				return []string{b.GetRegion(), b.GetKind(), b.GetStartTime().AsTime().UTC().Format(time.RFC3339), end,
					strings.Join(b.GetHosts(), ","), b.GetText()}
			})
		}),
	}
	cmd.Flags().StringVar(&req.Region, "region", "", "only this region's")
	_ = cmd.RegisterFlagCompletionFunc("region", a.completeNames(regionNames))
	addReadFlags(cmd, &rf, false)
	return cmd
}

func newDeadLettersCmd(a *app) *cobra.Command {
	var rf readFlags
	cmd := &cobra.Command{
		Use:   "dead-letters",
		Short: "Show the notifications the webhooks did not take (after their retries), oldest first",
		Args:  exactArgs(),
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			resp, err := c.notifications.ListDeadLetters(ctx, &v1.ListDeadLettersRequest{Stale: rf.stale})
			if err != nil {
				return err
			}
			return printList(a, resp.GetDeadLetters(), []string{"TIME", "SINK", "KIND", "SUBJECT", "ATTEMPTS", "ERROR"}, func(d *v1.DeadLetter) []string {
				return []string{d.GetTime().AsTime().UTC().Format(time.RFC3339), d.GetSink(), d.GetKind(), d.GetSubject(),
					u64(uint64(d.GetAttempts())), d.GetLastError()}
			})
		}),
	}
	addReadFlags(cmd, &rf, false)
	return cmd
}

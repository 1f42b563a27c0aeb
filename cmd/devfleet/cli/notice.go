package cli

import (
	"context"

	"github.com/spf13/cobra"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func newNoticeCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "notice",
		Short: "Read what devfleet told developers about their devservers",
	})
	cmd.AddCommand(noticeListCmd(a))
	return cmd
}

// noticeColumns are notice list's table; MESSAGE is last because it has spaces.
var noticeColumns = []string{"TIME", "KIND", "SUBJECT", "MESSAGE"}

func noticeRow(n *v1.Notice) []string {
	return []string{ts(n.GetCreateTime()), short(n.GetKind()), n.GetSubject(), n.GetMessage()}
}

func noticeListCmd(a *app) *cobra.Command {
	var (
		rf  readFlags
		req v1.ListNoticesRequest
	)
	cmd := &cobra.Command{
		Use:   "list --owner USER [--limit N]",
		Short: "List an owner's notices, newest first",
		Long: `List what devfleet told an owner about their devservers, newest first. KIND is expiring (the
devserver expires soon), expired (it was deleted at its expiry), lost (its guest vanished or
stopped behind devfleet's back) or recreated (devfleet rebuilt it after a loss). devfleet keeps
an owner's last 100 notices.

With -o json the command prints the API's response: {"notices": [...]}, or {} when there are
none.`,
		Example: `  devfleet notice list --owner bob
  devfleet notice list --owner bob --limit 5 -o json`,
		Args: exactArgs(),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("limit") && req.Limit < 1 {
				return usagef("--limit must be at least 1, got %d", req.Limit)
			}
			return nil
		},
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			req.Stale = rf.stale
			resp, err := c.fleet.ListNotices(ctx, &req)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return printJSON(a.stdout, resp)
			}
			rows := make([][]string, 0, len(resp.GetNotices()))
			for _, n := range resp.GetNotices() {
				rows = append(rows, noticeRow(n))
			}
			return printTable(a.stdout, noticeColumns, rows)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.Owner, "owner", "", "user whose notices to list (required)")
	f.Int32Var(&req.Limit, "limit", 0, "at most this many, newest first (default: every notice kept, up to 100)")
	_ = cmd.MarkFlagRequired("owner")
	_ = cmd.RegisterFlagCompletionFunc("owner", cobra.NoFileCompletions)
	_ = cmd.RegisterFlagCompletionFunc("limit", cobra.NoFileCompletions)
	addReadFlags(cmd, &rf, false) // one call: the server keeps at most 100 per owner, so no paging
	return cmd
}

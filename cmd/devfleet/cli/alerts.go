package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func newAlertsCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "alerts",
		Short: "Show the alerts the leader opened, with what its analyzers found",
	})
	cmd.AddCommand(alertsListCmd(a), alertsShowCmd(a))
	return cmd
}

func alertsListCmd(a *app) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "list [--all]",
		Short: "List the open alerts (--all: the closed ones too)",
		Args:  exactArgs(),
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			resp, err := c.alerts.ListAlerts(ctx, &v1.ListAlertsRequest{All: all})
			if err != nil {
				return err
			}
			return printList(a, resp.GetAlerts(), []string{"ID", "STATE", "SEVERITY", "CONDITION", "SUBJECT", "OPENED", "FINDINGS", "SUMMARY"}, func(al *v1.Alert) []string {
				return []string{al.GetId(), alertState(al), severityWord(al.GetSeverity()), al.GetCondition(), al.GetSubject(),
					al.GetOpenTime().AsTime().UTC().Format(time.RFC3339), fmt.Sprint(len(al.GetFindings())), al.GetSummary()}
			})
		}),
	}
	cmd.Flags().BoolVar(&all, "all", false, "the closed alerts too")
	return cmd
}

func alertsShowCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show an alert and its findings",
		Args:  exactArgs("ID"),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			al, err := c.alerts.GetAlert(ctx, &v1.GetAlertRequest{Id: args[0]})
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return printJSON(a.stdout, al)
			}
			w := a.stdout
			fmt.Fprintf(w, "alert %s (%s, %s): %s\n", al.GetId(), alertState(al), strings.ToLower(severityWord(al.GetSeverity())), al.GetSummary())
			fmt.Fprintf(w, "condition %s on %s, opened %s", al.GetCondition(), al.GetSubject(), al.GetOpenTime().AsTime().UTC().Format(time.RFC3339))
			if al.GetCloseTime() != nil {
				fmt.Fprintf(w, ", closed %s (%s)", al.GetCloseTime().AsTime().UTC().Format(time.RFC3339), al.GetCloseReason())
			}
			fmt.Fprintln(w)
			if al.GetAnalysisError() != "" {
				fmt.Fprintln(w, "analysis: "+al.GetAnalysisError())
			}
			fmt.Fprintln(w)
			printFindings(w, al.GetFindings())
			if len(al.GetChain()) > 0 {
				fmt.Fprintln(w, "\nanalyzers run:")
				for _, ch := range al.GetChain() {
					fmt.Fprintln(w, "  "+ch)
				}
			}
			return nil
		}),
	}
}

func alertState(al *v1.Alert) string {
	if al.GetState() == v1.AlertState_ALERT_STATE_OPEN {
		return "open"
	}
	return "closed"
}

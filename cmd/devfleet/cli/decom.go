package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func newDecomCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "decom",
		Short: "Take hosts out of the fleet for good (operators)",
	})
	cmd.AddCommand(decomStartCmd(a), decomStatusCmd(a), decomListCmd(a), decomAbortCmd(a))
	return cmd
}

func decomStartCmd(a *app) *cobra.Command {
	var (
		req      v1.StartDecomRequest
		announce time.Duration
		wait     bool
	)
	cmd := &cobra.Command{
		Use:   "start HOST | --site S --reason TEXT [--announce 72h | --now] [--wait]",
		Short: "Decommission a host (or a whole site): announce, cordon, drain, verify, wipe, retire",
		Long: `Decommission a host, or every host of a site as one operation. The steps, each recorded with
its time and outcome (decom status): announce (the owners of its devservers are told, then the
announce period passes: --announce, default 72h, or --now), cordon, drain (a drain of its own),
verify empty (the state and libvirt show no devserver there; containers are released),
wipe (leftover domains destroyed and undefined, the volumes of its pool deleted) and retire (the
host stays, retired, out of placement and capacity). "decom abort" stops it until the wipe
starts. Only operators decommission (see the global --as).`,
		Example: `  devfleet --as ops decom start fra1-h7 --reason "end of life"
  devfleet --as ops decom start --site dub1 --reason "site closes" --now --wait`,
		Args: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("site") {
				return exactArgs()(cmd, args)
			}
			return exactArgs("HOST")(cmd, args)
		},
		ValidArgsFunction: firstArg(a.completeNames(hostNames)),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case cmd.Flags().Changed("site") && req.Site == "":
				return usagef("--site must not be empty")
			case strings.TrimSpace(req.Reason) == "":
				return usagef("--reason is required: say why (owners and the record see it)")
			case cmd.Flags().Changed("announce") && req.Now:
				return usagef("--announce and --now exclude each other")
			case announce < 0:
				return usagef("--announce must not be negative, got %s", announce)
			}
			if wait && !cmd.Flags().Changed("timeout") {
				a.callTimeout, a.timeout = a.timeout, 0
			}
			return nil
		},
	}
	cmd.RunE = a.action(func(ctx context.Context, c client, args []string) error {
		if len(args) == 1 {
			req.Host = args[0]
		}
		if cmd.Flags().Changed("announce") {
			req.Announce = durationpb.New(announce)
		}
		callCtx, cancel := a.callContext(ctx)
		d, err := c.decoms.StartDecom(callCtx, &req)
		cancel()
		if err != nil {
			return err
		}
		if !wait {
			return a.done(d, "decommission %s: %s; %s", d.GetId(), strings.Join(d.GetHosts(), ", "), announceText(d))
		}
		if !a.jsonOutput() {
			fmt.Fprintf(a.stdout, "decommission %s: %s; %s\n", d.GetId(), strings.Join(d.GetHosts(), ", "), announceText(d))
		}
		return a.waitDecom(ctx, c, d.GetId())
	})
	f := cmd.Flags()
	f.StringVar(&req.Site, "site", "", "decommission every host of this site")
	f.StringVar(&req.Reason, "reason", "", "why (required)")
	f.DurationVar(&announce, "announce", 0, "how long owners are warned before anything moves (default 72h)")
	f.BoolVar(&req.Now, "now", false, "skip the announce period")
	f.BoolVar(&wait, "wait", false, "wait until it ends, printing each step; exit 1 unless it succeeded")
	return cmd
}

func announceText(d *v1.Decom) string {
	if u := d.GetAnnounceUntil(); u != nil {
		return "owners are told; it proceeds at " + u.AsTime().UTC().Format(time.RFC3339)
	}
	return "owners are told; it proceeds now"
}

// waitDecom prints each step of a decommission as it ends, until the decommission ends.
func (a *app) waitDecom(ctx context.Context, c client, id string) error {
	printed := 0
	var down outage
	for {
		callCtx, cancel := a.callContext(ctx)
		d, err := c.decoms.GetDecom(callCtx, &v1.GetDecomRequest{Id: id})
		cancel()
		switch {
		case err == nil:
			down.over()
			for _, st := range d.GetSteps()[printed:] {
				if st.GetEndTime() == nil {
					break
				}
				fmt.Fprintf(a.stderr, "%s: %s\n", short(st.GetStep()), st.GetDetail())
				printed++
			}
			if state.DecomFinal(d.GetState()) {
				if a.jsonOutput() {
					return printJSON(a.stdout, d)
				}
				if d.GetState() != v1.DecomState_DECOM_STATE_SUCCEEDED {
					return fmt.Errorf("decommission %s ended %s: %s", d.GetId(), short(d.GetState()), d.GetStateReason())
				}
				_, err := fmt.Fprintf(a.stdout, "decommission %s succeeded: %s retired\n", d.GetId(), strings.Join(d.GetHosts(), ", "))
				return err
			}
		case ctx.Err() != nil:
			return fmt.Errorf("stopped following decommission %s; it goes on (devfleet decom abort %s stops it)", id, id)
		case !down.bearable(err):
			if code := status.Code(err); code == codes.Unavailable || code == codes.DeadlineExceeded {
				return status.Errorf(code, "lost track of decommission %s (it goes on): %s", id, status.Convert(err).Message())
			}
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(pollInterval):
		}
	}
}

func decomStatusCmd(a *app) *cobra.Command {
	var rf readFlags
	cmd := &cobra.Command{
		Use:   "status ID",
		Short: "Show a decommission and each of its steps with its time and outcome",
		Args:  exactArgs("ID"),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			d, err := c.decoms.GetDecom(ctx, &v1.GetDecomRequest{Id: args[0], Stale: rf.stale})
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return printJSON(a.stdout, d)
			}
			fmt.Fprintf(a.stdout, "decommission %s of %s: %s at step %s (%s)\n", d.GetId(), strings.Join(d.GetHosts(), ", "),
				short(d.GetState()), short(d.GetStep()), d.GetReason())
			if r := d.GetStateReason(); r != "" {
				fmt.Fprintf(a.stdout, "  %s\n", r)
			}
			rows := [][]string{}
			for _, st := range d.GetSteps() {
				end := ""
				if st.GetEndTime() != nil {
					end = st.GetEndTime().AsTime().UTC().Format("15:04:05")
				}
				rows = append(rows, []string{short(st.GetStep()), st.GetStartTime().AsTime().UTC().Format("15:04:05"), end, st.GetDetail()})
			}
			return printTable(a.stdout, []string{"STEP", "START", "END", "OUTCOME"}, rows)
		}),
	}
	addReadFlags(cmd, &rf, false)
	return cmd
}

func decomListCmd(a *app) *cobra.Command {
	var (
		rf  readFlags
		req v1.ListDecomsRequest
	)
	cmd := &cobra.Command{
		Use:   "list [--active]",
		Short: "List decommissions, oldest first",
		Args:  exactArgs(),
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			req.Stale = rf.stale
			resp, err := c.decoms.ListDecoms(ctx, &req)
			if err != nil {
				return err
			}
			now := time.Now()
			return printList(a, resp.GetDecoms(), []string{"ID", "STATE", "STEP", "HOSTS", "REASON", "AGE"}, func(d *v1.Decom) []string {
				return []string{d.GetId(), short(d.GetState()), short(d.GetStep()), strings.Join(d.GetHosts(), ","), d.GetReason(), age(d.GetCreateTime(), now)}
			})
		}),
	}
	cmd.Flags().BoolVar(&req.Active, "active", false, "only decommissions that have not ended")
	addReadFlags(cmd, &rf, false)
	return cmd
}

func decomAbortCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "abort ID",
		Short: "Stop a decommission before its wipe starts; its hosts stay cordoned",
		Args:  exactArgs("ID"),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			d, err := c.decoms.AbortDecom(ctx, &v1.AbortDecomRequest{Id: args[0]})
			if err != nil {
				return err
			}
			return a.done(d, "decommission %s: abort requested at step %s", d.GetId(), short(d.GetStep()))
		}),
	}
}

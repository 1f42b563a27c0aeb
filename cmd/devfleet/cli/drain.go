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
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func newDrainCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "drain",
		Short: "Empty hosts of their devservers before maintenance (operators)",
	})
	cmd.AddCommand(drainStartCmd(a), drainStatusCmd(a), drainListCmd(a), drainCancelCmd(a), drainExtendCmd(a), drainTimelineCmd(a))
	return cmd
}

func drainStartCmd(a *app) *cobra.Command {
	var (
		req            v1.StartDrainRequest
		budgets        v1.DrainBudgets
		deadline       time.Duration
		action         = newEnumFlag(v1.DeadlineAction_DEADLINE_ACTION_UNSPECIFIED)
		monitor        bool
		hosts          []string
		siteOrRegion   [2]string
		allTargetFlags = []string{"hosts", "site", "region"}
	)
	cmd := &cobra.Command{
		Use:   "start --hosts H1,H2 | --site S | --region R --reason TEXT [--deadline 4h] [--dry-run] [--force] [--monitor]",
		Short: "Cordon hosts and move their devservers elsewhere",
		Long: `Start a drain: the hosts are cordoned together, in one step, then their devservers move to
other hosts under the drain's budgets (--per-source, --per-dest, --per-site, --total moves at once),
live within their region (cold to another region when the whole region is drained). Before
anything moves, capacity must show a home for every devserver while keeping each region's
reserve; otherwise the drain is refused with the shortfall per flavor, unless --force (those
devservers are then left, and reported). Whole-machine devservers cannot move: their owners are
told. --dry-run prints the plan: each devserver's destination, wave and expected duration, and
what blocks the others. At the --deadline, what is left follows --deadline-action: leave (the
default), cold-migrate, or stop (stranded; the owners are told).

Only operators drain (devfleetd --operators; name yourself with the global --as).`,
		Example: `  devfleet --as ops drain start --hosts fra1-h3 --reason "disk swap" --monitor
  devfleet --as ops drain start --site fra1 --reason "power work" --deadline 4h --dry-run
  devfleet --as ops drain start --region ap-south --reason "DC move" --deadline 24h --deadline-action cold-migrate`,
		Args: exactArgs(),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := exclusive(cmd, allTargetFlags...); err != nil {
				return err
			}
			if !anyChanged(cmd, allTargetFlags...) {
				return usagef("name what to drain: give %s", flagList(allTargetFlags...))
			}
			if err := nonEmptyList(cmd, "hosts", hosts); err != nil {
				return err
			}
			switch {
			case cmd.Flags().Changed("site") && siteOrRegion[0] == "":
				return usagef("--site must not be empty")
			case cmd.Flags().Changed("region") && siteOrRegion[1] == "":
				return usagef("--region must not be empty")
			case strings.TrimSpace(req.Reason) == "":
				return usagef("--reason is required: say why (it goes to the owners and the timeline)")
			case cmd.Flags().Changed("deadline") && deadline <= 0:
				return usagef("--deadline must be a positive duration from now, e.g. 4h, got %s", deadline)
			case monitor && req.DryRun:
				return usagef("--monitor and --dry-run exclude each other")
			}
			if monitor && !cmd.Flags().Changed("timeout") {
				a.callTimeout, a.timeout = a.timeout, 0 // --timeout bounds each call, not the wait
			}
			return nil
		},
	}
	cmd.RunE = a.action(func(ctx context.Context, c client, _ []string) error {
		req.Hosts, req.Site, req.Region = distinct(hosts), siteOrRegion[0], siteOrRegion[1]
		req.DeadlineAction = v1.DeadlineAction(action.num)
		if deadline > 0 {
			req.Deadline = timestamppb.New(time.Now().Add(deadline))
		}
		if budgets.PerSource+budgets.PerDest+budgets.PerSite+budgets.Total > 0 || budgets.BandwidthMibps > 0 {
			req.Budgets = &budgets
		}
		callCtx, cancel := a.callContext(ctx)
		resp, err := c.drains.StartDrain(callCtx, &req)
		cancel()
		if err != nil {
			return err
		}
		if a.jsonOutput() && !monitor {
			return printJSON(a.stdout, resp)
		}
		if req.DryRun {
			return printPlan(a, resp)
		}
		d := resp.GetDrain()
		if _, err := fmt.Fprintf(a.stdout, "drain %s: draining %s (%s, %d cannot move); planned %s (lower bound %s)\n",
			d.GetId(), strings.Join(d.GetHosts(), ", "), plural(int64(d.GetItemsTotal()), "devserver", "devservers"), d.GetItemsBlocked(),
			seconds(resp.GetMakespan().AsDuration()), seconds(resp.GetLowerBound().AsDuration())); err != nil {
			return err
		}
		if !monitor {
			return nil
		}
		return a.monitorDrain(ctx, c, d.GetId())
	})
	f := cmd.Flags()
	f.StringSliceVar(&hosts, "hosts", nil, "hosts to drain, comma-separated")
	f.StringVar(&siteOrRegion[0], "site", "", "drain every host of this site")
	f.StringVar(&siteOrRegion[1], "region", "", "drain every host of this region")
	f.StringVar(&req.Reason, "reason", "", "why (required): owners and the timeline see it")
	f.DurationVar(&deadline, "deadline", 0, "when the drain must be done, from now (e.g. 4h; default: none)")
	f.Var(action, "deadline-action", "at the deadline, what is left: "+orList(action.names())+" (default leave)")
	f.BoolVar(&req.DryRun, "dry-run", false, "print the plan; move and cordon nothing")
	f.BoolVar(&req.Force, "force", false, "start even when capacity has no home for some devservers (they are stranded)")
	f.BoolVar(&monitor, "monitor", false, "follow the drain until it ends (as drain status --monitor)")
	f.Uint32Var(&budgets.PerSource, "per-source", 0, "moves leaving one host at once (default 2)")
	f.Uint32Var(&budgets.PerDest, "per-dest", 0, "moves arriving at one host at once (default 2)")
	f.Uint32Var(&budgets.PerSite, "per-site", 0, "moves at one site at once, either end (default 4)")
	f.Uint32Var(&budgets.Total, "total", 0, "moves of this drain at once (default 5)")
	f.Uint64Var(&budgets.BandwidthMibps, "bandwidth-mibps", 0, "each move's bandwidth cap (default 1024)")
	_ = cmd.RegisterFlagCompletionFunc("hosts", a.completeNames(hostNames))
	_ = cmd.RegisterFlagCompletionFunc("region", a.completeNames(regionNames))
	_ = cmd.RegisterFlagCompletionFunc("deadline-action", action.complete)
	return cmd
}

// printPlan prints a dry run's plan: one line per devserver, then the totals.
func printPlan(a *app, resp *v1.StartDrainResponse) error {
	items := resp.GetPlan()
	waves := uint32(0)
	rows := make([][]string, 0, len(items))
	for _, it := range items {
		to, wave, expected := cell(it.GetDestHost()), "", ""
		if it.GetBlocker() == "" {
			waves = max(waves, it.GetWave()+1)
			wave, expected = u64(uint64(it.GetWave())), it.GetExpected().AsDuration().Round(100*time.Millisecond).String()
		}
		rows = append(rows, []string{it.GetDevserver(), it.GetSourceHost(), to, short(it.GetKind()), wave, expected, it.GetBlocker()})
	}
	if err := printTable(a.stdout, []string{"DEVSERVER", "FROM", "TO", "KIND", "WAVE", "EXPECTED", "BLOCKER"}, rows); err != nil {
		return err
	}
	line := fmt.Sprintf("plan: %d devservers in %d waves, about %s (no schedule beats %s)", len(items), waves,
		seconds(resp.GetMakespan().AsDuration()), seconds(resp.GetLowerBound().AsDuration()))
	for _, sh := range resp.GetShortfall() {
		line += fmt.Sprintf("; no home for %d of flavor %s", sh.GetDevservers(), sh.GetFlavor())
	}
	if len(resp.GetShortfall()) > 0 {
		line += " (start refused unless --force)"
	}
	_, err := fmt.Fprintln(a.stdout, line)
	return err
}

func drainStatusCmd(a *app) *cobra.Command {
	var (
		rf      readFlags
		monitor bool
	)
	cmd := &cobra.Command{
		Use:   "status ID [--monitor]",
		Short: "Show a drain: its progress, its moves in flight and what blocks the rest",
		Long: `Show a drain: an overall bar, one line per move in flight (phase, bytes, rate, ETA) and
what blocks the others. --monitor redraws it until the drain ends (on a terminal in place, else
whenever it changes).`,
		Args: exactArgs("ID"),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			if monitor && !cmd.Flags().Changed("timeout") {
				a.callTimeout, a.timeout = a.timeout, 0
			}
			return nil
		},
		ValidArgsFunction: firstArg(a.completeNames(drainIDs(false))),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			id, err := drainID(ctx, c, args[0])
			if err != nil {
				return err
			}
			if monitor {
				return a.monitorDrain(ctx, c, id)
			}
			d, items, err := readDrain(ctx, c, id, rf.stale)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return printJSON(a.stdout, d)
			}
			_, err = fmt.Fprintln(a.stdout, drainText(d, items, time.Now()))
			return err
		}),
	}
	cmd.Flags().BoolVar(&monitor, "monitor", false, "redraw until the drain ends")
	addReadFlags(cmd, &rf, false)
	return cmd
}

// readDrain reads a drain and its items.
func readDrain(ctx context.Context, c client, id string, stale bool) (*v1.Drain, []*v1.DrainItem, error) {
	d, err := c.drains.GetDrain(ctx, &v1.GetDrainRequest{Id: id, Stale: stale})
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.drains.ListDrainItems(ctx, &v1.ListDrainItemsRequest{Id: d.GetId(), Stale: stale})
	if err != nil {
		return nil, nil, err
	}
	return d, resp.GetItems(), nil
}

// monitorDrain redraws a drain's status until it ends; it rides out a node that cannot answer
// (a leader election) for up to transientGrace. It fails (exit 1) when the drain did not
// succeed.
func (a *app) monitorDrain(ctx context.Context, c client, id string) error {
	tty := isTerminal(a.stderr)
	var last string
	lines := 0
	var down outage
	for {
		callCtx, cancel := a.callContext(ctx)
		d, items, err := readDrain(callCtx, c, id, false)
		cancel()
		switch {
		case err == nil:
			down.over()
			text := drainText(d, items, time.Now())
			if text != last {
				if tty && lines > 0 {
					fmt.Fprintf(a.stderr, "\x1b[%dA\x1b[J", lines) // up to the last drawing, erase it
				}
				fmt.Fprintln(a.stderr, text)
				last, lines = text, strings.Count(text, "\n")+1
			}
			if state.DrainFinal(d.GetState()) {
				if a.jsonOutput() {
					return printJSON(a.stdout, d)
				}
				if d.GetState() != v1.DrainState_DRAIN_STATE_SUCCEEDED {
					return fmt.Errorf("drain %s ended %s: %s", d.GetId(), short(d.GetState()), d.GetStateReason())
				}
				_, err := fmt.Fprintf(a.stdout, "drain %s succeeded: %s moved off %s\n", d.GetId(),
					plural(int64(d.GetItemsDone()), "devserver", "devservers"), strings.Join(d.GetHosts(), ", "))
				return err
			}
		case ctx.Err() != nil:
			return fmt.Errorf("stopped following drain %s; it goes on (devfleet drain cancel %s stops it)", id, id)
		case !down.bearable(err):
			if code := status.Code(err); code == codes.Unavailable || code == codes.DeadlineExceeded {
				return status.Errorf(code, "lost track of drain %s (it goes on): %s", id, status.Convert(err).Message())
			}
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(pollInterval):
		}
	}
}

// drainText is a drain's status: a line with its bar, a line per move in flight, and what
// blocks the others.
func drainText(d *v1.Drain, items []*v1.DrainItem, now time.Time) string {
	total, done := d.GetItemsTotal(), d.GetItemsDone()
	movable := total - d.GetItemsBlocked()
	const width = 20
	filled := 0
	if movable > 0 {
		filled = int(done) * width / int(movable)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "drain %s %s [%s%s] %d/%d moved, %d moving, %d blocked", shortID(d.GetId()), short(d.GetState()),
		strings.Repeat("#", min(filled, width)), strings.Repeat(".", width-min(filled, width)), done, movable, d.GetItemsMoving(), d.GetItemsBlocked())
	if dl := d.GetDeadline(); dl != nil && !state.DrainFinal(d.GetState()) {
		fmt.Fprintf(&b, ", deadline in %s", max(dl.AsTime().Sub(now), 0).Round(time.Second))
	}
	if d.GetCancelRequested() && !state.DrainFinal(d.GetState()) {
		b.WriteString(", cancelling")
	}
	if r := d.GetStateReason(); r != "" {
		b.WriteString(": " + r)
	}
	for _, it := range items {
		switch it.GetState() {
		case v1.DrainItemState_DRAIN_ITEM_STATE_MOVING:
			m := &v1.Migration{Phase: it.GetMigrationPhase(), Progress: it.GetProgress()}
			fmt.Fprintf(&b, "\n  %s %s -> %s: %s", it.GetDevserver(), it.GetSourceHost(), cell(it.GetDestHost()), progressText(m))
		case v1.DrainItemState_DRAIN_ITEM_STATE_BLOCKED, v1.DrainItemState_DRAIN_ITEM_STATE_STRANDED:
			fmt.Fprintf(&b, "\n  %s on %s %s: %s", it.GetDevserver(), it.GetSourceHost(), short(it.GetState()), it.GetBlocker())
		}
	}
	return b.String()
}

// shortID is the start of an ID, as lists show it.
func shortID(id string) string { return id[:min(len(id), shortIDLen)] }

func drainListCmd(a *app) *cobra.Command {
	var (
		rf  readFlags
		req v1.ListDrainsRequest
	)
	cmd := &cobra.Command{
		Use:   "list [--active]",
		Short: "List drains, oldest first",
		Args:  exactArgs(),
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			req.Stale = rf.stale
			resp, err := c.drains.ListDrains(ctx, &req)
			if err != nil {
				return err
			}
			now := time.Now()
			header := []string{"ID", "STATE", "HOSTS", "MOVED", "MOVING", "BLOCKED", "REASON", "AGE"}
			return printList(a, resp.GetDrains(), header, func(d *v1.Drain) []string {
				return []string{shortID(d.GetId()), short(d.GetState()), strings.Join(d.GetHosts(), ","),
					fmt.Sprintf("%d/%d", d.GetItemsDone(), d.GetItemsTotal()-d.GetItemsBlocked()), u64(uint64(d.GetItemsMoving())),
					u64(uint64(d.GetItemsBlocked())), d.GetReason(), age(d.GetCreateTime(), now)}
			})
		}),
	}
	cmd.Flags().BoolVar(&req.Active, "active", false, "only drains that have not ended")
	addReadFlags(cmd, &rf, false)
	return cmd
}

// drainID finds a drain by its ID or the start of it.
func drainID(ctx context.Context, c client, id string) (string, error) {
	if _, err := c.drains.GetDrain(ctx, &v1.GetDrainRequest{Id: id}); status.Code(err) != codes.NotFound {
		return id, err
	}
	resp, err := c.drains.ListDrains(ctx, &v1.ListDrainsRequest{})
	if err != nil {
		return "", err
	}
	var found []string
	for _, d := range resp.GetDrains() {
		if strings.HasPrefix(d.GetId(), id) {
			found = append(found, d.GetId())
		}
	}
	switch len(found) {
	case 0:
		return "", status.Errorf(codes.NotFound, "id: drain %q not found", id)
	case 1:
		return found[0], nil
	}
	return "", status.Errorf(codes.InvalidArgument, "id: %q is the start of %d drains' IDs (%s): give more of it", id, len(found), strings.Join(found, ", "))
}

func drainCancelCmd(a *app) *cobra.Command {
	var req v1.CancelDrainRequest
	cmd := &cobra.Command{
		Use:   "cancel ID [--abort-in-flight] [--uncordon]",
		Short: "Stop a drain: no new moves; its hosts stay cordoned unless --uncordon",
		Long: `Cancel a running drain: no new moves start; moves in flight finish (or, with
--abort-in-flight, are aborted: those devservers stay where they run). The hosts stay cordoned
unless --uncordon. ID may be the start of the drain's ID.`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: firstArg(a.completeNames(drainIDs(true))),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			id, err := drainID(ctx, c, args[0])
			if err != nil {
				return err
			}
			req.Id = id
			d, err := c.drains.CancelDrain(ctx, &req)
			if err != nil {
				return err
			}
			return a.done(d, "drain %s: cancel requested (%d moving)", d.GetId(), d.GetItemsMoving())
		}),
	}
	cmd.Flags().BoolVar(&req.AbortInFlight, "abort-in-flight", false, "abort the moves in flight too")
	cmd.Flags().BoolVar(&req.Uncordon, "uncordon", false, "return the hosts to service")
	return cmd
}

func drainExtendCmd(a *app) *cobra.Command {
	var by time.Duration
	cmd := &cobra.Command{
		Use:               "extend ID --by DURATION",
		Short:             "Move a running drain's deadline later",
		Args:              exactArgs("ID"),
		ValidArgsFunction: firstArg(a.completeNames(drainIDs(true))),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			if by <= 0 {
				return usagef("--by must be a positive duration, e.g. 2h, got %s", by)
			}
			return nil
		},
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			id, err := drainID(ctx, c, args[0])
			if err != nil {
				return err
			}
			d, err := c.drains.ExtendDrain(ctx, &v1.ExtendDrainRequest{Id: id, By: durationpb.New(by)})
			if err != nil {
				return err
			}
			return a.done(d, "drain %s: deadline now %s", d.GetId(), d.GetDeadline().AsTime().UTC().Format(time.RFC3339))
		}),
	}
	cmd.Flags().DurationVar(&by, "by", 0, "how much later (required), e.g. 2h")
	return cmd
}

func drainTimelineCmd(a *app) *cobra.Command {
	var rf readFlags
	cmd := &cobra.Command{
		Use:               "timeline ID",
		Short:             "Every step of a drain with its time, for the post-incident review",
		Args:              exactArgs("ID"),
		ValidArgsFunction: firstArg(a.completeNames(drainIDs(false))),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			id, err := drainID(ctx, c, args[0])
			if err != nil {
				return err
			}
			resp, err := c.drains.ListDrainEvents(ctx, &v1.ListDrainEventsRequest{Id: id, Stale: rf.stale})
			if err != nil {
				return err
			}
			return printList(a, resp.GetEvents(), []string{"TIME", "EVENT", "DEVSERVER", "DETAIL"}, func(e *v1.DrainEvent) []string {
				return []string{e.GetTime().AsTime().UTC().Format("15:04:05.000"), e.GetKind(), cell(e.GetDevserver()), e.GetDetail()}
			})
		}),
	}
	addReadFlags(cmd, &rf, false)
	return cmd
}

// drainIDs lists drain IDs for shell completion: all, or those that have not ended.
func drainIDs(active bool) func(ctx context.Context, c client) ([]string, error) {
	return func(ctx context.Context, c client) ([]string, error) {
		resp, err := c.drains.ListDrains(ctx, &v1.ListDrainsRequest{Active: active, Stale: true})
		if err != nil {
			return nil, err
		}
		ids := make([]string, 0, len(resp.GetDrains()))
		for _, d := range resp.GetDrains() {
			ids = append(ids, d.GetId())
		}
		return ids, nil
	}
}

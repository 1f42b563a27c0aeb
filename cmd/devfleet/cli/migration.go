package cli

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

const (
	// pollInterval is how often devserver migrate --wait reads its migration.
	pollInterval = 250 * time.Millisecond
	// transientGrace is how long --wait rides out a node that cannot answer (a leader election,
	// a restart) before it gives up following the migration.
	transientGrace = 30 * time.Second
	// shortIDLen is how much of a migration ID the table shows (more when that is ambiguous).
	shortIDLen = 8
	mib        = 1 << 20
)

func devserverMigrateCmd(a *app) *cobra.Command {
	var (
		req           v1.MigrateDevserverRequest
		reason        = newEnumFlag(v1.MigrationReason_MIGRATION_REASON_UNSPECIFIED)
		bandwidth     uint64
		maxDowntime   time.Duration
		at            string
		coldFallback  bool
		postCopy      bool
		wait, monitor bool
	)
	cmd := &cobra.Command{
		Use:   "migrate NAME [--to-host HOST | --region R | --flavor F] [--at TIME] [--cold] [--reason REASON] [--priority N] [--bandwidth-mibps N] [--max-downtime D] [--wait | --monitor]",
		Short: "Move a running devserver to another host (live), region or flavor (cold)",
		Long: `Ask devfleet to move a running devserver to another host of its region while its guest keeps
running (a live migration). Without --to-host, devfleet picks the host, as it places a new
devserver. The move is recorded at once and the destination's room is held; the leader runs it
when the limits on concurrent migrations allow, highest priority first (--priority; by default
evacuation 300, maintenance 200, user 100, rebalance 0). The devserver is "migrating" until it
ends, and "devfleet migration show ID" follows it.

--flavor F resizes it (a flavor with at least its disk): a cold move, which shuts the guest down,
and starts it again with the new size, on its own host when that has room, else on another.
--region R moves it to another region, cold, with its disk copied. --cold moves it cold even
where a live move is possible; --cold-fallback moves it cold only if the live attempts fail. A
cold move ends the guest's running session (its disk is kept): --at TIME books it for a time that
suits you (RFC 3339, e.g. 2026-11-24T02:00:00Z, or from now, e.g. +8h).

Only the devserver's owner, a sharer or an operator may move it: name yourself with the global
--as (default $` + asEnv + `, else $` + ownerEnv + `).

--wait follows the migration until it ends and exits 0 when it succeeded, 1 (naming the phase
and why) when it failed or was aborted. --monitor waits too and shows its progress on stderr:
one updating line on a terminal, else one line per change. While waiting, --timeout bounds each
call rather than the wait, unless it is given explicitly; stopping the command does not stop the
migration ("devfleet migration abort ID" does). With -o json the command prints the migration:
as recorded, or as it ended with --wait and --monitor.`,
		Example: `  devfleet --as bob devserver migrate bob-dev
  devfleet --as ops devserver migrate db-1 --to-host fra1-h7 --reason maintenance --monitor
  devfleet devserver migrate ci-1 --bandwidth-mibps 500 --max-downtime 500ms --wait -o json
  devfleet devserver migrate bob-dev --flavor large --at +10h
  devfleet devserver migrate bob-dev --region eu-west --monitor`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(devserverNames)),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case cmd.Flags().Changed("to-host") && req.ToHost == "":
				return usagef("--to-host must not be empty; leave it out to let devfleet choose the host")
			case maxDowntime < 0:
				return usagef("--max-downtime must not be negative, got %s", maxDowntime)
			case maxDowntime%time.Millisecond != 0:
				return usagef("--max-downtime is in whole milliseconds, got %s", maxDowntime)
			case maxDowntime/time.Millisecond > math.MaxUint32:
				return usagef("--max-downtime is too long, got %s", maxDowntime)
			case cmd.Flags().Changed("region") && req.Region == "":
				return usagef("--region must not be empty; leave it out to stay in the devserver's region")
			case cmd.Flags().Changed("flavor") && req.Flavor == "":
				return usagef("--flavor must not be empty; leave it out to keep the devserver's flavor")
			}
			if at != "" {
				t, err := parseAt(at, time.Now())
				if err != nil {
					return usagef("--at: %v", err)
				}
				req.NotBefore = timestamppb.New(t)
			}
			if (wait || monitor) && !cmd.Flags().Changed("timeout") {
				// A migration may take far longer than a call: --timeout bounds each call.
				a.callTimeout, a.timeout = a.timeout, 0
			}
			return nil
		},
	}
	cmd.RunE = a.action(func(ctx context.Context, c client, args []string) error {
		req.Name, req.Reason = args[0], v1.MigrationReason(reason.num)
		if bandwidth > 0 || maxDowntime > 0 || coldFallback || postCopy {
			req.Policy = &v1.MigrationPolicy{BandwidthMibps: bandwidth, MaxDowntimeMs: uint32(maxDowntime / time.Millisecond),
				ColdFallback: coldFallback, AllowPostCopy: postCopy}
		}
		callCtx, cancel := a.callContext(ctx)
		m, err := c.migrations.MigrateDevserver(callCtx, &req)
		callTimedOut := callCtx.Err() != nil && ctx.Err() == nil
		cancel()
		switch {
		case err != nil && callTimedOut:
			return status.Errorf(codes.DeadlineExceeded, "no answer from %s within %s; retry, or raise --timeout", a.addr, a.callTimeout)
		case err != nil:
			return err
		}
		if !wait && !monitor {
			return a.done(m, "%s", queuedLine(m))
		}
		if !a.jsonOutput() {
			if _, err := fmt.Fprintln(a.stdout, queuedLine(m)); err != nil {
				return err
			}
		}
		var line *progressLine
		if monitor {
			line = &progressLine{w: a.stderr, tty: isTerminal(a.stderr)}
		}
		m, err = a.waitMigration(ctx, c, m, line)
		if err != nil {
			return err
		}
		if a.jsonOutput() {
			if err := printJSON(a.stdout, m); err != nil {
				return err
			}
		}
		if m.GetPhase() != v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED {
			return migrationEnded(m)
		}
		if a.jsonOutput() {
			return nil
		}
		_, err = fmt.Fprintln(a.stdout, migratedLine(m))
		return err
	})
	f := cmd.Flags()
	f.StringVar(&req.ToHost, "to-host", "", "host to move to (default: devfleet picks one in the region it moves to)")
	f.StringVar(&req.Region, "region", "", "region to move to, cold, with its disk (default: its own)")
	f.StringVar(&req.Flavor, "flavor", "", "flavor to resize to, cold (default: its own)")
	f.BoolVar(&req.Cold, "cold", false, "move cold (shut down, copy the disk, start) even where a live move is possible")
	f.BoolVar(&coldFallback, "cold-fallback", false, "move cold if the live attempts fail")
	f.BoolVar(&postCopy, "post-copy", false, "let a live move that does not converge switch to post-copy (the guest then runs on the destination; the move can no longer be aborted)")
	f.StringVar(&at, "at", "", "start no earlier than this time: RFC 3339, or +DURATION from now (default: as soon as a slot frees)")
	f.Var(reason, "reason", "why it moves: "+orList(reason.names())+" (server default: user); sets the default priority")
	f.Int32Var(&req.Priority, "priority", 0, "higher runs first (default: the reason's)")
	f.Uint64Var(&bandwidth, "bandwidth-mibps", 0, "cap the copy at this many MiB/s (default: no cap)")
	f.DurationVar(&maxDowntime, "max-downtime", 0, "longest pause of the guest at the switch-over, e.g. 300ms (default: devfleet's, 300ms)")
	f.BoolVar(&wait, "wait", false, "wait until the migration ends; exit 1 unless it succeeded")
	f.BoolVar(&monitor, "monitor", false, "wait, showing the migration's progress on stderr")
	_ = cmd.RegisterFlagCompletionFunc("to-host", a.completeNames(hostNames))
	_ = cmd.RegisterFlagCompletionFunc("region", a.completeNames(regionNames))
	_ = cmd.RegisterFlagCompletionFunc("flavor", a.completeNames(flavorNames))
	_ = cmd.RegisterFlagCompletionFunc("reason", reason.complete)
	for _, name := range []string{"priority", "bandwidth-mibps", "max-downtime", "at"} {
		_ = cmd.RegisterFlagCompletionFunc(name, cobra.NoFileCompletions)
	}
	return cmd
}

// parseAt reads a time: RFC 3339, or +DURATION from now, or -DURATION ago.
func parseAt(s string, now time.Time) (time.Time, error) {
	if rest, ok := strings.CutPrefix(s, "+"); ok {
		d, err := time.ParseDuration(rest)
		if err != nil || d < 0 {
			return time.Time{}, fmt.Errorf("want +DURATION such as +8h, got %q", s)
		}
		return now.Add(d), nil
	}
	if rest, ok := strings.CutPrefix(s, "-"); ok {
		d, err := time.ParseDuration(rest)
		if err != nil || d < 0 {
			return time.Time{}, fmt.Errorf("want -DURATION such as -2h, got %q", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("want an RFC 3339 time such as 2026-11-24T02:00:00Z or +8h, got %q", s)
	}
	return t, nil
}

// callContext bounds one call of a command that waits (a.callTimeout).
func (a *app) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if a.callTimeout > 0 {
		return context.WithTimeout(ctx, a.callTimeout)
	}
	return context.WithCancel(ctx)
}

// queuedLine is what devserver migrate prints once the migration is recorded.
func queuedLine(m *v1.Migration) string {
	kind := "live"
	if m.GetCold() {
		kind = "cold"
	}
	what := ""
	if f := m.GetDestFlavor(); f != "" {
		what += ", to flavor " + f
	}
	if r := m.GetDestRegion(); r != "" {
		what += ", to region " + r
	}
	when := "queued"
	if nb := m.GetNotBefore(); nb != nil && nb.AsTime().After(time.Now()) {
		when = "starts at " + nb.AsTime().UTC().Format(time.RFC3339) + " or later"
	}
	return fmt.Sprintf("migration %s: %s from %s to %s (%s%s, %s, priority %d); %s",
		m.GetId(), m.GetDevserver(), cell(m.GetSourceHost()), cell(m.GetDestHost()), kind, what, cell(short(m.GetReason())), m.GetPriority(), when)
}

// migratedLine sums up a migration that succeeded: how long the copy took (from the start of
// its first run), how much memory moved and how fast on average, and the guest's pause.
func migratedLine(m *v1.Migration) string {
	line := fmt.Sprintf("migrated %s to %s", m.GetDevserver(), m.GetDestHost())
	if m.GetSourceHost() == m.GetDestHost() {
		line = fmt.Sprintf("resized %s on %s", m.GetDevserver(), m.GetDestHost())
	}
	if f := m.GetDestFlavor(); f != "" {
		line += ", flavor " + f
	}
	if r := m.GetDestRegion(); r != "" {
		line += ", region " + r
	}
	start := m.GetStartTime()
	if start == nil {
		start = m.GetCreateTime()
	}
	var took time.Duration
	if start != nil && m.GetEndTime() != nil {
		took = m.GetEndTime().AsTime().Sub(start.AsTime())
		line += " in " + seconds(took)
	}
	p := m.GetProgress()
	var details []string
	if m.GetCold() {
		details = append(details, "cold")
	}
	if p.GetPostCopy() {
		details = append(details, "post-copy")
	}
	if total := p.GetDiskTotalBytes(); total > 0 && m.GetCold() {
		details = append(details, "disk "+mibs(total)+" MiB")
	}
	if total := p.GetMemoryTotalBytes(); total > 0 {
		d := mibs(total) + " MiB"
		rate := float64(p.GetDataRateBytesPerSecond())
		if processed := p.GetMemoryProcessedBytes(); processed > 0 && took > 0 {
			rate = float64(processed) / took.Seconds()
		}
		if rate > 0 {
			d += " at " + mibPerSecond(rate)
		}
		details = append(details, d)
	}
	if p != nil {
		details = append(details, fmt.Sprintf("downtime %d ms", p.GetDowntimeMs()))
	}
	if len(details) > 0 {
		line += " (" + strings.Join(details, ", ") + ")"
	}
	return line
}

// migrationEnded is the failure of devserver migrate --wait when the migration did not succeed.
func migrationEnded(m *v1.Migration) error {
	msg := fmt.Sprintf("migration %s of %s ended in phase %s", m.GetId(), m.GetDevserver(), short(m.GetPhase()))
	if r := m.GetFailureReason(); r != "" {
		msg += ": " + r
	}
	return fmt.Errorf("%s; devserver %s stays on %s", msg, m.GetDevserver(), cell(m.GetSourceHost()))
}

// stoppedWaiting is devserver migrate --wait stopped (interrupted, --timeout) while the
// migration goes on.
type stoppedWaiting struct {
	m   *v1.Migration
	err error
}

func (e *stoppedWaiting) Error() string {
	id := e.m.GetId()
	return fmt.Sprintf(`migration %s of %s is still %s and goes on: "devfleet migration show %s" follows it, "devfleet migration abort %s" stops it`,
		id, e.m.GetDevserver(), cell(short(e.m.GetPhase())), id, id)
}

func (e *stoppedWaiting) Unwrap() error { return e.err }

// outage measures how long a waiting command's calls have failed with the codes that a leader
// election or a restart gives, so that it rides them out for up to transientGrace.
type outage struct{ since time.Time }

// over records a call that answered.
func (o *outage) over() { o.since = time.Time{} }

// bearable reports whether err is such a failure and the grace is not used up yet.
func (o *outage) bearable(err error) bool {
	if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
		return false
	}
	if o.since.IsZero() {
		o.since = time.Now()
	}
	return time.Since(o.since) < transientGrace
}

// waitMigration reads a migration every pollInterval until it ends, and returns it as it
// ended. It rides out a node that cannot answer for up to transientGrace. line, when not nil,
// shows each change.
func (a *app) waitMigration(ctx context.Context, c client, m *v1.Migration, line *progressLine) (*v1.Migration, error) {
	defer line.end()
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	var down outage
	for {
		line.show(m)
		if state.Final(m.GetPhase()) {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return nil, &stoppedWaiting{m: m, err: ctx.Err()}
		case <-t.C:
		}
		callCtx, cancel := a.callContext(ctx)
		next, err := c.migrations.GetMigration(callCtx, &v1.GetMigrationRequest{Id: m.GetId()})
		cancel()
		switch {
		case err == nil:
			m = next
			down.over()
			continue
		case ctx.Err() != nil:
			return nil, &stoppedWaiting{m: m, err: ctx.Err()}
		case down.bearable(err):
			continue
		}
		return nil, status.Errorf(status.Code(err), "lost track of migration %s of %s (it goes on): %s", m.GetId(), m.GetDevserver(), status.Convert(err).Message())
	}
}

// progressLine shows a migration's progress as it changes: on a terminal one line, rewritten
// in place; elsewhere one line per change.
type progressLine struct {
	w    io.Writer
	tty  bool
	last string
	// open: the terminal's cursor is at the end of a progress line.
	open bool
}

func (p *progressLine) show(m *v1.Migration) {
	if p == nil {
		return
	}
	s := progressText(m)
	if s == p.last {
		return
	}
	p.last = s
	if p.tty {
		fmt.Fprintf(p.w, "\r%s\x1b[K", s) // carriage return, the line, erase the rest of the old one
		p.open = true
		return
	}
	fmt.Fprintln(p.w, s)
}

// end moves a terminal past the progress line, so that what follows starts on its own line.
func (p *progressLine) end() {
	if p != nil && p.open {
		fmt.Fprintln(p.w)
		p.open = false
	}
}

// progressText is one line on a migration: its phase and, while memory is copied, how much,
// how fast, how long still, the pre-copy iteration and the pause expected at the switch-over.
func progressText(m *v1.Migration) string {
	s := cell(short(m.GetPhase()))
	if m.GetCold() && !state.Final(m.GetPhase()) {
		s += " (cold"
		if st := short(m.GetColdStep()); st != "" {
			s += ": " + strings.ReplaceAll(st, "_", " ")
		}
		s += ")"
	}
	var parts []string
	if nb := m.GetNotBefore(); m.GetPhase() == v1.MigrationPhase_MIGRATION_PHASE_PENDING && nb != nil && nb.AsTime().After(time.Now()) {
		parts = append(parts, "starts at "+nb.AsTime().UTC().Format(time.RFC3339)+" or later")
	}
	if p := m.GetProgress(); m.GetCold() && m.GetColdStep() == v1.ColdStep_COLD_STEP_COPYING_DISK && p.GetDiskTotalBytes() > 0 {
		parts = append(parts, fmt.Sprintf("disk %s/%s MiB", mibs(p.GetDiskProcessedBytes()), mibs(p.GetDiskTotalBytes())))
		if rate := p.GetDataRateBytesPerSecond(); rate > 0 {
			parts = append(parts, mibPerSecond(float64(rate)),
				"ETA "+eta(time.Duration(float64(p.GetDiskRemainingBytes())/float64(rate)*float64(time.Second))))
		}
	}
	if copying(m) {
		p := m.GetProgress()
		if p.GetDiskRemainingBytes() > 0 {
			// The disk is copied first.
			parts = append(parts, fmt.Sprintf("disk %s/%s MiB", mibs(p.GetDiskProcessedBytes()), mibs(p.GetDiskTotalBytes())))
		}
		parts = append(parts, fmt.Sprintf("%s/%s MiB %d%%", mibs(p.GetMemoryProcessedBytes()), mibs(p.GetMemoryTotalBytes()), percent(p)))
		if rate := p.GetDataRateBytesPerSecond(); rate > 0 {
			parts = append(parts, mibPerSecond(float64(rate)),
				"ETA "+eta(time.Duration(float64(p.GetMemoryRemainingBytes())/float64(rate)*float64(time.Second))))
		}
		if it := p.GetIteration(); it > 0 {
			parts = append(parts, "iteration "+u64(it))
		}
		if d := p.GetExpectedDowntimeMs(); d > 0 && !p.GetPostCopy() {
			parts = append(parts, fmt.Sprintf("expected downtime %d ms", d))
		}
		if p.GetPostCopy() {
			parts = append(parts, "post-copy: running on the destination")
		}
	}
	// Attempts counts the attempts started: between two, all of those failed.
	switch n := int64(m.GetAttempts()); m.GetPhase() {
	case v1.MigrationPhase_MIGRATION_PHASE_PENDING, v1.MigrationPhase_MIGRATION_PHASE_SCHEDULED:
		if n > 0 {
			parts = append(parts, plural(n, "attempt", "attempts")+" failed")
		}
	case v1.MigrationPhase_MIGRATION_PHASE_PREPARING_TARGET, v1.MigrationPhase_MIGRATION_PHASE_RUNNING, v1.MigrationPhase_MIGRATION_PHASE_COMPLETING:
		if n > 1 {
			parts = append(parts, "attempt "+i64(n))
		}
	}
	if m.GetAbortRequested() && !state.Final(m.GetPhase()) {
		parts = append(parts, "abort requested")
	}
	if len(parts) > 0 {
		s += ": " + strings.Join(parts, ", ")
	}
	return s
}

// copying reports whether a migration is copying memory and has said how far it got.
func copying(m *v1.Migration) bool {
	switch m.GetPhase() {
	case v1.MigrationPhase_MIGRATION_PHASE_RUNNING, v1.MigrationPhase_MIGRATION_PHASE_COMPLETING:
		return m.GetProgress().GetMemoryTotalBytes() > 0
	}
	return false
}

// percent is how much of the guest's memory has been copied and not dirtied again.
func percent(p *v1.MigrationProgress) uint64 {
	total, remaining := p.GetMemoryTotalBytes(), p.GetMemoryRemainingBytes()
	if total == 0 || p.GetMemoryProcessedBytes() == 0 {
		return 0
	}
	if remaining >= total {
		return 0
	}
	return (total - remaining) * 100 / total
}

func mibs(b uint64) string { return u64(b / mib) }

func mibPerSecond(bytesPerSecond float64) string {
	return strconv.FormatFloat(bytesPerSecond/mib, 'f', 1, 64) + " MiB/s"
}

// eta is a time left, to the second.
func eta(d time.Duration) string {
	if d < time.Second {
		return "<1s"
	}
	return d.Round(time.Second).String()
}

// seconds is a duration to a tenth of a second (12.3s, 2m5.1s).
func seconds(d time.Duration) string {
	if d < time.Minute {
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	}
	return d.Round(100 * time.Millisecond).String()
}

// age is how long ago t was, in its largest unit (45s, 12m, 5h, 3d).
func age(t *timestamppb.Timestamp, now time.Time) string {
	if t == nil {
		return ""
	}
	d := max(now.Sub(t.AsTime()), 0)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// isTerminal reports whether w is a terminal (a character device), where a progress line may
// be rewritten in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func newMigrationCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "migration",
		Short: "Follow and abort devserver migrations (devserver migrate starts them)",
	})
	cmd.AddCommand(migrationListCmd(a), migrationShowCmd(a), migrationAbortCmd(a))
	return cmd
}

func migrationListCmd(a *app) *cobra.Command {
	var (
		rf  readFlags
		req v1.ListMigrationsRequest
	)
	cmd := &cobra.Command{
		Use:   "list [--devserver NAME] [--active]",
		Short: "List migrations, oldest first",
		Long: `List migrations, past and under way, oldest first. ID is the start of the migration's ID, as
much as tells it from the others listed (-o json shows it whole; migration show and abort take
it). PROGRESS is how much of the guest's memory was copied while it is being copied; AGE is how
long ago the migration was asked for.`,
		Args: exactArgs(),
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			req.Stale = rf.stale
			resp, err := c.migrations.ListMigrations(ctx, &req)
			if err != nil {
				return err
			}
			ms := resp.GetMigrations()
			ids := shortIDs(ms)
			now := time.Now()
			header := []string{"ID", "DEVSERVER", "FROM", "TO", "REASON", "PHASE", "PROGRESS", "ATTEMPTS", "AGE"}
			return printList(a, ms, header, func(m *v1.Migration) []string {
				progress := ""
				if copying(m) {
					progress = u64(percent(m.GetProgress())) + "%"
				}
				return []string{
					ids[m.GetId()], m.GetDevserver(), m.GetSourceHost(), m.GetDestHost(), short(m.GetReason()),
					short(m.GetPhase()), progress, u64(uint64(m.GetAttempts())), age(m.GetCreateTime(), now),
				}
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.Devserver, "devserver", "", "only this devserver's migrations")
	f.BoolVar(&req.Active, "active", false, "only migrations that have not ended")
	_ = cmd.RegisterFlagCompletionFunc("devserver", a.completeNames(devserverNames))
	addReadFlags(cmd, &rf, false) // one call: migrations are not paged
	return cmd
}

// shortIDs maps each migration's ID to its shortest start of at least shortIDLen characters
// that no other of ms shares.
func shortIDs(ms []*v1.Migration) map[string]string {
	out := make(map[string]string, len(ms))
	for _, m := range ms {
		id := m.GetId()
		n := min(shortIDLen, len(id))
		for ; n < len(id); n++ {
			unique := true
			for _, o := range ms {
				if o.GetId() != id && strings.HasPrefix(o.GetId(), id[:n]) {
					unique = false
					break
				}
			}
			if unique {
				break
			}
		}
		out[id] = id[:n]
	}
	return out
}

// getMigration reads a migration by its ID or by the start of it (as migration list shows it).
func getMigration(ctx context.Context, c client, id string, stale bool) (*v1.Migration, error) {
	m, err := c.migrations.GetMigration(ctx, &v1.GetMigrationRequest{Id: id, Stale: stale})
	if status.Code(err) != codes.NotFound || id == "" {
		return m, err
	}
	resp, lerr := c.migrations.ListMigrations(ctx, &v1.ListMigrationsRequest{Stale: stale})
	if lerr != nil {
		return nil, err
	}
	var found []string
	for _, o := range resp.GetMigrations() {
		if strings.HasPrefix(o.GetId(), id) {
			found = append(found, o.GetId())
			m = o
		}
	}
	switch len(found) {
	case 0:
		return nil, err
	case 1:
		return m, nil
	}
	return nil, status.Errorf(codes.InvalidArgument, "id: %q is the start of %d migrations' IDs (%s): give more of it",
		id, len(found), strings.Join(found, ", "))
}

func migrationShowCmd(a *app) *cobra.Command {
	var rf readFlags
	cmd := &cobra.Command{
		Use:               "show ID",
		Short:             "Show a migration, with its progress",
		Long:              `Show a migration. ID may be the start of its ID, as migration list shows it.`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: firstArg(a.completeNames(migrationIDs(false))),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			m, err := getMigration(ctx, c, args[0], rf.stale)
			if err != nil {
				return err
			}
			return printObject(a, m, migrationFields(m))
		}),
	}
	addReadFlags(cmd, &rf, false)
	return cmd
}

// migrationFields are the lines of migration show; those on progress appear once libvirt
// reported some.
func migrationFields(m *v1.Migration) []field {
	fs := []field{
		{"id", m.GetId()},
		{"devserver", m.GetDevserver()},
		{"devserver_id", m.GetDevserverId()},
		{"source_host", m.GetSourceHost()},
		{"dest_host", m.GetDestHost()},
		{"reason", short(m.GetReason())},
		{"priority", i64(int64(m.GetPriority()))},
		{"phase", short(m.GetPhase())},
		{"cold", yesNo(m.GetCold())},
		{"cold_step", short(m.GetColdStep())},
		{"dest_flavor", m.GetDestFlavor()},
		{"dest_region", m.GetDestRegion()},
		{"not_before", ts(m.GetNotBefore())},
		{"attempts", u64(uint64(m.GetAttempts()))},
		{"requested_by", m.GetRequestedBy()},
		{"abort_requested", yesNo(m.GetAbortRequested())},
		{"failure_reason", m.GetFailureReason()},
		{"policy", policy(m.GetPolicy())},
	}
	if p := m.GetProgress(); p != nil {
		fs = append(fs,
			field{"progress", progressSummary(m)},
			field{"memory_total_mib", mibs(p.GetMemoryTotalBytes())},
			field{"memory_processed_mib", mibs(p.GetMemoryProcessedBytes())},
			field{"memory_remaining_mib", mibs(p.GetMemoryRemainingBytes())},
			field{"data_rate", mibPerSecond(float64(p.GetDataRateBytesPerSecond()))},
			field{"dirty_rate_pages_per_second", u64(p.GetDirtyRatePagesPerSecond())},
			field{"iteration", u64(p.GetIteration())},
			field{"post_copy", yesNo(p.GetPostCopy())},
			field{"expected_downtime_ms", u64(p.GetExpectedDowntimeMs())},
		)
		if state.Final(m.GetPhase()) {
			fs = append(fs, field{"downtime_ms", u64(p.GetDowntimeMs())})
		}
		fs = append(fs, field{"sample_time", ts(p.GetSampleTime())})
	}
	fs = append(fs,
		field{"create_time", ts(m.GetCreateTime())},
		field{"start_time", ts(m.GetStartTime())},
		field{"end_time", ts(m.GetEndTime())},
		field{"update_time", ts(m.GetUpdateTime())},
		field{"create_index", u64(m.GetCreateIndex())},
		field{"modify_index", u64(m.GetModifyIndex())},
		field{"fence", fence(m)},
	)
	return fs
}

// fence is the migration's fencing token (the term and index of the leader's last decision).
func fence(m *v1.Migration) string {
	if m.GetFenceTerm() == 0 {
		return ""
	}
	return "term " + u64(m.GetFenceTerm()) + " index " + u64(m.GetFenceIndex())
}

// progressSummary is a migration's progress in a few words: how far the copy got (and while it
// runs, how fast and how long still).
func progressSummary(m *v1.Migration) string {
	p := m.GetProgress()
	s := fmt.Sprintf("%s/%s MiB copied", mibs(p.GetMemoryProcessedBytes()), mibs(p.GetMemoryTotalBytes()))
	if copying(m) {
		s += fmt.Sprintf(" (%d%%)", percent(p))
		if rate := p.GetDataRateBytesPerSecond(); rate > 0 {
			s += fmt.Sprintf(" at %s, ETA %s", mibPerSecond(float64(rate)),
				eta(time.Duration(float64(p.GetMemoryRemainingBytes())/float64(rate)*float64(time.Second))))
		}
	}
	return s
}

// policy is a migration's policy as set: the fields given, or "defaults".
func policy(p *v1.MigrationPolicy) string {
	var parts []string
	add := func(k string, set bool, v string) {
		if set {
			parts = append(parts, k+"="+v)
		}
	}
	add("bandwidth_mibps", p.GetBandwidthMibps() > 0, u64(p.GetBandwidthMibps()))
	add("max_downtime_ms", p.GetMaxDowntimeMs() > 0, u64(uint64(p.GetMaxDowntimeMs())))
	add("auto_converge", p.GetAutoConverge(), "yes")
	add("allow_post_copy", p.GetAllowPostCopy(), "yes")
	add("completion_timeout_per_gib", p.GetCompletionTimeoutPerGib() != nil, p.GetCompletionTimeoutPerGib().AsDuration().String())
	add("progress_timeout", p.GetProgressTimeout() != nil, p.GetProgressTimeout().AsDuration().String())
	add("parallel_connections", p.GetParallelConnections() > 0, u64(uint64(p.GetParallelConnections())))
	add("max_attempts", p.GetMaxAttempts() > 0, u64(uint64(p.GetMaxAttempts())))
	add("cold_fallback", p.GetColdFallback(), "yes")
	add("post_copy_after_passes", p.GetPostCopyAfterPasses() > 0, u64(uint64(p.GetPostCopyAfterPasses())))
	if len(parts) == 0 {
		return "defaults"
	}
	return strings.Join(parts, " ")
}

func migrationAbortCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "abort ID",
		Short: "Stop a migration that has not ended; the devserver stays where it runs",
		Long: `Ask devfleet to stop a migration that has not ended. The leader stops the copy (a pending
migration ends at once) and the devserver stays on its source host; the migration then ends in
phase aborted. ID may be the start of its ID, as migration list shows it. Only the devserver's
owner, a sharer or an operator may abort (see the global --as).`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: firstArg(a.completeNames(migrationIDs(true))),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			m, err := getMigration(ctx, c, args[0], false)
			if err != nil {
				return err
			}
			m, err = c.migrations.AbortMigration(ctx, &v1.AbortMigrationRequest{Id: m.GetId()})
			if err != nil {
				return err
			}
			return a.done(m, "migration %s: abort requested (phase %s); devserver %s stays on %s",
				m.GetId(), cell(short(m.GetPhase())), m.GetDevserver(), cell(m.GetSourceHost()))
		}),
	}
}

// migrationIDs lists migration IDs for shell completion: all, or those that have not ended.
func migrationIDs(active bool) func(ctx context.Context, c client) ([]string, error) {
	return func(ctx context.Context, c client) ([]string, error) {
		resp, err := c.migrations.ListMigrations(ctx, &v1.ListMigrationsRequest{Active: active, Stale: true})
		if err != nil {
			return nil, err
		}
		ids := make([]string, 0, len(resp.GetMigrations()))
		for _, m := range resp.GetMigrations() {
			ids = append(ids, m.GetId())
		}
		return ids, nil
	}
}

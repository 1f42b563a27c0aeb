package builtin

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/analyzer"
	"github.com/devfleet/devfleet/controlplane/state"
	"github.com/devfleet/devfleet/drain"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// DefaultStall is how long a drain may go without progress before drain-stuck calls it stuck
// (and the leader opens an alert).
const DefaultStall = 10 * time.Minute

// maxChained bounds the migrations drain-stuck looks into.
const maxChained = 5

func drainStuck() *analyzer.Analyzer {
	return &analyzer.Analyzer{
		Name:        DrainStuck,
		Description: "Whether a drain is progressing, and if not, what holds it: blocked items and why (capacity shortfall, failing destinations), moves that do not converge, budgets saturated, the deadline.",
		Inputs: []analyzer.Input{
			{Name: "drain", Type: analyzer.String, Required: true, Description: "the drain's ID"},
			{Name: "stall", Type: analyzer.Duration, Default: DefaultStall.String(), Description: "no progress for this long is stuck"},
		},
		Run: runDrainStuck,
	}
}

func runDrainStuck(ctx context.Context, env *analyzer.Env, in analyzer.Inputs) ([]*v1.Finding, error) {
	now := env.Now()
	v, err := env.State(ctx)
	if err != nil {
		return nil, err
	}
	id := in.String("drain")
	d, err := v.GetDrain(id)
	if err != nil {
		return nil, err
	}
	subj := subject("drain", id)
	ev := object("drain", id, d.GetUpdateTime(), "")
	if state.DrainFinal(d.GetState()) {
		return []*v1.Finding{withEvidence(finding(info, subj, fmt.Sprintf("drain %s ended %s: %s %s", id, at(now, d.GetEndTime()), enumWord(d.GetState().String(), "DRAIN_STATE_"), d.GetStateReason())), ev)}, nil
	}
	items := v.DrainItems(id)
	count := map[v1.DrainItemState]int{}
	for _, it := range items {
		count[it.GetState()]++
	}
	tally := fmt.Sprintf("%d of %d done, %d moving, %d pending, %d blocked", count[v1.DrainItemState_DRAIN_ITEM_STATE_DONE]+count[v1.DrainItemState_DRAIN_ITEM_STATE_LEFT]+count[v1.DrainItemState_DRAIN_ITEM_STATE_STRANDED],
		len(items), count[v1.DrainItemState_DRAIN_ITEM_STATE_MOVING], count[v1.DrainItemState_DRAIN_ITEM_STATE_PENDING], count[v1.DrainItemState_DRAIN_ITEM_STATE_BLOCKED])

	stall := in.Duration("stall")
	since := windowStart(env, stall)
	then, err := env.StateAt(ctx, since)
	if err != nil {
		return nil, err
	}
	lastProgress, err := drainProgress(ctx, env, then, id, since)
	if err != nil {
		return nil, err
	}
	if lastProgress.IsZero() || now.Sub(lastProgress) < stall {
		f := finding(info, subj, fmt.Sprintf("drain %s is progressing: %s", id, tally))
		if !lastProgress.IsZero() {
			f.Details = append(f.Details, "last progress "+at(now, timestamppb.New(lastProgress)))
		}
		return []*v1.Finding{withEvidence(f, ev)}, nil
	}

	head := withEvidence(finding(warning, subj, fmt.Sprintf("drain %s has made no progress for %s: %s", id, short(now.Sub(lastProgress)), tally)), ev)
	out := []*v1.Finding{head}
	out = append(out, blockedCauses(v, d, items, subj)...)
	out = append(out, hungMoves(v, then, d, items, now.Sub(since))...)
	out = append(out, failingDestinations(v, items, subj)...)
	if f := budgetsSaturated(d, items, subj); f != nil {
		out = append(out, f)
	}
	chained := 0
	for _, it := range items {
		if it.GetState() != v1.DrainItemState_DRAIN_ITEM_STATE_MOVING || it.GetMigrationId() == "" || chained == maxChained {
			continue
		}
		chained++
		fs, err := env.Call(ctx, MigrationSlow, map[string]string{"migration": it.GetMigrationId()})
		if err != nil {
			return nil, err
		}
		out = append(out, serious(fs)...)
	}
	if dl := d.GetDeadline(); dl != nil && dl.AsTime().Sub(now) < time.Hour {
		head.Actions = append(head.Actions, action("extend-drain", id, fmt.Sprintf("the deadline is %s; give the drain more time", at(now, dl)), "devfleet drain extend "+id+" --by 2h"))
	}
	if len(out) == 1 {
		head.Details = append(head.Details, "no item is blocked and no move is failing: the drain controller may not be running (is there a leader?)")
		head.Actions = append(head.Actions, action("check-leader", "", "check the cluster has a leader and its logs", "devfleet cluster status"))
	}
	if count[v1.DrainItemState_DRAIN_ITEM_STATE_BLOCKED] > 0 {
		head.Severity = critical
	}
	return out, nil
}

// drainProgress is the time of the drain's last progress, looking back from the items now to
// their states since (then): an item that reached an end or copied more bytes. Zero when the
// drain is younger than since (too early to tell).
func drainProgress(ctx context.Context, env *analyzer.Env, then *analyzer.View, id string, since time.Time) (time.Time, error) {
	evs, err := env.Events(ctx, analyzer.Query{Topics: []string{"drain-item"}, Since: since})
	if err != nil {
		return time.Time{}, err
	}
	if d, _ := then.GetDrain(id); d == nil {
		return time.Time{}, nil
	}
	prev := map[string]*v1.DrainItem{}
	for _, it := range then.DrainItems(id) {
		prev[it.GetDevserver()] = it
	}
	var last time.Time
	for _, e := range evs {
		if e.GetTopic() != "drain-item" || !strings.HasPrefix(e.GetKey(), id+"/") {
			continue
		}
		m, err := e.GetObject().UnmarshalNew()
		if err != nil {
			return time.Time{}, err
		}
		it, ok := m.(*v1.DrainItem)
		if !ok {
			continue
		}
		if p := prev[it.GetDevserver()]; p == nil || progressed(p, it) {
			last = e.GetTime().AsTime()
		}
		prev[it.GetDevserver()] = it
	}
	if last.IsZero() {
		// No progress in the window: the last progress is before it; say the window's start.
		last = since
	}
	return last, nil
}

func progressed(a, b *v1.DrainItem) bool {
	if a.GetState() != b.GetState() && b.GetState() != v1.DrainItemState_DRAIN_ITEM_STATE_BLOCKED {
		return true
	}
	copied := func(it *v1.DrainItem) uint64 {
		return it.GetProgress().GetMemoryProcessedBytes() + it.GetProgress().GetDiskProcessedBytes()
	}
	return copied(b) > copied(a)
}

// blockedCauses groups the blocked (and pending-with-a-blocker) items by their blocker, and
// for a shortfall of room says which flavors lack room where.
func blockedCauses(v *analyzer.View, d *v1.Drain, items []*v1.DrainItem, subj string) []*v1.Finding {
	by := map[string][]string{}
	for _, it := range items {
		st := it.GetState()
		if it.GetBlocker() == "" || (st != v1.DrainItemState_DRAIN_ITEM_STATE_BLOCKED && st != v1.DrainItemState_DRAIN_ITEM_STATE_PENDING) {
			continue
		}
		by[it.GetBlocker()] = append(by[it.GetBlocker()], it.GetDevserver())
	}
	var out []*v1.Finding
	reasons := make([]string, 0, len(by))
	for r := range by {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		names := by[r]
		f := finding(warning, subj, fmt.Sprintf("%d devserver(s) cannot move: %s", len(names), r), "devservers: "+list(names, 8))
		for _, n := range names[:min(len(names), 8)] {
			f.Evidence = append(f.Evidence, object("drain-item", d.GetId()+"/"+n, nil, r))
		}
		out = append(out, f)
	}
	loss := capacity.Load(v.View).Lose(capacity.Gone{Hosts: d.GetHosts()}, capacity.LossOptions{KeepReserve: !d.GetForce(), OwnRegionOnly: true})
	for _, s := range loss.Shortfall {
		region := d.GetRegion()
		if region == "" && len(d.GetHosts()) > 0 {
			if h, err := v.GetHost(d.GetHosts()[0]); err == nil {
				region = h.GetRegion()
			}
		}
		f := finding(critical, subj, fmt.Sprintf("no room left for %d devserver(s) of flavor %s in region %s", s.Devservers, s.Flavor, region))
		f.Actions = append(f.Actions, action("add-capacity", region+"/"+s.Flavor, fmt.Sprintf("add hosts (or uncordon some) in region %s with room for flavor %s", region, s.Flavor), ""))
		out = append(out, f)
	}
	return out
}

// hungMoves are the moves in flight that copied nothing over the window (then is the fleet at
// its start): a destination or a source that hangs, or a guest too busy to migrate. The
// migration's progress timeout ends them in the end; aborting sooner lets the drain try again
// elsewhere.
func hungMoves(v, then *analyzer.View, d *v1.Drain, items []*v1.DrainItem, window time.Duration) []*v1.Finding {
	before := map[string]*v1.DrainItem{}
	for _, it := range then.DrainItems(d.GetId()) {
		before[it.GetDevserver()] = it
	}
	var out []*v1.Finding
	for _, it := range items {
		b := before[it.GetDevserver()]
		if it.GetState() != v1.DrainItemState_DRAIN_ITEM_STATE_MOVING || b == nil || b.GetState() != v1.DrainItemState_DRAIN_ITEM_STATE_MOVING || progressed(b, it) {
			continue
		}
		m, err := v.GetMigration(it.GetMigrationId())
		if err != nil {
			continue
		}
		f := finding(warning, subject("drain", d.GetId()), fmt.Sprintf("the move of %s from %s to %s has copied nothing for %s (migration %s, %s, attempt %d)",
			it.GetDevserver(), it.GetSourceHost(), m.GetDestHost(), short(window), m.GetId(), enumWord(m.GetPhase().String(), "MIGRATION_PHASE_"), m.GetAttempts()),
			"a move that copies nothing is usually a host that hangs (its libvirtd or its migration network); its progress timeout ends it, then the drain tries again")
		f.Evidence = append(f.Evidence, object("migration", m.GetId(), m.GetUpdateTime(), "no progress"))
		f.Actions = append(f.Actions,
			action("abort-migration", m.GetId(), "abort the hung move now, so that the drain tries again", "devfleet migration abort "+m.GetId()),
			action("check-host", m.GetDestHost(), "look at the destination's libvirt and migration network", "devfleet host show "+m.GetDestHost()))
		out = append(out, f)
	}
	return out
}

// failingDestinations names the destination hosts where this drain's moves failed more than
// once.
func failingDestinations(v *analyzer.View, items []*v1.DrainItem, subj string) []*v1.Finding {
	fails := map[string]int{}
	why := map[string]string{}
	for _, it := range items {
		if it.GetMigrationId() == "" {
			continue
		}
		for _, m := range v.MigrationsOf(it.GetDevserver()) {
			if m.GetDestHost() == "" || m.GetFailureReason() == "" {
				continue
			}
			n := int(m.GetAttempts())
			if m.GetPhase() != v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED && n > 0 {
				fails[m.GetDestHost()] += n - boolInt(m.GetPhase() != v1.MigrationPhase_MIGRATION_PHASE_FAILED)
				why[m.GetDestHost()] = m.GetFailureReason()
			}
		}
	}
	var out []*v1.Finding
	hosts := make([]string, 0, len(fails))
	for h, n := range fails {
		if n >= 2 {
			hosts = append(hosts, h)
		}
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		f := finding(warning, subj, fmt.Sprintf("destination %s failed %d moves; the last: %s", h, fails[h], why[h]), "moves to one host failing again and again point at that host, not at the guests")
		f.Evidence = append(f.Evidence, object("host", h, nil, "failing destination"))
		f.Actions = append(f.Actions, action("cordon-host", h, "take the failing destination out of placement so the drain picks another", "devfleet host cordon "+h+" --reason 'failing migrations'"))
		out = append(out, f)
	}
	return out
}

// budgetsSaturated says when pending moves wait because the drain's budgets are all in use.
func budgetsSaturated(d *v1.Drain, items []*v1.DrainItem, subj string) *v1.Finding {
	b := drain.BudgetsOf(d.GetBudgets()).WithDefaults()
	moving, pending := 0, 0
	perSource := map[string]int{}
	for _, it := range items {
		switch it.GetState() {
		case v1.DrainItemState_DRAIN_ITEM_STATE_MOVING:
			moving++
			perSource[it.GetSourceHost()]++
		case v1.DrainItemState_DRAIN_ITEM_STATE_PENDING:
			if it.GetBlocker() == "" {
				pending++
			}
		}
	}
	if pending == 0 || moving == 0 {
		return nil
	}
	var full []string
	if moving >= b.Total {
		full = append(full, fmt.Sprintf("%d moves at once (the drain's total)", b.Total))
	}
	for h, n := range perSource {
		if n >= b.PerSource {
			full = append(full, fmt.Sprintf("%d leaving %s (per source host)", n, h))
		}
	}
	if len(full) == 0 {
		return nil
	}
	slices.Sort(full)
	return finding(info, subj, fmt.Sprintf("%d move(s) wait for a slot: the budgets are in use (%s); they start as running moves end", pending, strings.Join(full, "; ")))
}

func list(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:n], ", ") + fmt.Sprintf(" and %d more", len(names)-n)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

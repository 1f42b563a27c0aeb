package drain

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/fsm"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Proposer replicates a command (the raft node).
type Proposer interface {
	Propose(ctx context.Context, cmd *fsmv1.Command) (fsm.Result, error)
}

// Placer chooses a host for a devserver whose planned destination has no room left
// (capacity.Index).
type Placer interface {
	Place(req *capacity.Request) capacity.Decision
}

// DefaultMaxAttempts is how many migrations a drain starts for one devserver before it leaves
// it blocked.
const DefaultMaxAttempts = 3

// RequestedBy is what a drain's migrations carry as requested_by: the migration queue lets
// concurrent drains take turns by it, and a new leader finds a drain's moves by it.
func RequestedBy(drain string) string { return "drain:" + drain }

// Config wires a Controller.
type Config struct {
	Store  *state.Store
	Raft   Proposer
	Placer Placer
	// Node names this node in the timeline ("leader n2 took the drain over").
	Node   string
	Logger *slog.Logger
	// Now is the clock deadlines are read on (default time.Now); Tick how often the controller
	// looks again without a change of state (default 1s), for deadlines.
	Now  func() time.Time
	Tick time.Duration
	// MaxAttempts: migrations per devserver (default 3).
	MaxAttempts uint32
}

// Controller runs drains on the leader: it starts their moves under their budgets, follows
// them through their migrations, and applies deadlines and cancellations. All it knows is in
// the replicated state, so a new leader's controller continues where the last one stopped.
type Controller struct {
	cfg Config
	log *slog.Logger
}

// New returns a drain controller.
func New(cfg Config) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	cfg.MaxAttempts = cmp.Or(cfg.MaxAttempts, DefaultMaxAttempts)
	return &Controller{cfg: cfg, log: cfg.Logger.With("controller", "drains")}
}

// Name identifies the controller.
func (c *Controller) Name() string { return "drains" }

// Run drives every running drain until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	took := map[string]bool{}
	tick := time.NewTicker(c.cfg.Tick)
	defer tick.Stop()
	for {
		v := c.cfg.Store.View()
		for _, d := range v.Drains() {
			if state.DrainFinal(d.GetState()) {
				continue
			}
			if !took[d.GetId()] {
				// The timeline shows every leader that drove the drain.
				if c.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_UpdateDrain{UpdateDrain: &fsmv1.UpdateDrain{Id: d.GetId(),
					Events: []*v1.DrainEvent{{Kind: "leader", Detail: "the drain is driven by the leader " + cmp.Or(c.cfg.Node, "(this node)")}}}}}) == nil {
					took[d.GetId()] = true
				}
			}
			c.step(ctx, v, d)
		}
		changed, stop := c.cfg.Store.Changed(v, state.TableDrains, state.TableMigrations)
		select {
		case <-ctx.Done():
		case <-changed:
		case <-tick.C:
		}
		stop()
		if ctx.Err() != nil {
			return nil
		}
	}
}

func (c *Controller) propose(ctx context.Context, cmd *fsmv1.Command) error {
	_, err := c.apply(ctx, cmd)
	return err
}

func (c *Controller) apply(ctx context.Context, cmd *fsmv1.Command) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := c.cfg.Raft.Propose(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return res.Value, res.Err
}

// BudgetsOf is a drain's budgets with devfleet's defaults for the fields left zero.
func BudgetsOf(p *v1.DrainBudgets) Budgets {
	return Budgets{PerSource: int(p.GetPerSource()), PerDest: int(p.GetPerDest()), PerSite: int(p.GetPerSite()), Total: int(p.GetTotal()),
		BandwidthMiBps: p.GetBandwidthMibps()}.WithDefaults()
}

// budget counts a drain's moves in flight against its budgets.
type budget struct {
	b              Budgets
	src, dst, site map[string]int
	total          int
	siteOf         func(host string) string
}

func (b *budget) fits(src, dst string) bool {
	s, t := b.siteOf(src), b.siteOf(dst)
	return b.total < b.b.Total && b.src[src] < b.b.PerSource && (dst == "" || b.dst[dst] < b.b.PerDest) &&
		b.site[s] < b.b.PerSite && (t == "" || t == s || b.site[t] < b.b.PerSite)
}

func (b *budget) add(src, dst string) {
	s, t := b.siteOf(src), b.siteOf(dst)
	b.total++
	b.src[src]++
	if dst != "" {
		b.dst[dst]++
	}
	b.site[s]++
	if t != "" && t != s {
		b.site[t]++
	}
}

// step takes a running drain one step further from the state in v: it records how its moves
// ended, starts new ones within the budgets, applies the deadline or the cancellation, and
// ends the drain when nothing is left to do.
func (c *Controller) step(ctx context.Context, v *state.View, d *v1.Drain) {
	now := c.cfg.Now()
	items := v.DrainItems(d.GetId())
	var updates []*fsmv1.DrainItemUpdate
	var events []*v1.DrainEvent
	siteOf := func(host string) string {
		if h, err := v.GetHost(host); err == nil {
			return h.GetSite()
		}
		return ""
	}
	b := &budget{b: BudgetsOf(d.GetBudgets()), src: map[string]int{}, dst: map[string]int{}, site: map[string]int{}, siteOf: siteOf}
	if d.GetEvacuation() {
		c.evacuationStep(ctx, v, d)
		return
	}
	pastDeadline := d.GetDeadline() != nil && now.After(d.GetDeadline().AsTime())
	var pending []*v1.DrainItem
	moving := 0
	for _, it := range items {
		switch it.GetState() {
		case v1.DrainItemState_DRAIN_ITEM_STATE_MOVING:
			if u := c.follow(ctx, v, d, it); u != nil {
				updates = append(updates, u)
				if u.GetState() != v1.DrainItemState_DRAIN_ITEM_STATE_MOVING {
					if u.GetState() == v1.DrainItemState_DRAIN_ITEM_STATE_PENDING {
						pending = append(pending, it)
					}
					continue
				}
			}
			moving++
			b.add(it.GetSourceHost(), it.GetDestHost())
		case v1.DrainItemState_DRAIN_ITEM_STATE_PENDING:
			// A move started by a leader that died before recording it: adopt it.
			if m := v.ActiveMigration(it.GetDevserver()); m != nil && m.GetRequestedBy() == RequestedBy(d.GetId()) {
				updates = append(updates, &fsmv1.DrainItemUpdate{Devserver: it.GetDevserver(), State: v1.DrainItemState_DRAIN_ITEM_STATE_MOVING,
					MigrationId: m.GetId(), DestHost: m.GetDestHost(), Attempts: it.GetAttempts() + 1, From: []v1.DrainItemState{v1.DrainItemState_DRAIN_ITEM_STATE_PENDING},
					Event: "moving", Detail: "to " + m.GetDestHost() + " (migration " + m.GetId() + ", adopted)"})
				moving++
				b.add(it.GetSourceHost(), m.GetDestHost())
				continue
			}
			pending = append(pending, it)
		case v1.DrainItemState_DRAIN_ITEM_STATE_BLOCKED:
			if it.GetKind() == v1.DrainItemKind_DRAIN_ITEM_KIND_PHYSICAL {
				c.tellOwner(ctx, d, it, v1.NoticeKind_NOTICE_KIND_MAINTENANCE, "its host "+it.GetSourceHost()+" goes into maintenance ("+d.GetReason()+
					")"+deadlineText(d)+"; a whole machine cannot move: save your work")
			}
		}
	}
	if !d.GetCancelRequested() {
		c.containers(ctx, v, d, pastDeadline)
	}
	switch {
	case d.GetCancelRequested(): // no new moves; what is pending is left where it is
		if moving == 0 {
			c.finish(ctx, d, v1.DrainState_DRAIN_STATE_CANCELLED, "cancelled on request", d.GetUncordonOnCancel(), updates)
			return
		}
	case pastDeadline && d.GetDeadlineAction() != v1.DeadlineAction_DEADLINE_ACTION_COLD_MIGRATE:
		if d.GetDeadlineAction() == v1.DeadlineAction_DEADLINE_ACTION_STOP {
			for _, it := range pending {
				if u := c.strand(ctx, d, it); u != nil {
					updates = append(updates, u)
				}
			}
		}
		if moving == 0 {
			c.finish(ctx, d, v1.DrainState_DRAIN_STATE_INCOMPLETE, fmt.Sprintf("the deadline passed with %d devservers left (%s)",
				len(pending), deadlineActionName(d.GetDeadlineAction())), false, updates)
			return
		}
	default:
		cold := pastDeadline // the deadline's cold-migrate: what is left moves cold
		slices.SortStableFunc(pending, func(a, b *v1.DrainItem) int {
			return cmp.Or(cmp.Compare(a.GetWave(), b.GetWave()), strings.Compare(a.GetDevserver(), b.GetDevserver()))
		})
		for _, it := range pending {
			if !b.fits(it.GetSourceHost(), it.GetDestHost()) {
				continue
			}
			if u := c.start(ctx, v, d, it, cold); u != nil {
				updates = append(updates, u)
				if u.GetState() == v1.DrainItemState_DRAIN_ITEM_STATE_MOVING {
					moving++
					b.add(it.GetSourceHost(), u.GetDestHost())
				}
			}
		}
		if moving == 0 && len(pending) == 0 {
			blocked := 0
			for _, it := range items {
				if it.GetState() == v1.DrainItemState_DRAIN_ITEM_STATE_BLOCKED && it.GetKind() != v1.DrainItemKind_DRAIN_ITEM_KIND_PHYSICAL {
					blocked++
				}
			}
			for _, u := range updates {
				if u.GetState() == v1.DrainItemState_DRAIN_ITEM_STATE_BLOCKED {
					blocked++
				}
			}
			if blocked == 0 {
				c.finish(ctx, d, v1.DrainState_DRAIN_STATE_SUCCEEDED, "", false, updates)
			} else {
				c.finish(ctx, d, v1.DrainState_DRAIN_STATE_INCOMPLETE, fmt.Sprintf("%d devservers could not move", blocked), false, updates)
			}
			return
		}
	}
	if pastDeadline && !hasEvent(v, d.GetId(), "deadline") {
		events = append(events, &v1.DrainEvent{Kind: "deadline", Detail: "the deadline passed: " + deadlineActionName(d.GetDeadlineAction())})
	}
	if len(updates) > 0 || len(events) > 0 {
		if err := c.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_UpdateDrain{UpdateDrain: &fsmv1.UpdateDrain{
			Id: d.GetId(), Items: updates, Events: events}}}); err != nil && ctx.Err() == nil {
			c.log.Warn("recording a drain's steps failed", "drain", d.GetId(), "error", err)
		}
	}
}

// follow looks at a moving item's migration: how it ended, or, when the drain is cancelled
// with abort_in_flight, asks for its abort. It returns the item's update, or nil.
func (c *Controller) follow(ctx context.Context, v *state.View, d *v1.Drain, it *v1.DrainItem) *fsmv1.DrainItemUpdate {
	from := []v1.DrainItemState{v1.DrainItemState_DRAIN_ITEM_STATE_MOVING}
	m, err := v.GetMigration(it.GetMigrationId())
	if err != nil {
		return &fsmv1.DrainItemUpdate{Devserver: it.GetDevserver(), State: v1.DrainItemState_DRAIN_ITEM_STATE_PENDING, From: from,
			Event: "move-failed", Detail: "its migration " + it.GetMigrationId() + " is gone"}
	}
	switch m.GetPhase() {
	case v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED:
		took := ""
		if m.GetStartTime() != nil && m.GetEndTime() != nil {
			took = " in " + m.GetEndTime().AsTime().Sub(m.GetStartTime().AsTime()).Round(100*time.Millisecond).String()
		}
		return &fsmv1.DrainItemUpdate{Devserver: it.GetDevserver(), State: v1.DrainItemState_DRAIN_ITEM_STATE_DONE, DestHost: m.GetDestHost(), From: from,
			Event: "moved", Detail: "to " + m.GetDestHost() + took + " (migration " + m.GetId() + ")"}
	case v1.MigrationPhase_MIGRATION_PHASE_FAILED, v1.MigrationPhase_MIGRATION_PHASE_ABORTED:
		why := state.StateOfMigration(m.GetPhase()) + ": " + m.GetFailureReason()
		if d.GetCancelRequested() {
			return &fsmv1.DrainItemUpdate{Devserver: it.GetDevserver(), State: v1.DrainItemState_DRAIN_ITEM_STATE_PENDING, From: from,
				Event: "move-stopped", Detail: "migration " + m.GetId() + " " + why}
		}
		if it.GetAttempts() >= c.cfg.MaxAttempts {
			return &fsmv1.DrainItemUpdate{Devserver: it.GetDevserver(), State: v1.DrainItemState_DRAIN_ITEM_STATE_BLOCKED, From: from,
				Blocker: fmt.Sprintf("%d moves failed; last: %s", it.GetAttempts(), why), Event: "blocked", Detail: "migration " + m.GetId() + " " + why}
		}
		return &fsmv1.DrainItemUpdate{Devserver: it.GetDevserver(), State: v1.DrainItemState_DRAIN_ITEM_STATE_PENDING, From: from,
			Event: "move-failed", Detail: "migration " + m.GetId() + " " + why + "; it will be tried again"}
	}
	if d.GetCancelRequested() && d.GetAbortInFlight() && !m.GetAbortRequested() {
		if err := c.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_RequestMigrationAbort{RequestMigrationAbort: &fsmv1.RequestMigrationAbort{Id: m.GetId()}}}); err != nil {
			c.log.Warn("aborting a cancelled drain's migration failed", "drain", d.GetId(), "migration", m.GetId(), "error", err)
		}
	}
	return nil
}

// start records the migration that moves a pending item: to its planned destination, or, when
// that has no room any more, to the host capacity picks. It returns the item's update.
func (c *Controller) start(ctx context.Context, v *state.View, d *v1.Drain, it *v1.DrainItem, cold bool) *fsmv1.DrainItemUpdate {
	from := []v1.DrainItemState{v1.DrainItemState_DRAIN_ITEM_STATE_PENDING}
	dev, err := v.GetDevserver(it.GetDevserver())
	if err != nil || dev.GetId() != it.GetDevserverId() {
		return &fsmv1.DrainItemUpdate{Devserver: it.GetDevserver(), State: v1.DrainItemState_DRAIN_ITEM_STATE_DONE, From: from,
			Event: "gone", Detail: "deleted by its owner; nothing to move"}
	}
	if dev.GetHost() != it.GetSourceHost() {
		return &fsmv1.DrainItemUpdate{Devserver: it.GetDevserver(), State: v1.DrainItemState_DRAIN_ITEM_STATE_DONE, DestHost: dev.GetHost(), From: from,
			Event: "moved", Detail: "it already runs on " + dev.GetHost()}
	}
	cold = cold || it.GetKind() == v1.DrainItemKind_DRAIN_ITEM_KIND_COLD
	bw := BudgetsOf(d.GetBudgets()).BandwidthMiBps
	build := func(dest string) *fsmv1.Command {
		return &fsmv1.Command{Op: &fsmv1.Command_CreateMigration{CreateMigration: &fsmv1.CreateMigration{Migration: &v1.Migration{
			Id: uuid.NewString(), Devserver: dev.GetName(), DevserverId: dev.GetId(), DestHost: dest, DestRegion: it.GetDestRegion(),
			Reason: v1.MigrationReason_MIGRATION_REASON_MAINTENANCE, Priority: d.GetPriority(), RequestedBy: RequestedBy(d.GetId()),
			Cold: cold, Policy: &v1.MigrationPolicy{BandwidthMibps: bw}}}}}
	}
	dest := it.GetDestHost()
	var m *v1.Migration
	if dest != "" {
		if raw, err := c.apply(ctx, build(dest)); err == nil {
			m = raw.(*v1.Migration)
		} else if !apierror.HasCode(err, apierror.CodeNoRoom) && apierror.KindOf(err) != apierror.FailedPrecondition {
			return c.cannotStart(it, err)
		}
	}
	if m == nil && c.cfg.Placer != nil {
		f, err := v.GetFlavor(dev.GetFlavor())
		if err != nil {
			return c.cannotStart(it, err)
		}
		avoid := map[string]bool{}
		for _, h := range d.GetHosts() {
			avoid[h] = true
		}
		dec := c.cfg.Placer.Place(&capacity.Request{Flavor: f, Region: cmp.Or(it.GetDestRegion(), dev.GetRegion()), Spread: capacity.SpreadHosts,
			Owner: dev.GetOwner(), Avoid: capacity.Avoid{Hosts: avoid}})
		if dec.Host == nil {
			c.log.Info("no room for a drained devserver yet; waiting", "drain", d.GetId(), "devserver", dev.GetName(), "why", dec.Explanation.String())
			return nil // stays pending: capacity may free up
		}
		raw, err := c.apply(ctx, build(dec.Host.GetName()))
		if err != nil {
			return c.cannotStart(it, err)
		}
		m = raw.(*v1.Migration)
	}
	if m == nil {
		return nil
	}
	kind := "live"
	if m.GetCold() {
		kind = "cold"
	}
	return &fsmv1.DrainItemUpdate{Devserver: it.GetDevserver(), State: v1.DrainItemState_DRAIN_ITEM_STATE_MOVING, MigrationId: m.GetId(),
		DestHost: m.GetDestHost(), Attempts: it.GetAttempts() + 1, From: from,
		Event: "moving", Detail: fmt.Sprintf("%s to %s (migration %s, attempt %d)", kind, m.GetDestHost(), m.GetId(), it.GetAttempts()+1)}
}

// cannotStart is the update of an item whose migration was refused for a reason that another
// pass would not change (its devserver is stopped, a whole machine, ...).
func (c *Controller) cannotStart(it *v1.DrainItem, err error) *fsmv1.DrainItemUpdate {
	if k := apierror.KindOf(err); k == apierror.Unavailable || k == 0 {
		return nil // not the move's fault: the next pass tries again
	}
	return &fsmv1.DrainItemUpdate{Devserver: it.GetDevserver(), State: v1.DrainItemState_DRAIN_ITEM_STATE_BLOCKED,
		From: []v1.DrainItemState{v1.DrainItemState_DRAIN_ITEM_STATE_PENDING}, Blocker: apierror.ReasonOf(err), Event: "blocked", Detail: apierror.ReasonOf(err)}
}

// strand stops a devserver left on a drained host at the deadline (DEADLINE_ACTION_STOP) and
// tells its owner.
func (c *Controller) strand(ctx context.Context, d *v1.Drain, it *v1.DrainItem) *fsmv1.DrainItemUpdate {
	if err := c.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_UpdateDevserver{UpdateDevserver: &fsmv1.UpdateDevserver{
		Devserver: &v1.Devserver{Name: it.GetDevserver(), Power: v1.Power_POWER_OFF}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"power"}}}}}); err != nil &&
		apierror.KindOf(err) != apierror.NotFound {
		c.log.Warn("stopping a stranded devserver failed", "drain", d.GetId(), "devserver", it.GetDevserver(), "error", err)
		return nil
	}
	c.tellOwner(ctx, d, it, v1.NoticeKind_NOTICE_KIND_STRANDED, "stopped and left on "+it.GetSourceHost()+", which goes into maintenance ("+
		d.GetReason()+"): the drain's deadline passed before it could move")
	return &fsmv1.DrainItemUpdate{Devserver: it.GetDevserver(), State: v1.DrainItemState_DRAIN_ITEM_STATE_STRANDED,
		From: []v1.DrainItemState{v1.DrainItemState_DRAIN_ITEM_STATE_PENDING}, Blocker: "stopped at the deadline", Event: "stranded", Detail: "stopped at the deadline; its owner was told"}
}

// containers handles the drained hosts' containers, which do not move: warm ones are released
// (their pools refill on other hosts), claimed ones' owners are told, and at the deadline those
// are released too.
func (c *Controller) containers(ctx context.Context, v *state.View, d *v1.Drain, pastDeadline bool) {
	for _, h := range d.GetHosts() {
		for _, ct := range v.ContainersOn(h) {
			if ct.GetState() != v1.ContainerState_CONTAINER_STATE_RUNNING && ct.GetState() != v1.ContainerState_CONTAINER_STATE_PROVISIONING {
				continue
			}
			claimed := ct.GetClaimedBy() != ""
			if claimed && !pastDeadline {
				c.tellOwner(ctx, d, &v1.DrainItem{Devserver: ct.GetName(), Owner: ct.GetClaimedBy(), SourceHost: h}, v1.NoticeKind_NOTICE_KIND_MAINTENANCE,
					"its host "+h+" goes into maintenance ("+d.GetReason()+"): the container ends at its expiry"+cmp.Or(deadlineText(d), "")+
						"; claim another for new work")
				continue
			}
			why := "its host " + h + " is drained (" + d.GetId() + ")"
			if claimed {
				why = "the deadline of drain " + d.GetId() + " of its host " + h + " passed"
			}
			if _, err := c.apply(ctx, &fsmv1.Command{Op: &fsmv1.Command_ReleaseContainer{ReleaseContainer: &fsmv1.ReleaseContainer{Name: ct.GetName(), Reason: why}}}); err != nil {
				c.log.Warn("releasing a drained host's container failed", "drain", d.GetId(), "container", ct.GetName(), "error", err)
			}
		}
	}
}

// tellOwner records a notice for an item's owner, once per drain and kind.
func (c *Controller) tellOwner(ctx context.Context, d *v1.Drain, it *v1.DrainItem, kind v1.NoticeKind, text string) {
	id := fmt.Sprintf("drain-%s-%s-%d", d.GetId(), it.GetDevserver(), kind)
	if _, err := c.cfg.Store.View().GetNotice(id); err == nil {
		return
	}
	err := c.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_CreateNotice{CreateNotice: &fsmv1.CreateNotice{Notice: &v1.Notice{
		Id: id, Owner: it.GetOwner(), Kind: kind, Subject: it.GetDevserver(), Message: "devserver " + it.GetDevserver() + ": " + text}}}})
	if err != nil && apierror.KindOf(err) != apierror.AlreadyExists {
		c.log.Warn("telling a drained devserver's owner failed", "drain", d.GetId(), "devserver", it.GetDevserver(), "error", err)
	}
}

// finish records the end of a drain, with the item updates of the same step.
func (c *Controller) finish(ctx context.Context, d *v1.Drain, s v1.DrainState, reason string, uncordon bool, updates []*fsmv1.DrainItemUpdate) {
	if len(updates) > 0 {
		if err := c.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_UpdateDrain{UpdateDrain: &fsmv1.UpdateDrain{Id: d.GetId(), Items: updates}}}); err != nil {
			return
		}
	}
	if err := c.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_FinishDrain{FinishDrain: &fsmv1.FinishDrain{
		Id: d.GetId(), State: s, Reason: reason, Uncordon: uncordon}}}); err != nil && ctx.Err() == nil {
		c.log.Warn("recording the end of a drain failed", "drain", d.GetId(), "error", err)
		return
	}
	c.log.Info("drain ended", "drain", d.GetId(), "state", state.DrainStateName(s), "reason", reason)
}

func hasEvent(v *state.View, drain, kind string) bool {
	return slices.ContainsFunc(v.DrainEvents(drain), func(e *v1.DrainEvent) bool { return e.GetKind() == kind })
}

func deadlineText(d *v1.Drain) string {
	if d.GetDeadline() == nil {
		return ""
	}
	return " by " + d.GetDeadline().AsTime().UTC().Format(time.RFC3339)
}

func deadlineActionName(a v1.DeadlineAction) string {
	switch a {
	case v1.DeadlineAction_DEADLINE_ACTION_COLD_MIGRATE:
		return "the rest moves cold"
	case v1.DeadlineAction_DEADLINE_ACTION_STOP:
		return "the rest is stopped and stranded"
	}
	return "the rest is left where it is"
}

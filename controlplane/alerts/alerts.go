// Package alerts is the leader controller that watches for conditions that want a human (a drain
// without progress, N-1 broken, a host unreachable, a migration failing again and again), opens
// an alert in the replicated state, runs the analyzers that explain it at once and records their
// findings, and closes the alert when the condition clears.
package alerts

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/analyzer"
	"github.com/devfleet/devfleet/controlplane/analyzer/builtin"
	"github.com/devfleet/devfleet/controlplane/fsm"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Conditions.
const (
	DrainStalled     = "drain-stalled"
	CapacityBroken   = "capacity-n1-broken"
	HostUnreachable  = "host-unreachable"
	MigrationFailing = "migration-failing"
)

// Defaults of Config.
const (
	DefaultInterval        = 15 * time.Second
	DefaultDrainStall      = builtin.DefaultStall
	DefaultHostUnreachable = 2 * time.Minute
	// DefaultMigrationFailures is how many failed attempts make a migration "failing".
	DefaultMigrationFailures = 2
	// failedRecently keeps an alert open this long after its migration failed for good.
	failedRecently = 30 * time.Minute
	// capacityWindow is how far back capacity-risk looks for the change that broke N-1 when
	// an alert runs it: far enough for an incident, near enough to rebuild cheaply.
	capacityWindow = "2h"
)

// Proposer proposes commands to raft (*raftnode.Node).
type Proposer interface {
	Propose(ctx context.Context, cmd *fsmv1.Command) (fsm.Result, error)
}

// Capacity gives the N-1 check last computed (false before the first).
type Capacity interface {
	Losses() ([]capacity.RegionLoss, bool)
}

// Config wires a Controller.
type Config struct {
	Store     *state.Store
	Raft      Proposer
	Analyzers *analyzer.Registry
	// Source is what the analyzers read (the node's state and history).
	Source analyzer.Source
	// Capacity is the leader's N-1 check (capacitywatch), computed once for the gauges and the
	// alerts.
	Capacity Capacity
	Logger   *slog.Logger
	// Interval between evaluations; DrainStall, HostUnreachable: how long before those
	// conditions hold. Zero takes the defaults.
	Interval, DrainStall, HostUnreachable time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Controller evaluates the conditions on the leader.
type Controller struct {
	cfg Config
	log *slog.Logger
	// progress remembers each running drain's progress and when it last changed, since this
	// node became leader: a new leader measures a stall from its own start.
	progress map[string]drainMark
}

type drainMark struct {
	sig  string
	when time.Time
}

// New returns a controller.
func New(cfg Config) *Controller {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.DrainStall <= 0 {
		cfg.DrainStall = DefaultDrainStall
	}
	if cfg.HostUnreachable <= 0 {
		cfg.HostUnreachable = DefaultHostUnreachable
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Controller{cfg: cfg, log: cfg.Logger.With("component", "alerts")}
}

// Name identifies the controller.
func (c *Controller) Name() string { return "alerts" }

// Run evaluates the conditions every Interval until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	c.progress = map[string]drainMark{}
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		if err := c.Evaluate(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("evaluating alert conditions failed; trying again", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// condition is one that holds now.
type condition struct {
	name, subject string
	severity      v1.Severity
	summary       string
	analyzer      string
	inputs        map[string]string
}

func (k condition) key() string { return k.name + "/" + k.subject }

// Evaluate opens alerts for conditions that hold, analyzes the ones without findings yet, and
// closes those whose condition cleared.
func (c *Controller) Evaluate(ctx context.Context) error {
	v := c.cfg.Store.View()
	holds := map[string]condition{}
	conds, unknown := c.conditions(v)
	for _, k := range conds {
		holds[k.key()] = k
	}
	open := map[string]*v1.Alert{}
	for _, a := range v.Alerts(false) {
		open[a.GetCondition()+"/"+a.GetSubject()] = a
	}
	for _, key := range slices.Sorted(maps.Keys(open)) {
		a := open[key]
		if _, ok := holds[key]; ok || unknown[a.GetCondition()] {
			continue // holds, or cannot be told yet: it stays open
		}
		if _, err := c.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_CloseAlert{CloseAlert: &fsmv1.CloseAlert{Id: a.GetId(), Reason: "the condition cleared"}}}); err != nil {
			return err
		}
		c.log.Info("alert closed", "alert", a.GetId(), "condition", a.GetCondition(), "subject", a.GetSubject())
	}
	for _, key := range slices.Sorted(maps.Keys(holds)) {
		k := holds[key]
		a := open[key]
		if a == nil {
			res, err := c.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_OpenAlert{OpenAlert: &fsmv1.OpenAlert{Alert: &v1.Alert{
				Condition: k.name, Subject: k.subject, Severity: k.severity, Summary: k.summary}}}})
			if err != nil {
				return err
			}
			opened, ok := res.(*v1.Alert)
			if !ok {
				return fmt.Errorf("opening an alert returned %T", res)
			}
			a = opened
			c.log.Warn("alert opened", "alert", a.GetId(), "condition", k.name, "subject", k.subject, "summary", k.summary)
		}
		if len(a.GetFindings()) > 0 || a.GetAnalysisError() != "" {
			continue // analyzed when it opened (perhaps by the previous leader)
		}
		if err := c.analyze(ctx, a, k); err != nil {
			return err
		}
	}
	return nil
}

// analyze runs the condition's analyzer and records what it found (or why it could not).
func (c *Controller) analyze(ctx context.Context, a *v1.Alert, k condition) error {
	set := &fsmv1.SetAlertFindings{Id: a.GetId()}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	r, err := c.cfg.Analyzers.Run(actx, c.cfg.Source, k.analyzer, k.inputs)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		set.AnalysisError = fmt.Sprintf("%s: %v", k.analyzer, err)
		c.log.Warn("an alert's analyzer failed", "alert", a.GetId(), "analyzer", k.analyzer, "error", err)
	} else {
		set.Findings, set.Chain = r.GetFindings(), r.GetChain()
		if len(set.Findings) > 100 {
			set.Findings = set.Findings[:100]
		}
		if len(set.Findings) == 0 {
			set.AnalysisError = k.analyzer + " found nothing to add"
		}
	}
	_, err = c.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_SetAlertFindings{SetAlertFindings: set}})
	return err
}

func (c *Controller) propose(ctx context.Context, cmd *fsmv1.Command) (any, error) {
	res, err := c.cfg.Raft.Propose(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return res.Value, res.Err
}

// conditions lists the conditions that hold in v now, and those it cannot tell yet (whose open
// alerts stay open).
func (c *Controller) conditions(v *state.View) (out []condition, unknown map[string]bool) {
	now := c.cfg.Now()
	out = append(out, c.stalledDrains(v, now)...)
	broken, known := c.brokenCapacity(v)
	out = append(out, broken...)
	if !known {
		unknown = map[string]bool{CapacityBroken: true}
	}
	v.EachHost(func(h *v1.Host) {
		if h.GetHealth() != v1.HostHealth_HOST_HEALTH_UNHEALTHY || h.GetState() == v1.HostState_HOST_STATE_RETIRED {
			return
		}
		seen := h.GetLastSeenTime()
		if seen != nil && now.Sub(seen.AsTime()) < c.cfg.HostUnreachable {
			return
		}
		out = append(out, condition{name: HostUnreachable, subject: "host/" + h.GetName(), severity: v1.Severity_SEVERITY_CRITICAL,
			summary:  fmt.Sprintf("host %s has been unreachable for more than %s: %s", h.GetName(), c.cfg.HostUnreachable, h.GetHealthReason()),
			analyzer: builtin.HostFlapping, inputs: map[string]string{"host": h.GetName()}})
	})
	for _, m := range v.Migrations() {
		failed := m.GetPhase() == v1.MigrationPhase_MIGRATION_PHASE_FAILED && m.GetEndTime() != nil && now.Sub(m.GetEndTime().AsTime()) < failedRecently
		failures := int(m.GetAttempts())
		if !failed {
			failures-- // the attempt running now has not failed
		}
		if m.GetFailureReason() == "" || failures < DefaultMigrationFailures || (state.Final(m.GetPhase()) && !failed) {
			continue
		}
		out = append(out, condition{name: MigrationFailing, subject: "migration/" + m.GetId(), severity: v1.Severity_SEVERITY_WARNING,
			summary:  fmt.Sprintf("migration %s of %s failed %d times; the last: %s", m.GetId(), m.GetDevserver(), failures, m.GetFailureReason()),
			analyzer: builtin.MigrationSlow, inputs: map[string]string{"migration": m.GetId()}})
	}
	return out, unknown
}

// stalledDrains are the running drains whose items have not progressed (an item reaching an
// end, or more bytes copied) for DrainStall.
func (c *Controller) stalledDrains(v *state.View, now time.Time) []condition {
	var out []condition
	running := map[string]bool{}
	for _, d := range v.Drains() {
		if state.DrainFinal(d.GetState()) || d.GetEvacuation() {
			continue
		}
		id := d.GetId()
		running[id] = true
		sig := progressSignature(v.DrainItems(id))
		mark, ok := c.progress[id]
		if !ok || mark.sig != sig {
			c.progress[id] = drainMark{sig: sig, when: now}
			continue
		}
		if now.Sub(mark.when) < c.cfg.DrainStall {
			continue
		}
		out = append(out, condition{name: DrainStalled, subject: "drain/" + id, severity: v1.Severity_SEVERITY_WARNING,
			summary:  fmt.Sprintf("drain %s has made no progress for %s", id, now.Sub(mark.when).Round(time.Second)),
			analyzer: builtin.DrainStuck, inputs: map[string]string{"drain": id, "stall": c.cfg.DrainStall.String()}})
	}
	for id := range c.progress {
		if !running[id] {
			delete(c.progress, id)
		}
	}
	return out
}

// progressSignature changes whenever an item reaches an end or copies more bytes.
func progressSignature(items []*v1.DrainItem) string {
	done := 0
	var copied uint64
	for _, it := range items {
		switch it.GetState() {
		case v1.DrainItemState_DRAIN_ITEM_STATE_DONE, v1.DrainItemState_DRAIN_ITEM_STATE_LEFT, v1.DrainItemState_DRAIN_ITEM_STATE_STRANDED:
			done++
		}
		copied += it.GetProgress().GetMemoryProcessedBytes() + it.GetProgress().GetDiskProcessedBytes()
	}
	return fmt.Sprintf("%d/%d", done, copied)
}

// brokenCapacity is the regions whose loss would leave devservers without a home, from the N-1
// check capacitywatch keeps (known is false before its first). A fleet of one region has
// nowhere to go when it is lost: that is its design, not an alert.
func (c *Controller) brokenCapacity(v *state.View) (out []condition, known bool) {
	losses, known := c.cfg.Capacity.Losses()
	if !known || len(v.Regions()) < 2 {
		return nil, known
	}
	for _, l := range losses {
		if l.Scope != "region" || l.Loss.OK() {
			continue
		}
		r := l.Name
		out = append(out, condition{name: CapacityBroken, subject: "region/" + r, severity: v1.Severity_SEVERITY_CRITICAL,
			summary:  fmt.Sprintf("N-1 is broken: losing region %s would leave %d devserver(s) without a home", r, len(l.Loss.Homeless)),
			analyzer: builtin.CapacityRisk, inputs: map[string]string{"region": r, "window": capacityWindow}})
	}
	return out, true
}

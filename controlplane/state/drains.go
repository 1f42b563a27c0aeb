package state

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/validate"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// DrainFinal reports whether a drain state is an end.
func DrainFinal(s v1.DrainState) bool {
	return s == v1.DrainState_DRAIN_STATE_SUCCEEDED || s == v1.DrainState_DRAIN_STATE_INCOMPLETE || s == v1.DrainState_DRAIN_STATE_CANCELLED
}

// drainItemKey keys a drain's item: the drain, then the devserver.
func drainItemKey(drain, devserver string) string { return drain + "/" + devserver }

// drainEventKey keys a drain's event so that the table's order is the timeline's.
func drainEventKey(drain string, seq uint64) string { return fmt.Sprintf("%s/%020d", drain, seq) }

// GetDrain returns a drain or NotFound.
func (v *View) GetDrain(id string) (*v1.Drain, error) {
	if raw := v.first(TableDrains, "id", id); raw != nil {
		return raw.(*v1.Drain), nil
	}
	return nil, apierror.Missing("drain", id)
}

// Drains returns every drain, by ID.
func (v *View) Drains() []*v1.Drain { return rows[*v1.Drain](v, TableDrains, "id") }

// DrainItems returns a drain's items, by devserver name.
func (v *View) DrainItems(drain string) []*v1.DrainItem {
	return rows[*v1.DrainItem](v, TableDrainItems, "drain", drain)
}

// DrainEvents returns a drain's timeline, oldest first.
func (v *View) DrainEvents(drain string) []*v1.DrainEvent {
	return rows[*v1.DrainEvent](v, TableDrainEvents, "drain", drain)
}

// DrainOn returns the running drain that includes host, or nil.
func (v *View) DrainOn(host string) *v1.Drain {
	for _, d := range v.Drains() {
		if !DrainFinal(d.GetState()) && slices.Contains(d.GetHosts(), host) {
			return d
		}
	}
	return nil
}

// StartDrain records a drain that the leader planned, with its items, and takes its hosts out
// of service (draining) in the same step: a refused drain changes nothing. Every host must
// exist, be active or cordoned, and belong to no other running drain.
func (w *WriteTxn) StartDrain(in *v1.Drain, items []*v1.DrainItem) (*v1.Drain, error) {
	d := proto.Clone(in).(*v1.Drain)
	switch {
	case d.GetId() == "":
		return nil, apierror.Invalid("drain.id", "must be stamped by the leader")
	case len(d.GetHosts()) == 0:
		return nil, apierror.Invalid("drain.hosts", "name at least one host (or a site or a region that has hosts)")
	case d.GetDeadline() != nil && !d.GetDeadline().AsTime().After(w.now.AsTime()):
		return nil, apierror.Invalid("drain.deadline", "%s is in the past", d.GetDeadline().AsTime().UTC().Format("2006-01-02T15:04:05Z"))
	}
	if err := validate.Reason("drain.reason", d.GetReason()); err != nil {
		return nil, err
	}
	if strings.TrimSpace(d.GetReason()) == "" {
		return nil, apierror.Invalid("drain.reason", "say why (it goes to the owners and the timeline)")
	}
	if err := validate.Text("drain.requested_by", d.GetRequestedBy(), 256); err != nil {
		return nil, err
	}
	if w.first(TableDrains, "id", d.GetId()) != nil {
		return nil, apierror.Exists("drain", d.GetId())
	}
	slices.Sort(d.Hosts)
	d.Hosts = slices.Compact(d.Hosts)
	for _, name := range d.GetHosts() {
		h, err := w.GetHost(name)
		if err != nil {
			return nil, err
		}
		if dc := w.DecomOn(name); dc != nil && d.GetRequestedBy() != "decom:"+dc.GetId() {
			return nil, apierror.Blocked("host %q is being decommissioned (%s): its decommission drains it", name, dc.GetId())
		}
		if other := w.DrainOn(name); other != nil {
			return nil, apierror.Blocked("host %q is already being drained by drain %s (%s)", name, other.GetId(), other.GetReason())
		}
		if s := h.GetState(); s != v1.HostState_HOST_STATE_ACTIVE && s != v1.HostState_HOST_STATE_CORDONED && s != v1.HostState_HOST_STATE_DRAINED {
			return nil, apierror.Blocked("host %q is %s; only an active, cordoned or drained host is drained", name, HostStateName(s))
		}
	}
	if d.GetDeadlineAction() == v1.DeadlineAction_DEADLINE_ACTION_UNSPECIFIED {
		d.DeadlineAction = v1.DeadlineAction_DEADLINE_ACTION_LEAVE
	}
	d.State, d.StateReason = v1.DrainState_DRAIN_STATE_RUNNING, ""
	d.CancelRequested, d.AbortInFlight, d.UncordonOnCancel, d.EndTime = false, false, false, nil
	d.ItemsTotal, d.ItemsDone, d.ItemsMoving, d.ItemsBlocked = 0, 0, 0, 0
	d.CreateTime, d.UpdateTime, d.CreateIndex, d.ModifyIndex = w.now, w.now, w.index, w.index
	for _, name := range d.GetHosts() {
		if _, err := w.setHostState(name, "drain "+d.GetId()+": "+d.GetReason(), v1.HostState_HOST_STATE_DRAINING,
			v1.HostState_HOST_STATE_ACTIVE, v1.HostState_HOST_STATE_CORDONED, v1.HostState_HOST_STATE_DRAINED); err != nil {
			return nil, err
		}
	}
	seen := map[string]bool{}
	for _, in := range items {
		it := proto.Clone(in).(*v1.DrainItem)
		if seen[it.GetDevserver()] {
			return nil, apierror.Invalid("items", "devserver %q is listed twice", it.GetDevserver())
		}
		seen[it.GetDevserver()] = true
		if _, err := w.sameDevserver(it.GetDevserver(), it.GetDevserverId()); err != nil {
			return nil, err
		}
		if !slices.Contains(d.GetHosts(), it.GetSourceHost()) {
			return nil, apierror.Invalid("items", "devserver %q is on %s, which the drain does not include", it.GetDevserver(), it.GetSourceHost())
		}
		it.DrainId, it.UpdateTime, it.MigrationPhase, it.Progress = d.GetId(), w.now, v1.MigrationPhase_MIGRATION_PHASE_UNSPECIFIED, nil
		switch it.GetKind() {
		case v1.DrainItemKind_DRAIN_ITEM_KIND_LIVE, v1.DrainItemKind_DRAIN_ITEM_KIND_COLD:
			it.State = v1.DrainItemState_DRAIN_ITEM_STATE_PENDING
		case v1.DrainItemKind_DRAIN_ITEM_KIND_PHYSICAL, v1.DrainItemKind_DRAIN_ITEM_KIND_STRANDED:
			it.State = v1.DrainItemState_DRAIN_ITEM_STATE_BLOCKED
			d.ItemsBlocked++
		default:
			return nil, apierror.Invalid("items.kind", "devserver %q: unknown kind %s", it.GetDevserver(), it.GetKind())
		}
		d.ItemsTotal++
		if err := w.insert(TableDrainItems, it); err != nil {
			return nil, err
		}
	}
	if err := w.insert(TableDrains, d); err != nil {
		return nil, err
	}
	what := "hosts " + strings.Join(d.GetHosts(), ", ")
	if d.GetSite() != "" {
		what = "site " + d.GetSite() + " (" + what + ")"
	} else if d.GetRegion() != "" {
		what = "region " + d.GetRegion() + " (" + what + ")"
	}
	devservers := "devservers"
	if d.GetItemsTotal() == 1 {
		devservers = "devserver"
	}
	detail := fmt.Sprintf("%s by %s: %s; %d %s, %d cannot move", what, d.GetRequestedBy(), d.GetReason(), d.GetItemsTotal(), devservers, d.GetItemsBlocked())
	if d.GetForce() {
		detail += " (forced)"
	}
	if err := w.drainEvent(d.GetId(), 0, "started", "", detail); err != nil {
		return nil, err
	}
	return d, w.drainEvent(d.GetId(), 1, "cordoned", "", "draining, closed to new work: "+strings.Join(d.GetHosts(), ", "))
}

// drainEvent appends one event to a drain's timeline; n orders events within the entry.
func (w *WriteTxn) drainEvent(drain string, n int, kind, devserver, detail string) error {
	seq := w.index<<16 | uint64(n)
	return w.insert(TableDrainEvents, &v1.DrainEvent{DrainId: drain, Seq: seq, Time: w.now, Kind: kind, Devserver: devserver, Detail: detail})
}

// DrainItemUpdate is one item's change in UpdateDrain.
type DrainItemUpdate struct {
	Devserver   string
	State       v1.DrainItemState
	MigrationID string
	DestHost    string
	Blocker     string
	Attempts    uint32
	From        []v1.DrainItemState
	// Event and Detail go to the timeline ("" records none).
	Event, Detail string
}

// UpdateDrain records the drain controller's steps on a running drain's items, and drain-wide
// events. An item update whose from states do not match is skipped (the controller acted on an
// older view); the counts follow the items.
func (w *WriteTxn) UpdateDrain(id string, updates []DrainItemUpdate, events []*v1.DrainEvent) (*v1.Drain, error) {
	cur, err := w.runningDrain(id)
	if err != nil {
		return nil, err
	}
	for i, u := range updates {
		if _, ok := v1.DrainItemState_name[int32(u.State)]; !ok {
			return nil, apierror.Invalid("items.state", "update %d: unknown state %d", i, u.State)
		}
		if err := validate.Text("items.detail", u.Detail, validate.MaxReasonLen); err != nil {
			return nil, err
		}
		if err := validate.Text("items.blocker", u.Blocker, validate.MaxReasonLen); err != nil {
			return nil, err
		}
	}
	d := proto.Clone(cur).(*v1.Drain)
	n := 0
	for _, u := range updates {
		raw := w.first(TableDrainItems, "id", drainItemKey(id, u.Devserver))
		if raw == nil {
			continue
		}
		old := raw.(*v1.DrainItem)
		if len(u.From) > 0 && !slices.Contains(u.From, old.GetState()) {
			continue
		}
		it := proto.Clone(old).(*v1.DrainItem)
		if u.State != v1.DrainItemState_DRAIN_ITEM_STATE_UNSPECIFIED {
			it.State = u.State
		}
		if u.MigrationID != "" {
			it.MigrationId = u.MigrationID
		}
		if u.DestHost != "" {
			it.DestHost = u.DestHost
		}
		if u.Blocker != "" || u.State == v1.DrainItemState_DRAIN_ITEM_STATE_DONE {
			it.Blocker = u.Blocker
		}
		if u.Attempts > 0 {
			it.Attempts = u.Attempts
		}
		it.UpdateTime = w.now
		countItem(d, old.GetState(), -1)
		countItem(d, it.GetState(), +1)
		if err := w.insert(TableDrainItems, it); err != nil {
			return nil, err
		}
		if u.Event != "" {
			if err := w.drainEvent(id, n, u.Event, u.Devserver, u.Detail); err != nil {
				return nil, err
			}
			n++
		}
	}
	for _, e := range events {
		if err := validate.Text("events.detail", e.GetDetail(), validate.MaxReasonLen); err != nil {
			return nil, err
		}
		if err := w.drainEvent(id, n, e.GetKind(), e.GetDevserver(), e.GetDetail()); err != nil {
			return nil, err
		}
		n++
	}
	d.UpdateTime, d.ModifyIndex = w.now, w.index
	return d, w.insert(TableDrains, d)
}

// countItem moves a drain's counts for an item entering (+1) or leaving (-1) state s.
func countItem(d *v1.Drain, s v1.DrainItemState, delta int) {
	add := func(n *uint32) { *n = uint32(int(*n) + delta) }
	switch s {
	case v1.DrainItemState_DRAIN_ITEM_STATE_DONE:
		add(&d.ItemsDone)
	case v1.DrainItemState_DRAIN_ITEM_STATE_MOVING:
		add(&d.ItemsMoving)
	case v1.DrainItemState_DRAIN_ITEM_STATE_BLOCKED, v1.DrainItemState_DRAIN_ITEM_STATE_STRANDED:
		add(&d.ItemsBlocked)
	}
}

// FinishDrain ends a running drain. A drain that succeeded leaves its hosts drained; any other
// leaves them cordoned, or back in service with uncordon. Items still pending are left.
func (w *WriteTxn) FinishDrain(id string, state v1.DrainState, reason string, uncordon bool) (*v1.Drain, error) {
	if !DrainFinal(state) {
		return nil, apierror.Invalid("state", "must be succeeded, incomplete or cancelled, got %s", state)
	}
	if err := validate.Text("reason", reason, validate.MaxReasonLen); err != nil {
		return nil, err
	}
	cur, err := w.runningDrain(id)
	if err != nil {
		return nil, err
	}
	d := proto.Clone(cur).(*v1.Drain)
	d.State, d.StateReason, d.EndTime, d.UpdateTime, d.ModifyIndex = state, reason, w.now, w.now, w.index
	for _, it := range w.DrainItems(id) {
		if it.GetState() != v1.DrainItemState_DRAIN_ITEM_STATE_PENDING {
			continue
		}
		left := proto.Clone(it).(*v1.DrainItem)
		left.State, left.UpdateTime = v1.DrainItemState_DRAIN_ITEM_STATE_LEFT, w.now
		if err := w.insert(TableDrainItems, left); err != nil {
			return nil, err
		}
	}
	for _, name := range d.GetHosts() {
		to, why := v1.HostState_HOST_STATE_CORDONED, "drain "+id+" "+DrainStateName(state)+": "+d.GetReason()
		switch {
		case state == v1.DrainState_DRAIN_STATE_SUCCEEDED:
			to, why = v1.HostState_HOST_STATE_DRAINED, "drained by "+id+": "+d.GetReason()
		case uncordon:
			to, why = v1.HostState_HOST_STATE_ACTIVE, ""
		}
		if _, err := w.setHostState(name, why, to, v1.HostState_HOST_STATE_DRAINING); err != nil && apierror.KindOf(err) != apierror.NotFound {
			return nil, err
		}
	}
	if err := w.insert(TableDrains, d); err != nil {
		return nil, err
	}
	detail := fmt.Sprintf("%s: %d of %d devservers moved, %d blocked", DrainStateName(state), d.GetItemsDone(), d.GetItemsTotal(), d.GetItemsBlocked())
	if reason != "" {
		detail += "; " + reason
	}
	return d, w.drainEvent(id, 0, "finished", "", detail)
}

// RequestDrainCancel asks the drain controller to stop a running drain.
func (w *WriteTxn) RequestDrainCancel(id string, abortInFlight, uncordon bool) (*v1.Drain, error) {
	cur, err := w.GetDrain(id)
	if err != nil {
		return nil, err
	}
	if DrainFinal(cur.GetState()) {
		return nil, apierror.Blocked("drain %s already ended (%s): there is nothing to cancel", id, DrainStateName(cur.GetState()))
	}
	d := proto.Clone(cur).(*v1.Drain)
	d.CancelRequested, d.AbortInFlight, d.UncordonOnCancel = true, d.GetAbortInFlight() || abortInFlight, uncordon
	d.UpdateTime, d.ModifyIndex = w.now, w.index
	if err := w.insert(TableDrains, d); err != nil {
		return nil, err
	}
	detail := "no new moves; moves in flight finish"
	if d.GetAbortInFlight() {
		detail = "no new moves; moves in flight are aborted"
	}
	if uncordon {
		detail += "; the hosts return to service"
	}
	return d, w.drainEvent(id, 0, "cancel-requested", "", detail)
}

// ExtendDrain moves a running drain's deadline later.
func (w *WriteTxn) ExtendDrain(id string, by time.Duration) (*v1.Drain, error) {
	if by <= 0 {
		return nil, apierror.Invalid("by", "must be positive")
	}
	cur, err := w.runningDrain(id)
	if err != nil {
		return nil, err
	}
	if cur.GetDeadline() == nil {
		return nil, apierror.Blocked("drain %s has no deadline to extend", id)
	}
	d := proto.Clone(cur).(*v1.Drain)
	d.Deadline = timestamppb.New(cur.GetDeadline().AsTime().Add(by))
	d.UpdateTime, d.ModifyIndex = w.now, w.index
	if err := w.insert(TableDrains, d); err != nil {
		return nil, err
	}
	return d, w.drainEvent(id, 0, "extended", "", "deadline now "+d.GetDeadline().AsTime().UTC().Format("2006-01-02T15:04:05Z"))
}

// DrainStateName is a drain state as one word.
func DrainStateName(s v1.DrainState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "DRAIN_STATE_"))
}

// runningDrain returns a drain that has not ended: NotFound, or refused once it ended.
func (w *WriteTxn) runningDrain(id string) (*v1.Drain, error) {
	cur, err := w.GetDrain(id)
	if err != nil {
		return nil, err
	}
	if DrainFinal(cur.GetState()) {
		return nil, apierror.Blocked("drain %s already ended (%s)", id, DrainStateName(cur.GetState()))
	}
	return cur, nil
}

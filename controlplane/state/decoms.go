package state

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/validate"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// DecomFinal reports whether a decommission state is an end.
func DecomFinal(s v1.DecomState) bool {
	return s == v1.DecomState_DECOM_STATE_SUCCEEDED || s == v1.DecomState_DECOM_STATE_FAILED || s == v1.DecomState_DECOM_STATE_ABORTED
}

// GetDecom returns a decommission or NotFound.
func (v *View) GetDecom(id string) (*v1.Decom, error) {
	if raw := v.first(TableDecoms, "id", id); raw != nil {
		return raw.(*v1.Decom), nil
	}
	return nil, apierror.Missing("decommission", id)
}

// Decoms returns every decommission, by ID.
func (v *View) Decoms() []*v1.Decom { return rows[*v1.Decom](v, TableDecoms, "id") }

// DecomOn returns the running decommission that includes host, or nil.
func (v *View) DecomOn(host string) *v1.Decom {
	for _, d := range v.Decoms() {
		if !DecomFinal(d.GetState()) && slices.Contains(d.GetHosts(), host) {
			return d
		}
	}
	return nil
}

// StartDecom records a decommission: its hosts must exist, not be retired, and be in no running
// drain (a decommission runs its own) or other decommission.
func (w *WriteTxn) StartDecom(in *v1.Decom) (*v1.Decom, error) {
	d := proto.Clone(in).(*v1.Decom)
	switch {
	case d.GetId() == "":
		return nil, apierror.Invalid("decom.id", "must be stamped by the leader")
	case len(d.GetHosts()) == 0:
		return nil, apierror.Invalid("decom.hosts", "name a host, or a site that has hosts")
	case strings.TrimSpace(d.GetReason()) == "":
		return nil, apierror.Invalid("decom.reason", "say why (owners and the record see it)")
	}
	if err := validate.Reason("decom.reason", d.GetReason()); err != nil {
		return nil, err
	}
	if w.first(TableDecoms, "id", d.GetId()) != nil {
		return nil, apierror.Exists("decommission", d.GetId())
	}
	slices.Sort(d.Hosts)
	d.Hosts = slices.Compact(d.Hosts)
	for _, name := range d.GetHosts() {
		h, err := w.GetHost(name)
		if err != nil {
			return nil, err
		}
		switch {
		case h.GetState() == v1.HostState_HOST_STATE_RETIRED:
			return nil, apierror.Blocked("host %q is already retired", name)
		case w.DecomOn(name) != nil:
			other := w.DecomOn(name)
			return nil, apierror.Blocked("host %q is already being decommissioned (%s)", name, other.GetId())
		case w.DrainOn(name) != nil:
			other := w.DrainOn(name)
			return nil, apierror.Blocked("host %q is in drain %s (%s): cancel it or let it end first", name, other.GetId(), other.GetReason())
		}
	}
	d.Step, d.State, d.StateReason, d.DrainId, d.AbortRequested, d.EndTime = v1.DecomStep_DECOM_STEP_ANNOUNCE, v1.DecomState_DECOM_STATE_RUNNING, "", "", false, nil
	d.Steps = []*v1.DecomStepRecord{{Step: v1.DecomStep_DECOM_STEP_ANNOUNCE, StartTime: w.now}}
	d.CreateTime, d.UpdateTime, d.CreateIndex, d.ModifyIndex = w.now, w.now, w.index, w.index
	return d, w.insert(TableDecoms, d)
}

// AdvanceDecom ends a running decommission's current step (which must be from) with detail and
// starts step to; with drainID it records the drain step's drain instead, without advancing.
// A step already advanced is refused, so a repeated call is harmless.
func (w *WriteTxn) AdvanceDecom(id string, from, to v1.DecomStep, detail, drainID string) (*v1.Decom, error) {
	if err := validate.Text("detail", detail, validate.MaxReasonLen); err != nil {
		return nil, err
	}
	cur, err := w.runningDecom(id)
	if err != nil {
		return nil, err
	}
	switch {
	case cur.GetStep() != from:
		return nil, apierror.Blocked("decommission %s is at step %s, not %s", id, DecomStepName(cur.GetStep()), DecomStepName(from))
	case drainID == "" && to <= from:
		return nil, apierror.Invalid("to", "step %s does not come after %s", DecomStepName(to), DecomStepName(from))
	case cur.GetAbortRequested() && to >= v1.DecomStep_DECOM_STEP_WIPE:
		return nil, apierror.Blocked("decommission %s was asked to abort", id)
	}
	d := proto.Clone(cur).(*v1.Decom)
	d.UpdateTime, d.ModifyIndex = w.now, w.index
	if drainID != "" {
		d.DrainId = drainID
		return d, w.insert(TableDecoms, d)
	}
	last := d.Steps[len(d.Steps)-1]
	last.EndTime, last.Detail = w.now, detail
	d.Step = to
	if to != v1.DecomStep_DECOM_STEP_DONE {
		d.Steps = append(d.Steps, &v1.DecomStepRecord{Step: to, StartTime: w.now})
	}
	return d, w.insert(TableDecoms, d)
}

// FinishDecom ends a running decommission; the current step's record gets the reason.
func (w *WriteTxn) FinishDecom(id string, state v1.DecomState, reason string) (*v1.Decom, error) {
	if !DecomFinal(state) {
		return nil, apierror.Invalid("state", "must be succeeded, failed or aborted, got %s", state)
	}
	if err := validate.Text("reason", reason, validate.MaxReasonLen); err != nil {
		return nil, err
	}
	cur, err := w.runningDecom(id)
	if err != nil {
		return nil, err
	}
	d := proto.Clone(cur).(*v1.Decom)
	d.State, d.StateReason, d.EndTime, d.UpdateTime, d.ModifyIndex = state, reason, w.now, w.now, w.index
	if n := len(d.Steps); n > 0 && d.Steps[n-1].GetEndTime() == nil {
		d.Steps[n-1].EndTime, d.Steps[n-1].Detail = w.now, reason
	}
	return d, w.insert(TableDecoms, d)
}

// RequestDecomAbort asks the decommission controller to stop a decommission; refused once the
// wipe started (guests and volumes may be gone).
func (w *WriteTxn) RequestDecomAbort(id string) (*v1.Decom, error) {
	cur, err := w.runningDecom(id)
	if err != nil {
		return nil, err
	}
	if cur.GetStep() >= v1.DecomStep_DECOM_STEP_WIPE {
		return nil, apierror.Blocked("decommission %s is at step %s: too late to abort (guests and volumes may already be gone)", id, DecomStepName(cur.GetStep()))
	}
	d := proto.Clone(cur).(*v1.Decom)
	d.AbortRequested, d.UpdateTime, d.ModifyIndex = true, w.now, w.index
	return d, w.insert(TableDecoms, d)
}

// RetireHost takes a host out of the fleet for good: no devserver or container may be recorded
// on it. It stays, retired, for the record.
func (w *WriteTxn) RetireHost(name, reason string) (*v1.Host, error) {
	if err := validate.Reason("reason", reason); err != nil {
		return nil, err
	}
	if names, n := namesWhere[*v1.Devserver](&w.View, 5, nil, TableDevservers, "host", name); n > 0 {
		return nil, apierror.Blocked("host %q still runs %s", name, listing("devserver", names, n))
	}
	if names, n := namesWhere[*v1.Container](&w.View, 5, nil, TableContainers, "host", name); n > 0 {
		return nil, apierror.Blocked("host %q still runs %s", name, listing("container", names, n))
	}
	return w.setHostState(name, reason, v1.HostState_HOST_STATE_RETIRED,
		v1.HostState_HOST_STATE_ACTIVE, v1.HostState_HOST_STATE_CORDONED, v1.HostState_HOST_STATE_DRAINED,
		v1.HostState_HOST_STATE_DECOMMISSIONING, v1.HostState_HOST_STATE_RETIRED)
}

// DecomStateName and DecomStepName are a state and a step as words.
func DecomStateName(s v1.DecomState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "DECOM_STATE_"))
}

func DecomStepName(s v1.DecomStep) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "DECOM_STEP_"))
}

// runningDecom returns a decommission that has not ended: NotFound, or refused once it ended.
func (w *WriteTxn) runningDecom(id string) (*v1.Decom, error) {
	cur, err := w.GetDecom(id)
	if err != nil {
		return nil, err
	}
	if DecomFinal(cur.GetState()) {
		return nil, apierror.Blocked("decommission %s already ended (%s)", id, DecomStateName(cur.GetState()))
	}
	return cur, nil
}

package state

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/validate"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// MaxClosedAlerts bounds the closed alerts the state keeps: the oldest go first.
const MaxClosedAlerts = 500

// maxFindings bounds an alert's findings, so that an analyzer gone wild cannot bloat the state.
const maxFindings = 100

// Alerts returns the open alerts, oldest first, then (with closed) the closed ones, most
// recently opened first.
func (v *View) Alerts(closed bool) []*v1.Alert {
	all := rows[*v1.Alert](v, TableAlerts, "id")
	slices.SortFunc(all, func(a, b *v1.Alert) int {
		ao, bo := a.GetState() == v1.AlertState_ALERT_STATE_OPEN, b.GetState() == v1.AlertState_ALERT_STATE_OPEN
		switch {
		case ao != bo && ao:
			return -1
		case ao != bo:
			return 1
		case ao:
			return cmpIndex(a.GetCreateIndex(), b.GetCreateIndex())
		}
		return cmpIndex(b.GetCreateIndex(), a.GetCreateIndex())
	})
	if closed {
		return all
	}
	return slices.DeleteFunc(all, func(a *v1.Alert) bool { return a.GetState() != v1.AlertState_ALERT_STATE_OPEN })
}

func cmpIndex(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Alert returns an alert by ID, or nil.
func (v *View) Alert(id string) *v1.Alert {
	a, _ := v.first(TableAlerts, "id", id).(*v1.Alert)
	return a
}

// OpenAlertFor returns the open alert for a condition and subject, or nil.
func (v *View) OpenAlertFor(condition, subject string) *v1.Alert {
	a, _ := v.first(TableAlerts, "open", condition+"/"+subject).(*v1.Alert)
	return a
}

// OpenAlert opens an alert; its ID comes from the raft index. While one is open for the same
// condition and subject, that one is returned unchanged, so a leader retrying after a failover
// does not open it twice.
func (w *WriteTxn) OpenAlert(in *v1.Alert) (*v1.Alert, error) {
	if in.GetCondition() == "" || in.GetSubject() == "" {
		return nil, apierror.Invalid("alert", "condition and subject are required")
	}
	if err := validate.Text("alert.summary", in.GetSummary(), validate.MaxReasonLen); err != nil {
		return nil, err
	}
	if open := w.OpenAlertFor(in.GetCondition(), in.GetSubject()); open != nil {
		return open, nil
	}
	a := proto.Clone(in).(*v1.Alert)
	a.Id = fmt.Sprintf("a-%d", w.index)
	a.State = v1.AlertState_ALERT_STATE_OPEN
	a.OpenTime = w.now
	a.CloseTime, a.CloseReason = nil, ""
	a.CreateIndex, a.ModifyIndex = w.index, w.index
	if err := w.insert(TableAlerts, a); err != nil {
		return nil, err
	}
	return a, nil
}

// SetAlertFindings records what an alert's analyzers found (replacing earlier findings).
func (w *WriteTxn) SetAlertFindings(id string, findings []*v1.Finding, chain []string, analysisErr string) (*v1.Alert, error) {
	cur := w.Alert(id)
	if cur == nil {
		return nil, apierror.Missing("alert", id)
	}
	if len(findings) > maxFindings {
		return nil, apierror.Invalid("findings", "at most %d per alert, got %d", maxFindings, len(findings))
	}
	if err := validate.Text("analysis_error", analysisErr, validate.MaxReasonLen); err != nil {
		return nil, err
	}
	a := proto.Clone(cur).(*v1.Alert)
	a.Findings, a.Chain, a.AnalysisError = findings, chain, analysisErr
	a.ModifyIndex = w.index
	if err := w.insert(TableAlerts, a); err != nil {
		return nil, err
	}
	return a, nil
}

// CloseAlert closes an open alert. Closing a closed one is a no-op. Beyond MaxClosedAlerts
// the oldest closed ones go.
func (w *WriteTxn) CloseAlert(id, reason string) (*v1.Alert, error) {
	cur := w.Alert(id)
	if cur == nil {
		return nil, apierror.Missing("alert", id)
	}
	if cur.GetState() != v1.AlertState_ALERT_STATE_OPEN {
		return cur, nil
	}
	if err := validate.Text("reason", reason, validate.MaxReasonLen); err != nil {
		return nil, err
	}
	a := proto.Clone(cur).(*v1.Alert)
	a.State, a.CloseTime, a.CloseReason, a.ModifyIndex = v1.AlertState_ALERT_STATE_CLOSED, w.now, reason, w.index
	if err := w.insert(TableAlerts, a); err != nil {
		return nil, err
	}
	all := w.Alerts(true)
	var closed []*v1.Alert
	for _, x := range all {
		if x.GetState() != v1.AlertState_ALERT_STATE_OPEN {
			closed = append(closed, x)
		}
	}
	for _, old := range closed[min(len(closed), MaxClosedAlerts):] {
		if err := w.remove(TableAlerts, old); err != nil {
			return nil, err
		}
	}
	return a, nil
}

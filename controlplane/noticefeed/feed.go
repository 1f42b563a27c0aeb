// Package noticefeed hands what devfleet tells people to the notifier on the leader: owners'
// notices, the drain-level steps of drains (started, cancelled, deadline, finished) as
// operator events, and alerts (opened with their findings, closed).
package noticefeed

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/devfleet/devfleet/controlplane/state"
	"github.com/devfleet/devfleet/notify"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Queue takes messages to deliver (notify.Notifier).
type Queue interface {
	Enqueue(m notify.Message)
}

// Resend is how far back a new leader sends again what the previous one may not have
// delivered: delivery is at least once, and receivers dedupe on the message ID.
const Resend = 10 * time.Minute

// drainEvents are the drain steps that operators hear of; a drain's per-devserver steps stay in
// its timeline.
var drainEvents = map[string]bool{"started": true, "cancel-requested": true, "deadline": true, "extended": true, "finished": true}

// Feed enqueues new notices and drain events as they are committed.
type Feed struct {
	Store  *state.Store
	Queue  Queue
	Logger *slog.Logger
	// Now is the clock of Resend (default time.Now).
	Now func() time.Time
}

// Name identifies the controller.
func (f *Feed) Name() string { return "notice-feed" }

// Run follows the notices and drain events until ctx ends. It starts with those of the last
// Resend, which the previous leader may not have delivered.
func (f *Feed) Run(ctx context.Context) error {
	now := time.Now
	if f.Now != nil {
		now = f.Now
	}
	since := now().Add(-Resend)
	// Marks: the newest notice (create index) and drain event (seq) enqueued.
	var noticeMark, eventMark uint64
	sentAlerts := map[string]bool{}
	for {
		v := f.Store.View()
		newNotices, newEvents := noticeMark, eventMark
		for _, n := range v.Notices() {
			if n.GetCreateIndex() <= noticeMark || n.GetCreateTime().AsTime().Before(since) {
				continue
			}
			newNotices = max(newNotices, n.GetCreateIndex())
			m := notify.NoticeMessage(n)
			if d, err := v.GetDevserver(n.GetSubject()); err == nil {
				m.Region = d.GetRegion()
			}
			f.Queue.Enqueue(m)
		}
		for _, d := range v.Drains() {
			for _, e := range v.DrainEvents(d.GetId()) {
				if e.GetSeq() <= eventMark || !drainEvents[e.GetKind()] || e.GetTime().AsTime().Before(since) {
					continue
				}
				newEvents = max(newEvents, e.GetSeq())
				f.Queue.Enqueue(notify.Message{ID: "drain/" + d.GetId() + "/" + strconv.FormatUint(e.GetSeq(), 10), Kind: "drain." + e.GetKind(),
					Subject: d.GetId(), Text: e.GetDetail(), Time: e.GetTime().AsTime(),
					Fields: map[string]string{"hosts": strings.Join(d.GetHosts(), ","), "reason": d.GetReason(), "state": state.DrainStateName(d.GetState())}})
			}
		}
		sent := map[string]bool{} // only the alerts still kept, so that the set stays bounded
		for _, a := range v.Alerts(true) {
			for _, m := range alertMessages(a, since) {
				if !sentAlerts[m.ID] {
					f.Queue.Enqueue(m)
				}
				sent[m.ID] = true
			}
		}
		sentAlerts = sent
		noticeMark, eventMark = newNotices, newEvents
		changed, stop := f.Store.Changed(v, state.TableNotices, state.TableDrainEvents, state.TableAlerts)
		select {
		case <-ctx.Done():
		case <-changed:
		}
		stop()
		if ctx.Err() != nil {
			return nil
		}
	}
}

// alertMessages are the messages an alert makes: "alert.opened" once its analyzers have run
// (with their findings' summaries), "alert.closed" when it closes.
func alertMessages(a *v1.Alert, since time.Time) []notify.Message {
	var out []notify.Message
	fields := map[string]string{"condition": a.GetCondition(), "subject": a.GetSubject(), "severity": strings.ToLower(strings.TrimPrefix(a.GetSeverity().String(), "SEVERITY_"))}
	if (len(a.GetFindings()) > 0 || a.GetAnalysisError() != "") && !a.GetOpenTime().AsTime().Before(since) {
		text := a.GetSummary()
		for _, fd := range a.GetFindings() {
			text += "\n- " + fd.GetSummary()
		}
		if a.GetAnalysisError() != "" {
			text += "\n(analysis: " + a.GetAnalysisError() + ")"
		}
		out = append(out, notify.Message{ID: "alert/" + a.GetId() + "/opened", Kind: "alert.opened", Subject: a.GetSubject(), Text: text, Time: a.GetOpenTime().AsTime(), Fields: fields})
	}
	if a.GetState() == v1.AlertState_ALERT_STATE_CLOSED && !a.GetCloseTime().AsTime().Before(since) {
		out = append(out, notify.Message{ID: "alert/" + a.GetId() + "/closed", Kind: "alert.closed", Subject: a.GetSubject(), Text: a.GetSummary() + ": " + a.GetCloseReason(), Time: a.GetCloseTime().AsTime(), Fields: fields})
	}
	return out
}

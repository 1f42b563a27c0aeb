package api

import (
	"context"
	"fmt"
	"time"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/eventlog"
	"github.com/devfleet/devfleet/controlplane/feed"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// maxKeyEvents bounds ListKeyEvents.
const maxKeyEvents = 1000

// history checks the topic and key of a history query and returns this node's history.
func (s *Server) history(topic, key string) (*eventlog.Log, error) {
	if s.cfg.Events == nil {
		return nil, &apierror.Error{Kind: apierror.Unavailable, Reason: "this node keeps no event history"}
	}
	if !feed.KnownTopic(topic) {
		return nil, apierror.Invalid("topic", "unknown topic %q", topic)
	}
	if key == "" {
		return nil, apierror.Invalid("key", "must not be empty")
	}
	return s.cfg.Events, nil
}

// GetAt implements EventService.
func (s *Server) GetAt(_ context.Context, req *v1.GetAtRequest) (*v1.GetAtResponse, error) {
	log, err := s.history(req.GetTopic(), req.GetKey())
	if err != nil {
		return nil, err
	}
	var at eventlog.Position
	switch {
	case req.GetIndex() > 0 && req.GetTime() != nil:
		return nil, apierror.Invalid("index", "give an index or a time, not both")
	case req.GetIndex() > 0:
		at = eventlog.Position{Index: req.GetIndex(), N: ^uint32(0)}
	case req.GetTime() != nil:
		if err := req.GetTime().CheckValid(); err != nil {
			return nil, apierror.Invalid("time", "%v", err)
		}
		if at, err = log.AtTime(req.GetTime().AsTime()); err != nil {
			return nil, historyError(err)
		}
	default:
		return nil, apierror.Invalid("index", "give an index or a time")
	}
	e, err := log.At(req.GetTopic(), req.GetKey(), at)
	if err != nil {
		return nil, historyError(err)
	}
	return &v1.GetAtResponse{Event: e}, nil
}

// ListKeyEvents implements EventService.
func (s *Server) ListKeyEvents(_ context.Context, req *v1.ListKeyEventsRequest) (*v1.ListKeyEventsResponse, error) {
	log, err := s.history(req.GetTopic(), req.GetKey())
	if err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	if limit < 0 || limit > maxKeyEvents {
		return nil, apierror.Invalid("limit", "must be between 0 and %d, got %d", maxKeyEvents, limit)
	}
	if limit == 0 {
		limit = maxKeyEvents
	}
	from, to, err := window(log, req.GetSince().AsTime(), req.GetSince() != nil, req.GetUntil().AsTime(), req.GetUntil() != nil)
	if err != nil {
		return nil, err
	}
	if req.GetUntil() != nil && to.IsZero() {
		return &v1.ListKeyEventsResponse{}, nil // until is before every event kept (a zero to would mean "up to the latest")
	}
	evs, err := log.KeyEvents(req.GetTopic(), req.GetKey(), from, to, limit)
	if err != nil {
		return nil, historyError(err)
	}
	return &v1.ListKeyEventsResponse{Events: evs}, nil
}

// window maps a time window to positions: after the last event before since, up to the last
// event at or before until.
func window(log *eventlog.Log, since time.Time, hasSince bool, until time.Time, hasUntil bool) (from, to eventlog.Position, err error) {
	if hasSince {
		if from, err = log.FromTime(since); err != nil {
			return from, to, historyError(err)
		}
	}
	if hasUntil {
		if hasSince && until.Before(since) {
			return from, to, apierror.Invalid("until", "is before since")
		}
		if to, err = log.AtTime(until); err != nil {
			return from, to, historyError(err)
		}
	}
	return from, to, nil
}

// GetPlacementHistory implements EventService: the devserver's events, folded into the stretches
// of time it was recorded on each host.
func (s *Server) GetPlacementHistory(_ context.Context, req *v1.GetPlacementHistoryRequest) (*v1.PlacementHistory, error) {
	log, err := s.history("devserver", req.GetName())
	if err != nil {
		return nil, err
	}
	out := &v1.PlacementHistory{Devserver: req.GetName()}
	var from eventlog.Position
	for {
		evs, err := log.KeyEvents("devserver", req.GetName(), from, eventlog.Position{}, maxKeyEvents)
		if err != nil {
			return nil, historyError(err)
		}
		for _, e := range evs {
			var d v1.Devserver
			if err := e.GetObject().UnmarshalTo(&d); err != nil {
				return nil, fmt.Errorf("event %d/%d: %w", e.GetIndex(), e.GetN(), err)
			}
			n := len(out.Stays)
			switch {
			case e.GetDeleted():
				if n > 0 && out.Stays[n-1].GetEndTime() == nil {
					out.Stays[n-1].EndTime = e.GetTime()
				}
			case d.GetHost() == "":
			case n == 0 || out.Stays[n-1].GetHost() != d.GetHost() || out.Stays[n-1].GetEndTime() != nil:
				if n > 0 && out.Stays[n-1].GetEndTime() == nil {
					out.Stays[n-1].EndTime = e.GetTime()
				}
				out.Stays = append(out.Stays, &v1.HostStay{Host: d.GetHost(), StartTime: e.GetTime(), StartIndex: e.GetIndex(), Reason: d.GetStateReason()})
			}
			from = eventlog.Position{Index: e.GetIndex(), N: e.GetN()}
		}
		if len(evs) < maxKeyEvents {
			break
		}
	}
	if len(out.Stays) == 0 {
		return nil, apierror.Missing("devserver history", req.GetName())
	}
	return out, nil
}

// historyError maps the history's errors to statuses.
func historyError(err error) error { return watchError(err) }

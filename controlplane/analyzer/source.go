package analyzer

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Source is where an analysis reads the fleet: a live node (Live) or a recording (Recording).
type Source interface {
	// Now is the time the source looks at.
	Now() time.Time
	// StateAt returns the fleet as it was at t (at Now or later: as it is).
	StateAt(ctx context.Context, t time.Time) (*state.View, error)
	// Events returns the events matching q, oldest first.
	Events(ctx context.Context, q Query) ([]*v1.Event, error)
}

// Query selects events of the feed.
type Query struct {
	// Topics and Keys: as the feed's filter (empty: all; with both, an event matches both).
	Topics []string
	Keys   []string
	// The window of the events' times: from Since (zero: the oldest there is) to Until.
	Since, Until time.Time
	// At most Limit (0: DefaultLimit), the most recent ones when there are more.
	Limit int
}

// DefaultLimit bounds a query's events unless it says otherwise.
const DefaultLimit = 10000

func (q Query) limit() int {
	if q.Limit <= 0 {
		return DefaultLimit
	}
	return q.Limit
}

func (q Query) match(e *v1.Event) bool {
	if len(q.Topics) > 0 && !slices.Contains(q.Topics, e.GetTopic()) {
		return false
	}
	if len(q.Keys) > 0 && !slices.Contains(q.Keys, e.GetKey()) {
		return false
	}
	t := e.GetTime().AsTime()
	return (q.Since.IsZero() || !t.Before(q.Since)) && (q.Until.IsZero() || !t.After(q.Until))
}

// View is the fleet at a time: the state's reads, and the time they hold at.
type View struct {
	*state.View
	Time time.Time
}

// sortEvents puts events in feed order.
func sortEvents(evs []*v1.Event) {
	slices.SortFunc(evs, func(a, b *v1.Event) int {
		if a.GetIndex() != b.GetIndex() {
			return cmp.Compare(a.GetIndex(), b.GetIndex())
		}
		return cmp.Compare(a.GetN(), b.GetN())
	})
}

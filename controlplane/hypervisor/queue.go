package hypervisor

import (
	"context"
	"sync"
)

// eventQueue delivers events on a channel without ever blocking the producer: events wait in an
// unbounded slice until the consumer takes them, so a host that holds its lock while emitting
// never stalls on a slow reader. Close ends the stream after what is queued was delivered (or
// when ctx ends, dropping the rest).
type eventQueue struct {
	out    chan Event
	signal chan struct{} // capacity 1: "items or closed changed"

	// onDone, if set, runs when the pump stops (the producer forgets the queue).
	onDone func()

	mu     sync.Mutex
	items  []Event
	closed bool
}

// newEventQueue starts the queue's pump; it stops when ctx ends or after close, then calls
// onDone (if not nil) and closes the channel.
func newEventQueue(ctx context.Context, onDone func()) *eventQueue {
	q := &eventQueue{out: make(chan Event), signal: make(chan struct{}, 1), onDone: onDone}
	go q.pump(ctx)
	return q
}

// push appends ev unless the queue is closed.
func (q *eventQueue) push(ev Event) {
	q.mu.Lock()
	if !q.closed {
		q.items = append(q.items, ev)
	}
	q.mu.Unlock()
	q.wake()
}

// close ends the stream once the queued events are delivered. It is idempotent.
func (q *eventQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.wake()
}

func (q *eventQueue) wake() {
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// next returns the next event to deliver, or done when the queue is closed and empty.
func (q *eventQueue) next() (ev Event, ok, done bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) > 0 {
		ev = q.items[0]
		q.items[0] = Event{}
		q.items = q.items[1:]
		return ev, true, false
	}
	return Event{}, false, q.closed
}

func (q *eventQueue) pump(ctx context.Context) {
	defer func() {
		q.mu.Lock()
		q.closed, q.items = true, nil
		q.mu.Unlock()
		if q.onDone != nil {
			q.onDone()
		}
		close(q.out)
	}()
	for {
		ev, ok, done := q.next()
		switch {
		case done:
			return
		case !ok:
			select {
			case <-q.signal:
			case <-ctx.Done():
				return
			}
			continue
		}
		select {
		case q.out <- ev:
		case <-ctx.Done():
			return
		}
	}
}

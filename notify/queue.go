package notify

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// queue is one sink's bounded FIFO. A queue per sink, rather than one shared, is what lets a
// sink that is down fall behind alone while the others keep delivering.
type queue struct {
	mu    sync.Mutex
	items []Message
	size  int
	// shedding is set while consecutive pushes find the queue full, so that a burst of drops
	// is logged once, at its start.
	shedding bool
	depth    prometheus.Gauge
	// wake holds a token when a push may have made the queue non-empty.
	wake chan struct{}
}

func newQueue(size int, depth prometheus.Gauge) *queue {
	return &queue{size: size, depth: depth, wake: make(chan struct{}, 1)}
}

// push appends m, dropping the oldest message if the queue is full; burst reports that this
// drop is the first since the queue last had room.
func (q *queue) push(m Message) (dropped, burst bool) {
	q.mu.Lock()
	if len(q.items) >= q.size {
		q.items = q.items[1:]
		dropped, burst = true, !q.shedding
		q.shedding = true
	} else {
		q.shedding = false
	}
	q.items = append(q.items, m)
	q.depth.Set(float64(len(q.items)))
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return dropped, burst
}

// requeue puts back at the head a message whose delivery was interrupted (the Notifier is
// stopping), so that the next Run starts with it. If the queue filled up meanwhile, m is the
// oldest message, and so the one dropped.
func (q *queue) requeue(m Message) (dropped bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) >= q.size {
		return true
	}
	q.items = append([]Message{m}, q.items...)
	q.depth.Set(float64(len(q.items)))
	return false
}

// pop takes the oldest message, if any.
func (q *queue) pop() (Message, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return Message{}, false
	}
	m := q.items[0]
	q.items[0] = Message{} // the backing array outlives the slice: let go of the fields
	q.items = q.items[1:]
	q.depth.Set(float64(len(q.items)))
	return m, true
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

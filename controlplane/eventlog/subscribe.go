package eventlog

import (
	"context"
	"errors"
	"sync"

	devfleetv1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// ErrSlowConsumer ends a live subscription whose consumer fell more than its buffer behind.
var ErrSlowConsumer = errors.New("eventlog: consumer too slow, subscription cut off")

// DefaultBuffer is the buffer Subscribe takes for a buffer below 1.
const DefaultBuffer = 1024

// pageSize bounds the events a subscriber takes per look at the store or the tail.
const pageSize = 256

// Delivery is one event of a subscription with its encoding: the bytes the log stores, the
// protobuf encoding of Event, so that a consumer that sends events on the wire need not encode
// them again. Live deliveries share both with every other subscriber: read-only.
type Delivery struct {
	Event   *devfleetv1.Event
	Encoded []byte
}

// Subscription delivers the events after a position: first those stored, then new ones as
// they are appended, each once and in order.
type Subscription struct {
	c   chan Delivery
	mu  sync.Mutex
	err error
}

// C delivers the events. It is closed when the subscription ends; Err then says why.
// Deliveries may be shared with other subscribers: read-only.
func (s *Subscription) C() <-chan Delivery { return s.c }

// Err is nil while the subscription runs, then why it ended: the ctx's error, ErrClosed,
// ErrSlowConsumer, a *TooOldError (the start, or a position the consumer had not reached
// yet, was deleted), or a storage error.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *Subscription) end(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
	close(s.c)
}

// Subscribe replays the stored events after from that match f, then follows new appends. It
// never blocks Append. While replaying, the consumer sets the pace: the subscriber reads the
// store as the consumer drains C. Once live — it has caught up with the newest event, or there
// was nothing to replay — a consumer that leaves buffer events unread when another arrives is
// cut off with ErrSlowConsumer. It ends when ctx ends or the log closes.
//
// No gap and no duplicate, whatever races with the switch from replay to live: the subscriber
// only ever asks for "the events after the last position I looked at", from the tail in memory
// when that covers it, else from the store; and it takes the change notification before each
// look, so an append committed after the look closes a channel it already holds.
func (l *Log) Subscribe(ctx context.Context, from Position, f Filter, buffer int) *Subscription {
	if buffer < 1 {
		buffer = DefaultBuffer
	}
	s := &Subscription{c: make(chan Delivery, buffer)}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		s.end(ErrClosed)
		return s
	}
	l.subs.Add(1)
	// Nothing to replay: live from the start, whenever its goroutine first runs.
	start := from
	if start.IsZero() {
		start = origin(l.st.cut)
	}
	live := !start.Less(l.st.last)
	l.mu.Unlock()
	l.m.subscribed(1)
	go func() {
		defer l.subs.Done()
		defer l.m.subscribed(-1)
		err := l.follow(ctx, s, from, f.compile(), live)
		if errors.Is(err, ErrSlowConsumer) {
			l.m.slowConsumer()
			l.log.Debug("event subscriber cut off: too slow", "index", from.Index, "buffer", buffer)
		}
		s.end(err)
	}()
	return s
}

// follow runs a subscription until it ends, and returns why.
func (l *Log) follow(ctx context.Context, s *Subscription, pos Position, m matcher, live bool) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		evs, next, atEnd, changed, err := l.fetch(pos, m)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if live {
				select {
				case s.c <- ev:
				default:
					return ErrSlowConsumer
				}
				continue
			}
			select {
			case s.c <- ev:
			case <-ctx.Done():
				return ctx.Err()
			case <-l.done:
				return ErrClosed
			}
		}
		pos = next
		if !atEnd {
			continue
		}
		live = true
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-l.done:
			return ErrClosed
		}
	}
}

// fetch returns up to a page of matching events after pos, the position of the last event
// looked at, whether that was the newest, and the channel that the next change closes — taken
// before looking.
func (l *Log) fetch(pos Position, m matcher) (evs []Delivery, next Position, atEnd bool, changed <-chan struct{}, err error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, pos, false, nil, ErrClosed
	}
	changed = l.changed
	p := pos
	if p.IsZero() {
		p = origin(l.st.cut)
	}
	if !p.Less(l.st.cut) && l.tail.covers(p) {
		evs, next, atEnd = l.tail.after(p, m, pageSize)
		l.mu.Unlock()
		return evs, next, atEnd, changed, nil
	}
	l.mu.Unlock()
	evs, next, atEnd, err = l.scan(pos, m, pageSize, true)
	return evs, next, atEnd, changed, err
}

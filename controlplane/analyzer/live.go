package analyzer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/eventlog"
	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// maxUndo bounds the events a past state is rebuilt from: an analysis asking for the fleet
// long ago on a busy fleet fails with a clear error rather than running the node out of memory.
const maxUndo = 1_000_000

// readPage is how many events one eventlog read returns.
const readPage = 4096

// Live is a node's state and event history as a Source.
type Live struct {
	store *state.Store
	log   *eventlog.Log
	clock func() time.Time
	feed  Feed
}

// Feed writes the history behind the state (*feed.Feed): Wait returns once the history holds
// every change up to a raft index.
type Feed interface {
	Wait(ctx context.Context, index uint64) error
}

// catchUpWait bounds how long a read waits for the history to catch up with the state.
const catchUpWait = 5 * time.Second

// WithFeed makes every read first wait for the history to hold what the state holds, so that an
// analysis never sees an object's new state without the event that made it.
func (l *Live) WithFeed(f Feed) *Live {
	l.feed = f
	return l
}

// catchUp returns the state now, once the history holds its changes.
func (l *Live) catchUp(ctx context.Context) (*state.View, error) {
	v := l.store.View()
	return v, l.waitFeed(ctx, v.LatestIndex())
}

// waitFeed waits for the history to hold every change up to raft index index.
func (l *Live) waitFeed(ctx context.Context, index uint64) error {
	if l.feed == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, catchUpWait)
	defer cancel()
	return l.feed.Wait(ctx, index)
}

// NewLive reads store and log; clock is the present (nil: time.Now).
func NewLive(store *state.Store, log *eventlog.Log, clock func() time.Time) *Live {
	if clock == nil {
		clock = time.Now
	}
	return &Live{store: store, log: log, clock: clock}
}

// Now is the present.
func (l *Live) Now() time.Time { return l.clock() }

// StateAt returns the state now, or for a past t the state now with every change after t
// undone: each object changed since is put back as its last event at or before t left it.
func (l *Live) StateAt(ctx context.Context, t time.Time) (*state.View, error) {
	if !t.Before(l.clock()) {
		return l.catchUp(ctx)
	}
	// Undo on a copy of the state taken now, once the history holds every change in it. Changes
	// the history holds beyond the copy (made since) are undone too, which is harmless: each
	// object is set to its state at t, whatever it is in the copy.
	past := l.store.Clone()
	if err := l.waitFeed(ctx, past.View().LatestIndex()); err != nil {
		return nil, err
	}
	at, err := l.log.AtTime(t)
	if err != nil {
		return nil, historyErr(err)
	}
	type ref struct{ topic, key string }
	first := map[ref]*v1.Event{}
	// shared holds every event since of the keys that several rows share (sharedKey).
	shared := map[ref][]*v1.Event{}
	var order []ref
	n := 0
	err = pages(ctx, at, l.readAll, func(evs []*v1.Event) (bool, error) {
		for _, e := range evs {
			r := ref{e.GetTopic(), e.GetKey()}
			if first[r] == nil {
				first[r] = e
				order = append(order, r)
			}
			if sharedKey(r.topic) {
				shared[r] = append(shared[r], e)
			}
		}
		if n += len(evs); n > maxUndo {
			return false, fmt.Errorf("more than %d changes since %s: too far back to rebuild the fleet on this node", maxUndo, t.Format(time.RFC3339))
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	if len(order) == 0 {
		return past.View(), nil
	}
	w := past.Begin(at.Index, t)
	for _, r := range order {
		var err error
		if evs, ok := shared[r]; ok {
			err = l.undoShared(ctx, w, r.topic, r.key, at, evs)
		} else {
			err = l.undo(w, r.topic, r.key, at, first[r])
		}
		if err != nil {
			w.Abort()
			return nil, err
		}
	}
	if err := w.Commit(); err != nil {
		return nil, err
	}
	return past.View(), nil
}

// undo puts one object back as it was at at, given its first event after at.
func (l *Live) undo(w *state.WriteTxn, topic, key string, at eventlog.Position, first *v1.Event) error {
	var then *v1.Event
	if !at.IsZero() {
		var err error
		if then, err = l.log.At(topic, key, at); err != nil {
			return historyErr(err)
		}
	}
	if then == nil { // it did not exist then: remove what its first change since made
		then = proto.Clone(first).(*v1.Event)
		then.Deleted = true
	}
	return ApplyEvent(w, then)
}

// sharedKey reports whether several rows of topic have the same feed key (see feed's keyOf): a
// drain's events all have the drain's ID, so that a watch of that key is its timeline. Such a
// key's last event at a time is the state of one of its rows, not of all: they are rebuilt by
// undoShared.
func sharedKey(topic string) bool { return topic == "drain-event" }

// undoShared puts the rows of a shared key back as they were at at: it removes every row that
// changed since (evs, its events after at), then replays the key's history up to at, which
// leaves each row as its last event then did.
func (l *Live) undoShared(ctx context.Context, w *state.WriteTxn, topic, key string, at eventlog.Position, evs []*v1.Event) error {
	for _, e := range evs {
		del := proto.Clone(e).(*v1.Event)
		del.Deleted = true
		if err := ApplyEvent(w, del); err != nil {
			return err
		}
	}
	if at.IsZero() {
		return nil // nothing was stamped at or before t: none of them existed
	}
	// As undo does through At, refuse a position whose past the history no longer holds.
	if _, err := l.log.At(topic, key, at); err != nil {
		return historyErr(err)
	}
	n := 0
	for from := (eventlog.Position{}); ; {
		page, err := l.log.KeyEvents(topic, key, from, at, readPage)
		if err != nil {
			return historyErr(err)
		}
		for _, e := range page {
			if err := ApplyEvent(w, e); err != nil {
				return err
			}
		}
		if n += len(page); n > maxUndo {
			return fmt.Errorf("more than %d changes of %s %q to replay: too far back to rebuild the fleet on this node", maxUndo, topic, key)
		}
		if len(page) < readPage {
			return nil
		}
		last := page[len(page)-1]
		from = eventlog.Position{Index: last.GetIndex(), N: last.GetN()}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// historyErr says what part of the history a node no longer has.
func historyErr(err error) error {
	var old *eventlog.TooOldError
	if errors.As(err, &old) {
		return fmt.Errorf("this node's event history starts at index %d, after the time asked for: %w", old.Oldest, err)
	}
	return err
}

// Events reads the history: by key through the per-key index when the query names one topic
// and its keys, else by scanning from Since.
func (l *Live) Events(ctx context.Context, q Query) ([]*v1.Event, error) {
	if _, err := l.catchUp(ctx); err != nil {
		return nil, err
	}
	from, err := l.fromTime(q.Since)
	if err != nil {
		return nil, err
	}
	var out []*v1.Event
	// collect keeps a page's matching events, and reads on until the window's end (an event
	// after Until).
	collect := func(evs []*v1.Event) (bool, error) {
		for _, e := range evs {
			if q.match(e) {
				out = append(out, e)
			}
		}
		return q.Until.IsZero() || !evs[len(evs)-1].GetTime().AsTime().After(q.Until), nil
	}
	if len(q.Topics) == 1 && len(q.Keys) > 0 {
		for _, key := range slices.Compact(slices.Sorted(slices.Values(q.Keys))) {
			read := func(pos eventlog.Position) ([]*v1.Event, error) {
				return l.log.KeyEvents(q.Topics[0], key, pos, eventlog.Position{}, readPage)
			}
			if err := pages(ctx, from, read, collect); err != nil {
				return nil, err
			}
		}
		sortEvents(out)
	} else {
		f := eventlog.Filter{Topics: q.Topics, Keys: q.Keys}
		read := func(pos eventlog.Position) ([]*v1.Event, error) { return l.log.Read(pos, f, readPage) }
		err := pages(ctx, from, read, func(evs []*v1.Event) (bool, error) {
			more, err := collect(evs)
			if len(out) > 4*q.limit() { // in feed order: the oldest can go
				out = out[len(out)-q.limit():]
			}
			return more, err
		})
		if err != nil {
			return nil, err
		}
	}
	if l := q.limit(); len(out) > l {
		out = out[len(out)-l:]
	}
	return out, nil
}

// fromTime is the position to read after for the events stamped at or after since.
func (l *Live) fromTime(since time.Time) (eventlog.Position, error) {
	if since.IsZero() {
		return eventlog.Position{}, nil
	}
	p, err := l.log.FromTime(since)
	if err != nil {
		return p, historyErr(err)
	}
	return p, nil
}

// Record streams a recording of the history from since to now to put: the header, the state
// at since, then every event after it.
func (l *Live) Record(ctx context.Context, since time.Time, node string, put func(*v1.RecordingChunk) error) error {
	at, err := l.log.AtTime(since)
	if err != nil {
		return historyErr(err)
	}
	base, err := l.StateAt(ctx, since)
	if err != nil {
		return err
	}
	now := l.clock()
	h := &v1.RecordingHeader{Version: RecordingVersion, Since: timestamppb.New(since), Until: timestamppb.New(now), BaseIndex: at.Index, Node: node}
	if err := put(&v1.RecordingChunk{Part: &v1.RecordingChunk_Header{Header: h}}); err != nil {
		return err
	}
	if err := PutBase(putter(put), base); err != nil {
		return err
	}
	return pages(ctx, at, l.readAll, func(evs []*v1.Event) (bool, error) {
		for _, e := range evs {
			if e.GetTime().AsTime().After(now) {
				return false, nil
			}
			if err := put(&v1.RecordingChunk{Part: &v1.RecordingChunk_Event{Event: e}}); err != nil {
				return false, err
			}
		}
		return true, nil
	})
}

// readAll reads a page of every event after pos.
func (l *Live) readAll(pos eventlog.Position) ([]*v1.Event, error) {
	return l.log.Read(pos, eventlog.Filter{}, readPage)
}

// pages reads the history page by page after from and hands each page to each, until a short
// page (the end of what is stored), each says it has what it wants (or fails), or ctx ends.
func pages(ctx context.Context, from eventlog.Position, read func(eventlog.Position) ([]*v1.Event, error), each func([]*v1.Event) (more bool, err error)) error {
	for pos := from; ; {
		evs, err := read(pos)
		if err != nil {
			return historyErr(err)
		}
		if len(evs) == 0 {
			return nil
		}
		more, err := each(evs)
		if err != nil || !more || len(evs) < readPage {
			return err
		}
		last := evs[len(evs)-1]
		pos = eventlog.Position{Index: last.GetIndex(), N: last.GetN()}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

type putter func(*v1.RecordingChunk) error

func (p putter) Put(c *v1.RecordingChunk) error { return p(c) }

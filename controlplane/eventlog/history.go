package eventlog

import (
	"fmt"
	"math"
	"time"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	devfleetv1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Point-in-time reads: an object's events, and its state at a position or a time, from the key
// index (see keyindex.go and DESIGN.md). Like every read, they answer from what this node
// retains: history older than MaxAge (or beyond MaxBytes, or missing after a snapshot restore)
// is gone. A position before the oldest retained event is a *TooOldError; but an object whose
// last event before a position was deleted while later ones were kept is not told apart from
// one that had none (see At).

// KeyEvents returns the events of one object (topic and key) after from and up to to (inclusive;
// the zero to means up to the latest), oldest first, at most limit (> 0).
//
// As in Read, from is "after this event" and the zero from is "from the oldest retained event";
// a from before that fails with *TooOldError. A to at or before from gives no events. Fewer than
// limit events means the end of the window, or of what is stored now: to page, call again from
// the last event returned. Each event costs a seek and a decode; the events of the whole
// window are read in transactions of at most scanBudget events, and if retention deletes past
// the last event read between two of them, the call fails with *TooOldError rather than
// returning a window with a hole in it.
func (l *Log) KeyEvents(topic, key string, from, to Position, limit int) ([]*devfleetv1.Event, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("limit: %d is not positive", limit)
	}
	if l.isClosed() {
		return nil, ErrClosed
	}
	prefix := keyPrefix(topic, key)
	var out []*devfleetv1.Event
	for {
		evs, next, atEnd, err := l.keyScan(topic, key, prefix, from, to, limit-len(out))
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
		if atEnd || len(out) == limit {
			return out, nil
		}
		from = next
	}
}

// keyScan reads, in one transaction, up to limit of the object's events after from and up to
// to, looking at no more than scanBudget index keys. It returns the position of the last key
// looked at and whether it reached the end of the window.
func (l *Log) keyScan(topic, key string, prefix []byte, from, to Position, limit int) (out []*devfleetv1.Event, next Position, atEnd bool, err error) {
	err = l.db.View(func(tx *bbolt.Tx) error {
		if from, err = readFrom(tx, from); err != nil {
			return err
		}
		next = from
		eb := tx.Bucket(bucketEvents)
		c := tx.Bucket(bucketKeys).Cursor()
		k, _ := c.Seek(indexKey(prefix, from))
		for looked := 0; ; k, _ = c.Next() {
			p, ok := Position{}, k != nil
			if ok {
				p, ok = indexPos(k, prefix)
			}
			if ok && p == from {
				continue // "after from"
			}
			if !ok || (!to.IsZero() && to.Less(p)) {
				atEnd = true
				return nil
			}
			if looked == scanBudget || len(out) == limit {
				return nil
			}
			looked++
			next = p
			ev, err := indexedEvent(eb, p)
			if err != nil {
				return err
			}
			if ev.GetTopic() == topic && ev.GetKey() == key { // else another object's hash
				out = append(out, ev)
			}
		}
	})
	return out, next, atEnd, storeErr(err)
}

// indexedEvent decodes the event at p, which the key index names.
func indexedEvent(eb *bbolt.Bucket, p Position) (*devfleetv1.Event, error) {
	v := eb.Get(posKey(p))
	if v == nil {
		return nil, fmt.Errorf("event at index %d n %d: in the key index but not stored", p.Index, p.N)
	}
	ev := &devfleetv1.Event{}
	if err := proto.Unmarshal(v, ev); err != nil {
		return nil, fmt.Errorf("event at index %d n %d: decode: %w", p.Index, p.N, err)
	}
	return ev, nil
}

// At returns the object's last event at or before at (its state then; Deleted says it was gone),
// or nil when it had none; a position before the oldest retained event is *TooOldError.
//
// at is an event's position, or Position{index, math.MaxUint32} for "after raft entry index", or
// AtTime's answer. The zero at is before every event: nil when no history was ever deleted.
// "Before the oldest retained event" includes the position of the last one deleted (the cut);
// when nothing is retained, every position up to Last is.
//
// nil says the object has no event in the retained history at or before at. When history has
// been deleted (Oldest is past the first raft index), that is either an object that did not
// exist, or one that did not change between the oldest retained event and at: if it has no
// event after at either (KeyEvents from at), its state now was its state then.
//
// It costs a few seeks and one decode, whatever the history's size.
func (l *Log) At(topic, key string, at Position) (*devfleetv1.Event, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	prefix := keyPrefix(topic, key)
	var out *devfleetv1.Event
	err := l.db.View(func(tx *bbolt.Tx) error {
		st, err := loadState(tx)
		if err != nil {
			return err
		}
		if !st.cut.IsZero() {
			oldest, ok := firstAfter(tx, st.cut)
			if !ok {
				oldest = Position{st.last.Index + 1, 0}
			}
			if at.Less(oldest) {
				return tooOld(tx, st)
			}
		}
		eb := tx.Bucket(bucketEvents)
		c := tx.Bucket(bucketKeys).Cursor()
		k, _ := c.Seek(indexKey(prefix, at))
		switch p, ok := indexPos(k, prefix); {
		case k == nil:
			k, _ = c.Last()
		case !ok || at.Less(p):
			k, _ = c.Prev()
		}
		for ; k != nil; k, _ = c.Prev() {
			p, ok := indexPos(k, prefix)
			if !ok || !st.cut.Less(p) {
				return nil // none, or only events at or before the cut, awaiting deletion
			}
			ev, err := indexedEvent(eb, p)
			if err != nil {
				return err
			}
			if ev.GetTopic() == topic && ev.GetKey() == key { // else another object's hash
				out = ev
				return nil
			}
		}
		return nil
	})
	return out, storeErr(err)
}

// AtTime is the position of the last event stamped at or before t (the zero Position when none),
// for "the state at time t": At(topic, key, AtTime(t)).
//
// As in FromTime, "stamped" means the watermark, the running maximum of the stamps in feed
// order: AtTime(t) is the last event before the first one (in feed order) stamped after t.
// So the feed splits at one point: every event up to AtTime(t) has its watermark at or before t,
// and reading after AtTime(t) gets exactly what reading after FromTime(t + 1ns) gets.
// An event stamped at or before t that comes after one stamped later (a new leader with a
// slower clock) is on the later side; an event without a time is on its predecessor's side.
//
// With nothing stamped after t yet, it is Last(). When the answer has been deleted — t is
// before the watermark at the cut — it fails with *TooOldError; when only history before the
// answer has been, the answer is the cut (the last position deleted), which At refuses with a
// *TooOldError but KeyEvents accepts as the end of a window (an empty one, from a later from).
// Callers using it as KeyEvents' to must treat the zero Position as "no event yet", not as
// "up to the latest".
func (l *Log) AtTime(t time.Time) (Position, error) {
	if l.isClosed() {
		return Position{}, ErrClosed
	}
	ns := t.UnixNano()
	var p Position
	err := l.db.View(func(tx *bbolt.Tx) error {
		st, err := loadState(tx)
		if err != nil {
			return err
		}
		if st.floor != noTime && ns < st.floor {
			return tooOld(tx, st)
		}
		// The first event whose watermark is after t: the time key after every one at t.
		k, _ := tx.Bucket(bucketTimes).Cursor().Seek(timeKey(ns, Position{math.MaxUint64, math.MaxUint32}))
		if k == nil {
			p = st.last
			return nil
		}
		c := tx.Bucket(bucketEvents).Cursor()
		if e, _ := c.Seek(posKey(timeKeyPos(k))); e == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		if k != nil {
			p = keyPos(k)
		}
		// Every event at or before the cut has its watermark at or before the floor, so at or
		// before t: the answer is at least the cut, whatever of it is still stored.
		p = maxPos(p, st.cut)
		return nil
	})
	return p, storeErr(err)
}

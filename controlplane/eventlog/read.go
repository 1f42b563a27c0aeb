package eventlog

import (
	"bytes"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	devfleetv1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// TooOldError: the events after the requested position (or from the requested time) are no
// longer all retained on this node. The consumer must start over, from a fresh list.
type TooOldError struct {
	// Oldest is the oldest retained index (with nothing retained, the index after the last).
	Oldest uint64
}

func (e *TooOldError) Error() string {
	return fmt.Sprintf("eventlog: events before index %d are no longer retained", e.Oldest)
}

// scanBudget bounds the keys one read transaction looks at: a long read transaction would hold
// off bbolt's remap and so stall Append when the file grows.
const scanBudget = 4096

// Read returns up to limit events after from that match f, oldest first. Fewer than limit means
// the end of what is stored now. The zero Position reads from the oldest retained event; a
// position before it fails with *TooOldError.
func (l *Log) Read(from Position, f Filter, limit int) ([]*devfleetv1.Event, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("limit: %d is not positive", limit)
	}
	if l.isClosed() {
		return nil, ErrClosed
	}
	m := f.compile()
	var out []*devfleetv1.Event
	for {
		ds, next, atEnd, err := l.scan(from, m, limit-len(out), false)
		if err != nil {
			if len(out) > 0 {
				return out, nil // what was read is contiguous; the next Read reports the error
			}
			return nil, err
		}
		for _, d := range ds {
			out = append(out, d.Event)
		}
		if atEnd || len(out) == limit {
			return out, nil
		}
		from = next
	}
}

// scan reads from the store in one transaction: up to limit matching events after from, looking
// at no more than scanBudget keys. It returns the position of the last key looked at (from, or
// the cut for the zero Position, if none) and whether it reached the newest stored event. The
// cut is checked inside the transaction, so retention cannot slip a gap in unseen. With encoded,
// each event comes with a copy of its stored encoding.
func (l *Log) scan(from Position, m matcher, limit int, encoded bool) (out []Delivery, next Position, atEnd bool, err error) {
	err = l.db.View(func(tx *bbolt.Tx) error {
		if from, err = readFrom(tx, from); err != nil {
			return err
		}
		next = from
		c := tx.Bucket(bucketEvents).Cursor()
		k, v := c.Seek(posKey(from))
		if k != nil && keyPos(k) == from {
			k, v = c.Next()
		}
		for looked := 0; k != nil; k, v = c.Next() {
			if looked == scanBudget || len(out) == limit {
				return nil
			}
			looked++
			next = keyPos(k)
			ok, err := m.matchRaw(v)
			if err != nil {
				return fmt.Errorf("event at index %d n %d: %w", next.Index, next.N, err)
			}
			if !ok {
				continue
			}
			ev := &devfleetv1.Event{}
			if err := proto.Unmarshal(v, ev); err != nil {
				return fmt.Errorf("event at index %d n %d: decode: %w", next.Index, next.N, err)
			}
			d := Delivery{Event: ev}
			if encoded {
				d.Encoded = bytes.Clone(v) // v lives only as long as the transaction
			}
			out = append(out, d)
		}
		atEnd = true
		return nil
	})
	return out, next, atEnd, storeErr(err)
}

// readFrom is where a read after from starts inside tx: from itself, or for the zero Position
// the oldest retained; a from before the retained history is a *TooOldError.
func readFrom(tx *bbolt.Tx, from Position) (Position, error) {
	st, err := loadState(tx)
	switch {
	case err != nil:
		return from, err
	case from.IsZero():
		return origin(st.cut), nil
	case from.Less(st.cut):
		return from, tooOld(tx, st)
	}
	return from, nil
}

func tooOld(tx *bbolt.Tx, st state) *TooOldError {
	if p, ok := firstAfter(tx, st.cut); ok {
		return &TooOldError{Oldest: p.Index}
	}
	return &TooOldError{Oldest: st.last.Index + 1}
}

// FromTime returns the position to read or subscribe from to get the feed from time t on: just
// before the first event (in feed order) stamped at or after t, or the last stored position if
// none is yet.
//
// Times are the leader's stamps, nearly but not always monotonic (a new leader's clock may be
// behind the old one's). The time bucket therefore indexes the watermark, the running maximum
// of the stamps, recorded at each event where it rises; it is monotonic in feed order, so one
// seek finds where it first reaches t, which is exactly the first event stamped at or after t.
// No event stamped at or after t is missed; a few after it may be stamped before t.
//
// If an event stamped at or after t has been deleted, FromTime fails with *TooOldError.
func (l *Log) FromTime(t time.Time) (Position, error) {
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
		if st.floor != noTime && ns <= st.floor {
			return tooOld(tx, st)
		}
		k, _ := tx.Bucket(bucketTimes).Cursor().Seek(timeKey(ns, Position{}))
		if k == nil {
			p = st.last
			return nil
		}
		p = maxPos(before(timeKeyPos(k)), st.cut)
		return nil
	})
	return p, storeErr(err)
}

package eventlog

import (
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	devfleetv1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// ErrOutOfOrder wraps Append's refusal of an event that is not after the last one stored.
var ErrOutOfOrder = errors.New("eventlog: event out of order")

// fillPercent packs pages fuller than bbolt's default half: keys only ever grow at the end (of
// the feed, and in the key index of each object's run, where a split at 90% leaves the full
// page behind).
const fillPercent = 0.9

// Append stores one raft batch's events in one transaction (one fsync) and wakes subscribers.
// Events must come in strictly increasing (index, n), all after Last(): anything else fails the
// whole call with ErrOutOfOrder naming the index, and nothing is stored. Append never waits for
// subscribers. It keeps copies, so the caller may reuse the events afterwards.
//
// If the transaction fails, the caller may retry the same events; if it goes on with later
// ones instead (the FSM cannot stop applying), the next successful Append declares the failed
// ones missing, as Restored does, so that no reader passes over them unknowingly.
func (l *Log) Append(events []*devfleetv1.Event) error {
	if len(events) == 0 {
		return nil
	}
	start := time.Now()
	l.wmu.Lock()
	defer l.wmu.Unlock()
	next, err := l.writerState()
	if err != nil {
		return err
	}

	vals, keys := make([][]byte, len(events)), make([][]byte, len(events))
	for i, ev := range events {
		if ev == nil {
			return fmt.Errorf("events[%d]: nil", i)
		}
		p := Position{ev.GetIndex(), ev.GetN()}
		if p.Index == 0 {
			return fmt.Errorf("events[%d]: index is 0 (raft indexes start at 1)", i)
		}
		if !next.last.Less(p) {
			return fmt.Errorf("%w: events[%d] at index %d n %d is not after index %d n %d", ErrOutOfOrder, i, p.Index, p.N, next.last.Index, next.last.N)
		}
		b, err := proto.Marshal(ev)
		if err != nil {
			return fmt.Errorf("events[%d] at index %d: encode: %w", i, p.Index, err)
		}
		vals[i], keys[i], next.last = b, indexKey(keyPrefix(ev.GetTopic(), ev.GetKey()), p), p
	}

	first := Position{events[0].GetIndex(), events[0].GetN()}
	lost := !l.lostFrom.IsZero() && l.lostFrom.Less(first)
	if lost {
		// The lost events were stamped no later than this batch (give or take clock skew).
		next.cut = maxPos(next.cut, before(first))
		next.floor = max(next.floor, next.mark)
		if ts := events[0].GetTime(); ts != nil {
			next.floor = max(next.floor, ts.AsTime().UnixNano())
		}
	}
	err = l.db.Update(func(tx *bbolt.Tx) error {
		if l.fault != nil {
			if err := l.fault(); err != nil {
				return err
			}
		}
		eb, tb, kb := tx.Bucket(bucketEvents), tx.Bucket(bucketTimes), tx.Bucket(bucketKeys)
		eb.FillPercent, tb.FillPercent, kb.FillPercent = fillPercent, fillPercent, fillPercent
		for i, ev := range events {
			p := Position{ev.GetIndex(), ev.GetN()}
			if err := eb.Put(posKey(p), vals[i]); err != nil {
				return err
			}
			if err := kb.Put(keys[i], empty); err != nil {
				return err
			}
			next.bytes += int64(len(vals[i]))
			// The time index records only where the watermark rises; see FromTime. An event
			// without a time takes its predecessor's.
			if ev.GetTime() == nil {
				continue
			}
			if ns := ev.GetTime().AsTime().UnixNano(); ns > next.mark {
				next.mark = ns
				if err := tb.Put(timeKey(ns, p), []byte{}); err != nil {
					return err
				}
			}
		}
		return putState(tx, next)
	})
	if err != nil {
		if l.lostFrom.IsZero() {
			l.lostFrom = first
		}
		return fmt.Errorf("append events at index %d: %w", first.Index, storeErr(err))
	}
	if lost {
		l.log.Warn("events lost to a failed append; readers from before them must relist", "index", first.Index, "lost", l.lostFrom.Index)
	}
	l.lostFrom = Position{}

	// Copies for the tail, outside the lock: live subscribers share them, read-only, with the
	// encodings just stored (bbolt does not keep or change a value after its transaction).
	entries := make([]tailEntry, len(events))
	for i, ev := range events {
		entries[i] = tailEntry{pos: Position{ev.GetIndex(), ev.GetN()}, ev: proto.Clone(ev).(*devfleetv1.Event), raw: vals[i]}
	}
	l.mu.Lock()
	l.st = next
	if lost {
		l.oldest, l.hasOldest = Position{}, false // what is older than the cut goes
	}
	if !l.hasOldest {
		l.oldest, l.hasOldest = entries[0].pos, true
	}
	for _, e := range entries {
		l.tail.push(e)
	}
	l.notifyLocked()
	l.mu.Unlock()

	select {
	case l.kick <- struct{}{}:
	default:
	}
	l.m.appended(len(events), time.Since(start))
	return nil
}

// notifyLocked wakes every subscriber waiting for a change. l.mu must be held.
func (l *Log) notifyLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

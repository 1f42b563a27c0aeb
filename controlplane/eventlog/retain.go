package eventlog

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"time"

	"go.etcd.io/bbolt"
)

// retainChunk bounds the events one retention transaction deletes, so that an Append waiting
// for the write lock waits for one short transaction, never for a whole backlog.
// retainObjects bounds the objects they are of: an object's key-index keys are together, but
// those of different objects are on different pages, each of which the transaction rewrites.
const (
	retainChunk   = 1024
	retainObjects = 128
)

// retainLoop deletes what retention (or Restored) lets go, in chunks, in the background: on
// every Append and periodically, for age while the fleet is quiet.
func (l *Log) retainLoop() {
	defer l.bg.Done()
	tick := time.NewTicker(min(max(l.opts.MaxAge/16, time.Second), time.Minute))
	defer tick.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-l.kick:
		case <-tick.C:
		}
		for {
			more, err := l.retainOnce()
			if err != nil {
				if err != ErrClosed {
					l.log.Error("event log retention failed; the file may outgrow its bounds", "error", err)
				}
				break
			}
			if !more {
				break
			}
			select {
			case <-l.done:
				return
			default:
			}
		}
	}
}

// plan is one chunk of retention: the oldest events (and their time-index and key-index keys)
// to delete.
type plan struct {
	events, times, keys [][]byte
	full                bool // bounded by retainChunk or retainObjects: more may be due
	freed               int64
	through             Position // the newest event deleted
	floor               int64    // the latest watermark among the time keys deleted
	reasons             map[string]int
}

// retainOnce deletes one chunk if there is anything to delete, and reports whether there may be
// more.
func (l *Log) retainOnce() (more bool, err error) {
	l.rmu.Lock()
	defer l.rmu.Unlock()
	p, err := l.plan()
	if err != nil || len(p.events) == 0 {
		return false, err
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	next, err := l.writerState()
	if err != nil {
		return false, err
	}
	var oldest Position
	var hasOldest bool
	err = l.db.Update(func(tx *bbolt.Tx) error {
		eb, tb, kb := tx.Bucket(bucketEvents), tx.Bucket(bucketTimes), tx.Bucket(bucketKeys)
		for _, k := range p.events {
			if err := eb.Delete(k); err != nil {
				return err
			}
		}
		for _, k := range p.keys {
			if err := kb.Delete(k); err != nil {
				return err
			}
		}
		for _, k := range p.times {
			if err := tb.Delete(k); err != nil {
				return err
			}
		}
		next.bytes -= p.freed
		next.cut = maxPos(next.cut, p.through)
		next.floor = max(next.floor, p.floor)
		oldest, hasOldest = firstAfter(tx, next.cut)
		return putState(tx, next)
	})
	if err != nil {
		return false, fmt.Errorf("delete events through index %d: %w", p.through.Index, storeErr(err))
	}
	l.mu.Lock()
	l.st, l.oldest, l.hasOldest = next, oldest, hasOldest
	l.mu.Unlock()
	l.m.deleted(p.reasons)
	l.log.Debug("event log retention", "index", p.through.Index, "deleted", len(p.events), "bytes", next.bytes)
	return p.full, nil
}

// plan picks the next chunk in a read transaction, outside the write lock: only retention
// deletes (one pass at a time), and what Append or Restored commit meanwhile can only add to
// what is due.
func (l *Log) plan() (plan, error) {
	cutoff := l.opts.Now().Add(-l.opts.MaxAge).UnixNano()
	p := plan{floor: noTime, reasons: map[string]int{}}
	err := l.db.View(func(tx *bbolt.Tx) error {
		st, err := loadState(tx)
		if err != nil {
			return err
		}
		// Age: an event is due when the watermark at it is before the cutoff, i.e. it and
		// everything before it were stamped before the cutoff: one seek finds the bound. With
		// no time key at or after the cutoff, either the watermark is still before it (all is
		// due) or it rose past it at an event already deleted (none is).
		ageBound, ageAll := Position{}, false
		if k, _ := tx.Bucket(bucketTimes).Cursor().Seek(timeKey(cutoff, Position{})); k != nil {
			ageBound = timeKeyPos(k)
		} else {
			ageAll = st.mark < cutoff
		}
		excess := st.bytes - l.opts.MaxBytes
		objects := map[string]struct{}{}
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			pos := keyPos(k)
			var reason string
			switch {
			case !st.cut.Less(pos):
				reason = "missing"
			case ageAll || pos.Less(ageBound):
				reason = "age"
			case excess > 0:
				reason = "size"
			default:
				return l.planTimes(tx, &p)
			}
			prefix, err := rawKeyPrefix(pos, v)
			if err != nil {
				return err
			}
			if _, ok := objects[string(prefix)]; !ok {
				if len(objects) == retainObjects {
					p.full = true
					break
				}
				objects[string(prefix)] = struct{}{}
			}
			p.reasons[reason]++
			p.events, p.keys = append(p.events, bytes.Clone(k)), append(p.keys, indexKey(prefix, pos))
			p.freed += int64(len(v))
			excess -= int64(len(v))
			p.through = pos
			if len(p.events) == retainChunk {
				p.full = true
				break
			}
		}
		return l.planTimes(tx, &p)
	})
	return p, storeErr(err)
}

// planTimes adds the time keys of the events planned for deletion: the time index is in feed
// order too, so they are its first keys. It also sorts their key-index keys: scattered over
// the index (one run per object), they are deleted in its order.
func (l *Log) planTimes(tx *bbolt.Tx, p *plan) error {
	if len(p.events) == 0 {
		return nil
	}
	slices.SortFunc(p.keys, bytes.Compare)
	c := tx.Bucket(bucketTimes).Cursor()
	for k, _ := c.First(); k != nil && !p.through.Less(timeKeyPos(k)); k, _ = c.Next() {
		p.times = append(p.times, bytes.Clone(k))
		p.floor = timeKeyNs(k)
	}
	return nil
}

// Restored tells the log that the FSM replaced its state with a snapshot whose newest change is
// at index (the state's latest index). If the log holds events through index — the usual case,
// a restart restoring this node's own snapshot — nothing happens. Otherwise the events between
// Last and index never reached this node (it installed a leader's snapshot, or its event log is
// new): the log declares its history missing through index, so that readers positioned before
// it get a *TooOldError instead of a silent gap, and deletes what it held in the background.
// Appends then continue after index.
func (l *Log) Restored(index uint64) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	next, err := l.writerState()
	if err != nil {
		return err
	}
	if index <= next.last.Index {
		return nil
	}
	prev := next.last
	next.cut = Position{index, math.MaxUint32}
	next.last = next.cut
	// The missing events' stamps are unknown, but before this moment (give or take the
	// leader's clock skew): FromTime refuses times up to now.
	next.floor = max(next.floor, next.mark, l.opts.Now().UnixNano())
	err = l.db.Update(func(tx *bbolt.Tx) error { return putState(tx, next) })
	if err != nil {
		return fmt.Errorf("mark events missing through index %d: %w", index, storeErr(err))
	}
	l.mu.Lock()
	l.st, l.oldest, l.hasOldest = next, Position{}, false
	l.notifyLocked() // subscribers behind the cut learn now that they are too old
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
	l.log.Info("event history missing on this node after a snapshot restore; readers from before it must relist",
		"index", index, "last", prev.Index)
	return nil
}

package state

import "time"

// Change is one committed write to a row that observers follow: the row as it is now, or the
// row as it was when it was deleted.
type Change struct {
	Table   string
	Row     any
	Deleted bool
	// Time is the leader's time stamped into the command that made the change.
	Time time.Time
}

// Observer keeps a derived index (placement's host table) in step with the state without
// rescanning it: it hears every committed change to the hosts and regions tables in commit order,
// from the FSM's goroutine, so it must be quick and must not call back into the store.
type Observer interface {
	// Reset hands over the whole state: when the observer is added and after a restore.
	Reset(v *View)
	// Changed hands over the changes of one committed transaction.
	Changed(index uint64, changes []Change)
}

// observed lists the tables whose changes observers hear about.
func observed(table string) bool { return table == TableHosts || table == TableRegions }

// Observe adds an observer. It is reset with the current state first, under the same lock that
// commits take, so it misses no change and sees none twice.
func (s *Store) Observe(o Observer) {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	o.Reset(s.View())
	s.observers = append(s.observers, o)
}

// ObserveAll adds an observer that hears about the changes of every table (the event feed),
// not only those placement needs. It costs a little on every write, so only a feed asks.
func (s *Store) ObserveAll(o Observer) {
	s.recordAll.Store(true)
	s.Observe(o)
}

func (w *WriteTxn) record(table string, row any, deleted bool) {
	if observed(table) || (w.store.recordAll.Load() && table != TableIndex) {
		w.changes = append(w.changes, Change{Table: table, Row: row, Deleted: deleted, Time: w.now.AsTime()})
	}
}

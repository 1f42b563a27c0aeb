// Package state holds the fleet's replicated state in go-memdb tables: one file per table with
// its reads and its rule-checked writes, plus snapshot and restore of every table.
//
// Rows are protobuf messages and are immutable once inserted: a write clones, changes the clone
// and inserts it, so a reader's view never changes under it.
package state

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/types/known/timestamppb"

	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
)

// Store is the state of one replica. The FSM is its only writer; everyone else reads views.
type Store struct {
	mu      sync.RWMutex
	db      *memdb.MemDB
	abandon chan struct{}

	// commitMu orders commits, restores and new observers, so that observers see every change
	// once and in order.
	commitMu  sync.Mutex
	observers []Observer
	// recordAll: an observer wants every table's changes (ObserveAll).
	recordAll atomic.Bool
}

// New returns an empty store.
func New() *Store {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		panic(fmt.Sprintf("state: bad schema: %v", err)) // a programming error, caught by any test
	}
	return &Store{db: db, abandon: make(chan struct{})}
}

// View returns a consistent read-only view of the current state; it never changes.
func (s *Store) View() *View {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return &View{txn: s.db.Txn(false)}
}

// AbandonCh is closed when a restore replaces this store's contents, so that watchers re-read.
func (s *Store) AbandonCh() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.abandon
}

// Begin starts the write transaction of the command at raft index index, stamped now.
func (s *Store) Begin(index uint64, now time.Time) *WriteTxn {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return &WriteTxn{View: View{txn: s.db.Txn(true)}, store: s, index: index, now: timestamppb.New(now)}
}

// ReplaceWith swaps in the contents of another store (restored from a snapshot) and wakes every
// watcher of the old contents.
func (s *Store) ReplaceWith(other *Store) {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.Lock()
	old := s.abandon
	s.db = other.db
	s.abandon = make(chan struct{})
	s.mu.Unlock()
	close(old)
	for _, o := range s.observers {
		o.Reset(s.View())
	}
}

// View is a consistent read-only view of the state.
type View struct {
	txn *memdb.Txn
}

// Index returns the raft index of the last change to a table (0 if never written).
func (v *View) Index(table string) uint64 {
	raw, err := v.txn.First(TableIndex, "id", table)
	if err != nil || raw == nil {
		return 0
	}
	return raw.(*fsmv1.TableIndex).GetIndex()
}

// WatchTable returns a channel closed when the table next changes.
func (v *View) WatchTable(table string) <-chan struct{} {
	ch, _, err := v.txn.FirstWatch(TableIndex, "id", table)
	if err != nil {
		panic(fmt.Sprintf("state: watch %s: %v", table, err))
	}
	return ch
}

// LatestIndex returns the highest raft index of any change in the view.
func (v *View) LatestIndex() uint64 {
	var max uint64
	for _, t := range Tables {
		if i := v.Index(t); i > max {
			max = i
		}
	}
	return max
}

func (v *View) first(table, index string, arg string) any {
	raw, err := v.txn.First(table, index, arg)
	if err != nil {
		panic(fmt.Sprintf("state: lookup %s.%s: %v", table, index, err)) // schema error
	}
	return raw
}

func (v *View) iter(table, index string, args ...any) memdb.ResultIterator {
	it, err := v.txn.Get(table, index, args...)
	if err != nil {
		panic(fmt.Sprintf("state: iterate %s.%s: %v", table, index, err)) // schema error
	}
	return it
}

// rows returns every row of table matched by index=args, in index order.
func rows[T any](v *View, table, index string, args ...any) []T {
	var out []T
	it := v.iter(table, index, args...)
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(T))
	}
	return out
}

// namesWhere returns up to max names of the rows of table matched by index=args that also
// match (nil: all), and how many match: the blockers a refusal names.
func namesWhere[T named](v *View, max int, match func(T) bool, table, index string, args ...any) ([]string, int) {
	var out []string
	n := 0
	it := v.iter(table, index, args...)
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if row := raw.(T); match == nil || match(row) {
			if n < max {
				out = append(out, row.GetName())
			}
			n++
		}
	}
	return out, n
}

// WriteTxn is the write transaction of one command. Nothing is visible until Commit; Abort
// discards everything, so a rejected command changes nothing.
type WriteTxn struct {
	View
	store   *Store
	index   uint64
	now     *timestamppb.Timestamp
	touched []string
	changes []Change
}

// RaftIndex is the index of the command being applied.
func (w *WriteTxn) RaftIndex() uint64 { return w.index }

// Now is the leader's time stamped into the command.
func (w *WriteTxn) Now() *timestamppb.Timestamp { return w.now }

// SetNow moves the transaction to the next command's time, when one transaction applies
// several commands of a batch.
func (w *WriteTxn) SetNow(now time.Time) { w.now = timestamppb.New(now) }

func (w *WriteTxn) touch(table string) {
	for _, t := range w.touched {
		if t == table {
			return
		}
	}
	w.touched = append(w.touched, table)
}

func (w *WriteTxn) insert(table string, row any) error {
	if err := w.txn.Insert(table, row); err != nil {
		return fmt.Errorf("state: insert into %s: %w", table, err)
	}
	w.touch(table)
	w.record(table, row, false)
	return nil
}

func (w *WriteTxn) remove(table string, row any) error {
	if err := w.txn.Delete(table, row); err != nil {
		return fmt.Errorf("state: delete from %s: %w", table, err)
	}
	w.touch(table)
	w.record(table, row, true)
	return nil
}

// Commit makes the transaction's changes visible, wakes watchers of the tables it touched and
// tells observers.
func (w *WriteTxn) Commit() error {
	for _, t := range w.touched {
		if err := w.txn.Insert(TableIndex, &fsmv1.TableIndex{Table: t, Index: w.index}); err != nil {
			w.txn.Abort()
			return fmt.Errorf("state: bump index of %s: %w", t, err)
		}
	}
	s := w.store
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	w.txn.Commit()
	if len(w.changes) > 0 {
		for _, o := range s.observers {
			o.Changed(w.index, w.changes)
		}
	}
	return nil
}

// Abort discards the transaction.
func (w *WriteTxn) Abort() { w.txn.Abort() }

// Changed returns a channel that is closed once one of tables changes after v was taken, or a
// restore replaces the store's contents; stop releases it. A controller reads a view, does its
// pass, then waits on this beside its own timers, so that no change slips between the two.
func (s *Store) Changed(v *View, tables ...string) (changed <-chan error, stop func()) {
	ws := memdb.NewWatchSet()
	for _, t := range tables {
		ws.Add(v.WatchTable(t))
	}
	ws.Add(s.AbandonCh())
	ctx, cancel := context.WithCancel(context.Background())
	return ws.WatchCh(ctx), cancel
}

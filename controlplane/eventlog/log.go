package eventlog

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"
)

// Options tune a Log. Zero values take the defaults.
type Options struct {
	// MaxAge: events stamped longer ago than this are deleted (default DefaultMaxAge).
	MaxAge time.Duration
	// MaxBytes bounds the stored events (the sum of their encoded sizes, so the file is
	// somewhat larger); the oldest go first (default DefaultMaxBytes).
	MaxBytes int64
	// Now is the clock that MaxAge is measured by (default time.Now).
	Now func() time.Time
	// Logger (default: discard).
	Logger *slog.Logger
	// Registry, when not nil, gets the log's metrics.
	Registry prometheus.Registerer

	// tailEvents bounds the in-memory tail (default tailMaxEvents): tests shrink it so that
	// lagging subscribers go back to the store.
	tailEvents int
	// indexChunk is buildChunk but in tests, which build the key index in many transactions.
	indexChunk int
	// noSync skips fsync: for tests that append thousands of batches. Never in production: the
	// history of entries at or before a raft snapshot cannot be rebuilt.
	noSync bool
}

const (
	DefaultMaxAge   = 7 * 24 * time.Hour
	DefaultMaxBytes = 1 << 30
)

func (o *Options) withDefaults() error {
	if o.MaxAge < 0 {
		return fmt.Errorf("MaxAge: %v is negative", o.MaxAge)
	}
	if o.MaxBytes < 0 {
		return fmt.Errorf("MaxBytes: %d is negative", o.MaxBytes)
	}
	if o.MaxAge == 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// ErrClosed is returned by a closed Log, and by Err of the subscriptions it ended.
var ErrClosed = errors.New("eventlog: closed")

// Log is one node's event history in one bbolt file. Append is for the FSM's single apply
// goroutine; every other method is safe for any number of goroutines.
type Log struct {
	db   *bbolt.DB
	opts Options
	log  *slog.Logger
	m    *metrics

	// wmu is held across every write transaction (Append, retention, Restored), so that the
	// state computed before a transaction is still the state when it commits.
	wmu sync.Mutex
	// lostFrom (under wmu) is the first event of an Append whose transaction failed, until an
	// Append succeeds: if that one does not start with the same event, the events between
	// were lost, and it moves the cut past them (no silent gap).
	lostFrom Position
	// fault, in tests, fails Append's transaction.
	fault func() error
	// rmu serializes retention passes: a chunk is planned outside wmu and must not be planned
	// twice.
	rmu sync.Mutex

	// mu guards what is published after each commit.
	mu        sync.Mutex
	st        state
	oldest    Position
	hasOldest bool
	tail      tail
	// changed is closed and replaced by every commit that adds events or declares history
	// missing: subscribers take it before they look, so no such commit after their look goes
	// unnoticed. Retention does not need to: it cannot pass a subscriber that is waiting,
	// which has seen the newest event.
	changed chan struct{}
	closed  bool

	done      chan struct{} // closed by Close
	kick      chan struct{} // wakes the retention worker
	bg        sync.WaitGroup
	subs      sync.WaitGroup
	closeOnce sync.Once
}

// Open opens or creates the event log at path (its directory is created if missing), and starts
// the retention worker.
func Open(path string, o Options) (*Log, error) {
	if err := o.withDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("event log dir: %w", err)
	}
	// As raftnode's log: the hashmap freelist, not synced, keeps commits cheap once retention
	// has freed many pages (bbolt rebuilds it on open instead).
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout: 2 * time.Second, FreelistType: bbolt.FreelistMapType, NoFreelistSync: true, NoSync: o.noSync,
	})
	if err != nil {
		return nil, fmt.Errorf("open event log %s (is another devfleetd using it?): %w", path, err)
	}
	l := &Log{
		db: db, opts: o, log: o.Logger,
		changed: make(chan struct{}), done: make(chan struct{}), kick: make(chan struct{}, 1),
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketEvents, bucketTimes, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		st, err := loadState(tx)
		if err != nil {
			return err
		}
		l.st = st
		l.oldest, l.hasOldest = firstAfter(tx, st.cut)
		return nil
	})
	if err == nil {
		err = l.openKeyIndex(path, cmp.Or(o.indexChunk, buildChunk))
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open event log %s: %w", path, err)
	}
	l.tail.before, l.tail.maxEvents = l.st.last, o.tailEvents
	if l.tail.maxEvents == 0 {
		l.tail.maxEvents = tailMaxEvents
	}
	if l.m, err = newMetrics(o.Registry, l); err != nil {
		db.Close()
		return nil, err
	}
	l.bg.Add(1)
	go l.retainLoop()
	l.log.Info("event log opened", "path", path, "index", l.st.last.Index, "oldest", l.oldest.Index, "bytes", l.st.bytes)
	return l, nil
}

// Close stops the retention worker, ends every subscription (Err: ErrClosed), waits for them and
// closes the file.
func (l *Log) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		close(l.done)
		l.mu.Unlock()
		l.bg.Wait()
		l.subs.Wait()
		l.wmu.Lock() // an Append in flight finishes first
		defer l.wmu.Unlock()
		err = l.db.Close()
	})
	return err
}

// Last is the newest position stored. After a restart the FSM re-applies raft entries from its
// snapshot on: it must skip every event at or before Last (Append refuses them). N is
// math.MaxUint32 after Restored declared history missing through an index.
func (l *Log) Last() (index uint64, n uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.last.Index, l.st.last.N
}

// Oldest is the index of the oldest retained event (ok false: none is retained).
func (l *Log) Oldest() (index uint64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.oldest.Index, l.hasOldest
}

func (l *Log) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// storeErr maps bbolt's "closed" to ErrClosed for a call that raced with Close.
func storeErr(err error) error {
	if errors.Is(err, bbolt.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// writerState is the log's state for a writer, which holds wmu (so that it cannot change
// under it), or ErrClosed.
func (l *Log) writerState() (state, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return state{}, ErrClosed
	}
	return l.st, nil
}

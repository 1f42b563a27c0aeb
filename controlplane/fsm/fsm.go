// Package fsm is devfleet's raft state machine: it decodes log entries (batches of typed
// commands), dispatches each command to the handler registered for its type, and snapshots and
// restores the state store.
//
// Apply is deterministic: everything a handler needs (time, IDs) is inside the command. A
// handler's error rejects only its own command; the other commands of the batch still apply.
package fsm

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
)

// Result is the outcome of one command of a batch, as seen by the leader that proposed it.
type Result struct {
	// Value is what the handler produced (the stored object), nil on error.
	Value any
	Err   error
	// Index is the raft index the command was applied at.
	Index uint64
}

// FSM implements raft.FSM over a state.Store.
type FSM struct {
	store    *state.Store
	registry *registry
	log      *slog.Logger
	metrics  *Metrics

	lastTime atomic.Int64 // time of the last applied command, Unix nanoseconds

	mu      sync.Mutex
	applied uint64
	advance chan struct{} // closed and replaced whenever applied grows
}

// New returns an FSM that applies commands to store. metrics may be nil.
func New(store *state.Store, log *slog.Logger, metrics *Metrics) *FSM {
	return &FSM{
		store:    store,
		registry: newRegistry(),
		log:      log,
		metrics:  metrics,
		advance:  make(chan struct{}),
	}
}

// Store is the state this FSM writes.
func (f *FSM) Store() *state.Store { return f.store }

// Apply applies one raft log entry and returns []Result, one per command.
//
// An entry that cannot be decoded, or a command of a type this build does not know and may not
// skip, stops the node: applying it differently from the other replicas would be worse.
func (f *FSM) Apply(l *raft.Log) any {
	start := time.Now()
	batch, err := DecodeBatch(l.Data)
	if err != nil {
		f.log.Error("cannot decode raft log entry; stopping rather than diverging", "index", l.Index, "error", err)
		panic(fmt.Sprintf("fsm: log entry %d: %v", l.Index, err))
	}
	results := f.applyBatch(l.Index, batch.GetCommands())
	f.setApplied(l.Index)
	f.metrics.observeBatch(len(results), time.Since(start))
	return results
}

// ApplyCommand applies a single command outside raft at the given index; for tests, benchmarks
// and fuzzing of the handlers.
func (f *FSM) ApplyCommand(index uint64, cmd *fsmv1.Command) Result {
	r := f.applyBatch(index, []*fsmv1.Command{cmd})[0]
	f.setApplied(index)
	return r
}

// applyBatch applies the commands of one entry. The fast path runs them all in one memdb
// transaction, which shares the copied index paths and the index-table update between them
// (most of the apply cost). If any command is rejected, that transaction is discarded and the
// batch is applied again one transaction per command, so that a rejected command changes
// nothing and the others still apply. Both paths end in the same state on every replica.
func (f *FSM) applyBatch(index uint64, cmds []*fsmv1.Command) []Result {
	results := make([]Result, len(cmds))
	if len(cmds) > 1 {
		txn := f.store.Begin(index, time.Time{})
		ok := true
		for i, cmd := range cmds {
			reg, known := f.lookup(index, cmd)
			if !known {
				results[i] = Result{Index: index}
				continue
			}
			txn.SetNow(time.Unix(0, cmd.GetTimeUnixNano()).UTC())
			value, err := reg.handler(txn, cmd)
			if err != nil {
				ok = false
				break
			}
			results[i] = Result{Value: value, Index: index}
		}
		if ok && txn.Commit() == nil {
			for i, cmd := range cmds {
				if results[i].Value == nil && !f.known(cmd) {
					f.metrics.observeCommand("unknown", "skipped")
					continue
				}
				f.observeApplied(cmd, "applied")
			}
			return results
		}
		txn.Abort()
	}
	for i, cmd := range cmds {
		results[i] = f.applyOne(index, cmd)
	}
	return results
}

// lookup finds a command's handler. A command of an unknown type is skipped if it says so,
// and otherwise stops the node.
func (f *FSM) lookup(index uint64, cmd *fsmv1.Command) (registration, bool) {
	reg, ok := f.registry.lookup(cmd)
	if ok {
		return reg, true
	}
	if cmd.GetIgnoreIfUnknown() {
		f.log.Warn("skipping a command of a type this build does not know", "index", index)
		return registration{}, false
	}
	f.log.Error("command of unknown type in the raft log; upgrade this node", "index", index)
	panic(fmt.Sprintf("fsm: log entry %d holds a command of a type this build does not know; upgrade devfleetd", index))
}

func (f *FSM) known(cmd *fsmv1.Command) bool {
	_, ok := f.registry.lookup(cmd)
	return ok
}

func (f *FSM) observeApplied(cmd *fsmv1.Command, result string) {
	if t := cmd.GetTimeUnixNano(); t > f.lastTime.Load() {
		f.lastTime.Store(t)
	}
	f.metrics.observeCommand(TypeName(cmd), result)
}

func (f *FSM) applyOne(index uint64, cmd *fsmv1.Command) Result {
	reg, ok := f.lookup(index, cmd)
	if !ok {
		f.metrics.observeCommand("unknown", "skipped")
		return Result{Index: index}
	}
	txn := f.store.Begin(index, time.Unix(0, cmd.GetTimeUnixNano()).UTC())
	value, err := reg.handler(txn, cmd)
	if err == nil {
		err = txn.Commit()
	} else {
		txn.Abort()
	}
	if err != nil {
		f.observeApplied(cmd, "rejected")
		return Result{Err: err, Index: index}
	}
	f.observeApplied(cmd, "applied")
	return Result{Value: value, Index: index}
}

func (f *FSM) setApplied(index uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if index > f.applied {
		f.applied = index
		close(f.advance)
		f.advance = make(chan struct{})
	}
}

// LastCommandTime is the leader time stamped into the last applied command (Unix nanoseconds),
// so that a new leader never stamps a time before one already applied.
func (f *FSM) LastCommandTime() int64 { return f.lastTime.Load() }

// AppliedIndex is the raft index of the last entry this FSM applied.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied
}

// WaitApplied blocks until the FSM has applied index, or ctx ends.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	for {
		f.mu.Lock()
		applied, ch := f.applied, f.advance
		f.mu.Unlock()
		if applied >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for index %d (applied %d): %w", index, applied, ctx.Err())
		}
	}
}

// Snapshot captures the current state; Persist then writes it while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &snapshot{view: f.store.View()}, nil
}

// Restore replaces the state with a snapshot. On error the old state stays.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	start := time.Now()
	restored, err := state.Restore(rc)
	if err != nil {
		return err
	}
	f.store.ReplaceWith(restored)
	f.setApplied(restored.View().LatestIndex())
	f.log.Info("restored state from snapshot", "index", restored.View().LatestIndex(), "took", time.Since(start))
	return nil
}

type snapshot struct {
	view *state.View
}

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.view.Persist(sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *snapshot) Release() {}

// Metrics counts applied commands by type and outcome and times batches.
type Metrics struct {
	commands   *prometheus.CounterVec
	batchTime  prometheus.Histogram
	batchSizes prometheus.Histogram
}

// NewMetrics registers the FSM's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devfleet_fsm_commands_total",
			Help: "Commands applied by the state machine, by type and result (applied, rejected, skipped).",
		}, []string{"type", "result"}),
		batchTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "devfleet_fsm_apply_seconds",
			Help:    "Time to apply one raft log entry (a batch of commands) to the state.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 4, 10),
		}),
		batchSizes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "devfleet_fsm_batch_commands",
			Help:    "Commands per raft log entry (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
	}
	reg.MustRegister(m.commands, m.batchTime, m.batchSizes)
	return m
}

func (m *Metrics) observeCommand(typ, result string) {
	if m != nil {
		m.commands.WithLabelValues(typ, result).Inc()
	}
}

func (m *Metrics) observeBatch(n int, d time.Duration) {
	if m != nil {
		m.batchTime.Observe(d.Seconds())
		m.batchSizes.Observe(float64(n))
	}
}

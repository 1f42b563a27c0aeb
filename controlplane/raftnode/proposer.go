package raftnode

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/fsm"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
)

const (
	// maxBatchBytes bounds one log entry so that followers and snapshots never see a huge one.
	maxBatchBytes = 4 << 20
	// maxCommandBytes refuses a single command larger than this outright.
	maxCommandBytes = 1 << 20
)

// proposer implements group commit: proposals queue up while up to maxInflight log entries are
// being replicated, and the next entry carries every queued proposal. One writer alone gets an
// entry to itself at once; many writers share entries, so throughput is not bounded by the
// number of raft entries per second. Each proposal still waits for its own entry to commit and
// gets its own result.
type proposer struct {
	raft     *raft.Raft
	fsm      *fsm.FSM
	in       chan *proposal
	slots    chan struct{}
	quit     chan struct{}
	stopOnce sync.Once
	done     sync.WaitGroup
	maxBatch int
	metrics  *Metrics
	log      *slog.Logger

	// commitDelay bounds how long a new entry waits for writers expected back; see loop.
	commitDelay time.Duration
	// pending counts writers waiting in propose; peak is its maximum since the last entry.
	pending atomic.Int64
	peak    atomic.Int64
}

type proposal struct {
	cmd   *fsmv1.Command
	size  int
	start time.Time
	done  chan outcome
}

type outcome struct {
	res fsm.Result
	err error
}

func newProposer(r *raft.Raft, f *fsm.FSM, maxBatch, maxInflight int, commitDelay time.Duration, m *Metrics, log *slog.Logger) *proposer {
	p := &proposer{
		commitDelay: commitDelay,
		raft:        r,
		fsm:         f,
		in:          make(chan *proposal, 4*maxBatch),
		slots:       make(chan struct{}, maxInflight),
		quit:        make(chan struct{}),
		maxBatch:    maxBatch,
		metrics:     m,
		log:         log,
	}
	p.done.Add(1)
	go p.loop()
	return p
}

func (p *proposer) stop() {
	p.stopOnce.Do(func() { close(p.quit) })
	p.done.Wait()
}

// propose queues cmd for the next log entry and waits for its result. The leader's clock is
// stamped into the command here, on the leader, just before it is encoded.
func (p *proposer) propose(ctx context.Context, cmd *fsmv1.Command) (fsm.Result, error) {
	if p.raft.State() != raft.Leader {
		return fsm.Result{}, ErrNotLeader
	}
	size := proto.Size(cmd)
	if size > maxCommandBytes {
		return fsm.Result{}, apierror.Invalid("", "request too large: %d bytes encoded, the limit is %d", size, maxCommandBytes)
	}
	pr := &proposal{cmd: cmd, size: size, start: time.Now(), done: make(chan outcome, 1)}
	if n := p.pending.Add(1); n > p.peak.Load() {
		p.peak.Store(n) // racy max: an estimate is all the commit delay needs
	}
	defer p.pending.Add(-1)
	select {
	case p.in <- pr:
	case <-ctx.Done():
		return fsm.Result{}, ctx.Err()
	case <-p.quit:
		return fsm.Result{}, apierror.NoLeader("this node is shutting down")
	}
	select {
	case o := <-pr.done:
		return o.res, o.err
	case <-ctx.Done():
		// The command may still commit: the caller learns only that it did not wait.
		return fsm.Result{}, ctx.Err()
	}
}

func (p *proposer) loop() {
	defer p.done.Done()
	var last int64
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		select {
		case p.slots <- struct{}{}:
		case <-p.quit:
			p.failQueued()
			return
		}
		var batch []*proposal
		select {
		case pr := <-p.in:
			batch = append(batch, pr)
		case <-p.quit:
			p.failQueued()
			return
		}
		size := batch[0].size
		// Writers answered by the entry that just committed usually come back within a
		// moment; waiting briefly for them (as PostgreSQL's commit_delay waits for
		// commit_siblings) keeps them in this entry instead of splitting the writers into two
		// half-size entries that alternate. The wait happens only when more writers were
		// recently waiting than are queued now (a lone writer never waits), ends as soon as
		// they are all back or arrivals pause for a quarter of the delay, and never exceeds it.
		expect := int(p.peak.Swap(p.pending.Load()))
		var deadline time.Time
		if p.commitDelay > 0 && expect > 1 {
			deadline = time.Now().Add(p.commitDelay)
		}
	gather:
		for len(batch) < p.maxBatch && size < maxBatchBytes {
			select {
			case pr := <-p.in:
				batch = append(batch, pr)
				size += pr.size
				continue
			default:
			}
			wait := min(time.Until(deadline), p.commitDelay/4)
			if deadline.IsZero() || len(batch) >= expect || wait <= 0 {
				break gather
			}
			linger.Reset(wait)
			select {
			case pr := <-p.in:
				linger.Stop()
				batch = append(batch, pr)
				size += pr.size
			case <-linger.C:
				break gather
			case <-p.quit:
				linger.Stop()
				break gather
			}
		}

		now := time.Now().UnixNano()
		if floor := p.fsm.LastCommandTime(); now <= floor {
			now = floor + 1 // keep command time monotonic across leaders with skewed clocks
		}
		if now <= last {
			now = last + 1
		}
		last = now
		cmds := make([]*fsmv1.Command, len(batch))
		for i, pr := range batch {
			pr.cmd.TimeUnixNano = now
			cmds[i] = pr.cmd
		}
		data, err := fsm.EncodeBatch(cmds)
		if err != nil {
			p.finish(batch, nil, fmt.Errorf("encode batch: %w", err))
			<-p.slots
			continue
		}
		if len(data) > maxBatchBytes {
			p.log.Warn("large raft log entry", "bytes", len(data), "commands", len(batch))
		}
		future := p.raft.Apply(data, 0)
		p.metrics.observeBatch(len(batch))
		go func() {
			err := future.Error()
			<-p.slots
			var results []fsm.Result
			if err == nil {
				results, _ = future.Response().([]fsm.Result)
				if len(results) != len(batch) {
					err = fmt.Errorf("raft returned %d results for %d commands", len(results), len(batch))
				}
			}
			p.finish(batch, results, mapRaftError(err))
		}()
	}
}

func (p *proposer) finish(batch []*proposal, results []fsm.Result, err error) {
	now := time.Now()
	for i, pr := range batch {
		o := outcome{err: err}
		if err == nil {
			o.res, o.err = results[i], results[i].Err
		}
		p.metrics.observeCommit(now.Sub(pr.start))
		pr.done <- o
	}
}

func (p *proposer) failQueued() {
	for {
		select {
		case pr := <-p.in:
			pr.done <- outcome{err: apierror.NoLeader("this node is shutting down")}
		default:
			return
		}
	}
}

// Package leader runs the work that only the raft leader does. On gaining leadership it waits
// for a barrier (so the local state holds every committed write), then starts the registered
// controllers in order; on losing it, it stops them in reverse order before anything else runs.
package leader

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Controller is leader-only work: a reconciler that runs while this node leads.
type Controller interface {
	// Name identifies the controller in logs and metrics.
	Name() string
	// Run works until ctx is cancelled (leadership lost or shutdown) and then returns. An error
	// returned while still leader is logged and the controller is restarted after a backoff.
	Run(ctx context.Context) error
}

// Raft is what the lifecycle needs of the raft node.
type Raft interface {
	// Barrier returns once every entry committed before it is applied locally.
	Barrier(ctx context.Context) error
}

// Lifecycle starts and stops controllers with leadership.
type Lifecycle struct {
	raft        Raft
	log         *slog.Logger
	controllers []Controller
	ready       atomic.Bool
	// BarrierRetry is the pause between failed barriers; tests shorten it.
	BarrierRetry time.Duration
	// RestartBackoff is the first pause before restarting a failed controller; it doubles to 30s.
	RestartBackoff time.Duration
}

// New returns a lifecycle over r. Register controllers before Run.
func New(r Raft, log *slog.Logger) *Lifecycle {
	return &Lifecycle{raft: r, log: log, BarrierRetry: 500 * time.Millisecond, RestartBackoff: time.Second}
}

// Register adds a controller; they start in registration order and stop in reverse.
func (l *Lifecycle) Register(c Controller) { l.controllers = append(l.controllers, c) }

// Ready reports whether this node is the leader and has finished establishing leadership: its
// state is current and its controllers run. Consistent reads are refused until then.
func (l *Lifecycle) Ready() bool { return l.ready.Load() }

// Run follows leadership changes from changes until ctx ends, then stops everything.
func (l *Lifecycle) Run(ctx context.Context, changes <-chan bool) {
	var stop func()
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case isLeader := <-changes:
			if stop != nil {
				stop()
				stop = nil
			}
			if isLeader {
				stop = l.establish(ctx, changes)
			}
		}
	}
}

// establish waits for the barrier, then starts the controllers and returns the function that
// stops them. A leadership change that arrives during the barrier is handled here: losing
// leadership abandons the barrier and starts nothing.
func (l *Lifecycle) establish(ctx context.Context, changes <-chan bool) func() {
	leadCtx, cancelLead := context.WithCancel(ctx)
	barrierDone := make(chan struct{})
	go func() {
		defer close(barrierDone)
		for {
			bctx, cancel := context.WithTimeout(leadCtx, 30*time.Second)
			err := l.raft.Barrier(bctx)
			cancel()
			if err == nil {
				return
			}
			if leadCtx.Err() != nil {
				return
			}
			l.log.Warn("leader barrier failed; retrying", "error", err)
			select {
			case <-leadCtx.Done():
				return
			case <-time.After(l.BarrierRetry):
			}
		}
	}()
	select {
	case <-barrierDone:
	case isLeader := <-changes:
		cancelLead()
		<-barrierDone
		if isLeader {
			return l.establish(ctx, changes)
		}
		return nil
	case <-ctx.Done():
		cancelLead()
		<-barrierDone
		return nil
	}
	if leadCtx.Err() != nil {
		cancelLead()
		return nil
	}

	type running struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	runs := make([]running, 0, len(l.controllers))
	for _, c := range l.controllers {
		cctx, cancel := context.WithCancel(leadCtx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			l.supervise(cctx, c)
		}()
		runs = append(runs, running{cancel: cancel, done: done})
		l.log.Info("controller started", "controller", c.Name())
	}
	l.ready.Store(true)
	l.log.Info("leadership established", "controllers", len(runs))

	var once sync.Once
	return func() {
		once.Do(func() {
			l.ready.Store(false)
			for i := len(runs) - 1; i >= 0; i-- {
				runs[i].cancel()
				<-runs[i].done
				l.log.Info("controller stopped", "controller", l.controllers[i].Name())
			}
			cancelLead()
			l.log.Info("leadership revoked")
		})
	}
}

// supervise runs c until ctx ends, restarting it with backoff when it fails.
func (l *Lifecycle) supervise(ctx context.Context, c Controller) {
	backoff := l.RestartBackoff
	for {
		err := c.Run(ctx)
		if ctx.Err() != nil {
			return
		}
		l.log.Error("controller failed; restarting", "controller", c.Name(), "error", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

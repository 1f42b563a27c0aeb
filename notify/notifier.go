package notify

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config wires a Notifier. Zero values take the defaults.
type Config struct {
	// Sinks receive every message; their names must be unique. None is valid: messages are
	// then discarded.
	Sinks []Sink
	// QueueSize bounds each sink's queue (default 1000); when full, the oldest message goes.
	QueueSize int
	// BackoffBase and BackoffMax shape the pause between attempts: BackoffBase doubled per
	// failure up to BackoffMax, with jitter (default 1s and 1m).
	BackoffBase, BackoffMax time.Duration
	// MaxAttempts is how many times a message is tried before it becomes a dead letter
	// (default 8: one to two minutes of retries with the default backoff).
	MaxAttempts int
	// MaxRetryAfter caps the pause a receiver may ask for with Retry-After (default 5m), so
	// that a receiver cannot park its queue for hours.
	MaxRetryAfter time.Duration
	// MaxDeadLetters bounds the list DeadLetters returns (default 100, the oldest go first).
	MaxDeadLetters int
	// OnDeadLetter, if set, is called once per dead letter, from the sink's worker: that
	// sink's deliveries wait for it, so it should return promptly (propose with a timeout).
	OnDeadLetter func(DeadLetter)
	Logger       *slog.Logger
	// Registry receives the metrics; nil means none. Register one Notifier per registry.
	Registry prometheus.Registerer
	// Now stamps dead letters (default time.Now).
	Now func() time.Time
	// Sleep waits between attempts and returns ctx's error if ctx ends first (default: a
	// timer). Tests replace it to record the pauses instead of waiting them out.
	Sleep func(ctx context.Context, d time.Duration) error
}

func (c *Config) defaults() error {
	if c.QueueSize <= 0 {
		c.QueueSize = 1000
	}
	if c.BackoffBase <= 0 {
		c.BackoffBase = time.Second
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = max(time.Minute, c.BackoffBase)
	}
	if c.BackoffMax < c.BackoffBase {
		return invalid("notify.backoff_max", "must not be less than backoff_base (%s), got %s", c.BackoffBase, c.BackoffMax)
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 8
	}
	if c.MaxRetryAfter <= 0 {
		c.MaxRetryAfter = 5 * time.Minute
	}
	if c.MaxDeadLetters <= 0 {
		c.MaxDeadLetters = 100
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Sleep == nil {
		c.Sleep = sleep
	}
	seen := map[string]bool{}
	for i, s := range c.Sinks {
		switch {
		case s == nil:
			return invalid("notify.sinks", "sink %d is nil", i)
		case s.Name() == "":
			return invalid("notify.sinks", "sink %d has no name", i)
		case seen[s.Name()]:
			return invalid("notify.sinks", "two sinks are named %q (names label metrics and dead letters)", s.Name())
		}
		seen[s.Name()] = true
	}
	return nil
}

// Notifier queues messages in front of sinks and delivers them, each sink in order with
// retries. It is a leader controller (leader.Controller): make one per process, since its
// metrics register once, and let the leader lifecycle call Run on every term. Messages
// enqueued while it does not run wait in the (bounded) queues for the next Run.
type Notifier struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	sinks   []*target
	running atomic.Bool

	deadMu sync.Mutex
	dead   []DeadLetter
}

// target is a sink and its queue.
type target struct {
	sink Sink
	name string
	q    *queue
}

// New returns a Notifier, or an error naming the invalid configuration field.
func New(cfg Config) (*Notifier, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	n := &Notifier{cfg: cfg, log: cfg.Logger.With("controller", "notify"), metrics: newMetrics(cfg.Registry, cfg.Sinks)}
	for _, s := range cfg.Sinks {
		n.sinks = append(n.sinks, &target{sink: s, name: s.Name(), q: newQueue(cfg.QueueSize, n.metrics.depth.WithLabelValues(s.Name()))})
	}
	return n, nil
}

// Name identifies the controller.
func (n *Notifier) Name() string { return "notify" }

// Enqueue queues m for every sink and returns at once: it waits for no sink, only for a short
// lock per sink. A full queue drops its oldest message. A message without an ID is refused
// (logged), since receivers could not dedupe it.
func (n *Notifier) Enqueue(m Message) {
	if m.ID == "" {
		n.log.Warn("message without an ID not queued", "kind", m.Kind, "subject", m.Subject)
		return
	}
	m.Fields = maps.Clone(m.Fields) // sinks read it concurrently with the caller
	for _, t := range n.sinks {
		dropped, burst := t.q.push(m)
		if dropped {
			n.metrics.dropped.WithLabelValues(t.name).Inc()
		}
		if burst {
			n.log.Warn("queue full; dropping the oldest messages until it has room",
				"sink", t.name, "queue_size", n.cfg.QueueSize)
		}
	}
}

// Run delivers until ctx ends, with one worker per sink, then returns nil once every worker
// has stopped. A delivery that ctx interrupts is put back at the head of its queue for the
// next Run (it may have reached the receiver: delivery is at least once).
func (n *Notifier) Run(ctx context.Context) error {
	if !n.running.CompareAndSwap(false, true) {
		return errors.New("notify: Run called while already running")
	}
	defer n.running.Store(false)
	var wg sync.WaitGroup
	for _, t := range n.sinks {
		wg.Go(func() { n.work(ctx, t) })
	}
	wg.Wait()
	return nil
}

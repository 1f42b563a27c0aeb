package notify

import (
	"context"
	"math/rand/v2"
	"time"
)

// work delivers t's queue in order until ctx ends.
func (n *Notifier) work(ctx context.Context, t *target) {
	for {
		m, ok := t.q.pop()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-t.q.wake:
				continue
			}
		}
		if !n.deliver(ctx, t, m) {
			if t.q.requeue(m) {
				n.metrics.dropped.WithLabelValues(t.name).Inc()
			}
			return
		}
	}
}

// deliver tries m until t's sink accepts it or it becomes a dead letter, and reports true; it
// reports false if ctx ended first, since then the outcome is unknown rather than a failure of
// the sink's.
func (n *Notifier) deliver(ctx context.Context, t *target, m Message) bool {
	for attempt := 1; ; attempt++ {
		start := time.Now()
		err := t.sink.Deliver(ctx, m)
		n.metrics.seconds.WithLabelValues(t.name).Observe(time.Since(start).Seconds())
		if err == nil {
			n.metrics.delivered.WithLabelValues(t.name).Inc()
			n.log.Debug("delivered", "sink", t.name, "message", m.ID, "attempts", attempt)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if IsPermanent(err) || attempt >= n.cfg.MaxAttempts {
			n.bury(t, m, attempt, err)
			return true
		}
		n.metrics.retried.WithLabelValues(t.name).Inc()
		wait := max(backoff(n.cfg.BackoffBase, n.cfg.BackoffMax, attempt), min(retryAfter(err), n.cfg.MaxRetryAfter))
		n.log.Warn("delivery failed; retrying", "sink", t.name, "message", m.ID, "attempt", attempt,
			"retry_in", wait, "error", err)
		if n.cfg.Sleep(ctx, wait) != nil {
			return false
		}
	}
}

// backoff is the pause after the attempt-th failure: base doubled per failure up to limit, less
// a random part of up to half, so that sinks failing together do not retry in step, and the
// pause never shrinks to nothing.
func backoff(base, limit time.Duration, attempt int) time.Duration {
	d := limit
	if k := attempt - 1; k < 63 && base <= limit>>k {
		d = base << k
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// sleep waits d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// connState is where a host's connection loop is.
type connState int

const (
	// stateConnecting: an attempt runs (the first, or right after a connection was lost); calls
	// wait for it.
	stateConnecting connState = iota
	// stateConnected: calls go to the session.
	stateConnected
	// stateBackoff: the last attempt failed; calls fail at once until the next one.
	stateBackoff
	// stateStopped: forgotten or the Connector closed.
	stateStopped
)

// errUnresponsive is why a connection whose pings keep timing out is dropped.
var errUnresponsive = errors.New("host stopped answering")

// hostConn is one host's connection loop: connect, watch (ping), reconnect with backoff.
type hostConn struct {
	c    *Connector
	name string
	uri  string
	t    target

	ctx    context.Context // ends when the host is forgotten
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns
	kick   chan struct{} // capacity 1: a call saw the connection fail; check now

	lastSeen atomic.Int64 // unix nanoseconds of the last answer

	mu       sync.Mutex
	state    connState
	sess     session
	lastErr  error
	failures int
	known    bool // a verdict was reported
	reach    bool // the reported verdict
	since    time.Time
	// changed is closed and replaced whenever state or sess changes.
	changed chan struct{}
}

func newHostConn(c *Connector, name, uri string, t target) *hostConn {
	ctx, cancel := context.WithCancel(context.Background())
	return &hostConn{
		c: c, name: name, uri: uri, t: t, ctx: ctx, cancel: cancel,
		done: make(chan struct{}), kick: make(chan struct{}, 1), changed: make(chan struct{}),
	}
}

// stop ends the loop and waits until the connection is closed.
func (h *hostConn) stop() {
	h.cancel()
	<-h.done
}

// run connects, watches the connection until it is lost, and connects again, until stopped. A
// lost connection is made again at once, unless it lived shorter than a ping interval (a
// flapping daemon), which counts as a failed attempt.
func (h *hostConn) run() {
	defer close(h.done)
	defer h.setState(stateStopped, nil)
	log := h.c.log.With("host", h.name, "uri", h.uri)
	for h.ctx.Err() == nil {
		h.setState(stateConnecting, nil)
		s, err := h.dial()
		if h.ctx.Err() != nil {
			if s != nil {
				s.Close()
			}
			return
		}
		if err != nil {
			h.failed(err)
			log.Debug("hypervisor: connect failed", "error", err, "failures", h.failureCount())
			if !sleep(h.ctx, h.backoff()) {
				return
			}
			continue
		}
		up := time.Now()
		h.connected(s)
		unresponsive, err := h.watch(s)
		// Unpublish before closing, so that no call picks the dying session.
		h.setState(stateConnecting, nil)
		if err == nil { // stopped: a graceful goodbye
			s.Close()
			return
		}
		// A lost connection needs no goodbye, and an unresponsive daemon would not answer one.
		s.abort()
		log.Debug("hypervisor: connection lost", "error", err)
		if unresponsive {
			h.failed(err)
		} else if time.Since(up) < h.c.opts.PingInterval {
			h.failed(err)
			if !sleep(h.ctx, h.backoff()) {
				return
			}
		}
	}
}

// dial makes one connection attempt, bounded by the dial timeout.
func (h *hostConn) dial() (session, error) {
	timeout := h.c.opts.Conn.DialTimeout
	if timeout <= 0 {
		timeout = defaultDialTimeout
	}
	ctx, cancel := context.WithTimeout(h.ctx, timeout)
	defer cancel()
	return h.c.dial(ctx, h.name, h.uri, h.t)
}

// watch pings s every interval (and whenever a call saw it fail) until it is lost, it misses
// too many pings (unresponsive), or the host is stopped (nil error).
func (h *hostConn) watch(s session) (unresponsive bool, err error) {
	o := h.c.opts
	timer := time.NewTimer(jitter(o.PingInterval, 0.1))
	defer timer.Stop()
	missed := 0
	for {
		select {
		case <-h.ctx.Done():
			return false, nil
		case <-s.Disconnected():
			return false, newError(h.name, OpPing, "", errNotConnected)
		case <-h.kick:
		case <-timer.C:
		}
		ctx, cancel := context.WithTimeout(h.ctx, o.PingTimeout)
		err := s.Ping(ctx)
		cancel()
		timer.Reset(jitter(o.PingInterval, 0.1))
		switch {
		case err == nil:
			missed = 0
			h.touch()
		case h.ctx.Err() != nil:
			return false, nil
		case IsUnavailable(err):
			return false, err
		default:
			missed++
			if missed >= o.MaxMissedPings {
				return true, &Error{Host: h.name, Op: OpPing, Kind: KindUnavailable, Err: errUnresponsive,
					Message: fmt.Sprintf("%v: %d pings in a row failed, the last with: %s", errUnresponsive, missed, messageOf(err))}
			}
		}
	}
}

// connected publishes a new session and reports the host reachable.
func (h *hostConn) connected(s session) {
	h.touch()
	h.mu.Lock()
	h.failures, h.lastErr = 0, nil
	h.mu.Unlock()
	h.setState(stateConnected, s)
	h.report(true)
}

// failed records a failed attempt (or an unresponsive connection) and reports the host
// unreachable.
func (h *hostConn) failed(err error) {
	h.mu.Lock()
	h.failures++
	h.lastErr = err
	h.mu.Unlock()
	h.setState(stateBackoff, nil)
	h.report(false)
}

func (h *hostConn) failureCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failures
}

// backoff is the pause after the current run of failures, ±20%.
func (h *hostConn) backoff() time.Duration {
	return jitter(backoffDelay(h.failureCount(), h.c.opts.BackoffMin, h.c.opts.BackoffMax), 0.2)
}

// backoffDelay is the pause after n failures in a row: lo, doubling with each failure, capped at
// hi.
func backoffDelay(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

func (h *hostConn) setState(st connState, s session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.state, h.sess = st, s
	close(h.changed)
	h.changed = make(chan struct{})
}

// report tells OnHealth and the log when the verdict changes (or is first known). Only the loop
// calls it, so reports of one host are serialized.
func (h *hostConn) report(reachable bool) {
	h.mu.Lock()
	if h.known && h.reach == reachable {
		h.mu.Unlock()
		return
	}
	h.known, h.reach, h.since = true, reachable, time.Now()
	hl := h.healthLocked()
	h.mu.Unlock()
	if reachable {
		h.c.log.Info("hypervisor: host reachable", "host", h.name, "uri", h.uri)
	} else {
		h.c.log.Warn("hypervisor: host unreachable", "host", h.name, "uri", h.uri, "error", hl.Err, "failures", hl.Failures)
	}
	if f := h.c.opts.OnHealth; f != nil {
		f(hl)
	}
}

// touch records that the host answered.
func (h *hostConn) touch() { h.lastSeen.Store(time.Now().UnixNano()) }

// poke asks the loop to check the connection now.
func (h *hostConn) poke() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

func (h *hostConn) health() Health {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.healthLocked()
}

func (h *hostConn) healthLocked() Health {
	hl := Health{Host: h.name, URI: h.uri, Reachable: h.known && h.reach, Since: h.since, Failures: h.failures}
	if !hl.Reachable {
		hl.Err = h.lastErr
	}
	if ns := h.lastSeen.Load(); ns != 0 {
		hl.LastSeen = time.Unix(0, ns)
	}
	return hl
}

// jitter returns d changed by a random fraction up to ±f.
func jitter(d time.Duration, f float64) time.Duration {
	return time.Duration(float64(d) * (1 + f*(2*rand.Float64()-1)))
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

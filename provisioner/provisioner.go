// Package provisioner puts devservers onto their hosts' hypervisors and keeps them there. On the
// leader it creates, starts, stops and deletes guests until libvirt matches what the state asks,
// notices guests that vanish or stop behind its back, recreates lost devservers as their flavor's
// repair policy says, and reaps expired temporary devservers after warning their owners.
//
// Every step looks before it acts (is the guest there already? is it ours?), and every record it
// writes is guarded by the devserver's ID and expected state, so a new leader can finish or undo
// whatever the previous one left half-done without ever making a second guest.
package provisioner

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/fsm"
	"github.com/devfleet/devfleet/controlplane/hypervisor"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Proposer replicates a command and returns its result once applied (the raft node).
type Proposer interface {
	Propose(ctx context.Context, cmd *fsmv1.Command) (fsm.Result, error)
}

// Hypervisors hands out the connections to hosts' libvirt (hypervisor.Connector).
type Hypervisors interface {
	Open(name, uri string) (hypervisor.Hypervisor, error)
	// Forget closes the connection of a host that left the state.
	Forget(name, uri string)
	// Healths says which hosts answer.
	Healths() []hypervisor.Health
}

// Placer chooses a host for a devserver (capacity.Index).
type Placer interface {
	Place(req *capacity.Request) capacity.Decision
}

// Config wires a Controller.
type Config struct {
	Store       *state.Store
	Raft        Proposer
	Hypervisors Hypervisors
	Placer      Placer
	Logger      *slog.Logger
	// Registry receives the provisioner's metrics; nil means none.
	Registry prometheus.Registerer

	// Workers bounds the libvirt steps in flight (default 8).
	Workers int
	// CallTimeout bounds one step's libvirt calls (default 2m: a fresh daemon's first define
	// takes seconds).
	CallTimeout time.Duration
	// ShutdownGrace is how long a guest may take to power off before it is cut (default 30s).
	ShutdownGrace time.Duration
	// Resync is how often every host's domains are compared with the state, on top of libvirt's
	// events (default 30s).
	Resync time.Duration
	// ExpiryWarning is how long before a temporary devserver expires its owner is told (default
	// 24h).
	ExpiryWarning time.Duration
	// RetryMin and RetryMax bound the backoff of a failing step (default 1s and 1m).
	RetryMin, RetryMax time.Duration
	// Now is the clock of expiry (default time.Now); tests move it. Retries and timeouts run
	// on the real clock.
	Now func() time.Time
}

func (c *Config) defaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Workers <= 0 {
		c.Workers = 8
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 2 * time.Minute
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = 30 * time.Second
	}
	if c.Resync <= 0 {
		c.Resync = 30 * time.Second
	}
	if c.ExpiryWarning <= 0 {
		c.ExpiryWarning = 24 * time.Hour
	}
	if c.RetryMin <= 0 {
		c.RetryMin = time.Second
	}
	if c.RetryMax <= 0 {
		c.RetryMax = time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// settle is the least pause between two passes over the state; a pass that took long makes
// the pause longer (passBudget), so that a big fleet under a stream of writes spends at most a
// fifth of a core walking it.
const (
	settle     = 20 * time.Millisecond
	passBudget = 4
)

// Controller is the provisioner, run on the leader by the leader lifecycle.
type Controller struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
}

// New returns a provisioner.
func New(cfg Config) *Controller {
	cfg.defaults()
	return &Controller{cfg: cfg, log: cfg.Logger.With("controller", "provisioner"), metrics: newMetrics(cfg.Registry)}
}

// Name identifies the controller.
func (c *Controller) Name() string { return "provisioner" }

// Run works until ctx ends: it first compares every reachable host's domains with the state
// (what makes a new leader safe), then acts on every change of the state, every libvirt event
// that may mean a lost guest, and every retry or expiry that falls due.
func (c *Controller) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	r := &run{c: c, ctx: ctx, inflight: map[string]bool{}, retry: map[string]retryState{}, seq: map[string]uint64{},
		suspect: map[string]bool{}, watchers: map[string]context.CancelFunc{}, orphans: map[string]bool{},
		poke: make(chan struct{}, 1), slots: make(chan struct{}, c.cfg.Workers)}
	defer func() {
		cancel()
		r.wg.Wait()
		c.metrics.orphans.Reset()
		// Only the leader talks to the hosts: a node that lost leadership lets go of them.
		for key := range r.watchers {
			name, uri, _ := strings.Cut(key, "\x00")
			c.cfg.Hypervisors.Forget(name, uri)
		}
	}()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.reportHealth(ctx)
	}()
	resync := time.NewTicker(c.cfg.Resync)
	defer resync.Stop()
	first := true
	for {
		v := c.cfg.Store.View()
		ws := memdb.NewWatchSet()
		for _, t := range []string{state.TableDevservers, state.TableHosts, state.TableFlavors, state.TableContainers, state.TablePools} {
			ws.Add(v.WatchTable(t))
		}
		ws.Add(c.cfg.Store.AbandonCh())
		r.watchHosts(v, first)
		first = false
		began := time.Now()
		wake := earliest(r.dispatch(v), r.dispatchContainers(v))
		took := time.Since(began)
		if !r.wait(ws, wake, resync.C, v) {
			return nil
		}
		// Let a burst of writes settle, so that a busy fleet costs one pass per burst.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(max(settle, passBudget*took)):
		}
	}
}

// wait blocks until the state changes, a step ends, wake (if set) comes, or the resync ticks;
// false when ctx ended.
func (r *run) wait(ws memdb.WatchSet, wake time.Time, resync <-chan time.Time, v *state.View) bool {
	var timer <-chan time.Time
	if !wake.IsZero() {
		t := time.NewTimer(max(time.Until(wake), 10*time.Millisecond))
		defer t.Stop()
		timer = t.C
	}
	watchCtx, stopWatch := context.WithCancel(r.ctx)
	defer stopWatch()
	changed := ws.WatchCh(watchCtx)
	select {
	case <-r.ctx.Done():
		return false
	case <-changed:
	case <-r.poke:
	case <-timer:
	case <-resync:
		r.suspectAll(v)
	}
	return true
}

// run is one leadership's worth of provisioner state.
type run struct {
	c   *Controller
	ctx context.Context
	wg  sync.WaitGroup

	mu       sync.Mutex
	inflight map[string]bool // devserver names, and "host:"+name for host checks
	retry    map[string]retryState
	// seq counts the steps started per devserver, so that a host check can tell that a step
	// ran while it looked and not trust what it saw of that devserver.
	seq      map[string]uint64
	suspect  map[string]bool // hosts whose domains must be compared with the state
	watchers map[string]context.CancelFunc
	orphans  map[string]bool // host/domain/id of the orphans already logged

	poke  chan struct{}
	slots chan struct{}
}

type retryState struct {
	at      time.Time
	backoff time.Duration
}

func (r *run) wake() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

// dispatch starts the devserver steps and reaper steps that are due, in one walk of the
// devservers, and returns when the next retry or expiry falls due (zero: none).
func (r *run) dispatch(v *state.View) time.Time {
	now, expiryNow := time.Now(), r.c.cfg.Now()
	var soonest time.Time
	hosts := map[string]*v1.Host{}
	host := func(name string) *v1.Host {
		if h, ok := hosts[name]; ok {
			return h
		}
		h, _ := v.GetHost(name)
		hosts[name] = h
		return h
	}
	flavors := map[string]*v1.Flavor{}
	for _, f := range v.Flavors() {
		flavors[f.GetName()] = f
	}
	v.EachDevserver(func(d *v1.Devserver) {
		soonest = earliest(soonest, r.reap(d, expiryNow, now))
		var h *v1.Host
		if d.GetHost() != "" {
			h = host(d.GetHost())
		}
		s := next(d, h, flavors[d.GetFlavor()])
		if s == stepNone {
			return
		}
		soonest = earliest(soonest, r.startWhenDue(d.GetName(), now, string(s), func(ctx context.Context) error {
			return r.do(ctx, s, d, h, flavors[d.GetFlavor()])
		}))
	})
	r.mu.Lock()
	var check []string
	for h := range r.suspect {
		if !r.inflight["host:"+h] {
			check = append(check, h)
		}
	}
	r.mu.Unlock()
	for _, name := range check {
		h := host(name)
		r.mu.Lock()
		delete(r.suspect, name)
		r.mu.Unlock()
		if h == nil || !state.Managed(h) {
			continue
		}
		r.start("host:"+name, func(ctx context.Context) error { return r.checkHost(ctx, h) }, "check")
	}
	return soonest
}

// due reports whether a key may be worked on now, or when it may.
func (r *run) due(key string, now time.Time) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inflight[key] {
		return time.Time{}, false
	}
	if rs, ok := r.retry[key]; ok && now.Before(rs.at) {
		return rs.at, false
	}
	return time.Time{}, true
}

// startWhenDue starts fn for key unless key is in flight or backing off; it returns when a
// backing-off key is due (zero otherwise).
func (r *run) startWhenDue(key string, now time.Time, what string, fn func(ctx context.Context) error) time.Time {
	if at, ok := r.due(key, now); !ok {
		return at
	}
	r.start(key, fn, what)
	return time.Time{}
}

// earliest is the earlier of two wake times, zero meaning none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// start runs fn for key on a worker unless key is already in flight; a failure backs key off.
func (r *run) start(key string, fn func(ctx context.Context) error, what string) {
	r.mu.Lock()
	if r.inflight[key] {
		r.mu.Unlock()
		return
	}
	r.inflight[key] = true
	r.seq[key]++
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		select {
		case r.slots <- struct{}{}:
		case <-r.ctx.Done():
			r.finish(key, nil)
			return
		}
		ctx, cancel := context.WithTimeout(r.ctx, r.c.cfg.CallTimeout)
		began := time.Now()
		err := fn(ctx)
		cancel()
		<-r.slots
		r.c.metrics.observe(what, err, time.Since(began))
		if err != nil && r.ctx.Err() == nil {
			r.c.log.Warn("provisioner step failed; will retry", "step", what, "key", key, "error", err)
		}
		r.finish(key, err)
	}()
}

func (r *run) finish(key string, err error) {
	r.mu.Lock()
	delete(r.inflight, key)
	if err == nil {
		delete(r.retry, key)
	} else {
		rs := r.retry[key]
		rs.backoff = min(max(rs.backoff*2, r.c.cfg.RetryMin), r.c.cfg.RetryMax)
		rs.at = time.Now().Add(rs.backoff)
		r.retry[key] = rs
	}
	r.mu.Unlock()
	r.wake()
}

// propose replicates cmd and returns the applied result's error.
func (r *run) propose(ctx context.Context, cmd *fsmv1.Command) (any, error) {
	res, err := r.c.cfg.Raft.Propose(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return res.Value, res.Err
}

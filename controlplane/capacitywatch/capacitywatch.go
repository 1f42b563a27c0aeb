// Package capacitywatch is a leader controller that keeps the capacity gauges current: headroom
// per region and flavor and the N-1 loss check, recomputed when the fleet changes (debounced).
package capacitywatch

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/state"
)

// Debounce timing: wait for the fleet to be quiet this long, but never longer than MaxDelay
// after the first change, so a steady stream of writes still refreshes the gauges.
const (
	Quiet    = time.Second
	MaxDelay = 10 * time.Second
)

// Controller recomputes the capacity gauges on the leader.
type Controller struct {
	store *state.Store
	log   *slog.Logger

	headroom        *prometheus.GaugeVec
	headroomReserve *prometheus.GaugeVec
	lossOK          *prometheus.GaugeVec
	lossHomeless    *prometheus.GaugeVec
	computeSeconds  prometheus.Gauge
	computedIndex   prometheus.Gauge

	// quiet and maxDelay are Quiet and MaxDelay; tests shorten them.
	quiet, maxDelay time.Duration

	// mu guards losses, the last N-1 computed, and computed, whether there is one (not while
	// this node does not lead), for Losses.
	mu       sync.Mutex
	losses   []capacity.RegionLoss
	computed bool
}

// Losses returns the N-1 check last computed on this leader, every region and site (false
// before the first, and after leadership ends): the alerts read it rather than computing it
// again.
func (c *Controller) Losses() ([]capacity.RegionLoss, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.losses, c.computed
}

// New registers the gauges with reg.
func New(store *state.Store, reg prometheus.Registerer, log *slog.Logger) *Controller {
	c := &Controller{
		store: store, log: log, quiet: Quiet, maxDelay: MaxDelay,
		headroom: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "devfleet_capacity_headroom",
			Help: "More devservers of a flavor that fit in a region now (leader only).",
		}, []string{"region", "flavor"}),
		headroomReserve: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "devfleet_capacity_headroom_beyond_reserve",
			Help: "More devservers of a flavor that fit in a region while it keeps its reserve (leader only).",
		}, []string{"region", "flavor"}),
		lossOK: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "devfleet_capacity_loss_ok",
			Help: "1 if the rest of the fleet can take every devserver of the region or site (N-1), else 0 (leader only).",
		}, []string{"scope", "name"}),
		lossHomeless: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "devfleet_capacity_loss_homeless",
			Help: "Devservers that would have no home if the region or site were lost (leader only).",
		}, []string{"scope", "name"}),
		computeSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "devfleet_capacity_compute_seconds",
			Help: "Time the last headroom and N-1 computation took.",
		}),
		computedIndex: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "devfleet_capacity_computed_index",
			Help: "Raft index of the state the capacity gauges describe.",
		}),
	}
	reg.MustRegister(c.headroom, c.headroomReserve, c.lossOK, c.lossHomeless, c.computeSeconds, c.computedIndex)
	return c
}

// Name identifies the controller.
func (c *Controller) Name() string { return "capacity-gauges" }

var watched = []string{state.TableHosts, state.TableDevservers, state.TableRegions, state.TableFlavors}

// Run recomputes at once, then after every burst of changes, until ctx ends; then it clears
// the gauges so that a follower exports none.
func (c *Controller) Run(ctx context.Context) error {
	defer c.clear()
	for {
		v := c.store.View()
		c.compute(v)
		if !c.wait(ctx, v) {
			return nil
		}
	}
}

// wait blocks until the fleet changed after v and then stayed quiet (or MaxDelay passed).
// False means ctx ended.
func (c *Controller) wait(ctx context.Context, v *state.View) bool {
	if !c.changed(ctx, v, 0) {
		return false
	}
	deadline := time.Now().Add(c.maxDelay)
	for time.Now().Before(deadline) {
		if !c.changed(ctx, c.store.View(), c.quiet) {
			break
		}
	}
	return ctx.Err() == nil
}

// changed blocks until a watched table of v changes or the state is restored (true), or until
// timeout (if positive) passes or ctx ends (false).
func (c *Controller) changed(ctx context.Context, v *state.View, timeout time.Duration) bool {
	changed, stop := c.store.Changed(v, watched...)
	defer stop()
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-changed:
		return true
	case <-expired:
	case <-ctx.Done():
	}
	return false
}

func (c *Controller) compute(v *state.View) {
	start := time.Now()
	fleet := capacity.Load(v)
	c.headroom.Reset()
	c.headroomReserve.Reset()
	for _, r := range fleet.Regions {
		for _, h := range fleet.Headroom(r.GetName()) {
			c.headroom.WithLabelValues(h.Region, h.Flavor).Set(float64(h.Fits))
			c.headroomReserve.WithLabelValues(h.Region, h.Flavor).Set(float64(h.FitsBeyondReserve))
		}
	}
	c.lossOK.Reset()
	c.lossHomeless.Reset()
	losses := fleet.N1()
	c.mu.Lock()
	c.losses, c.computed = losses, true
	c.mu.Unlock()
	for _, l := range losses {
		ok := 0.0
		if l.Loss.OK() {
			ok = 1
		}
		c.lossOK.WithLabelValues(l.Scope, l.Name).Set(ok)
		c.lossHomeless.WithLabelValues(l.Scope, l.Name).Set(float64(len(l.Loss.Homeless)))
	}
	took := time.Since(start)
	c.computeSeconds.Set(took.Seconds())
	c.computedIndex.Set(float64(fleet.Index))
	c.log.Debug("capacity gauges recomputed", "index", fleet.Index, "took", took)
}

func (c *Controller) clear() {
	c.mu.Lock()
	c.losses, c.computed = nil, false
	c.mu.Unlock()
	c.headroom.Reset()
	c.headroomReserve.Reset()
	c.lossOK.Reset()
	c.lossHomeless.Reset()
}

package drain

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/devfleet/devfleet/capacity/fit"
	"github.com/devfleet/devfleet/controlplane/hypervisor"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Evacuator defaults.
const (
	DefaultEvacuateAfter = 5 * time.Minute
	DefaultBrake         = 0.3
)

// Evacuator is the requested_by of automatic evacuations.
const Evacuator = "evacuator"

// Hypervisors opens hosts' libvirt (hypervisor.Connector).
type Hypervisors interface {
	Open(name, uri string) (hypervisor.Hypervisor, error)
}

// EvacuatorConfig wires an evacuation controller.
type EvacuatorConfig struct {
	Store       *state.Store
	Raft        Proposer
	Hypervisors Hypervisors
	Logger      *slog.Logger
	// After is how long a host must be unreachable before it is evacuated (default 5m); Brake
	// the share of a site's hosts unhealthy at once above which evacuations there pause
	// (default 0.3).
	After time.Duration
	Brake float64
	// Now is the clock (default time.Now); Tick how often hosts are looked at (default 5s).
	Now  func() time.Time
	Tick time.Duration
}

// Evacuation drains, on the leader, a host whose libvirt has been unreachable for longer than
// After: it fences the host (cordoned; its leftover guests are powered off when it answers
// again, before it takes work), starts an evacuation drain for the record, and marks its
// devservers lost, so that their flavors' repair policy recreates them elsewhere from their
// last known placement (a host that does not answer cannot migrate anything). When more than
// Brake of a site's hosts are unhealthy at once, evacuations there pause: that pattern is
// usually the network or the control plane, not the hosts, and moving everything would make it
// worse.
type Evacuation struct {
	cfg EvacuatorConfig
	log *slog.Logger

	mu     sync.Mutex
	paused map[string]string // site -> why, while its brake holds
}

// NewEvacuation returns the evacuation controller.
func NewEvacuation(cfg EvacuatorConfig) *Evacuation {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.After <= 0 {
		cfg.After = DefaultEvacuateAfter
	}
	if cfg.Brake <= 0 {
		cfg.Brake = DefaultBrake
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 5 * time.Second
	}
	return &Evacuation{cfg: cfg, log: cfg.Logger.With("controller", "evacuations"), paused: map[string]string{}}
}

// Name identifies the controller.
func (e *Evacuation) Name() string { return "evacuations" }

// Paused returns the sites whose evacuations the brake holds, with why.
func (e *Evacuation) Paused() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]string, len(e.paused))
	for k, v := range e.paused {
		out[k] = v
	}
	return out
}

// Run looks at the hosts every Tick until ctx ends.
func (e *Evacuation) Run(ctx context.Context) error {
	t := time.NewTicker(e.cfg.Tick)
	defer t.Stop()
	for {
		e.pass(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// unreachableSince is when the leader last reached a host's libvirt, for an unhealthy host.
func unreachableSince(h *v1.Host) (time.Time, bool) {
	switch {
	case h.GetHealth() != v1.HostHealth_HOST_HEALTH_UNHEALTHY:
		return time.Time{}, false
	case h.GetLastSeenTime() == nil: // never reached since it was registered
		return h.GetCreateTime().AsTime(), true
	}
	return h.GetLastSeenTime().AsTime(), true
}

func (e *Evacuation) pass(ctx context.Context) {
	v := e.cfg.Store.View()
	now := e.cfg.Now()
	bySite := map[string][]*v1.Host{}
	v.EachHost(func(h *v1.Host) {
		if h.GetState() != v1.HostState_HOST_STATE_RETIRED && state.Managed(h) {
			bySite[h.GetSite()] = append(bySite[h.GetSite()], h)
		}
	})
	for site, hosts := range bySite {
		var down []string
		for _, h := range hosts {
			if h.GetHealth() == v1.HostHealth_HOST_HEALTH_UNHEALTHY {
				down = append(down, h.GetName())
			}
		}
		if share := float64(len(down)) / float64(len(hosts)); len(down) > 1 && share > e.cfg.Brake {
			why := fmt.Sprintf("%d of %d hosts of site %s are unhealthy at once (%s): above %.0f%%, usually the network or the control plane, not the hosts",
				len(down), len(hosts), site, strings.Join(down, ", "), e.cfg.Brake*100)
			e.mu.Lock()
			if e.paused[site] != why {
				e.log.Warn("automatic evacuations paused", "site", site, "why", why)
			}
			e.paused[site] = why
			e.mu.Unlock()
			continue
		}
		e.mu.Lock()
		if _, ok := e.paused[site]; ok {
			e.log.Info("automatic evacuations resume", "site", site)
			delete(e.paused, site)
		}
		e.mu.Unlock()
		for _, h := range hosts {
			since, ok := unreachableSince(h)
			if !ok || now.Sub(since) < e.cfg.After || h.GetFencedTime() != nil || v.DrainOn(h.GetName()) != nil || v.DecomOn(h.GetName()) != nil {
				continue
			}
			e.evacuate(ctx, v, h, since)
		}
	}
}

// evacuate fences an unreachable host and starts its evacuation, once libvirt confirms it does
// not answer.
func (e *Evacuation) evacuate(ctx context.Context, v *state.View, h *v1.Host, since time.Time) {
	hv, err := e.cfg.Hypervisors.Open(h.GetName(), h.GetLibvirtUri())
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = hv.Ping(pctx)
		cancel()
		if err == nil {
			return // it answers: its health is about to be reported again
		}
	}
	why := fmt.Sprintf("unreachable since %s (%v): evacuated", since.UTC().Format(time.RFC3339), err)
	if _, err := e.apply(ctx, &fsmv1.Command{Op: &fsmv1.Command_FenceHost{FenceHost: &fsmv1.FenceHost{Name: h.GetName(), Reason: why}}}); err != nil {
		e.log.Warn("fencing an unreachable host failed", "host", h.GetName(), "error", err)
		return
	}
	devs := v.DevserversOn(h.GetName())
	var items []*v1.DrainItem
	for _, d := range devs {
		it := &v1.DrainItem{Devserver: d.GetName(), DevserverId: d.GetId(), Owner: d.GetOwner(), Flavor: d.GetFlavor(), SourceHost: h.GetName(),
			Kind: v1.DrainItemKind_DRAIN_ITEM_KIND_COLD}
		if f, err := v.GetFlavor(d.GetFlavor()); err == nil && fit.Physical(f) {
			it.Kind, it.Blocker = v1.DrainItemKind_DRAIN_ITEM_KIND_PHYSICAL, "a whole machine: it is the host that is down"
		}
		items = append(items, it)
	}
	dr := &v1.Drain{Id: uuid.NewString(), Hosts: []string{h.GetName()}, Reason: "evacuation: host " + h.GetName() + " " + why,
		RequestedBy: Evacuator, Force: true, Evacuation: true}
	if _, err := e.apply(ctx, &fsmv1.Command{Op: &fsmv1.Command_StartDrain{StartDrain: &fsmv1.StartDrain{Drain: dr, Items: items}}}); err != nil {
		e.log.Warn("starting an evacuation failed", "host", h.GetName(), "error", err)
		return
	}
	for _, d := range devs {
		if d.GetState() == v1.DevserverState_DEVSERVER_STATE_LOST || state.Deleting(d) {
			continue
		}
		_, err := e.apply(ctx, &fsmv1.Command{Op: &fsmv1.Command_SetDevserverState{SetDevserverState: &fsmv1.SetDevserverState{
			Name: d.GetName(), Id: d.GetId(), State: v1.DevserverState_DEVSERVER_STATE_LOST,
			Reason: "its host " + h.GetName() + " is unreachable: evacuated (drain " + dr.GetId() + ")"}}})
		if err != nil {
			e.log.Warn("marking an evacuated devserver lost failed", "devserver", d.GetName(), "error", err)
		}
	}
	e.log.Warn("host evacuated", "host", h.GetName(), "drain", dr.GetId(), "devservers", len(devs), "why", why)
}

func (e *Evacuation) apply(ctx context.Context, cmd *fsmv1.Command) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := e.cfg.Raft.Propose(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return res.Value, res.Err
}

// evacuationStep follows an evacuation drain: its devservers are recreated elsewhere by the
// provisioner's repair (not migrated), so an item is done once its devserver runs on another
// host, and blocked when its flavor's repair policy only notifies.
func (c *Controller) evacuationStep(ctx context.Context, v *state.View, d *v1.Drain) {
	var updates []*fsmv1.DrainItemUpdate
	pending, blocked := 0, 0
	from := []v1.DrainItemState{v1.DrainItemState_DRAIN_ITEM_STATE_PENDING}
	for _, it := range v.DrainItems(d.GetId()) {
		if it.GetState() == v1.DrainItemState_DRAIN_ITEM_STATE_BLOCKED && it.GetKind() != v1.DrainItemKind_DRAIN_ITEM_KIND_PHYSICAL {
			blocked++
		}
		if it.GetState() != v1.DrainItemState_DRAIN_ITEM_STATE_PENDING {
			continue
		}
		dev, err := v.GetDevserver(it.GetDevserver())
		switch {
		case err != nil || dev.GetId() != it.GetDevserverId():
			updates = append(updates, &fsmv1.DrainItemUpdate{Devserver: it.GetDevserver(), State: v1.DrainItemState_DRAIN_ITEM_STATE_DONE, From: from,
				Event: "gone", Detail: "deleted; nothing to recreate"})
		case dev.GetHost() != it.GetSourceHost() && dev.GetState() == v1.DevserverState_DEVSERVER_STATE_RUNNING:
			updates = append(updates, &fsmv1.DrainItemUpdate{Devserver: it.GetDevserver(), State: v1.DrainItemState_DRAIN_ITEM_STATE_DONE, DestHost: dev.GetHost(), From: from,
				Event: "moved", Detail: "recreated on " + dev.GetHost() + " (its disk starts empty: the old one stays on the fenced host)"})
		default:
			if f, err := v.GetFlavor(dev.GetFlavor()); err == nil && f.GetRepair() != v1.RepairPolicy_REPAIR_POLICY_RECREATE {
				updates = append(updates, &fsmv1.DrainItemUpdate{Devserver: it.GetDevserver(), State: v1.DrainItemState_DRAIN_ITEM_STATE_BLOCKED, From: from,
					Blocker: "its flavor's repair policy only notifies: its owner was told", Event: "blocked", Detail: "notify-only repair"})
				blocked++
				continue
			}
			pending++
		}
	}
	if len(updates) > 0 {
		if err := c.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_UpdateDrain{UpdateDrain: &fsmv1.UpdateDrain{Id: d.GetId(), Items: updates}}}); err != nil {
			return
		}
	}
	switch {
	case pending > 0:
	case blocked > 0:
		c.finish(ctx, d, v1.DrainState_DRAIN_STATE_INCOMPLETE, fmt.Sprintf("%d devservers were not recreated", blocked), false, nil)
	default:
		c.finish(ctx, d, v1.DrainState_DRAIN_STATE_SUCCEEDED, "evacuated", false, nil)
	}
}

package provisioner

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/hypervisor"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// watchHosts follows the lifecycle events of every host devfleet drives, so that a guest that
// stops or vanishes behind devfleet's back is noticed at once rather than at the next resync.
// On the first pass of a leadership every such host is checked: that is the reconciliation that
// lets a new leader trust the state.
func (r *run) watchHosts(v *state.View, first bool) {
	seen := map[string]bool{}
	v.EachHost(func(h *v1.Host) {
		if !state.Managed(h) {
			return
		}
		key := h.GetName() + "\x00" + h.GetLibvirtUri()
		seen[key] = true
		if _, ok := r.watchers[key]; ok {
			return
		}
		ctx, cancel := context.WithCancel(r.ctx)
		r.watchers[key] = cancel
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.follow(ctx, h.GetName(), h.GetLibvirtUri())
		}()
		if first {
			r.mu.Lock()
			r.suspect[h.GetName()] = true
			r.mu.Unlock()
		}
	})
	for key, cancel := range r.watchers {
		if !seen[key] {
			cancel()
			delete(r.watchers, key)
			name, uri, _ := strings.Cut(key, "\x00")
			r.c.cfg.Hypervisors.Forget(name, uri)
		}
	}
}

// follow reads one host's events until ctx ends, marking the host for a check on any event that
// may mean a guest is gone. A broken stream is opened again after a pause.
func (r *run) follow(ctx context.Context, name, uri string) {
	for ctx.Err() == nil {
		if hv, err := r.c.cfg.Hypervisors.Open(name, uri); err == nil {
			if events, err := hv.Events(ctx); err == nil {
				r.suspectHost(name) // whatever happened while we were not listening
				for ev := range events {
					switch ev.Type {
					case hypervisor.EventStopped, hypervisor.EventCrashed, hypervisor.EventUndefined, hypervisor.EventShutdown, hypervisor.EventResync:
						r.suspectHost(name)
					}
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(r.c.cfg.RetryMin):
		}
	}
}

func (r *run) suspectHost(name string) {
	r.mu.Lock()
	r.suspect[name] = true
	r.mu.Unlock()
	r.wake()
}

func (r *run) suspectAll(v *state.View) {
	v.EachHost(func(h *v1.Host) {
		if state.Managed(h) {
			r.mu.Lock()
			r.suspect[h.GetName()] = true
			r.mu.Unlock()
		}
	})
}

// checkHost compares a host's domains with the state: a running (or stopped) devserver whose
// guest is gone or not running is lost; a domain that carries devfleet's metadata but matches
// no devserver on this host is an orphan, reported and left alone (it may hold someone's work).
func (r *run) checkHost(ctx context.Context, h *v1.Host) error {
	hv, err := r.c.cfg.Hypervisors.Open(h.GetName(), h.GetLibvirtUri())
	if err != nil {
		return err
	}
	// Read the state first and libvirt second: a devserver recorded running before the list
	// was taken had its guest running then, unless a step of ours ran meanwhile (seq tells).
	r.mu.Lock()
	seqs := map[string]uint64{}
	for k, n := range r.seq {
		seqs[k] = n
	}
	r.mu.Unlock()
	v := r.c.cfg.Store.View()
	devs := v.DevserversOn(h.GetName())
	if cur, err := v.GetHost(h.GetName()); err != nil || cur.GetHealth() == v1.HostHealth_HOST_HEALTH_UNHEALTHY {
		return nil // only guests lost on a healthy host are lost; a dead host is drained, not repaired
	}
	doms, err := hv.List(ctx)
	if err != nil {
		return err
	}
	if cur, err := v.GetHost(h.GetName()); err == nil && cur.GetFencedTime() != nil {
		return r.unfence(ctx, v, cur, hv, doms)
	}
	byName := map[string]hypervisor.Domain{}
	for _, d := range doms {
		byName[d.Name] = d
	}
	for _, d := range devs {
		if state.Deleting(d) || r.touched(d.GetName(), seqs) {
			continue
		}
		dom, found := byName[d.GetName()]
		switch d.GetState() {
		case v1.DevserverState_DEVSERVER_STATE_RUNNING:
			switch {
			case !found || !ours(dom, d):
				err = r.markLost(ctx, d, "its guest vanished from "+h.GetName(), v1.DevserverState_DEVSERVER_STATE_RUNNING)
			case dom.State == hypervisor.StateCrashed:
				err = r.markLost(ctx, d, "its guest crashed on "+h.GetName(), v1.DevserverState_DEVSERVER_STATE_RUNNING)
			case !running(dom):
				err = r.markLost(ctx, d, fmt.Sprintf("its guest stopped unexpectedly on %s (%s)", h.GetName(), dom.State), v1.DevserverState_DEVSERVER_STATE_RUNNING)
			}
		case v1.DevserverState_DEVSERVER_STATE_STOPPED:
			if !found || !ours(dom, d) {
				err = r.markLost(ctx, d, "its stopped guest's definition vanished from "+h.GetName(), v1.DevserverState_DEVSERVER_STATE_STOPPED)
			}
		}
		if err != nil && !refused(err) {
			return err
		}
	}
	if err := r.checkContainers(ctx, v, h.GetName(), byName, seqs); err != nil {
		return err
	}
	// A guest is an orphan only if neither the state before the list nor the state after it
	// knows it: records come before guests (create) and go after them (purge).
	r.reportOrphans(h.GetName(), doms, v, r.c.cfg.Store.View())
	return nil
}

// touched reports whether a step on the devserver started since seqs was taken, or runs now.
func (r *run) touched(name string, seqs map[string]uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inflight[name] || r.seq[name] != seqs[name]
}

// reportOrphans counts the host's domains that carry devfleet metadata but that none of the
// views knows as a devserver or container of this host, logs each once per leadership, and sets
// the gauge.
func (r *run) reportOrphans(host string, doms []hypervisor.Domain, views ...*state.View) {
	n := 0
	for _, dom := range doms {
		if dom.Metadata.IsZero() || slices.ContainsFunc(views, func(v *state.View) bool { return knows(v, host, dom) }) {
			continue
		}
		n++
		key := host + "/" + dom.Name + "/" + dom.Metadata.ID
		r.mu.Lock()
		logged := r.orphans[key]
		r.orphans[key] = true
		r.mu.Unlock()
		if logged {
			continue
		}
		r.c.log.Warn("orphan domain: devfleet made it but no devserver of this host matches it; left alone",
			"host", host, "domain", dom.Name, "devfleet_id", dom.Metadata.ID, "owner", dom.Metadata.Owner, "state", dom.State)
	}
	r.c.metrics.orphans.WithLabelValues(host).Set(float64(n))
}

// knows reports whether the state has the domain's devserver or container on this host.
func knows(v *state.View, host string, dom hypervisor.Domain) bool {
	switch dom.Metadata.Kind {
	case hypervisor.InstanceDevserver:
		d, err := v.GetDevserver(dom.Name)
		if err != nil || d.GetId() != dom.Metadata.ID {
			return false
		}
		// On its host, or arriving here by a migration under way.
		m := v.ActiveMigration(d.GetName())
		return d.GetHost() == host || (m != nil && m.GetDestHost() == host)
	case hypervisor.InstanceContainer:
		c, err := v.GetContainer(dom.Name)
		return err == nil && c.GetId() == dom.Metadata.ID && c.GetHost() == host
	}
	return false
}

// refused reports a write the state turned down because the devserver moved on (another state,
// deleted, another devserver of the same name): the step has nothing left to do.
func refused(err error) bool {
	k := apierror.KindOf(err)
	return k == apierror.FailedPrecondition || k == apierror.NotFound
}

// unfence handles a host that devfleet evacuated while it was unreachable and that answers
// again: before anything else, every running guest of a devserver or container that the state
// does not record on this host is powered off (its devserver was recreated elsewhere: it must
// not run twice). The definitions and volumes stay, for an operator to recover data from (a
// decommission wipes them). Then the fence is lifted; the host stays cordoned.
func (r *run) unfence(ctx context.Context, v *state.View, h *v1.Host, hv hypervisor.Hypervisor, doms []hypervisor.Domain) error {
	for _, dom := range doms {
		if !dom.Managed() || dom.State != hypervisor.StateRunning {
			continue
		}
		if d, err := v.GetDevserver(dom.Name); err == nil && d.GetHost() == h.GetName() && d.GetId() == dom.Metadata.ID {
			continue // recorded here: not a leftover
		}
		if c, err := v.GetContainer(dom.Name); err == nil && c.GetHost() == h.GetName() && c.GetId() == dom.Metadata.ID {
			continue
		}
		if err := hv.Destroy(ctx, dom.Name); err != nil && !hypervisor.IsNotFound(err) {
			return fmt.Errorf("powering off %s's leftover guest %s: %w", h.GetName(), dom.Name, err)
		}
		r.c.log.Warn("a fenced host answers again: its leftover guest is powered off so that it never runs twice",
			"host", h.GetName(), "domain", dom.Name, "id", dom.Metadata.ID)
	}
	_, err := r.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_UnfenceHost{UnfenceHost: &fsmv1.UnfenceHost{Name: h.GetName()}}})
	if err == nil {
		r.c.log.Info("fence lifted; the host stays cordoned", "host", h.GetName())
	}
	return err
}

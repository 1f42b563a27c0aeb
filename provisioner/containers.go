package provisioner

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/hypervisor"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// dispatchContainers starts the container steps that are due: making and removing guests,
// keeping every pool at its target, and reaping expired claims. It returns when the next
// expiry falls due (on the real clock).
func (r *run) dispatchContainers(v *state.View) time.Time {
	now, real := r.c.cfg.Now(), time.Now()
	var soonest time.Time
	pools := map[string]bool{}
	for _, p := range v.Pools() {
		pools[state.PoolKey(p.GetRegion(), p.GetProfile())] = true
	}
	for _, c := range v.Containers() {
		h, _ := v.GetHost(c.GetHost())
		switch {
		case c.GetClaimedBy() == "" && c.GetState() != v1.ContainerState_CONTAINER_STATE_DELETED && !pools[state.PoolKey(c.GetRegion(), c.GetProfile())]:
			// A warm container whose pool was removed (target 0) has nobody to wait for.
			soonest = earliest(soonest, r.startWhenDue("container:"+c.GetName(), real, "pool", func(ctx context.Context) error {
				_, err := r.propose(ctx, release(c.GetName(), "its pool was removed"))
				if refused(err) {
					return nil
				}
				return err
			}))
		case c.GetState() == v1.ContainerState_CONTAINER_STATE_DELETED && r.drives(h):
			soonest = earliest(soonest, r.startWhenDue("container:"+c.GetName(), real, "container-delete", func(ctx context.Context) error { return r.deleteContainer(ctx, c, h) }))
		case c.GetState() == v1.ContainerState_CONTAINER_STATE_PROVISIONING && r.drives(h):
			p, err := v.GetProfile(c.GetProfile())
			if err == nil {
				soonest = earliest(soonest, r.startWhenDue("container:"+c.GetName(), real, "container-create", func(ctx context.Context) error { return r.createContainer(ctx, c, p, h) }))
			}
		case c.GetClaimedBy() != "" && c.GetExpireTime() != nil && c.GetState() != v1.ContainerState_CONTAINER_STATE_DELETED:
			expire := c.GetExpireTime().AsTime()
			if now.Before(expire) {
				soonest = earliest(soonest, real.Add(expire.Sub(now)))
				continue
			}
			soonest = earliest(soonest, r.startWhenDue("container:"+c.GetName(), real, "container-reap", func(ctx context.Context) error { return r.reapContainer(ctx, c) }))
		}
	}
	for _, p := range v.Pools() {
		key := "pool:" + state.PoolKey(p.GetRegion(), p.GetProfile())
		if fill := poolShortfall(p, v.ContainersIn(p.GetRegion(), p.GetProfile())); fill != 0 {
			soonest = earliest(soonest, r.startWhenDue(key, real, "pool", func(ctx context.Context) error { return r.keepPool(ctx, p, fill) }))
		}
	}
	return soonest
}

// drives reports whether the provisioner can act on guests of the host now.
func (r *run) drives(h *v1.Host) bool {
	return h != nil && state.Managed(h) && h.GetHealth() != v1.HostHealth_HOST_HEALTH_UNHEALTHY
}

// poolShortfall is how many warm containers a pool lacks (positive) or has too many (negative).
// Containers being made count as warm: they will be.
func poolShortfall(p *v1.ContainerPool, cs []*v1.Container) int {
	n := 0
	for _, c := range cs {
		if c.GetClaimedBy() == "" && c.GetState() != v1.ContainerState_CONTAINER_STATE_DELETED {
			n++
		}
	}
	return int(p.GetTarget()) - n
}

// keepPool makes (fill > 0) or releases (fill < 0) warm containers until the pool is at its
// target.
func (r *run) keepPool(ctx context.Context, p *v1.ContainerPool, fill int) error {
	if fill < 0 {
		warm := slices.DeleteFunc(r.c.cfg.Store.View().ContainersIn(p.GetRegion(), p.GetProfile()), func(c *v1.Container) bool {
			return c.GetClaimedBy() != "" || c.GetState() == v1.ContainerState_CONTAINER_STATE_DELETED
		})
		slices.SortFunc(warm, func(a, b *v1.Container) int { return int(int64(b.GetCreateIndex()) - int64(a.GetCreateIndex())) })
		for _, c := range warm[:min(-fill, len(warm))] {
			if _, err := r.propose(ctx, release(c.GetName(), "its pool's target went down")); err != nil && !refused(err) {
				return err
			}
		}
		return nil
	}
	prof, err := r.c.cfg.Store.View().GetProfile(p.GetProfile())
	if err != nil {
		return nil // deleted meanwhile
	}
	f := state.ProfileFlavor(prof)
	for range fill {
		d := r.c.cfg.Placer.Place(&capacity.Request{Flavor: f, Region: p.GetRegion(), Scorers: []capacity.Weighted{{Scorer: capacity.SpreadLoad, Weight: 1}}})
		if d.Host == nil {
			return fmt.Errorf("pool %s/%s: no room for another warm container: %s", p.GetRegion(), p.GetProfile(), d.Explanation)
		}
		id := uuid.NewString()
		_, err := r.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_CreateContainer{CreateContainer: &fsmv1.CreateContainer{Container: &v1.Container{
			Name: state.ContainerName(id), Id: id, Profile: p.GetProfile(), Region: p.GetRegion(), Host: d.Host.GetName()}}}})
		if err != nil && !apierror.HasCode(err, apierror.CodeNoRoom) {
			return err
		}
	}
	return nil
}

func containerSpec(c *v1.Container, p *v1.ContainerProfile) hypervisor.DomainSpec {
	return hypervisor.DomainSpec{Name: c.GetName(), UUID: c.GetId(), VCPUs: p.GetVcpus(), MemoryMiB: p.GetMemoryMib(),
		Metadata: hypervisor.Metadata{Kind: hypervisor.InstanceContainer, ID: c.GetId(), Owner: c.GetClaimedBy(), Profile: p.GetName()}}
}

func containerOurs(dom hypervisor.Domain, c *v1.Container) bool {
	return dom.Metadata.Kind == hypervisor.InstanceContainer && dom.Metadata.ID == c.GetId()
}

// createContainer makes the container's guest (or keeps one of ours already there) and records
// it running.
func (r *run) createContainer(ctx context.Context, c *v1.Container, p *v1.ContainerProfile, h *v1.Host) error {
	hv, err := r.c.cfg.Hypervisors.Open(h.GetName(), h.GetLibvirtUri())
	if err != nil {
		return err
	}
	dom, err := hv.Lookup(ctx, c.GetName())
	switch {
	case err == nil && !containerOurs(dom, c):
		return fmt.Errorf("host %s already has a domain named %q that is not this container's", h.GetName(), c.GetName())
	case err == nil && running(dom):
	case err == nil:
		if err := hv.Start(ctx, c.GetName()); err != nil {
			return err
		}
	case hypervisor.IsNotFound(err):
		if _, err := r.defineAndStart(ctx, hv, containerSpec(c, p)); err != nil {
			return err
		}
	default:
		return err
	}
	_, err = r.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_SetContainerState{SetContainerState: &fsmv1.SetContainerState{
		Name: c.GetName(), Id: c.GetId(), State: v1.ContainerState_CONTAINER_STATE_RUNNING, Reason: "guest running on " + h.GetName(),
		From: []v1.ContainerState{v1.ContainerState_CONTAINER_STATE_PROVISIONING}}}})
	if refused(err) {
		return nil // released meanwhile: the delete step removes the guest
	}
	return err
}

// deleteContainer removes a released container's guest, then its record.
func (r *run) deleteContainer(ctx context.Context, c *v1.Container, h *v1.Host) error {
	hv, err := r.c.cfg.Hypervisors.Open(h.GetName(), h.GetLibvirtUri())
	if err != nil {
		return err
	}
	if err := removeGuest(ctx, hv, c.GetName(), func(dom hypervisor.Domain) bool { return containerOurs(dom, c) }); err != nil {
		return err
	}
	_, err = r.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_PurgeContainer{PurgeContainer: &fsmv1.PurgeContainer{Name: c.GetName(), Id: c.GetId()}}})
	if refused(err) {
		return nil
	}
	return err
}

// reapContainer releases a claimed container whose time is up, telling its owner.
func (r *run) reapContainer(ctx context.Context, c *v1.Container) error {
	_, err := r.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_CreateNotice{CreateNotice: &fsmv1.CreateNotice{Notice: &v1.Notice{
		Id: "expired-" + c.GetId(), Owner: c.GetClaimedBy(), Kind: v1.NoticeKind_NOTICE_KIND_EXPIRED, Subject: c.GetName(),
		Message: fmt.Sprintf("container %s (%s) expired at %s and is being removed", c.GetName(), c.GetProfile(), c.GetExpireTime().AsTime().UTC().Format(time.RFC3339))}}}})
	if err != nil && !alreadyDone(err) {
		return err
	}
	_, err = r.propose(ctx, release(c.GetName(), "expired"))
	if refused(err) {
		return nil
	}
	return err
}

func release(name, reason string) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_ReleaseContainer{ReleaseContainer: &fsmv1.ReleaseContainer{Name: name, Reason: reason}}}
}

// checkContainers compares a host's container guests with the state: a running container
// whose guest is gone is released (its owner, if any, is told); the pool makes a new one.
func (r *run) checkContainers(ctx context.Context, v *state.View, host string, byName map[string]hypervisor.Domain, seqs map[string]uint64) error {
	for _, c := range v.ContainersOn(host) {
		if c.GetState() != v1.ContainerState_CONTAINER_STATE_RUNNING || r.touched("container:"+c.GetName(), seqs) {
			continue
		}
		if dom, ok := byName[c.GetName()]; ok && containerOurs(dom, c) && running(dom) {
			continue
		}
		if c.GetClaimedBy() != "" {
			_, err := r.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_CreateNotice{CreateNotice: &fsmv1.CreateNotice{Notice: &v1.Notice{
				Id: "lost-" + c.GetId(), Owner: c.GetClaimedBy(), Kind: v1.NoticeKind_NOTICE_KIND_LOST, Subject: c.GetName(),
				Message: fmt.Sprintf("container %s lost its guest on %s; claim another with: devfleet container claim --profile %s --region %s", c.GetName(), host, c.GetProfile(), c.GetRegion())}}}})
			if err != nil && !alreadyDone(err) {
				return err
			}
		}
		if _, err := r.propose(ctx, release(c.GetName(), "its guest vanished from "+host)); err != nil && !refused(err) {
			return err
		}
	}
	return nil
}

package state

import (
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/capacity/fit"
	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/validate"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Container lifetimes and pool sizes.
const (
	DefaultContainerTTL = 36 * time.Hour
	MaxContainerTTL     = 14 * 24 * time.Hour
	MaxPoolTarget       = 1000
)

// ProfileFlavor is the room a container of a profile takes, as a flavor, so that placement and
// host allocation treat containers and devservers alike.
func ProfileFlavor(p *v1.ContainerProfile) *v1.Flavor {
	return &v1.Flavor{Name: p.GetName(), Kind: v1.FlavorKind_FLAVOR_KIND_VM,
		Resources: &v1.Resources{Vcpus: p.GetVcpus(), MemoryMib: p.GetMemoryMib()}}
}

// ContainerName is a container's name from its ID: short enough to read and type, and also its
// libvirt domain's name.
func ContainerName(id string) string {
	return "c-" + strings.ReplaceAll(id, "-", "")[:12]
}

// PoolKey names a pool: region and profile.
func PoolKey(region, profile string) string { return region + "/" + profile }

// GetProfile returns a container profile or NotFound.
func (v *View) GetProfile(name string) (*v1.ContainerProfile, error) {
	if raw := v.first(TableProfiles, "id", name); raw != nil {
		return raw.(*v1.ContainerProfile), nil
	}
	return nil, apierror.Missing("container profile", name)
}

// Profiles returns every profile in name order.
func (v *View) Profiles() []*v1.ContainerProfile {
	return rows[*v1.ContainerProfile](v, TableProfiles, "id")
}

// CreateProfile adds a container profile; a missing ttl is DefaultContainerTTL.
func (w *WriteTxn) CreateProfile(in *v1.ContainerProfile) (*v1.ContainerProfile, error) {
	p := &v1.ContainerProfile{Name: in.GetName(), Vcpus: in.GetVcpus(), MemoryMib: in.GetMemoryMib(), Ttl: in.GetTtl(), Description: in.GetDescription()}
	if p.Ttl == nil {
		p.Ttl = durationpb.New(DefaultContainerTTL)
	}
	if err := validate.Name("profile.name", p.GetName()); err != nil {
		return nil, err
	}
	if err := validate.Resources("profile", &v1.Resources{Vcpus: p.GetVcpus(), MemoryMib: p.GetMemoryMib()}, true); err != nil {
		return nil, err
	}
	if err := p.GetTtl().CheckValid(); err != nil || p.GetTtl().AsDuration() < time.Minute || p.GetTtl().AsDuration() > MaxContainerTTL {
		return nil, apierror.Invalid("profile.ttl", "must be between 1m and %s", MaxContainerTTL)
	}
	if err := validate.Text("profile.description", p.GetDescription(), validate.MaxDescLen); err != nil {
		return nil, err
	}
	if w.first(TableProfiles, "id", p.GetName()) != nil {
		return nil, apierror.Exists("container profile", p.GetName())
	}
	p.CreateTime, p.CreateIndex, p.ModifyIndex = w.now, w.index, w.index
	return p, w.insert(TableProfiles, p)
}

// DeleteProfile removes a profile that has no containers and no pools.
func (w *WriteTxn) DeleteProfile(name string) (*v1.ContainerProfile, error) {
	p, err := w.GetProfile(name)
	if err != nil {
		return nil, err
	}
	if names, n := namesWhere(&w.View, 5, func(c *v1.Container) bool { return c.GetProfile() == name }, TableContainers, "id"); n > 0 {
		return nil, apierror.Blocked("container profile %q still has %s; release them first", name, listing("container", names, n))
	}
	for _, pool := range w.Pools() {
		if pool.GetProfile() == name {
			return nil, apierror.Blocked("container profile %q has a pool in region %q; set its target to 0 first", name, pool.GetRegion())
		}
	}
	return p, w.remove(TableProfiles, p)
}

// Pools returns every pool in region/profile order.
func (v *View) Pools() []*v1.ContainerPool { return rows[*v1.ContainerPool](v, TablePools, "id") }

// SetPool sets a pool's target; a target of 0 removes the pool.
func (w *WriteTxn) SetPool(in *v1.ContainerPool) (*v1.ContainerPool, error) {
	if err := validate.Name("region", in.GetRegion()); err != nil {
		return nil, err
	}
	if err := validate.Name("profile", in.GetProfile()); err != nil {
		return nil, err
	}
	if in.GetTarget() < 0 || in.GetTarget() > MaxPoolTarget {
		return nil, apierror.Invalid("target", "must be between 0 and %d, got %d", MaxPoolTarget, in.GetTarget())
	}
	if _, err := w.GetRegion(in.GetRegion()); err != nil {
		return nil, err
	}
	if _, err := w.GetProfile(in.GetProfile()); err != nil {
		return nil, err
	}
	p := &v1.ContainerPool{Region: in.GetRegion(), Profile: in.GetProfile(), Target: in.GetTarget(), UpdateTime: w.now, ModifyIndex: w.index}
	if p.GetTarget() == 0 {
		if cur := w.first(TablePools, "id", PoolKey(p.GetRegion(), p.GetProfile())); cur != nil {
			return p, w.remove(TablePools, cur)
		}
		return p, nil
	}
	return p, w.insert(TablePools, p)
}

// GetContainer returns a container or NotFound.
func (v *View) GetContainer(name string) (*v1.Container, error) {
	if raw := v.first(TableContainers, "id", name); raw != nil {
		return raw.(*v1.Container), nil
	}
	return nil, apierror.Missing("container", name)
}

// Containers returns every container in name order.
func (v *View) Containers() []*v1.Container { return rows[*v1.Container](v, TableContainers, "id") }

// ContainersIn returns the containers of a pool.
func (v *View) ContainersIn(region, profile string) []*v1.Container {
	return rows[*v1.Container](v, TableContainers, "pool", PoolKey(region, profile))
}

// ContainersOn returns the containers on a host.
func (v *View) ContainersOn(host string) []*v1.Container {
	return rows[*v1.Container](v, TableContainers, "host", host)
}

// Warm reports whether a container waits in its pool: running and unclaimed.
func Warm(c *v1.Container) bool {
	return c.GetState() == v1.ContainerState_CONTAINER_STATE_RUNNING && c.GetClaimedBy() == ""
}

// CreateContainer records a container the leader placed (ID, name and, for a claim, claimed_by
// and its times stamped). Its host must be active, in the region, and have room.
func (w *WriteTxn) CreateContainer(in *v1.Container) (*v1.Container, error) {
	c := &v1.Container{Name: in.GetName(), Id: in.GetId(), Profile: in.GetProfile(), Region: in.GetRegion(), Host: in.GetHost(),
		ClaimedBy: in.GetClaimedBy(), State: v1.ContainerState_CONTAINER_STATE_PROVISIONING}
	if c.GetId() == "" {
		return nil, apierror.Invalid("container.id", "must be stamped by the leader")
	}
	if err := validate.Name("container.name", c.GetName()); err != nil {
		return nil, err
	}
	if c.GetClaimedBy() != "" {
		if err := validate.User("container.claimed_by", c.GetClaimedBy()); err != nil {
			return nil, err
		}
	}
	if w.first(TableContainers, "id", c.GetName()) != nil {
		return nil, apierror.Exists("container", c.GetName())
	}
	p, err := w.GetProfile(c.GetProfile())
	if err != nil {
		return nil, err
	}
	if _, err := w.GetRegion(c.GetRegion()); err != nil {
		return nil, err
	}
	h, err := w.GetHost(c.GetHost())
	if err != nil {
		return nil, err
	}
	if h.GetRegion() != c.GetRegion() {
		return nil, apierror.Invalid("container.host", "host %q is in region %q, not %q", c.GetHost(), h.GetRegion(), c.GetRegion())
	}
	if h.GetState() != v1.HostState_HOST_STATE_ACTIVE {
		return nil, apierror.Blocked("host %q is %s and takes no new containers", c.GetHost(), HostStateName(h.GetState()))
	}
	f := ProfileFlavor(p)
	if s := fit.Check(f, h, fit.Free(h)); s != fit.None {
		e := apierror.Blocked("host %q has no room for it: its free resources %s", c.GetHost(), s.Describe(f))
		e.Code = apierror.CodeNoRoom
		return nil, e
	}
	c.Site = h.GetSite()
	if c.GetClaimedBy() != "" {
		c.ClaimTime = w.now
		c.ExpireTime = timestamppb.New(w.now.AsTime().Add(p.GetTtl().AsDuration()))
	}
	c.CreateTime, c.CreateIndex, c.ModifyIndex = w.now, w.index, w.index
	if err := w.insert(TableContainers, c); err != nil {
		return nil, err
	}
	return c, w.allocate(c.GetHost(), f, false)
}

// ClaimContainer hands a warm container to owner; a container claimed meanwhile is refused, so
// that two claims never get the same one.
func (w *WriteTxn) ClaimContainer(name, owner string) (*v1.Container, error) {
	if err := validate.User("owner", owner); err != nil {
		return nil, err
	}
	cur, err := w.GetContainer(name)
	if err != nil {
		return nil, err
	}
	if !Warm(cur) {
		return nil, apierror.Blocked("container %q is not waiting in its pool", name)
	}
	p, err := w.GetProfile(cur.GetProfile())
	if err != nil {
		return nil, err
	}
	c := proto.Clone(cur).(*v1.Container)
	c.ClaimedBy, c.ClaimTime = owner, w.now
	c.ExpireTime = timestamppb.New(w.now.AsTime().Add(p.GetTtl().AsDuration()))
	c.ModifyIndex = w.index
	return c, w.insert(TableContainers, c)
}

// SetContainerState records what the provisioner observed, if the container is still the same
// one and in one of from.
func (w *WriteTxn) SetContainerState(name, id string, to v1.ContainerState, reason string, from []v1.ContainerState) (*v1.Container, error) {
	if _, ok := v1.ContainerState_name[int32(to)]; !ok || to == v1.ContainerState_CONTAINER_STATE_UNSPECIFIED {
		return nil, apierror.Invalid("state", "unknown container state %d", to)
	}
	if err := validate.Text("reason", reason, validate.MaxReasonLen); err != nil {
		return nil, err
	}
	cur, err := w.GetContainer(name)
	if err != nil {
		return nil, err
	}
	if cur.GetId() != id {
		return nil, apierror.Blocked("container %q is now another container", name)
	}
	if len(from) > 0 && !slices.Contains(from, cur.GetState()) {
		return nil, apierror.Blocked("container %q is in state %s", name, cur.GetState())
	}
	c := proto.Clone(cur).(*v1.Container)
	c.State, c.StateReason, c.ModifyIndex = to, reason, w.index
	return c, w.insert(TableContainers, c)
}

// ReleaseContainer marks a container for deletion. Releasing one already released changes
// nothing.
func (w *WriteTxn) ReleaseContainer(name, reason string) (*v1.Container, error) {
	if err := validate.Reason("reason", reason); err != nil {
		return nil, err
	}
	cur, err := w.GetContainer(name)
	if err != nil {
		return nil, err
	}
	if cur.GetState() == v1.ContainerState_CONTAINER_STATE_DELETED {
		return cur, nil
	}
	c := proto.Clone(cur).(*v1.Container)
	c.State, c.StateReason, c.ModifyIndex = v1.ContainerState_CONTAINER_STATE_DELETED, reason, w.index
	return c, w.insert(TableContainers, c)
}

// PurgeContainer removes a released container once its guest is gone, and frees its room.
func (w *WriteTxn) PurgeContainer(name, id string) error {
	c, err := w.GetContainer(name)
	if err != nil {
		return err
	}
	if c.GetId() != id {
		return apierror.Blocked("container %q is now another container", name)
	}
	if c.GetState() != v1.ContainerState_CONTAINER_STATE_DELETED {
		return apierror.Blocked("container %q is not released", name)
	}
	p, err := w.GetProfile(c.GetProfile())
	if err != nil {
		return err
	}
	if err := w.remove(TableContainers, c); err != nil {
		return err
	}
	return w.allocate(c.GetHost(), ProfileFlavor(p), true)
}

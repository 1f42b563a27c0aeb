package hypervisor

import (
	"context"
	"slices"
	"strings"
)

// memVolumeFormat is the format of in-memory hosts' volumes (a real host's default).
const memVolumeFormat = DefaultVolumeFormat

// memVolumeName is the name of an in-memory domain's volume, as a real host with the default
// format names it.
func memVolumeName(domain string) string { return domain + "." + memVolumeFormat }

// putVolumeLocked adds an empty volume v, replacing one of that name, and makes the pool on
// first use as a real host does.
func (m *Memory) putVolumeLocked(v Volume) {
	if m.volumes == nil {
		m.volumes = make(map[string]*memVolume)
	}
	m.volumes[v.Name] = &memVolume{Volume: v}
	m.pool = true
}

// usersLocked returns the domains that use the volume (placeholders of incoming migrations
// included), sorted; with running set, only those that run (or arrive: a placeholder is
// paused).
func (m *Memory) usersLocked(volume string, running bool) []string {
	var users []string
	for name, d := range m.domains {
		if d.volume == volume && (!running || d.dom.State == StateRunning || d.dom.State == StatePaused) {
			users = append(users, name)
		}
	}
	slices.Sort(users)
	return users
}

// checkUnusedLocked is Conn.checkUnused in memory.
func (m *Memory) checkUnusedLocked(op Op, volume string, running bool) error {
	if users := m.usersLocked(volume, running); len(users) > 0 {
		which := ""
		if running {
			which = "running "
		}
		return errorf(m.host, op, volume, KindFailedPrecondition, "volume %s is in use by %sdomain %s", volume, which, strings.Join(users, ", "))
	}
	return nil
}

// volumeLocked returns the pool's volume name, or KindNotFound worded as libvirt's.
func (m *Memory) volumeLocked(op Op, domain, name string) (*memVolume, error) {
	if !m.pool {
		return nil, errorf(m.host, op, domain, KindNotFound, "storage pool %s: Storage pool not found: no storage pool with matching name '%s'", DefaultPool, DefaultPool)
	}
	v, ok := m.volumes[name]
	if !ok {
		return nil, errorf(m.host, op, domain, KindNotFound, "volume %s: Storage volume not found: no storage vol with matching name '%s'", name, name)
	}
	return v, nil
}

// checkExistingLocked is Conn.checkExisting in memory.
func (m *Memory) checkExistingLocked(op Op, domain, name string, gib int64) error {
	v, err := m.volumeLocked(op, domain, name)
	if err != nil {
		return err
	}
	if err := checkExistingVolume(v.Volume, memVolumeFormat, gib); err != nil {
		return errorf(m.host, op, domain, KindFailedPrecondition, "%v", err)
	}
	return m.checkUnusedLocked(op, name, false)
}

// DomainVolumes implements Hypervisor.
func (m *Memory) DomainVolumes(ctx context.Context, name string) ([]Volume, error) {
	const op = OpDomainVolumes
	if err := m.begin(ctx, op, name); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	d, err := m.domainLocked(op, name)
	if err != nil || d.volume == "" {
		return nil, err
	}
	v, err := m.volumeLocked(op, name, d.volume) // cannot fail: RemoveVolume refuses a volume in use
	if err != nil {
		return nil, err
	}
	return []Volume{v.Volume}, nil
}

// PrepareVolume implements Hypervisor.
func (m *Memory) PrepareVolume(ctx context.Context, v Volume) error {
	const op = OpPrepareVolume
	if v.Format == "" {
		v.Format = memVolumeFormat
	}
	if err := v.validate(); err != nil {
		return errorf(m.host, op, v.Name, KindInvalidArgument, "%v", err)
	}
	if err := m.begin(ctx, op, v.Name); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if err := m.checkUnusedLocked(op, v.Name, false); err != nil {
		return err
	}
	if have, ok := m.volumes[v.Name]; ok && have.Volume == v {
		return nil // kept as it is, content included
	}
	m.putVolumeLocked(v)
	return nil
}

// PoolVolumes implements Hypervisor.
func (m *Memory) PoolVolumes(ctx context.Context) ([]Volume, error) {
	if err := m.begin(ctx, OpPoolVolumes, ""); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	out := make([]Volume, 0, len(m.volumes))
	for _, v := range m.volumes {
		out = append(out, v.Volume)
	}
	slices.SortFunc(out, func(a, b Volume) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// RemoveVolume implements Hypervisor.
func (m *Memory) RemoveVolume(ctx context.Context, name string) error {
	const op = OpRemoveVolume
	if err := validateVolumeName(name); err != nil {
		return errorf(m.host, op, name, KindInvalidArgument, "%v", err)
	}
	if err := m.begin(ctx, op, name); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if err := m.checkUnusedLocked(op, name, false); err != nil {
		return err
	}
	delete(m.volumes, name)
	return nil
}

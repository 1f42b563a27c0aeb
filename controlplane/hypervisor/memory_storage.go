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

// putVolumeLocked adds or replaces a volume, making the pool on first use as a real host does.
func (m *Memory) putVolumeLocked(v Volume) {
	if m.volumes == nil {
		m.volumes = make(map[string]Volume)
	}
	m.volumes[v.Name] = v
	m.pool = true
}

// usersLocked returns the domains that use the volume (placeholders of incoming migrations
// included), sorted.
func (m *Memory) usersLocked(volume string) []string {
	var users []string
	for name, d := range m.domains {
		if d.volume == volume {
			users = append(users, name)
		}
	}
	slices.Sort(users)
	return users
}

// checkUnusedLocked is Conn.checkUnused in memory.
func (m *Memory) checkUnusedLocked(op Op, volume string) error {
	if users := m.usersLocked(volume); len(users) > 0 {
		return errorf(m.host, op, volume, KindFailedPrecondition, "volume %s is in use by domain %s", volume, strings.Join(users, ", "))
	}
	return nil
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
	v, ok := m.volumes[d.volume]
	if !ok { // cannot happen: RemoveVolume refuses a volume in use
		return nil, errorf(m.host, op, name, KindNotFound, "volume %s: Storage volume not found: no storage vol with matching name '%s'", d.volume, d.volume)
	}
	return []Volume{v}, nil
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
	if err := m.checkUnusedLocked(op, v.Name); err != nil {
		return err
	}
	m.putVolumeLocked(v) // kept as it is, made, or replaced: the same in memory
	return nil
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
	if err := m.checkUnusedLocked(op, name); err != nil {
		return err
	}
	delete(m.volumes, name)
	return nil
}

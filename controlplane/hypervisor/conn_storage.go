package hypervisor

import (
	"context"
	"fmt"
	"slices"
	"strings"

	libvirt "github.com/digitalocean/go-libvirt"
)

// pool returns the host's devfleet storage pool, defining, building and starting it (as a
// directory pool, autostarted) the first time it is needed, unless lookupOnly is set: then a
// missing pool is a KindNotFound error.
func (c *Conn) pool(ctx context.Context, op Op, domain string, lookupOnly bool) (libvirt.StoragePool, error) {
	c.poolMu.Lock()
	defer c.poolMu.Unlock()
	return call(ctx, c, op, domain, func(l *libvirt.Libvirt) (libvirt.StoragePool, error) {
		p, err := l.StoragePoolLookupByName(c.layout.pool)
		if libvirtCode(err) == libvirt.ErrNoStoragePool && !lookupOnly {
			xml, xerr := poolXML(c.layout.pool, c.opts.PoolDir)
			if xerr != nil {
				return p, xerr
			}
			if p, err = l.StoragePoolDefineXML(xml, 0); err != nil {
				return p, fmt.Errorf("define storage pool %s: %w", c.layout.pool, err)
			}
			if err := l.StoragePoolBuild(p, libvirt.StoragePoolBuildNew); err != nil {
				return p, fmt.Errorf("build storage pool %s: %w", c.layout.pool, err)
			}
			if err := l.StoragePoolSetAutostart(p, 1); err != nil {
				return p, fmt.Errorf("autostart storage pool %s: %w", c.layout.pool, err)
			}
		} else if err != nil {
			return p, fmt.Errorf("storage pool %s: %w", c.layout.pool, err)
		}
		state, _, _, _, err := l.StoragePoolGetInfo(p)
		if err != nil {
			return p, fmt.Errorf("storage pool %s: %w", c.layout.pool, err)
		}
		if libvirt.StoragePoolState(state) != libvirt.StoragePoolRunning {
			if err := l.StoragePoolCreate(p, 0); err != nil {
				return p, fmt.Errorf("start storage pool %s: %w", c.layout.pool, err)
			}
		}
		return p, nil
	})
}

// createVolume makes a sparse volume of gib GiB in the pool.
func (c *Conn) createVolume(ctx context.Context, op Op, domain, name string, gib int64) error {
	xml, err := volumeXML(name, uint64(gib)<<30, c.layout.volumeFormat)
	if err != nil {
		return errorf(c.host, op, domain, KindInternal, "%v", err)
	}
	p, err := c.pool(ctx, op, domain, false)
	if err != nil {
		return err
	}
	return call0(ctx, c, op, domain, func(l *libvirt.Libvirt) error {
		if _, err := l.StorageVolCreateXML(p, xml, 0); err != nil {
			return fmt.Errorf("create volume %s: %w", name, err)
		}
		return nil
	})
}

// deleteVolume deletes a volume of the pool; deleted is false (and err nil) when there was none.
func (c *Conn) deleteVolume(ctx context.Context, op Op, domain, name string) (deleted bool, err error) {
	p, err := c.pool(ctx, op, domain, true)
	if IsNotFound(err) {
		return false, nil // no pool, no volume
	}
	if err != nil {
		return false, err
	}
	return call(ctx, c, op, domain, func(l *libvirt.Libvirt) (bool, error) {
		v, err := l.StorageVolLookupByName(p, name)
		if libvirtCode(err) == libvirt.ErrNoStorageVol {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("volume %s: %w", name, err)
		}
		if err := l.StorageVolDelete(v, 0); err != nil {
			return false, fmt.Errorf("delete volume %s: %w", name, err)
		}
		return true, nil
	})
}

// DomainVolumes implements Hypervisor: the devfleet pool's volumes in the domain's current
// definition (the live one of a running domain), each read from the pool.
func (c *Conn) DomainVolumes(ctx context.Context, name string) ([]Volume, error) {
	const op = OpDomainVolumes
	dom, err := c.lookup(ctx, op, name)
	if err != nil {
		return nil, err
	}
	names, err := call(ctx, c, op, name, func(l *libvirt.Libvirt) ([]string, error) {
		xml, err := l.DomainGetXMLDesc(dom, 0)
		if err != nil {
			return nil, err
		}
		return volumesIn(xml, c.layout.pool)
	})
	if err != nil || len(names) == 0 {
		return nil, err
	}
	p, err := c.pool(ctx, op, name, true)
	if err != nil {
		return nil, err
	}
	return call(ctx, c, op, name, func(l *libvirt.Libvirt) ([]Volume, error) {
		vols := make([]Volume, 0, len(names))
		for _, n := range names {
			v, err := readVolume(l, p, n)
			if err != nil {
				return nil, err
			}
			vols = append(vols, v)
		}
		return vols, nil
	})
}

// readVolume reads a volume of pool p.
func readVolume(l *libvirt.Libvirt, p libvirt.StoragePool, name string) (Volume, error) {
	vol, err := l.StorageVolLookupByName(p, name)
	if err != nil {
		return Volume{}, fmt.Errorf("volume %s: %w", name, err)
	}
	xml, err := l.StorageVolGetXMLDesc(vol, 0)
	if err != nil {
		return Volume{}, fmt.Errorf("volume %s: %w", name, err)
	}
	return parseVolume(xml)
}

// PrepareVolume implements Hypervisor: pool (made if missing), a check that no domain uses the
// volume, then the volume kept, made, or replaced.
func (c *Conn) PrepareVolume(ctx context.Context, v Volume) error {
	const op = OpPrepareVolume
	if v.Format == "" {
		v.Format = c.layout.volumeFormat
	}
	if err := v.validate(); err != nil {
		return errorf(c.host, op, v.Name, KindInvalidArgument, "%v", err)
	}
	xml, err := volumeXML(v.Name, v.Capacity, v.Format)
	if err != nil {
		return errorf(c.host, op, v.Name, KindInternal, "%v", err)
	}
	p, err := c.pool(ctx, op, v.Name, false)
	if err != nil {
		return err
	}
	if err := c.checkUnused(ctx, op, v.Name, false); err != nil {
		return err
	}
	return call0(ctx, c, op, v.Name, func(l *libvirt.Libvirt) error {
		have, err := readVolume(l, p, v.Name)
		switch {
		case libvirtCode(err) == libvirt.ErrNoStorageVol:
		case err != nil:
			return err
		case have == v:
			return nil
		default:
			vol, err := l.StorageVolLookupByName(p, v.Name)
			if err == nil {
				err = l.StorageVolDelete(vol, 0)
			}
			if err != nil {
				return fmt.Errorf("replace volume %s (%d bytes, %s; want %d bytes, %s): %w",
					v.Name, have.Capacity, have.Format, v.Capacity, v.Format, err)
			}
		}
		if _, err := l.StorageVolCreateXML(p, xml, 0); err != nil {
			return fmt.Errorf("create volume %s: %w", v.Name, err)
		}
		return nil
	})
}

// PoolVolumes implements Hypervisor.
func (c *Conn) PoolVolumes(ctx context.Context) ([]Volume, error) {
	const op = OpPoolVolumes
	p, err := c.pool(ctx, op, "", true)
	if IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return call(ctx, c, op, "", func(l *libvirt.Libvirt) ([]Volume, error) {
		if err := l.StoragePoolRefresh(p, 0); err != nil {
			return nil, fmt.Errorf("refresh storage pool %s: %w", c.layout.pool, err)
		}
		vols, _, err := l.StoragePoolListAllVolumes(p, 1, 0)
		if err != nil {
			return nil, fmt.Errorf("list volumes of %s: %w", c.layout.pool, err)
		}
		out := make([]Volume, 0, len(vols))
		for _, v := range vols {
			vol, err := readVolume(l, p, v.Name)
			if err != nil {
				return nil, err
			}
			out = append(out, vol)
		}
		slices.SortFunc(out, func(a, b Volume) int { return strings.Compare(a.Name, b.Name) })
		return out, nil
	})
}

// RemoveVolume implements Hypervisor.
func (c *Conn) RemoveVolume(ctx context.Context, name string) error {
	const op = OpRemoveVolume
	if err := validateVolumeName(name); err != nil {
		return errorf(c.host, op, name, KindInvalidArgument, "%v", err)
	}
	if err := c.checkUnused(ctx, op, name, false); err != nil {
		return err
	}
	_, err := c.deleteVolume(ctx, op, name, name)
	return err
}

// checkUnused fails with KindFailedPrecondition when a domain of the host (running, defined,
// or arriving by migration, which libvirt lists too) uses the volume of the devfleet pool; with
// running set, only a domain that runs (or arrives) counts. libvirt does not check this itself:
// it deletes a volume under a running guest, and streams one's content. A domain defined (or
// started) between the check and what the caller does next is not seen.
func (c *Conn) checkUnused(ctx context.Context, op Op, volume string, running bool) error {
	flags := libvirt.ConnectListDomainsActive | libvirt.ConnectListDomainsInactive
	which := ""
	if running {
		flags, which = libvirt.ConnectListDomainsActive, "running "
	}
	users, err := call(ctx, c, op, volume, func(l *libvirt.Libvirt) ([]string, error) {
		doms, _, err := l.ConnectListAllDomains(1, flags)
		if err != nil {
			return nil, err
		}
		var users []string
		for _, dom := range doms {
			xml, err := l.DomainGetXMLDesc(dom, 0)
			if libvirtCode(err) == libvirt.ErrNoDomain {
				continue // gone meanwhile
			}
			if err != nil {
				return nil, fmt.Errorf("domain %s: %w", dom.Name, err)
			}
			vols, err := volumesIn(xml, c.layout.pool)
			if err != nil {
				return nil, fmt.Errorf("domain %s: %w", dom.Name, err)
			}
			if slices.Contains(vols, volume) {
				users = append(users, dom.Name)
			}
		}
		return users, nil
	})
	if err != nil {
		return err
	}
	if len(users) > 0 {
		return errorf(c.host, op, volume, KindFailedPrecondition, "volume %s is in use by %sdomain %s", volume, which, strings.Join(users, ", "))
	}
	return nil
}

package hypervisor

import (
	"context"
	"fmt"

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
	xml, err := volumeXML(name, gib, c.layout.volumeFormat)
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

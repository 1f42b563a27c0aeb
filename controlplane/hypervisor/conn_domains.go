package hypervisor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"github.com/google/uuid"
)

// undefineFlags remove what libvirt keeps beside a definition, so that undefine does not refuse.
const undefineFlags = libvirt.DomainUndefineManagedSave | libvirt.DomainUndefineSnapshotsMetadata |
	libvirt.DomainUndefineCheckpointsMetadata | libvirt.DomainUndefineNvram

// DefineAndStart implements Hypervisor: lookup (refuse an existing name), volume (made, or
// checked with ExistingVolume), define (with schema validation), start. The steps run in the
// background to the end of the one under way even when ctx ends: a failure, or ctx ending
// before the start, undoes what was made, so that a half-made domain is never left behind while
// the connection holds.
func (c *Conn) DefineAndStart(ctx context.Context, spec DomainSpec) (Domain, error) {
	const op = OpDefineAndStart
	if err := spec.Validate(); err != nil {
		return Domain{}, errorf(c.host, op, spec.Name, KindInvalidArgument, "invalid spec: %v", err)
	}
	xml, err := domainXML(spec, c.layout)
	if err != nil {
		return Domain{}, errorf(c.host, op, spec.Name, KindInternal, "%v", err)
	}
	type result struct {
		d   Domain
		err error
	}
	ch := make(chan result, 1)
	go func() {
		d, err := c.defineAndStart(ctx, spec, xml)
		ch <- result{d, err}
	}()
	select {
	case r := <-ch:
		return r.d, r.err
	case <-ctx.Done():
		return Domain{}, &Error{Host: c.host, Op: op, Domain: spec.Name, Kind: KindTimeout, Err: ctx.Err(),
			Message: ctx.Err().Error() + " (the step under way finishes; the domain is removed again unless it had started)"}
	}
}

// defineAndStart does DefineAndStart's steps. Each libvirt call runs to its end; ctx is checked
// between them.
func (c *Conn) defineAndStart(ctx context.Context, spec DomainSpec, xml string) (Domain, error) {
	const op = OpDefineAndStart
	work := context.WithoutCancel(ctx)
	gaveUp := func() error {
		if err := ctx.Err(); err != nil {
			return newError(c.host, op, spec.Name, err)
		}
		return nil
	}
	if _, err := c.lookup(work, op, spec.Name); err == nil {
		return Domain{}, errorf(c.host, op, spec.Name, KindAlreadyExists, "domain %q already exists", spec.Name)
	} else if !IsNotFound(err) {
		return Domain{}, err
	}
	var volume string // the volume made here, which a rollback deletes
	if spec.DiskGiB > 0 {
		if err := gaveUp(); err != nil {
			return Domain{}, err
		}
		name := c.layout.volumeName(spec.Name)
		if spec.ExistingVolume {
			if err := c.checkExisting(work, op, spec.Name, name, spec.DiskGiB); err != nil {
				return Domain{}, err
			}
		} else {
			if err := c.createVolume(work, op, spec.Name, name, spec.DiskGiB); err != nil {
				return Domain{}, err
			}
			volume = name
		}
	}
	if err := gaveUp(); err != nil {
		c.rollback(work, spec.Name, nil, volume)
		return Domain{}, err
	}
	dom, err := call(work, c, op, spec.Name, func(l *libvirt.Libvirt) (libvirt.Domain, error) {
		d, err := l.DomainDefineXMLFlags(xml, libvirt.DomainDefineValidate)
		if err != nil {
			return d, fmt.Errorf("define: %w", err)
		}
		return d, nil
	})
	if err != nil {
		c.rollback(work, spec.Name, nil, volume)
		return Domain{}, err
	}
	if err := gaveUp(); err != nil {
		c.rollback(work, spec.Name, &dom, volume)
		return Domain{}, err
	}
	err = call0(work, c, op, spec.Name, func(l *libvirt.Libvirt) error {
		if _, err := l.DomainCreateWithFlags(dom, 0); err != nil {
			return fmt.Errorf("start: %w", err)
		}
		return nil
	})
	if err != nil {
		c.rollback(work, spec.Name, &dom, volume)
		return Domain{}, err
	}
	return Domain{
		Name: spec.Name, UUID: uuid.UUID(dom.UUID).String(), State: StateRunning,
		VCPUs: spec.VCPUs, MemoryMiB: spec.MemoryMiB, Metadata: spec.Metadata,
	}, nil
}

// checkExisting checks the volume that a DefineAndStart with ExistingVolume boots from: in the
// pool (KindNotFound otherwise), of the host's format, at least gib GiB, and used by no other
// domain (two guests on one disk would wreck it).
func (c *Conn) checkExisting(ctx context.Context, op Op, domain, name string, gib int64) error {
	p, err := c.pool(ctx, op, domain, true)
	if err != nil {
		return err
	}
	v, err := call(ctx, c, op, domain, func(l *libvirt.Libvirt) (Volume, error) { return readVolume(l, p, name) })
	if err != nil {
		return err
	}
	if err := checkExistingVolume(v, c.layout.volumeFormat, gib); err != nil {
		return errorf(c.host, op, domain, KindFailedPrecondition, "%v", err)
	}
	return c.checkUnused(ctx, op, name, false)
}

// checkExistingVolume checks that v can be the disk of a guest of gib GiB.
func checkExistingVolume(v Volume, format string, gib int64) error {
	if v.Format != format {
		return fmt.Errorf("existing volume %s is %s, want %s", v.Name, v.Format, format)
	}
	if want := uint64(gib) << 30; v.Capacity < want {
		return fmt.Errorf("existing volume %s has %d bytes, less than the disk's %d GiB", v.Name, v.Capacity, gib)
	}
	return nil
}

// rollback undoes a failed DefineAndStart: destroys and undefines dom (if defined) and deletes
// the volume (if made: an ExistingVolume is not passed, and stays). It runs on its own
// deadline, since ctx may be what ended; what it cannot undo (the connection is gone) is
// logged, and List finds it again (it carries metadata).
func (c *Conn) rollback(ctx context.Context, name string, dom *libvirt.Domain, volume string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	if dom != nil {
		err := call0(ctx, c, OpDefineAndStart, name, func(l *libvirt.Libvirt) error {
			// A start that timed out on our side may have happened after all.
			if err := l.DomainDestroyFlags(*dom, libvirt.DomainDestroyDefault); err != nil &&
				libvirtKind(libvirtCode(err)) != KindFailedPrecondition {
				return fmt.Errorf("destroy: %w", err)
			}
			if err := l.DomainUndefineFlags(*dom, undefineFlags); err != nil {
				return fmt.Errorf("undefine: %w", err)
			}
			return nil
		})
		if err != nil {
			c.log.Warn("hypervisor: rollback of a failed define-and-start left the domain", "host", c.host, "domain", name, "error", err)
			return // the volume stays with its domain
		}
	}
	if volume != "" {
		if _, err := c.deleteVolume(ctx, OpDefineAndStart, name, volume); err != nil {
			c.log.Warn("hypervisor: rollback of a failed define-and-start left the volume", "host", c.host, "domain", name, "volume", volume, "error", err)
		}
	}
}

// Redefine implements Hypervisor: a check that the domain is shut off, the volume grown
// (StorageVolResize) when the new disk is bigger, then the new definition (same name and UUID:
// libvirt replaces the persistent one).
func (c *Conn) Redefine(ctx context.Context, spec DomainSpec) error {
	const op = OpRedefine
	dom, err := c.lookup(ctx, op, spec.Name)
	if err != nil {
		return err
	}
	if spec.UUID == "" {
		spec.UUID = uuid.UUID(dom.UUID).String()
	}
	if err := spec.Validate(); err != nil {
		return errorf(c.host, op, spec.Name, KindInvalidArgument, "invalid spec: %v", err)
	}
	if spec.UUID != uuid.UUID(dom.UUID).String() {
		return errorf(c.host, op, spec.Name, KindInvalidArgument, "uuid %s is not the domain's %s", spec.UUID, uuid.UUID(dom.UUID))
	}
	state, err := c.state(ctx, op, dom)
	if err != nil {
		return err
	}
	if state != StateShutOff {
		return errorf(c.host, op, spec.Name, KindFailedPrecondition, "domain %s is %s: only a shut-off domain is redefined", spec.Name, state)
	}
	if spec.DiskGiB > 0 {
		if err := c.growVolume(ctx, op, spec.Name, c.layout.volumeName(spec.Name), uint64(spec.DiskGiB)<<30); err != nil {
			return err
		}
		spec.ExistingVolume = true
	}
	xml, err := domainXML(spec, c.layout)
	if err != nil {
		return errorf(c.host, op, spec.Name, KindInternal, "%v", err)
	}
	return call0(ctx, c, op, spec.Name, func(l *libvirt.Libvirt) error {
		if _, err := l.DomainDefineXMLFlags(xml, libvirt.DomainDefineValidate); err != nil {
			return fmt.Errorf("define: %w", err)
		}
		return nil
	})
}

// growVolume resizes a volume of the pool to capacity bytes when it is smaller.
func (c *Conn) growVolume(ctx context.Context, op Op, domain, name string, capacity uint64) error {
	p, err := c.pool(ctx, op, domain, true)
	if err != nil {
		return err
	}
	return call0(ctx, c, op, domain, func(l *libvirt.Libvirt) error {
		v, err := readVolume(l, p, name)
		if err != nil || v.Capacity >= capacity {
			return err
		}
		vol, err := l.StorageVolLookupByName(p, name)
		if err != nil {
			return fmt.Errorf("volume %s: %w", name, err)
		}
		if err := l.StorageVolResize(vol, capacity, 0); err != nil {
			return fmt.Errorf("grow volume %s from %d to %d bytes: %w", name, v.Capacity, capacity, err)
		}
		return nil
	})
}

// Start implements Hypervisor.
func (c *Conn) Start(ctx context.Context, name string) error {
	const op = OpStart
	dom, err := c.lookup(ctx, op, name)
	if err != nil {
		return err
	}
	err = call0(ctx, c, op, name, func(l *libvirt.Libvirt) error {
		_, err := l.DomainCreateWithFlags(dom, 0)
		return err
	})
	if KindOf(err) == KindFailedPrecondition { // "domain is already running"
		return nil
	}
	return err
}

// Shutdown implements Hypervisor: an ACPI power-button press, then a poll of the state until the
// domain is off.
func (c *Conn) Shutdown(ctx context.Context, name string) error {
	const op = OpShutdown
	dom, err := c.lookup(ctx, op, name)
	if err != nil {
		return err
	}
	state, err := c.state(ctx, op, dom)
	if err != nil || state == StateShutOff {
		return err
	}
	err = call0(ctx, c, op, name, func(l *libvirt.Libvirt) error {
		return l.DomainShutdownFlags(dom, libvirt.DomainShutdownAcpiPowerBtn)
	})
	if err != nil && KindOf(err) != KindFailedPrecondition { // not running (any more) is fine
		return err
	}
	tick := time.NewTicker(c.opts.ShutdownPoll)
	defer tick.Stop()
	for {
		state, err := c.state(ctx, op, dom)
		switch {
		case IsNotFound(err):
			return nil // a transient domain, or undefined meanwhile: it is off
		case err != nil:
			return err
		case state == StateShutOff || state == StateCrashed:
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return &Error{
				Host: c.host, Op: op, Domain: name, Kind: KindTimeout, Err: ctx.Err(),
				Message: "the guest was still " + string(state) + " when the context ended (" + ctx.Err().Error() + ")",
			}
		}
	}
}

// Destroy implements Hypervisor.
func (c *Conn) Destroy(ctx context.Context, name string) error {
	const op = OpDestroy
	dom, err := c.lookup(ctx, op, name)
	if err != nil {
		return err
	}
	err = call0(ctx, c, op, name, func(l *libvirt.Libvirt) error {
		return l.DomainDestroyFlags(dom, libvirt.DomainDestroyDefault)
	})
	if KindOf(err) == KindFailedPrecondition { // "domain is not running"
		return nil
	}
	return err
}

// Undefine implements Hypervisor.
func (c *Conn) Undefine(ctx context.Context, name string) error {
	const op = OpUndefine
	dom, err := c.lookup(ctx, op, name)
	if IsNotFound(err) {
		// A volume left by a failed DefineAndStart goes too.
		deleted, verr := c.deleteVolume(ctx, op, name, c.layout.volumeName(name))
		if verr != nil || deleted {
			return verr
		}
		return err
	}
	if err != nil {
		return err
	}
	state, err := c.state(ctx, op, dom)
	if err != nil {
		return err
	}
	if state != StateShutOff && state != StateCrashed {
		return errorf(c.host, op, name, KindFailedPrecondition, "domain is %s; destroy or shut it down first", state)
	}
	volumes, err := call(ctx, c, op, name, func(l *libvirt.Libvirt) ([]string, error) {
		xml, err := l.DomainGetXMLDesc(dom, libvirt.DomainXMLInactive)
		if err != nil {
			return nil, err
		}
		return volumesIn(xml, c.layout.pool)
	})
	if err != nil {
		return err
	}
	err = call0(ctx, c, op, name, func(l *libvirt.Libvirt) error { return l.DomainUndefineFlags(dom, undefineFlags) })
	if err != nil {
		return err
	}
	var errs []error
	for _, v := range volumes {
		if _, err := c.deleteVolume(ctx, op, name, v); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Lookup implements Hypervisor.
func (c *Conn) Lookup(ctx context.Context, name string) (Domain, error) {
	dom, err := c.lookup(ctx, OpLookup, name)
	if err != nil {
		return Domain{}, err
	}
	return c.describe(ctx, OpLookup, dom)
}

// List implements Hypervisor; domains come sorted by name. A domain undefined while the list is
// read is left out.
func (c *Conn) List(ctx context.Context) ([]Domain, error) {
	const op = OpList
	doms, err := call(ctx, c, op, "", func(l *libvirt.Libvirt) ([]libvirt.Domain, error) {
		doms, _, err := l.ConnectListAllDomains(1, libvirt.ConnectListDomainsActive|libvirt.ConnectListDomainsInactive)
		return doms, err
	})
	if err != nil {
		return nil, err
	}
	out := make([]Domain, 0, len(doms))
	for _, dom := range doms {
		d, err := c.describe(ctx, op, dom)
		if IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Domain) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

// lookup finds a domain by name.
func (c *Conn) lookup(ctx context.Context, op Op, name string) (libvirt.Domain, error) {
	return call(ctx, c, op, name, func(l *libvirt.Libvirt) (libvirt.Domain, error) {
		return l.DomainLookupByName(name)
	})
}

// state returns a domain's run state.
func (c *Conn) state(ctx context.Context, op Op, dom libvirt.Domain) (State, error) {
	return call(ctx, c, op, dom.Name, func(l *libvirt.Libvirt) (State, error) {
		s, _, err := l.DomainGetState(dom, 0)
		return domainState(libvirt.DomainState(s)), err
	})
}

// describe reads a domain's state, size and devfleet metadata.
func (c *Conn) describe(ctx context.Context, op Op, dom libvirt.Domain) (Domain, error) {
	return call(ctx, c, op, dom.Name, func(l *libvirt.Libvirt) (Domain, error) {
		state, maxKiB, _, vcpus, _, err := l.DomainGetInfo(dom)
		if err != nil {
			return Domain{}, err
		}
		d := Domain{
			Name: dom.Name, UUID: uuid.UUID(dom.UUID).String(), State: domainState(libvirt.DomainState(state)),
			VCPUs: int64(vcpus), MemoryMiB: int64(maxKiB / 1024),
		}
		raw, err := l.DomainGetMetadata(dom, int32(libvirt.DomainMetadataElement), libvirt.OptString{MetadataNamespace}, libvirt.DomainAffectCurrent)
		if libvirtCode(err) == libvirt.ErrNoDomainMetadata {
			return d, nil
		}
		if err != nil {
			return Domain{}, err
		}
		meta, _, err := ParseMetadata(raw)
		if err != nil {
			// Listed as not devfleet's rather than failing the whole list; a human must look.
			c.log.Warn("hypervisor: domain has unreadable devfleet metadata", "host", c.host, "domain", dom.Name, "error", err)
			return d, nil
		}
		d.Metadata = meta
		return d, nil
	})
}

// libvirtCode returns libvirt's error number in err, or -1 when err is not libvirt's.
func libvirtCode(err error) libvirt.ErrorNumber {
	var lerr libvirt.Error
	if errors.As(err, &lerr) {
		return libvirt.ErrorNumber(lerr.Code)
	}
	return -1
}

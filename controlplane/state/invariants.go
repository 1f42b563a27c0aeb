package state

import (
	"fmt"

	"github.com/devfleet/devfleet/capacity/fit"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// CheckInvariants verifies the referential rules every command keeps: each site's region exists,
// each host's site exists and the host carries the site's region, each devserver's flavor,
// region and host exist and agree. A failure means a bug in an apply handler or a restore;
// tests run it after every random command sequence.
func (v *View) CheckInvariants() error {
	sites := v.iter(TableSites, "id")
	for raw := sites.Next(); raw != nil; raw = sites.Next() {
		s := raw.(interface {
			GetName() string
			GetRegion() string
		})
		if _, err := v.GetRegion(s.GetRegion()); err != nil {
			return fmt.Errorf("site %s: %w", s.GetName(), err)
		}
	}
	hosts := v.iter(TableHosts, "id")
	for raw := hosts.Next(); raw != nil; raw = hosts.Next() {
		h := raw.(interface {
			GetName() string
			GetSite() string
			GetRegion() string
		})
		site, err := v.GetSite(h.GetSite())
		if err != nil {
			return fmt.Errorf("host %s: %w", h.GetName(), err)
		}
		if site.GetRegion() != h.GetRegion() {
			return fmt.Errorf("host %s: region %q, its site is in %q", h.GetName(), h.GetRegion(), site.GetRegion())
		}
		host := raw.(*v1.Host)
		alloc, err := v.allocatedOn(host)
		if err != nil {
			return fmt.Errorf("host %s: %w", h.GetName(), err)
		}
		if got := fit.Of(host.GetAllocated()); got != alloc {
			return fmt.Errorf("host %s: allocated %+v recorded, its devservers take %+v", h.GetName(), got, alloc)
		}
		if !fit.Usable(host).Covers(alloc) {
			return fmt.Errorf("host %s: oversubscribed: devservers take %+v of %+v", h.GetName(), alloc, fit.Usable(host))
		}
	}
	ids := map[string]bool{}
	devs := v.iter(TableDevservers, "id")
	for raw := devs.Next(); raw != nil; raw = devs.Next() {
		d := raw.(interface {
			GetName() string
			GetId() string
			GetFlavor() string
			GetRegion() string
			GetSite() string
			GetHost() string
		})
		if ids[d.GetId()] {
			return fmt.Errorf("devserver %s: id %s used twice", d.GetName(), d.GetId())
		}
		ids[d.GetId()] = true
		if _, err := v.GetFlavor(d.GetFlavor()); err != nil {
			return fmt.Errorf("devserver %s: %w", d.GetName(), err)
		}
		if _, err := v.GetRegion(d.GetRegion()); err != nil {
			return fmt.Errorf("devserver %s: %w", d.GetName(), err)
		}
		if d.GetHost() == "" {
			if d.GetSite() != "" {
				return fmt.Errorf("devserver %s: site %q without a host", d.GetName(), d.GetSite())
			}
			continue
		}
		h, err := v.GetHost(d.GetHost())
		if err != nil {
			return fmt.Errorf("devserver %s: %w", d.GetName(), err)
		}
		if h.GetRegion() != d.GetRegion() || h.GetSite() != d.GetSite() {
			return fmt.Errorf("devserver %s: in %s/%s, its host %s is in %s/%s", d.GetName(),
				d.GetRegion(), d.GetSite(), h.GetName(), h.GetRegion(), h.GetSite())
		}
	}
	return nil
}

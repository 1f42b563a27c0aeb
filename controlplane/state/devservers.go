package state

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/capacity/fit"
	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/validate"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// DevserverFilter selects devservers in a list; empty fields match everything.
type DevserverFilter struct {
	Region string
	Site   string
	Host   string
	Owner  string
}

// GetDevserver returns a devserver or NotFound.
func (v *View) GetDevserver(name string) (*v1.Devserver, error) {
	if raw := v.first(TableDevservers, "id", name); raw != nil {
		return raw.(*v1.Devserver), nil
	}
	return nil, apierror.Missing("devserver", name)
}

// ListDevservers returns one page of devservers in name order, walking the most selective index.
func (v *View) ListDevservers(f DevserverFilter, p Page) ([]*v1.Devserver, string) {
	keep := func(d *v1.Devserver) bool {
		return (f.Region == "" || d.GetRegion() == f.Region) &&
			(f.Site == "" || d.GetSite() == f.Site) &&
			(f.Host == "" || d.GetHost() == f.Host) &&
			(f.Owner == "" || d.GetOwner() == f.Owner)
	}
	switch {
	case f.Host != "":
		return list(v, TableDevservers, "host", f.Host, p, keep)
	case f.Owner != "":
		return list(v, TableDevservers, "owner", f.Owner, p, keep)
	default:
		// Region and site filters scan: indexing them would cost every devserver write.
		return list(v, TableDevservers, "", "", p, keep)
	}
}

// CreateDevserver records a devserver. The leader has stamped its ID (a random UUID, unique by
// construction; CheckInvariants verifies it) and, for a temporary one, its expiry. Its flavor and region must exist; a host, if given, must be active and in the
// region.
func (w *WriteTxn) CreateDevserver(in *v1.Devserver) (*v1.Devserver, error) {
	d := NewDevserver(in)
	if d.Id == "" {
		return nil, apierror.Invalid("devserver.id", "must be stamped by the leader")
	}
	if err := validate.Devserver("devserver", d); err != nil {
		return nil, err
	}
	if old, ok := w.first(TableDevservers, "id", d.Name).(*v1.Devserver); ok {
		if Deleting(old) {
			return nil, apierror.Blocked("devserver %q is still being deleted; its name is free once its guest is gone", d.Name)
		}
		return nil, apierror.Exists("devserver", d.Name)
	}
	f, err := w.GetFlavor(d.Flavor)
	if err != nil {
		return nil, err
	}
	if _, err := w.GetRegion(d.Region); err != nil {
		return nil, err
	}
	if !FlavorAllowedIn(f, d.Region) {
		return nil, apierror.Blocked("flavor %q is not allowed in region %q (allowed: %s)", f.GetName(), d.Region, strings.Join(f.GetAllowedRegions(), ", "))
	}
	if d.Host != "" {
		h, err := w.GetHost(d.Host)
		if err != nil {
			return nil, err
		}
		if h.GetRegion() != d.Region {
			return nil, apierror.Invalid("devserver.host", "host %q is in region %q, not %q", d.Host, h.GetRegion(), d.Region)
		}
		if h.GetState() != v1.HostState_HOST_STATE_ACTIVE {
			return nil, apierror.Blocked("host %q is %s and takes no new devservers", d.Host, HostStateName(h.GetState()))
		}
		// The placement was chosen on an earlier view; concurrent creates may have taken the
		// room since. This check is what keeps a host from being oversubscribed.
		if s := fit.Check(f, h, fit.Free(h)); s != fit.None {
			e := apierror.Blocked("host %q has no room for it: its free resources %s", d.Host, s.Describe(f))
			e.Code = apierror.CodeNoRoom
			return nil, e
		}
		d.Site = h.GetSite()
	}
	d.CreateTime, d.UpdateTime = w.now, w.now
	d.CreateIndex, d.ModifyIndex = w.index, w.index
	if err := w.insert(TableDevservers, d); err != nil {
		return nil, err
	}
	if d.Host != "" {
		if err := w.allocate(d.Host, f, false); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// FlavorAllowedIn reports whether devservers of f may live in region.
func FlavorAllowedIn(f *v1.Flavor, region string) bool {
	return len(f.GetAllowedRegions()) == 0 || slices.Contains(f.GetAllowedRegions(), region)
}

// NewDevserver keeps the fields of a create request that a caller (or the leader, for id and
// expire_time) may set. The record starts PROVISIONING.
func NewDevserver(in *v1.Devserver) *v1.Devserver {
	d := &v1.Devserver{
		Name:       in.GetName(),
		Id:         in.GetId(),
		Owner:      in.GetOwner(),
		Sharers:    slices.Clone(in.GetSharers()),
		Flavor:     in.GetFlavor(),
		Region:     in.GetRegion(),
		Host:       in.GetHost(),
		Lifespan:   in.GetLifespan(),
		ExpireTime: in.GetExpireTime(),
		Power:      in.GetPower(),
		Features:   slices.Clone(in.GetFeatures()),
		State:      v1.DevserverState_DEVSERVER_STATE_PROVISIONING,
	}
	if d.ExpireTime != nil {
		d.ExpireTime = proto.Clone(d.ExpireTime).(*timestamppb.Timestamp)
	}
	return d
}

// UpdateDevserver changes the fields in paths; with expected not 0, only while the devserver's
// modify_index still equals it.
func (w *WriteTxn) UpdateDevserver(in *v1.Devserver, paths []string, expected uint64) (*v1.Devserver, error) {
	cur, err := w.GetDevserver(in.GetName())
	if err != nil {
		return nil, err
	}
	if expected != 0 && cur.GetModifyIndex() != expected {
		return nil, apierror.Changed("devserver", cur.GetName(), expected, cur.GetModifyIndex())
	}
	if Deleting(cur) {
		return nil, apierror.Blocked("devserver %q is being deleted", cur.GetName())
	}
	d := proto.Clone(cur).(*v1.Devserver)
	for _, p := range paths {
		switch p {
		case "sharers":
			d.Sharers = slices.Clone(in.GetSharers())
		case "lifespan":
			d.Lifespan = in.GetLifespan()
			if d.Lifespan == v1.Lifespan_LIFESPAN_PERMANENT {
				d.ExpireTime = nil
			}
		case "expire_time":
			d.ExpireTime = nil
			if in.GetExpireTime() != nil {
				d.ExpireTime = proto.Clone(in.GetExpireTime()).(*timestamppb.Timestamp)
			}
			// A new expiry earns a new warning before it.
			d.ExpiryNoticeTime = nil
		case "power":
			if _, ok := v1.Power_name[int32(in.GetPower())]; !ok {
				return nil, apierror.Invalid("devserver.power", "unknown power %d", in.GetPower())
			}
			d.Power = in.GetPower()
		case "expiry_notice_time":
			d.ExpiryNoticeTime = nil
			if in.GetExpiryNoticeTime() != nil {
				d.ExpiryNoticeTime = proto.Clone(in.GetExpiryNoticeTime()).(*timestamppb.Timestamp)
			}
		default:
			return nil, apierror.Invalid("update_mask", "path %q cannot be updated on a devserver", p)
		}
	}
	if err := validate.Devserver("devserver", d); err != nil {
		return nil, err
	}
	d.UpdateTime, d.ModifyIndex = w.now, w.index
	return d, w.insert(TableDevservers, d)
}

// DeleteDevserver removes a devserver, or, when its guest runs on a libvirt host, marks it for
// deletion: the provisioner destroys the guest and then purges the record (PurgeDevserver).
// Asking again while it is being deleted changes nothing.
func (w *WriteTxn) DeleteDevserver(name string) (*v1.Devserver, error) {
	d, err := w.GetDevserver(name)
	if err != nil {
		return nil, err
	}
	if Deleting(d) {
		return d, nil
	}
	if m := w.ActiveMigration(d.GetName()); m != nil {
		return nil, apierror.Blocked("devserver %q is moving (migration %s to %s); abort the migration or let it end first", d.GetName(), m.GetId(), m.GetDestHost())
	}
	if d.GetHost() != "" {
		h, err := w.GetHost(d.GetHost())
		if err != nil {
			return nil, err
		}
		if Managed(h) {
			d = proto.Clone(d).(*v1.Devserver)
			d.DeleteTime = w.now
			d.State, d.StateReason = v1.DevserverState_DEVSERVER_STATE_DELETED, "deletion asked"
			d.UpdateTime, d.ModifyIndex = w.now, w.index
			return d, w.insert(TableDevservers, d)
		}
	}
	return nil, w.removeDevserver(d)
}

// removeDevserver removes a devserver record and frees its room.
func (w *WriteTxn) removeDevserver(d *v1.Devserver) error {
	if err := w.remove(TableDevservers, d); err != nil {
		return err
	}
	if d.GetHost() != "" {
		f, err := w.GetFlavor(d.GetFlavor())
		if err != nil {
			return err
		}
		return w.allocate(d.GetHost(), f, true)
	}
	return nil
}

// devserversWhere returns up to max names of the devservers that match, and their number. It
// scans the table: it serves rare checks (deleting a region or a flavor), and an index would
// cost every devserver write.
func (v *View) devserversWhere(match func(*v1.Devserver) bool, max int) ([]string, int) {
	return namesWhere(v, max, match, TableDevservers, "id")
}

// DevserversOf returns every devserver of an owner.
func (v *View) DevserversOf(owner string) []*v1.Devserver {
	return rows[*v1.Devserver](v, TableDevservers, "owner", owner)
}

// DevserversOn returns every devserver on a host.
func (v *View) DevserversOn(host string) []*v1.Devserver {
	return rows[*v1.Devserver](v, TableDevservers, "host", host)
}

// EachDevserver calls fn for every devserver, in name order.
func (v *View) EachDevserver(fn func(*v1.Devserver)) {
	it := v.iter(TableDevservers, "id")
	for raw := it.Next(); raw != nil; raw = it.Next() {
		fn(raw.(*v1.Devserver))
	}
}

package state

import (
	"cmp"
	"fmt"
	"maps"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/capacity/fit"
	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/validate"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// HostFilter selects hosts in a list; empty fields match everything.
type HostFilter struct {
	Region string
	Site   string
	State  v1.HostState
}

// GetHost returns a host or NotFound.
func (v *View) GetHost(name string) (*v1.Host, error) {
	if raw := v.first(TableHosts, "id", name); raw != nil {
		return raw.(*v1.Host), nil
	}
	return nil, apierror.Missing("host", name)
}

// ListHosts returns one page of hosts in name order.
func (v *View) ListHosts(f HostFilter, p Page) ([]*v1.Host, string) {
	keep := func(h *v1.Host) bool {
		return (f.Region == "" || h.GetRegion() == f.Region) &&
			(f.State == v1.HostState_HOST_STATE_UNSPECIFIED || h.GetState() == f.State)
	}
	switch {
	case f.Site != "":
		return list(v, TableHosts, "site", f.Site, p, keep)
	case f.Region != "":
		return list(v, TableHosts, "", "", p, keep)
	default:
		return list(v, TableHosts, "", "", p, keep)
	}
}

// normalOvercommit spells out the default ratio of 1 so that readers need not know it.
func normalOvercommit(o *v1.Overcommit) *v1.Overcommit {
	one := func(x float64) float64 {
		if x == 0 {
			return 1
		}
		return x
	}
	return &v1.Overcommit{Cpu: one(o.GetCpu()), Memory: one(o.GetMemory()), Disk: one(o.GetDisk())}
}

func resourcesOrZero(r *v1.Resources) *v1.Resources {
	if r == nil {
		return &v1.Resources{}
	}
	return proto.Clone(r).(*v1.Resources)
}

// NewHost keeps the fields of a create request that a caller may set, with defaults spelled
// out; output-only fields (region, state, times, indexes) are dropped.
func NewHost(in *v1.Host) *v1.Host {
	h := &v1.Host{
		Name:         in.GetName(),
		Site:         in.GetSite(),
		Overcommit:   normalOvercommit(in.GetOvercommit()),
		Reserved:     resourcesOrZero(in.GetReserved()),
		Labels:       maps.Clone(in.GetLabels()),
		LibvirtUri:   in.GetLibvirtUri(),
		MigrationUri: in.GetMigrationUri(),
		State:        v1.HostState_HOST_STATE_ACTIVE,
		Allocated:    &v1.Resources{},
	}
	if in.GetCapacity() != nil {
		h.Capacity = proto.Clone(in.GetCapacity()).(*v1.Resources)
	}
	return h
}

// CreateHost adds an active host to an existing site.
func (w *WriteTxn) CreateHost(in *v1.Host) (*v1.Host, error) {
	h := NewHost(in)
	if err := validate.Host("host", h); err != nil {
		return nil, err
	}
	if w.first(TableHosts, "id", h.Name) != nil {
		return nil, apierror.Exists("host", h.Name)
	}
	site, err := w.GetSite(h.Site)
	if err != nil {
		return nil, err
	}
	h.Region = site.GetRegion()
	h.CreateTime, h.UpdateTime, h.StateChangeTime = w.now, w.now, w.now
	h.CreateIndex, h.ModifyIndex = w.index, w.index
	return h, w.insert(TableHosts, h)
}

// UpdateHost changes the fields in paths.
func (w *WriteTxn) UpdateHost(in *v1.Host, paths []string) (*v1.Host, error) {
	cur, err := w.GetHost(in.GetName())
	if err != nil {
		return nil, err
	}
	h := proto.Clone(cur).(*v1.Host)
	for _, p := range paths {
		switch p {
		case "capacity":
			h.Capacity = resourcesOrZero(in.GetCapacity())
		case "overcommit":
			h.Overcommit = normalOvercommit(in.GetOvercommit())
		case "reserved":
			h.Reserved = resourcesOrZero(in.GetReserved())
		case "labels":
			h.Labels = maps.Clone(in.GetLabels())
		case "migration_uri":
			h.MigrationUri = in.GetMigrationUri()
		case "libvirt_uri":
			if in.GetLibvirtUri() != cur.GetLibvirtUri() {
				if names, n := namesWhere[*v1.Devserver](&w.View, 3, nil, TableDevservers, "host", h.GetName()); n > 0 {
					return nil, apierror.Blocked("host %q runs %d devservers (%s); move them before changing how devfleet reaches it",
						h.GetName(), n, strings.Join(names, ", "))
				}
			}
			h.LibvirtUri = in.GetLibvirtUri()
		default:
			return nil, apierror.Invalid("update_mask", "path %q cannot be updated on a host", p)
		}
	}
	if err := validate.Host("host", h); err != nil {
		return nil, err
	}
	alloc, err := w.allocatedOn(h)
	if err != nil {
		return nil, err
	}
	if usable := fit.Usable(h); !usable.Covers(alloc) {
		return nil, apierror.Blocked("host %q runs devservers that take %s; the new capacity would give only %s",
			h.GetName(), describeAmount(alloc), describeAmount(usable))
	}
	h.Allocated = alloc.Proto()
	h.UpdateTime, h.ModifyIndex = w.now, w.index
	return h, w.insert(TableHosts, h)
}

// allocatedOn sums what the devservers on h take, as recorded now.
func (v *View) allocatedOn(h *v1.Host) (fit.Amount, error) {
	var sum fit.Amount
	it := v.iter(TableDevservers, "host", h.GetName())
	for raw := it.Next(); raw != nil; raw = it.Next() {
		f, err := v.GetFlavor(raw.(*v1.Devserver).GetFlavor())
		if err != nil {
			return fit.Amount{}, err
		}
		sum = sum.Add(fit.Need(f, h))
	}
	cs := v.iter(TableContainers, "host", h.GetName())
	for raw := cs.Next(); raw != nil; raw = cs.Next() {
		p, err := v.GetProfile(raw.(*v1.Container).GetProfile())
		if err != nil {
			return fit.Amount{}, err
		}
		sum = sum.Add(fit.Need(ProfileFlavor(p), h))
	}
	// Room held for devservers moving here.
	for _, m := range v.activeTo(h.GetName()) {
		d, err := v.GetDevserver(m.GetDevserver())
		if err != nil {
			return fit.Amount{}, err
		}
		f, err := v.GetFlavor(cmp.Or(m.GetDestFlavor(), d.GetFlavor())) // a resize holds its new size
		if err != nil {
			return fit.Amount{}, err
		}
		sum = sum.Add(fit.Need(f, h))
	}
	return sum, nil
}

// allocate adds what a devserver of flavor f takes to a host's allocation, or takes it back
// with release. Incremental, so a write costs the same however many devservers the host runs;
// UpdateHost recomputes from scratch.
func (w *WriteTxn) allocate(name string, f *v1.Flavor, release bool) error {
	cur, err := w.GetHost(name)
	if err != nil {
		return err
	}
	h := proto.Clone(cur).(*v1.Host)
	alloc := fit.Of(h.GetAllocated())
	if release {
		alloc = alloc.Sub(fit.Need(f, cur))
	} else {
		alloc = alloc.Add(fit.Need(f, cur))
	}
	h.Allocated = alloc.Proto()
	h.UpdateTime, h.ModifyIndex = w.now, w.index
	return w.insert(TableHosts, h)
}

func describeAmount(a fit.Amount) string {
	return fmt.Sprintf("%d vCPUs, %d MiB memory, %d GiB disk, %d GPUs", a.VCPUs, a.MemoryMiB, a.DiskGiB, a.GPUs)
}

// DeleteHost removes a host that runs no devservers.
func (w *WriteTxn) DeleteHost(name string) error {
	h, err := w.GetHost(name)
	if err != nil {
		return err
	}
	if names, n := namesWhere[*v1.Devserver](&w.View, 5, nil, TableDevservers, "host", name); n > 0 {
		return apierror.Blocked("host %q still runs %s; move or delete them first", name, listing("devserver", names, n))
	}
	if names, n := namesWhere[*v1.Container](&w.View, 5, nil, TableContainers, "host", name); n > 0 {
		return apierror.Blocked("host %q still runs %s; release them first", name, listing("container", names, n))
	}
	if ms := w.activeTo(name); len(ms) > 0 {
		return apierror.Blocked("host %q is the destination of %d migrations under way (%s first); let them end or abort them", name, len(ms), ms[0].GetId())
	}
	return w.remove(TableHosts, h)
}

// CordonHost stops new work from landing on an active host. Cordoning a cordoned host updates
// the reason; a host in a drain or decommission is already closed to new work and is refused.
func (w *WriteTxn) CordonHost(name, reason string) (*v1.Host, error) {
	if err := validate.Reason("reason", reason); err != nil {
		return nil, err
	}
	return w.setHostState(name, reason, v1.HostState_HOST_STATE_CORDONED,
		v1.HostState_HOST_STATE_ACTIVE, v1.HostState_HOST_STATE_CORDONED)
}

// UncordonHost returns a cordoned (or drained) host to service; an active host is left as it
// is. A host being drained is refused: cancel its drain.
func (w *WriteTxn) UncordonHost(name, reason string) (*v1.Host, error) {
	if err := validate.Text("reason", reason, validate.MaxReasonLen); err != nil {
		return nil, err
	}
	if dc := w.DecomOn(name); dc != nil {
		return nil, apierror.Blocked("host %q is being decommissioned (%s): abort the decommission first", name, dc.GetId())
	}
	return w.setHostState(name, "", v1.HostState_HOST_STATE_ACTIVE,
		v1.HostState_HOST_STATE_CORDONED, v1.HostState_HOST_STATE_DRAINED, v1.HostState_HOST_STATE_ACTIVE)
}

func (w *WriteTxn) setHostState(name, reason string, to v1.HostState, from ...v1.HostState) (*v1.Host, error) {
	cur, err := w.GetHost(name)
	if err != nil {
		return nil, err
	}
	allowed := false
	for _, s := range from {
		allowed = allowed || cur.GetState() == s
	}
	if !allowed {
		why := ""
		if cur.GetStateReason() != "" {
			why = " (" + cur.GetStateReason() + ")"
		}
		return nil, apierror.Blocked("host %q is %s%s; it cannot become %s", name, HostStateName(cur.GetState()), why, HostStateName(to))
	}
	if cur.GetState() == to && cur.GetStateReason() == reason {
		return cur, nil
	}
	h := proto.Clone(cur).(*v1.Host)
	if h.State != to {
		h.StateChangeTime = w.now
	}
	h.State, h.StateReason = to, reason
	h.UpdateTime, h.ModifyIndex = w.now, w.index
	return h, w.insert(TableHosts, h)
}

// HostStateName is the short lower-case name of a host state, for messages and tables.
func HostStateName(s v1.HostState) string {
	switch s {
	case v1.HostState_HOST_STATE_ACTIVE:
		return "active"
	case v1.HostState_HOST_STATE_CORDONED:
		return "cordoned"
	case v1.HostState_HOST_STATE_DRAINING:
		return "draining"
	case v1.HostState_HOST_STATE_DRAINED:
		return "drained"
	case v1.HostState_HOST_STATE_DECOMMISSIONING:
		return "decommissioning"
	case v1.HostState_HOST_STATE_RETIRED:
		return "retired"
	}
	return "unknown"
}

// HostsIn returns every host of a region, site by site (in name order within a site).
func (v *View) HostsIn(region string) []*v1.Host {
	var out []*v1.Host
	sites := v.iter(TableSites, "region", region)
	for raw := sites.Next(); raw != nil; raw = sites.Next() {
		it := v.iter(TableHosts, "site", raw.(*v1.Site).GetName())
		for h := it.Next(); h != nil; h = it.Next() {
			out = append(out, h.(*v1.Host))
		}
	}
	return out
}

// HostsAt returns the hosts of a site, in name order.
func (v *View) HostsAt(site string) []*v1.Host { return rows[*v1.Host](v, TableHosts, "site", site) }

// EachHost calls fn for every host, in name order.
func (v *View) EachHost(fn func(*v1.Host)) {
	it := v.iter(TableHosts, "id")
	for raw := it.Next(); raw != nil; raw = it.Next() {
		fn(raw.(*v1.Host))
	}
}

// HostHealthReport is what the leader's libvirt connections saw of one host.
type HostHealthReport struct {
	Host     string
	Health   v1.HostHealth
	Reason   string
	LastSeen *timestamppb.Timestamp
}

// ReportHostHealth records many hosts' health at once. Hosts deleted since the report are
// skipped, and a report never moves a host's last-seen time backwards.
func (w *WriteTxn) ReportHostHealth(reports []HostHealthReport) error {
	for i, r := range reports {
		if _, ok := v1.HostHealth_name[int32(r.Health)]; !ok {
			return apierror.Invalid(fmt.Sprintf("reports[%d].health", i), "unknown health %d", r.Health)
		}
		if err := validate.Text(fmt.Sprintf("reports[%d].reason", i), r.Reason, validate.MaxReasonLen); err != nil {
			return err
		}
	}
	for _, r := range reports {
		cur, ok := w.first(TableHosts, "id", r.Host).(*v1.Host)
		if !ok {
			continue
		}
		h := proto.Clone(cur).(*v1.Host)
		h.Health, h.HealthReason = r.Health, r.Reason
		if r.LastSeen != nil && (h.LastSeenTime == nil || r.LastSeen.AsTime().After(h.LastSeenTime.AsTime())) {
			h.LastSeenTime = r.LastSeen
		}
		if proto.Equal(h, cur) {
			continue
		}
		h.UpdateTime, h.ModifyIndex = w.now, w.index
		if err := w.insert(TableHosts, h); err != nil {
			return err
		}
	}
	return nil
}

// FenceHost marks an unreachable host as being evacuated: it is cordoned (unless retired or
// already closed to work) and fenced, so that its leftover guests are powered off when it
// answers again.
func (w *WriteTxn) FenceHost(name, reason string) (*v1.Host, error) {
	if err := validate.Reason("reason", reason); err != nil {
		return nil, err
	}
	cur, err := w.GetHost(name)
	if err != nil {
		return nil, err
	}
	if cur.GetState() == v1.HostState_HOST_STATE_RETIRED {
		return nil, apierror.Blocked("host %q is retired", name)
	}
	h := proto.Clone(cur).(*v1.Host)
	if h.GetState() == v1.HostState_HOST_STATE_ACTIVE {
		h.State, h.StateChangeTime = v1.HostState_HOST_STATE_CORDONED, w.now
	}
	h.StateReason = reason
	if h.GetFencedTime() == nil {
		h.FencedTime = w.now
	}
	h.UpdateTime, h.ModifyIndex = w.now, w.index
	return h, w.insert(TableHosts, h)
}

// UnfenceHost records that a fenced host's leftover guests are off. It stays cordoned.
func (w *WriteTxn) UnfenceHost(name string) (*v1.Host, error) {
	cur, err := w.GetHost(name)
	if err != nil {
		return nil, err
	}
	if cur.GetFencedTime() == nil {
		return cur, nil
	}
	h := proto.Clone(cur).(*v1.Host)
	h.FencedTime, h.UpdateTime, h.ModifyIndex = nil, w.now, w.index
	return h, w.insert(TableHosts, h)
}

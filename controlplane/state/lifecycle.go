package state

import (
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/devfleet/devfleet/capacity/fit"
	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/validate"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Managed reports whether devfleet drives the host's guests through libvirt: a devserver on it
// exists only once the provisioner has created its guest, and is deleted only once the guest is
// gone.
func Managed(h *v1.Host) bool { return h.GetLibvirtUri() != "" }

// Deleting reports whether deletion of a devserver was asked and its guest may still exist.
func Deleting(d *v1.Devserver) bool { return d.GetDeleteTime() != nil }

// sameDevserver returns the devserver name if it is still the one with this id: the provisioner
// acts on what it read earlier, and a name may have been deleted and taken again since.
func (w *WriteTxn) sameDevserver(name, id string) (*v1.Devserver, error) {
	d, err := w.GetDevserver(name)
	if err != nil {
		return nil, err
	}
	if d.GetId() != id {
		return nil, apierror.Blocked("devserver %q is now another devserver (id %s, not %s)", name, d.GetId(), id)
	}
	return d, nil
}

// SetDevserverState records what the provisioner observed or did, if the devserver is still
// the same one and still in one of the states from (any, when from is empty).
func (w *WriteTxn) SetDevserverState(name, id string, to v1.DevserverState, reason, domain string, from []v1.DevserverState) (*v1.Devserver, error) {
	if _, ok := v1.DevserverState_name[int32(to)]; !ok || to == v1.DevserverState_DEVSERVER_STATE_UNSPECIFIED {
		return nil, apierror.Invalid("state", "unknown devserver state %d", to)
	}
	if err := validate.Reason("reason", reason); err != nil {
		return nil, err
	}
	cur, err := w.sameDevserver(name, id)
	if err != nil {
		return nil, err
	}
	if len(from) > 0 && !slices.Contains(from, cur.GetState()) {
		return nil, apierror.Blocked("devserver %q is %s, not %s", name, StateName(cur.GetState()), statesOf(from))
	}
	if Deleting(cur) && to != v1.DevserverState_DEVSERVER_STATE_DELETED {
		return nil, apierror.Blocked("devserver %q is being deleted", name)
	}
	d := proto.Clone(cur).(*v1.Devserver)
	d.State, d.StateReason = to, reason
	if domain != "" {
		d.Domain = domain
	}
	d.UpdateTime, d.ModifyIndex = w.now, w.index
	return d, w.insert(TableDevservers, d)
}

// PurgeDevserver removes a devserver marked for deletion and frees its room.
func (w *WriteTxn) PurgeDevserver(name, id string) error {
	d, err := w.sameDevserver(name, id)
	if err != nil {
		return err
	}
	if !Deleting(d) {
		return apierror.Blocked("devserver %q is not being deleted", name)
	}
	return w.removeDevserver(d)
}

// RehomeDevserver moves a lost devserver to a new host, where the provisioner creates it again.
func (w *WriteTxn) RehomeDevserver(name, id, host, reason string) (*v1.Devserver, error) {
	if err := validate.Name("host", host); err != nil {
		return nil, err
	}
	if err := validate.Reason("reason", reason); err != nil {
		return nil, err
	}
	cur, err := w.sameDevserver(name, id)
	if err != nil {
		return nil, err
	}
	if cur.GetState() != v1.DevserverState_DEVSERVER_STATE_LOST || Deleting(cur) {
		return nil, apierror.Blocked("devserver %q is %s: only a lost devserver is recreated elsewhere", name, StateName(cur.GetState()))
	}
	f, err := w.GetFlavor(cur.GetFlavor())
	if err != nil {
		return nil, err
	}
	h, err := w.GetHost(host)
	if err != nil {
		return nil, err
	}
	if h.GetRegion() != cur.GetRegion() {
		return nil, apierror.Invalid("host", "host %q is in region %q, not %q", host, h.GetRegion(), cur.GetRegion())
	}
	if h.GetState() != v1.HostState_HOST_STATE_ACTIVE {
		return nil, apierror.Blocked("host %q is %s and takes no new devservers", host, HostStateName(h.GetState()))
	}
	if host != cur.GetHost() {
		if s := fit.Check(f, h, fit.Free(h)); s != fit.None {
			e := apierror.Blocked("host %q has no room for it: its free resources %s", host, s.Describe(f))
			e.Code = apierror.CodeNoRoom
			return nil, e
		}
		if cur.GetHost() != "" {
			if err := w.allocate(cur.GetHost(), f, true); err != nil {
				return nil, err
			}
		}
		if err := w.allocate(host, f, false); err != nil {
			return nil, err
		}
	}
	d := proto.Clone(cur).(*v1.Devserver)
	d.Host, d.Site, d.Domain = host, h.GetSite(), ""
	d.State, d.StateReason = v1.DevserverState_DEVSERVER_STATE_PROVISIONING, reason
	d.Repairs++
	d.UpdateTime, d.ModifyIndex = w.now, w.index
	return d, w.insert(TableDevservers, d)
}

// StateName is a devserver state as the CLI prints it.
func StateName(s v1.DevserverState) string {
	switch s {
	case v1.DevserverState_DEVSERVER_STATE_PROVISIONING:
		return "provisioning"
	case v1.DevserverState_DEVSERVER_STATE_RUNNING:
		return "running"
	case v1.DevserverState_DEVSERVER_STATE_MIGRATING:
		return "migrating"
	case v1.DevserverState_DEVSERVER_STATE_STOPPED:
		return "stopped"
	case v1.DevserverState_DEVSERVER_STATE_LOST:
		return "lost"
	case v1.DevserverState_DEVSERVER_STATE_DELETED:
		return "deleted"
	}
	return "unknown"
}

func statesOf(ss []v1.DevserverState) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += " or "
		}
		out += StateName(s)
	}
	return out
}

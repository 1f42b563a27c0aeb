package provisioner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/capacity/fit"
	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/hypervisor"
	"github.com/devfleet/devfleet/controlplane/validate"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// do runs one step for a devserver read from the state.
func (r *run) do(ctx context.Context, s step, d *v1.Devserver, h *v1.Host, f *v1.Flavor) error {
	switch s {
	case stepRepair:
		return r.repair(ctx, d, f)
	}
	hv, err := r.c.cfg.Hypervisors.Open(h.GetName(), h.GetLibvirtUri())
	if err != nil {
		return err
	}
	switch s {
	case stepCreate:
		err = r.create(ctx, hv, d, f)
		if err != nil && ctx.Err() == nil && r.ctx.Err() == nil {
			// Tell the owner why it is taking long; the step is retried.
			r.note(d, v1.DevserverState_DEVSERVER_STATE_PROVISIONING, "creating the guest failed, retrying: "+err.Error())
		}
		return err
	case stepDelete:
		return r.delete(ctx, hv, d)
	case stepStop:
		return r.stop(ctx, hv, d)
	case stepStart:
		return r.startGuest(ctx, hv, d)
	}
	return fmt.Errorf("provisioner: unknown step %q", s)
}

// ours reports whether a domain found on a host is this devserver's guest.
func ours(dom hypervisor.Domain, d *v1.Devserver) bool {
	return dom.Metadata.Kind == hypervisor.InstanceDevserver && dom.Metadata.ID == d.GetId()
}

func running(dom hypervisor.Domain) bool {
	return dom.State == hypervisor.StateRunning || dom.State == hypervisor.StatePaused
}

// SpecFor is the guest a devserver of a flavor gets.
func SpecFor(d *v1.Devserver, f *v1.Flavor) hypervisor.DomainSpec {
	r := f.GetResources()
	return hypervisor.DomainSpec{
		Name:      d.GetName(),
		UUID:      d.GetId(),
		VCPUs:     r.GetVcpus(),
		MemoryMiB: r.GetMemoryMib(),
		DiskGiB:   r.GetDiskGib(),
		Metadata: hypervisor.Metadata{
			Kind: hypervisor.InstanceDevserver, ID: d.GetId(), Owner: d.GetOwner(), Flavor: d.GetFlavor(),
		},
	}
}

// create makes sure the devserver's guest runs on its host, then records it running. A guest
// of ours already there (a previous leader's work) is kept if it runs and made again if not.
func (r *run) create(ctx context.Context, hv hypervisor.Hypervisor, d *v1.Devserver, f *v1.Flavor) error {
	if f == nil {
		return fmt.Errorf("flavor %q of devserver %q is gone", d.GetFlavor(), d.GetName())
	}
	dom, err := hv.Lookup(ctx, d.GetName())
	switch {
	case err == nil && !ours(dom, d):
		return fmt.Errorf("host %s already has a domain named %q that is not this devserver's (its devfleet id is %q)", d.GetHost(), d.GetName(), dom.Metadata.ID)
	case err == nil && running(dom):
		// Made by an earlier attempt whose answer was lost.
	case err == nil:
		// A leftover that does not run (an earlier attempt, or the guest of a lost devserver
		// recreated on the same host): start afresh.
		if err := hv.Destroy(ctx, d.GetName()); err != nil && !hypervisor.IsNotFound(err) {
			return err
		}
		if err := hv.Undefine(ctx, d.GetName()); err != nil && !hypervisor.IsNotFound(err) {
			return err
		}
		fallthrough
	case hypervisor.IsNotFound(err):
		dom, err = r.defineAndStart(ctx, hv, SpecFor(d, f))
		if hypervisor.KindOf(err) == hypervisor.KindAlreadyExists {
			// The volume of a guest that vanished (a lost devserver made again here) is still
			// there: a recreated devserver starts from a fresh disk.
			if err := hv.Undefine(ctx, d.GetName()); err != nil && !hypervisor.IsNotFound(err) {
				return err
			}
			dom, err = r.defineAndStart(ctx, hv, SpecFor(d, f))
		}
		if err != nil {
			return err
		}
	default:
		return err
	}
	_, err = r.propose(ctx, setState(d, v1.DevserverState_DEVSERVER_STATE_RUNNING, "guest running on "+d.GetHost(), dom.Name,
		v1.DevserverState_DEVSERVER_STATE_PROVISIONING))
	return err
}

// defineAndStart makes a guest and times libvirt's part of a create.
func (r *run) defineAndStart(ctx context.Context, hv hypervisor.Hypervisor, spec hypervisor.DomainSpec) (hypervisor.Domain, error) {
	began := time.Now()
	dom, err := hv.DefineAndStart(ctx, spec)
	if err == nil {
		r.c.metrics.libvirt.WithLabelValues(string(spec.Metadata.Kind)).Observe(time.Since(began).Seconds())
	}
	return dom, err
}

// removeGuest destroys and undefines the domain name if it is ours; a domain that is not
// there, or not ours, is left alone.
func removeGuest(ctx context.Context, hv hypervisor.Hypervisor, name string, ours func(hypervisor.Domain) bool) error {
	dom, err := hv.Lookup(ctx, name)
	switch {
	case err == nil && ours(dom):
		if err := hv.Destroy(ctx, name); err != nil && !hypervisor.IsNotFound(err) {
			return err
		}
		if err := hv.Undefine(ctx, name); err != nil && !hypervisor.IsNotFound(err) {
			return err
		}
		return nil
	case err == nil, hypervisor.IsNotFound(err):
		return nil // nothing of ours there (never made, or already removed)
	}
	return err
}

// delete removes the guest (if it is ours) and then the record.
func (r *run) delete(ctx context.Context, hv hypervisor.Hypervisor, d *v1.Devserver) error {
	if err := removeGuest(ctx, hv, d.GetName(), func(dom hypervisor.Domain) bool { return ours(dom, d) }); err != nil {
		return err
	}
	_, err := r.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_PurgeDevserver{PurgeDevserver: &fsmv1.PurgeDevserver{Name: d.GetName(), Id: d.GetId()}}})
	return err
}

// stop shuts the guest down (cutting it after the grace period) and records it stopped.
func (r *run) stop(ctx context.Context, hv hypervisor.Hypervisor, d *v1.Devserver) error {
	dom, err := hv.Lookup(ctx, d.GetName())
	if err != nil && !hypervisor.IsNotFound(err) {
		return err
	}
	if err == nil && ours(dom, d) && running(dom) {
		grace, cancel := context.WithTimeout(ctx, r.c.cfg.ShutdownGrace)
		err := hv.Shutdown(grace, d.GetName())
		cancel()
		if err != nil {
			if ctx.Err() != nil || hypervisor.IsUnavailable(err) {
				return err
			}
			// The guest ignored the request (or took too long): cut the power.
			if err := hv.Destroy(ctx, d.GetName()); err != nil && !hypervisor.IsNotFound(err) {
				return err
			}
		}
	}
	// A guest that is gone altogether is found by the host check and marked lost.
	_, err = r.propose(ctx, setState(d, v1.DevserverState_DEVSERVER_STATE_STOPPED, "stopped by its owner", "",
		v1.DevserverState_DEVSERVER_STATE_RUNNING))
	return err
}

// startGuest starts the stopped guest and records it running.
func (r *run) startGuest(ctx context.Context, hv hypervisor.Hypervisor, d *v1.Devserver) error {
	dom, err := hv.Lookup(ctx, d.GetName())
	if err != nil {
		if hypervisor.IsNotFound(err) {
			return r.markLost(ctx, d, "its guest's definition vanished from "+d.GetHost()+" while it was stopped", v1.DevserverState_DEVSERVER_STATE_STOPPED)
		}
		return err
	}
	if !ours(dom, d) {
		return fmt.Errorf("host %s has a domain named %q that is not this devserver's", d.GetHost(), d.GetName())
	}
	if !running(dom) {
		if err := hv.Start(ctx, d.GetName()); err != nil {
			return err
		}
	}
	_, err = r.propose(ctx, setState(d, v1.DevserverState_DEVSERVER_STATE_RUNNING, "started by its owner", "",
		v1.DevserverState_DEVSERVER_STATE_STOPPED))
	return err
}

// repair places a lost devserver again (its own room on its old host counts as free) and
// records its new home, where the create step makes its guest; the owner is told.
func (r *run) repair(ctx context.Context, d *v1.Devserver, f *v1.Flavor) error {
	req := &capacity.Request{Flavor: f, Region: d.GetRegion()}
	if d.GetHost() != "" {
		req.Pending = map[string]fit.Amount{d.GetHost(): fit.Amount{}.Sub(fit.Of(f.GetResources()))}
	}
	dec := r.c.cfg.Placer.Place(req)
	if dec.Host == nil {
		reason := "lost; no host has room to recreate it: " + dec.Explanation.String()
		r.note(d, v1.DevserverState_DEVSERVER_STATE_LOST, reason)
		return errors.New(reason)
	}
	host := dec.Host.GetName()
	_, err := r.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_RehomeDevserver{RehomeDevserver: &fsmv1.RehomeDevserver{
		Name: d.GetName(), Id: d.GetId(), Host: host, Reason: "recreating on " + host + " after it was lost"}}})
	if err != nil {
		return err
	}
	return r.notify(ctx, d, v1.NoticeKind_NOTICE_KIND_RECREATED, fmt.Sprintf("repair-%s-%d", d.GetId(), d.GetRepairs()+1),
		fmt.Sprintf("devserver %s was lost on %s and is being recreated on %s (repair %d)", d.GetName(), d.GetHost(), host, d.GetRepairs()+1))
}

// markLost records a devserver lost (if it is still in one of from) and tells its owner.
func (r *run) markLost(ctx context.Context, d *v1.Devserver, why string, from ...v1.DevserverState) error {
	if _, err := r.propose(ctx, setState(d, v1.DevserverState_DEVSERVER_STATE_LOST, why, "", from...)); err != nil {
		return err
	}
	r.c.log.Warn("devserver lost", "devserver", d.GetName(), "host", d.GetHost(), "why", why)
	return r.notify(ctx, d, v1.NoticeKind_NOTICE_KIND_LOST, fmt.Sprintf("lost-%s-%d", d.GetId(), d.GetRepairs()),
		fmt.Sprintf("devserver %s is lost: %s", d.GetName(), why))
}

// notify records a notice for the devserver's owner. Notice IDs are derived from what they
// report, so a step repeated by a new leader does not tell the owner twice.
func (r *run) notify(ctx context.Context, d *v1.Devserver, kind v1.NoticeKind, id, msg string) error {
	_, err := r.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_CreateNotice{CreateNotice: &fsmv1.CreateNotice{Notice: &v1.Notice{
		Id: id, Owner: d.GetOwner(), Kind: kind, Subject: d.GetName(), Message: truncate(msg)}}}})
	if alreadyDone(err) {
		return nil
	}
	return err
}

// note records why a devserver is waiting, once: only when the reason changed.
func (r *run) note(d *v1.Devserver, s v1.DevserverState, reason string) {
	reason = truncate(reason)
	if d.GetStateReason() == reason {
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.c.cfg.CallTimeout)
	defer cancel()
	if _, err := r.propose(ctx, setState(d, s, reason, "", s)); err != nil {
		r.c.log.Debug("could not record why a devserver waits", "devserver", d.GetName(), "error", err)
	}
}

func setState(d *v1.Devserver, to v1.DevserverState, reason, domain string, from ...v1.DevserverState) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_SetDevserverState{SetDevserverState: &fsmv1.SetDevserverState{
		Name: d.GetName(), Id: d.GetId(), State: to, Reason: truncate(reason), Domain: domain, From: from}}}
}

func updateDevserver(d *v1.Devserver, paths ...string) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_UpdateDevserver{UpdateDevserver: &fsmv1.UpdateDevserver{
		Devserver: d, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}}}}
}

// truncate keeps a reason within what the state accepts.
func truncate(s string) string {
	if len(s) <= validate.MaxReasonLen {
		return s
	}
	return s[:validate.MaxReasonLen-3] + "..."
}

// alreadyDone reports a refusal that means the write was made before (by this leader or the
// last).
func alreadyDone(err error) bool {
	return err != nil && apierror.KindOf(err) == apierror.AlreadyExists
}

// Package decom is the Decominator: it takes hosts out of the fleet for good, one recorded,
// idempotent step at a time (announce, cordon, drain, verify empty, wipe, retire), on the
// leader, resuming wherever a previous leader stopped.
package decom

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/fsm"
	"github.com/devfleet/devfleet/controlplane/hypervisor"
	"github.com/devfleet/devfleet/controlplane/state"
	"github.com/devfleet/devfleet/drain"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Proposer replicates a command (the raft node).
type Proposer interface {
	Propose(ctx context.Context, cmd *fsmv1.Command) (fsm.Result, error)
}

// Hypervisors opens hosts' libvirt (hypervisor.Connector).
type Hypervisors interface {
	Open(name, uri string) (hypervisor.Hypervisor, error)
}

// RequestedBy is what a decommission's drain carries as requested_by: the state lets only it
// drain a host being decommissioned.
func RequestedBy(decom string) string { return "decom:" + decom }

// Config wires a Controller.
type Config struct {
	Store       *state.Store
	Raft        Proposer
	Hypervisors Hypervisors
	Logger      *slog.Logger
	// Now is the clock of announce periods (default time.Now); Tick how often the controller
	// looks again without a change of state (default 1s).
	Now  func() time.Time
	Tick time.Duration
}

// Controller runs decommissions on the leader.
type Controller struct {
	cfg Config
	log *slog.Logger
}

// New returns a decommission controller.
func New(cfg Config) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	return &Controller{cfg: cfg, log: cfg.Logger.With("controller", "decoms")}
}

// Name identifies the controller.
func (c *Controller) Name() string { return "decoms" }

// Run drives every running decommission until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	tick := time.NewTicker(c.cfg.Tick)
	defer tick.Stop()
	for {
		v := c.cfg.Store.View()
		for _, d := range v.Decoms() {
			if !state.DecomFinal(d.GetState()) {
				c.step(ctx, v, d)
			}
		}
		changed, stop := c.cfg.Store.Changed(v, state.TableDecoms, state.TableDrains)
		select {
		case <-ctx.Done():
		case <-changed:
		case <-tick.C:
		}
		stop()
		if ctx.Err() != nil {
			return nil
		}
	}
}

func (c *Controller) apply(ctx context.Context, cmd *fsmv1.Command) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := c.cfg.Raft.Propose(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return res.Value, res.Err
}

// advance records the end of step from and the start of to.
func (c *Controller) advance(ctx context.Context, d *v1.Decom, from, to v1.DecomStep, detail string) {
	_, err := c.apply(ctx, &fsmv1.Command{Op: &fsmv1.Command_AdvanceDecom{AdvanceDecom: &fsmv1.AdvanceDecom{Id: d.GetId(), From: from, To: to, Detail: detail}}})
	if err != nil && ctx.Err() == nil {
		c.log.Warn("recording a decommission's step failed", "decom", d.GetId(), "step", state.DecomStepName(from), "error", err)
		return
	}
	c.log.Info("decommission step done", "decom", d.GetId(), "step", state.DecomStepName(from), "detail", detail)
}

func (c *Controller) finish(ctx context.Context, d *v1.Decom, s v1.DecomState, reason string) {
	if _, err := c.apply(ctx, &fsmv1.Command{Op: &fsmv1.Command_FinishDecom{FinishDecom: &fsmv1.FinishDecom{Id: d.GetId(), State: s, Reason: reason}}}); err != nil && ctx.Err() == nil {
		c.log.Warn("recording the end of a decommission failed", "decom", d.GetId(), "error", err)
		return
	}
	c.log.Info("decommission ended", "decom", d.GetId(), "state", state.DecomStateName(s), "reason", reason)
}

// step takes a decommission's current step as far as it goes now. Every step is safe to
// repeat: it looks at the state and the hosts before it acts.
func (c *Controller) step(ctx context.Context, v *state.View, d *v1.Decom) {
	if d.GetAbortRequested() && d.GetStep() < v1.DecomStep_DECOM_STEP_WIPE {
		if dr, err := v.GetDrain(d.GetDrainId()); err == nil && !state.DrainFinal(dr.GetState()) {
			if !dr.GetCancelRequested() {
				_, _ = c.apply(ctx, &fsmv1.Command{Op: &fsmv1.Command_RequestDrainCancel{RequestDrainCancel: &fsmv1.RequestDrainCancel{Id: dr.GetId(), AbortInFlight: true}}})
			}
			return // wait for the drain to end
		}
		c.finish(ctx, d, v1.DecomState_DECOM_STATE_ABORTED, "aborted on request at step "+state.DecomStepName(d.GetStep())+"; the hosts stay cordoned")
		return
	}
	switch d.GetStep() {
	case v1.DecomStep_DECOM_STEP_ANNOUNCE:
		n := c.announce(ctx, v, d)
		if until := d.GetAnnounceUntil(); until != nil && c.cfg.Now().Before(until.AsTime()) {
			return // the owners were told; wait out the announce period
		}
		c.advance(ctx, d, v1.DecomStep_DECOM_STEP_ANNOUNCE, v1.DecomStep_DECOM_STEP_CORDON, fmt.Sprintf("told the owners of %d devservers", n))
	case v1.DecomStep_DECOM_STEP_CORDON:
		for _, h := range d.GetHosts() {
			host, err := v.GetHost(h)
			if err != nil || host.GetState() != v1.HostState_HOST_STATE_ACTIVE {
				continue // cordoned, drained or gone already
			}
			if _, err := c.apply(ctx, &fsmv1.Command{Op: &fsmv1.Command_CordonHost{CordonHost: &fsmv1.CordonHost{Name: h, Reason: "decommission " + d.GetId() + ": " + d.GetReason()}}}); err != nil {
				c.log.Warn("cordoning a host to decommission failed", "decom", d.GetId(), "host", h, "error", err)
				return
			}
		}
		c.advance(ctx, d, v1.DecomStep_DECOM_STEP_CORDON, v1.DecomStep_DECOM_STEP_DRAIN, "cordoned "+strings.Join(d.GetHosts(), ", "))
	case v1.DecomStep_DECOM_STEP_DRAIN:
		c.drain(ctx, v, d)
	case v1.DecomStep_DECOM_STEP_VERIFY:
		c.verify(ctx, v, d)
	case v1.DecomStep_DECOM_STEP_WIPE:
		c.wipe(ctx, v, d)
	case v1.DecomStep_DECOM_STEP_RETIRE:
		for _, h := range d.GetHosts() {
			if host, err := v.GetHost(h); err == nil && host.GetState() == v1.HostState_HOST_STATE_RETIRED {
				continue
			}
			if _, err := c.apply(ctx, &fsmv1.Command{Op: &fsmv1.Command_RetireHost{RetireHost: &fsmv1.RetireHost{Name: h, Reason: "decommissioned (" + d.GetId() + "): " + d.GetReason()}}}); err != nil {
				c.log.Warn("retiring a host failed", "decom", d.GetId(), "host", h, "error", err)
				return
			}
		}
		c.advance(ctx, d, v1.DecomStep_DECOM_STEP_RETIRE, v1.DecomStep_DECOM_STEP_DONE, "retired "+strings.Join(d.GetHosts(), ", "))
		c.finish(ctx, d, v1.DecomState_DECOM_STATE_SUCCEEDED, "")
	}
}

// announce tells the owners of the devservers on the hosts (once each); it returns how many.
func (c *Controller) announce(ctx context.Context, v *state.View, d *v1.Decom) int {
	n := 0
	when := "now"
	if until := d.GetAnnounceUntil(); until != nil {
		when = "from " + until.AsTime().UTC().Format(time.RFC3339)
	}
	for _, h := range d.GetHosts() {
		for _, dev := range v.DevserversOn(h) {
			n++
			id := fmt.Sprintf("decom-%s-%s", d.GetId(), dev.GetName())
			if _, err := v.GetNotice(id); err == nil {
				continue
			}
			_, err := c.apply(ctx, &fsmv1.Command{Op: &fsmv1.Command_CreateNotice{CreateNotice: &fsmv1.CreateNotice{Notice: &v1.Notice{
				Id: id, Owner: dev.GetOwner(), Kind: v1.NoticeKind_NOTICE_KIND_MAINTENANCE, Subject: dev.GetName(),
				Message: fmt.Sprintf("devserver %s: its host %s is decommissioned (%s); it moves to another host %s", dev.GetName(), h, d.GetReason(), when)}}}})
			if err != nil && apierror.KindOf(err) != apierror.AlreadyExists {
				c.log.Warn("telling an owner of a decommission failed", "decom", d.GetId(), "devserver", dev.GetName(), "error", err)
			}
		}
	}
	return n
}

// drain starts the decommission's drain (once) and waits for it: succeeded moves on, anything
// else fails the decommission with the drain's reason.
func (c *Controller) drain(ctx context.Context, v *state.View, d *v1.Decom) {
	if d.GetDrainId() == "" {
		id := c.startDrain(ctx, v, d)
		if id == "" {
			return
		}
		if _, err := c.apply(ctx, &fsmv1.Command{Op: &fsmv1.Command_AdvanceDecom{AdvanceDecom: &fsmv1.AdvanceDecom{
			Id: d.GetId(), From: v1.DecomStep_DECOM_STEP_DRAIN, DrainId: id}}}); err != nil {
			c.log.Warn("recording a decommission's drain failed", "decom", d.GetId(), "drain", id, "error", err)
		}
		return
	}
	dr, err := v.GetDrain(d.GetDrainId())
	if err != nil {
		c.finish(ctx, d, v1.DecomState_DECOM_STATE_FAILED, "its drain "+d.GetDrainId()+" is gone")
		return
	}
	switch dr.GetState() {
	case v1.DrainState_DRAIN_STATE_SUCCEEDED:
		c.advance(ctx, d, v1.DecomStep_DECOM_STEP_DRAIN, v1.DecomStep_DECOM_STEP_VERIFY,
			fmt.Sprintf("drain %s moved %d devservers", dr.GetId(), dr.GetItemsDone()))
	case v1.DrainState_DRAIN_STATE_INCOMPLETE, v1.DrainState_DRAIN_STATE_CANCELLED:
		c.finish(ctx, d, v1.DecomState_DECOM_STATE_FAILED, fmt.Sprintf("drain %s ended %s: %s", dr.GetId(), state.DrainStateName(dr.GetState()), dr.GetStateReason()))
	}
}

// startDrain records the decommission's drain, planned as the API plans one, unless a leader
// before this one did (found by requested_by). It returns its ID, or "" to try again later.
func (c *Controller) startDrain(ctx context.Context, v *state.View, d *v1.Decom) string {
	for _, dr := range v.Drains() {
		if dr.GetRequestedBy() == RequestedBy(d.GetId()) {
			return dr.GetId()
		}
	}
	plan := drain.MakePlan(capacity.Load(v), d.GetHosts(), drain.Budgets{}.WithDefaults())
	var items []*v1.DrainItem
	for _, it := range plan.Items {
		items = append(items, &v1.DrainItem{Devserver: it.Devserver, DevserverId: it.DevserverID, Owner: it.Owner, Flavor: it.Flavor,
			SourceHost: it.Source, DestHost: it.Dest, DestRegion: it.DestRegion, Kind: v1.DrainItemKind(it.Kind), Blocker: it.Blocker,
			Wave: uint32(it.Wave), MemoryBytes: it.MemoryBytes})
	}
	dr := &v1.Drain{Id: uuid.NewString(), Hosts: d.GetHosts(), Site: d.GetSite(), Reason: "decommission " + d.GetId() + ": " + d.GetReason(),
		RequestedBy: RequestedBy(d.GetId()), Force: true, Priority: state.DefaultPriority(v1.MigrationReason_MIGRATION_REASON_MAINTENANCE)}
	if _, err := c.apply(ctx, &fsmv1.Command{Op: &fsmv1.Command_StartDrain{StartDrain: &fsmv1.StartDrain{Drain: dr, Items: items}}}); err != nil {
		c.log.Warn("starting a decommission's drain failed", "decom", d.GetId(), "error", err)
		return ""
	}
	return dr.GetId()
}

// verify checks that the hosts are empty: the state records no devserver on them (containers
// are released here: they are not moved, their pools refill elsewhere), and libvirt runs no
// devserver's guest there. A devserver's guest still running is never wiped: the
// decommission fails instead.
func (c *Controller) verify(ctx context.Context, v *state.View, d *v1.Decom) {
	var waiting []string
	for _, h := range d.GetHosts() {
		if devs := v.DevserversOn(h); len(devs) > 0 {
			c.finish(ctx, d, v1.DecomState_DECOM_STATE_FAILED, fmt.Sprintf("devserver %s is still recorded on %s", devs[0].GetName(), h))
			return
		}
		for _, ct := range v.ContainersOn(h) {
			waiting = append(waiting, ct.GetName())
			if ct.GetState() == v1.ContainerState_CONTAINER_STATE_DELETED {
				continue
			}
			if _, err := c.apply(ctx, &fsmv1.Command{Op: &fsmv1.Command_ReleaseContainer{ReleaseContainer: &fsmv1.ReleaseContainer{
				Name: ct.GetName(), Reason: "its host " + h + " is decommissioned"}}}); err != nil {
				c.log.Warn("releasing a container of a decommissioned host failed", "decom", d.GetId(), "container", ct.GetName(), "error", err)
			}
		}
	}
	if len(waiting) > 0 {
		return // the provisioner removes released containers; the next pass looks again
	}
	found, err := c.guests(ctx, v, d, func(dom hypervisor.Domain) bool {
		return dom.Metadata.Kind == hypervisor.InstanceDevserver && dom.State == hypervisor.StateRunning
	})
	if err != nil {
		c.log.Warn("cannot list a decommissioned host's guests; will look again", "decom", d.GetId(), "error", err)
		return
	}
	if len(found) > 0 {
		c.finish(ctx, d, v1.DecomState_DECOM_STATE_FAILED, "a devserver's guest still runs there: "+strings.Join(found, ", ")+"; it is never wiped")
		return
	}
	c.advance(ctx, d, v1.DecomStep_DECOM_STEP_VERIFY, v1.DecomStep_DECOM_STEP_WIPE, "no devserver recorded or running on "+strings.Join(d.GetHosts(), ", "))
}

// guests lists the domains of the hosts that match, as host/name.
func (c *Controller) guests(ctx context.Context, v *state.View, d *v1.Decom, match func(hypervisor.Domain) bool) ([]string, error) {
	var out []string
	for _, h := range d.GetHosts() {
		hv, err := c.open(v, h)
		if err != nil {
			return nil, err
		}
		if hv == nil {
			continue // no libvirt: no guests
		}
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		doms, err := hv.List(lctx)
		cancel()
		if err != nil {
			return nil, err
		}
		for _, dom := range doms {
			if match(dom) {
				out = append(out, h+"/"+dom.Name)
			}
		}
	}
	return out, nil
}

func (c *Controller) open(v *state.View, host string) (hypervisor.Hypervisor, error) {
	h, err := v.GetHost(host)
	if err != nil {
		return nil, err
	}
	if h.GetLibvirtUri() == "" {
		return nil, nil
	}
	return c.cfg.Hypervisors.Open(h.GetName(), h.GetLibvirtUri())
}

// wipe destroys and undefines every domain left on the hosts and deletes the volumes of their
// devfleet pools. A host without libvirt (a whole machine) has nothing to wipe here.
func (c *Controller) wipe(ctx context.Context, v *state.View, d *v1.Decom) {
	var domains, volumes int
	for _, h := range d.GetHosts() {
		hv, err := c.open(v, h)
		if err != nil {
			c.log.Warn("cannot reach a host to wipe; will try again", "decom", d.GetId(), "host", h, "error", err)
			return
		}
		if hv == nil {
			continue
		}
		nd, nv, err := wipeHost(ctx, hv)
		domains, volumes = domains+nd, volumes+nv
		if err != nil {
			c.log.Warn("wiping a host failed; will try again", "decom", d.GetId(), "host", h, "error", err)
			return
		}
	}
	c.advance(ctx, d, v1.DecomStep_DECOM_STEP_WIPE, v1.DecomStep_DECOM_STEP_RETIRE,
		fmt.Sprintf("removed %d leftover domains and %d volumes", domains, volumes))
}

// wipeHost destroys and undefines every domain of a host, then deletes its pool's volumes.
func wipeHost(ctx context.Context, hv hypervisor.Hypervisor) (domains, volumes int, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	doms, err := hv.List(ctx)
	if err != nil {
		return 0, 0, err
	}
	var errs []error
	for _, dom := range doms {
		if err := hv.Destroy(ctx, dom.Name); err != nil && !hypervisor.IsNotFound(err) {
			errs = append(errs, err)
			continue
		}
		if err := hv.Undefine(ctx, dom.Name); err != nil && !hypervisor.IsNotFound(err) {
			errs = append(errs, err)
			continue
		}
		domains++
	}
	vols, err := hv.PoolVolumes(ctx)
	if err != nil {
		return domains, 0, errors.Join(append(errs, err)...)
	}
	for _, vol := range vols {
		if err := hv.RemoveVolume(ctx, vol.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		volumes++
	}
	return domains, volumes, errors.Join(errs...)
}

package migrate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/devfleet/devfleet/controlplane/hypervisor"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
	"github.com/devfleet/devfleet/provisioner"
)

// A cold move stops the guest on its source, copies its disk (libvirt storage streams) and
// starts it on its destination, with the flavor it moves to. It is what a move to another
// region or flavor is, and what a live move falls back to when the policy allows. Every step
// starts by asking both hosts where the guest is (a previous leader may have done part of it),
// so the steps are repeated safely, and a copy is started only where no other runs:
//
//   - the destination runs it: done (the source's shut-off copy, and its volume, go);
//   - the source runs it: shut it down (ACPI, then power cut after the grace);
//   - it is shut off on the source: copy the disk, define and start it on the destination;
//   - defined but shut off on the destination: start it there.
//
// An abort, or the last failed step, starts the guest on its source again (restoring) unless
// the destination already runs it, and removes the destination's copy.

// coldView is where a cold-moving guest is.
type coldView struct {
	src, dst       hypervisor.Domain // zero when not defined (or not ours)
	srcDef, dstDef bool
}

func (c coldView) srcRuns() bool { return c.srcDef && c.src.State == hypervisor.StateRunning }
func (c coldView) dstRuns() bool { return c.dstDef && c.dst.State == hypervisor.StateRunning }

// look asks both hosts (one, for a resize in place) about the guest.
func (g guest) look(ctx context.Context) (coldView, error) {
	var c coldView
	var err error
	if c.src, c.srcDef, err = g.domainOn(ctx, g.src); err != nil {
		return c, err
	}
	if g.inPlace {
		c.dst, c.dstDef = c.src, c.srcDef
		return c, nil
	}
	c.dst, c.dstDef, err = g.domainOn(ctx, g.dst)
	return c, err
}

// domainOn returns this devserver's domain on hv, if defined there.
func (g guest) domainOn(ctx context.Context, hv hypervisor.Hypervisor) (hypervisor.Domain, bool, error) {
	d, err := hv.Lookup(ctx, g.name)
	switch {
	case hypervisor.IsNotFound(err):
		return hypervisor.Domain{}, false, nil
	case err != nil:
		return hypervisor.Domain{}, false, err
	case !g.ours(d):
		return hypervisor.Domain{}, false, fmt.Errorf("a domain %s that is not this devserver's is on %s", g.name, hvName(hv, g))
	}
	return d, true, nil
}

func hvName(hv hypervisor.Hypervisor, g guest) string {
	if hv == g.src {
		return "the source"
	}
	return "the destination"
}

// moved reports whether the guest now runs as the move wants it: on the destination, with the
// flavor it moves to.
func (g guest) moved(c coldView) bool {
	return c.dstRuns() && (!g.inPlace || c.dst.Metadata.Flavor == g.to.GetName())
}

// cold carries a cold move's figures between its steps.
type cold struct {
	failures uint32
	down     time.Time // when the guest was found shut down, for the downtime
	// disk is the last disk copy's figures.
	disk hypervisor.JobStats
}

// executeCold runs a cold move from wherever it is until it ends.
func (r *run) executeCold(m *v1.Migration, g guest, policy *v1.MigrationPolicy) {
	var c cold
	for r.ctx.Err() == nil {
		cur, err := r.c.cfg.Store.View().GetMigration(m.GetId())
		if err != nil || state.Final(cur.GetPhase()) {
			return
		}
		at, err := g.look(r.ctx)
		if err != nil {
			r.c.log.Warn("cannot tell where a cold-moving guest is; will look again", "migration", m.GetId(), "error", err)
			r.pause(time.Second)
			continue
		}
		if g.moved(at) {
			r.coldDone(m, g, at, c)
			return
		}
		if cur.GetAbortRequested() || c.failures >= policy.GetMaxAttempts() {
			if done := r.coldRestore(m, g, at, cur.GetAbortRequested(), c); done {
				return
			}
			r.pause(time.Second)
			continue
		}
		if err := r.coldStep(m, g, at, &c); err != nil && r.ctx.Err() == nil {
			c.failures++
			m.FailureReason = err.Error()
			r.c.log.Warn("a cold move's step failed", "migration", m.GetId(), "failures", c.failures, "error", err)
			_ = r.decide(m, &fsmv1.MigrationUpdate{Reason: fmt.Sprintf("cold step failed (%d of %d): %v", c.failures, policy.GetMaxAttempts(), err)})
			r.pause(time.Duration(c.failures) * time.Second)
		}
	}
}

// coldStep takes the next step of a cold move that is not done.
func (r *run) coldStep(m *v1.Migration, g guest, at coldView, c *cold) error {
	switch {
	case at.srcRuns(): // (a resize in place that runs the new definition is done: see moved)
		if c.down.IsZero() {
			c.down = time.Now() // the developer's downtime starts with the shutdown
		}
		return r.coldShutdown(m, g)
	}
	if c.down.IsZero() {
		c.down = time.Now()
	}
	spec := provisioner.SpecFor(&v1.Devserver{Name: g.name, Id: g.id, Owner: g.owner, Flavor: g.to.GetName()}, g.to)
	if g.inPlace {
		if at.srcDef && at.src.Metadata.Flavor != g.to.GetName() {
			if err := r.fenced(m, v1.ColdStep_COLD_STEP_STARTING, "redefine on "+g.srcHost); err != nil {
				return err
			}
			spec.Metadata.Term, spec.Metadata.Index = r.term, m.GetFenceIndex()
			if err := g.src.Redefine(r.ctx, spec); err != nil {
				return fmt.Errorf("redefining the guest with flavor %s: %w", g.to.GetName(), err)
			}
		}
		if !at.srcDef {
			return errors.New("the guest is no longer defined on its host")
		}
		if err := r.fenced(m, v1.ColdStep_COLD_STEP_STARTING, "start on "+g.srcHost); err != nil {
			return err
		}
		return g.src.Start(r.ctx, g.name)
	}
	if at.dstDef {
		if err := r.confirmOff(m, g, g.src, v1.ColdStep_COLD_STEP_STARTING, g.dstHost); err != nil {
			return err
		}
		return g.dst.Start(r.ctx, g.name)
	}
	if !at.srcDef {
		return fmt.Errorf("the guest is defined on neither %s nor %s", g.srcHost, g.dstHost)
	}
	if spec.DiskGiB > 0 {
		if err := r.coldCopy(m, g, spec, c); err != nil {
			return err
		}
		spec.ExistingVolume = true
	}
	if err := r.confirmOff(m, g, g.src, v1.ColdStep_COLD_STEP_STARTING, g.dstHost); err != nil {
		return err
	}
	spec.Metadata.Term, spec.Metadata.Index = r.term, m.GetFenceIndex()
	if _, err := g.dst.DefineAndStart(r.ctx, spec); err != nil {
		return fmt.Errorf("starting the guest on %s: %w", g.dstHost, err)
	}
	return nil
}

// coldShutdown powers the guest off on the host that runs it: ACPI, and after the grace a cut.
func (r *run) coldShutdown(m *v1.Migration, g guest) error {
	if err := r.fenced(m, v1.ColdStep_COLD_STEP_SHUTTING_DOWN, "shut down on "+g.srcHost); err != nil {
		return err
	}
	hv := g.src
	ctx, cancel := context.WithTimeout(r.ctx, r.c.cfg.ShutdownGrace)
	err := hv.Shutdown(ctx, g.name)
	cancel()
	if err == nil {
		return nil
	}
	if r.ctx.Err() != nil {
		return r.ctx.Err()
	}
	r.c.log.Info("a cold-moving guest did not power off in time; cutting it", "migration", m.GetId(), "grace", r.c.cfg.ShutdownGrace, "error", err)
	if err := hv.Destroy(r.ctx, g.name); err != nil {
		return fmt.Errorf("powering the guest off on %s: %w", g.srcHost, err)
	}
	return nil
}

// coldCopy copies the guest's volumes to the destination, growing them to the flavor it moves
// to, and records the copy's progress as the migration's disk figures.
func (r *run) coldCopy(m *v1.Migration, g guest, spec hypervisor.DomainSpec, c *cold) error {
	if err := r.fenced(m, v1.ColdStep_COLD_STEP_COPYING_DISK, "copy the disk to "+g.dstHost); err != nil {
		return err
	}
	vols, err := g.src.DomainVolumes(r.ctx, g.name)
	if err != nil {
		return fmt.Errorf("reading the guest's volumes on %s: %w", g.srcHost, err)
	}
	ctx, cancel := r.abortable(m)
	defer cancel()
	start := time.Now()
	for _, v := range vols {
		err := hypervisor.CopyVolume(ctx, g.src, g.dst, v, uint64(spec.DiskGiB)<<30, func(copied, total uint64) {
			rate := uint64(0)
			if s := time.Since(start).Seconds(); s > 0 {
				rate = uint64(float64(copied) / s)
			}
			c.disk = hypervisor.JobStats{DiskTotal: total, DiskProcessed: copied, DiskRemaining: total - min(copied, total), DataRate: rate}
			r.record(m, c.disk)
		})
		if err != nil {
			return fmt.Errorf("copying volume %s from %s to %s: %w", v.Name, g.srcHost, g.dstHost, err)
		}
	}
	return nil
}

// confirmOff is the rule that keeps one running copy: right before a copy is started on one
// host, the other is asked again and must not run the guest. The look, the fence and the start
// follow each other without a pause.
func (r *run) confirmOff(m *v1.Migration, g guest, other hypervisor.Hypervisor, step v1.ColdStep, where string) error {
	if err := r.fenced(m, step, "start on "+where); err != nil {
		return err
	}
	d, def, err := g.domainOn(r.ctx, other)
	if err != nil {
		return fmt.Errorf("cannot confirm that the guest is off on %s: %w", hvName(other, g), err)
	}
	if def && d.State != hypervisor.StateShutOff {
		return fmt.Errorf("the guest is %s on %s; it is started elsewhere only once shut off", d.State, hvName(other, g))
	}
	return nil
}

// coldDone records a cold move that happened: the source's copy (shut off) and its volumes go,
// and the devserver is recorded on the destination with its new flavor.
func (r *run) coldDone(m *v1.Migration, g guest, at coldView, c cold) {
	if !g.inPlace && at.srcDef {
		if at.srcRuns() {
			// Never made by devfleet's steps (the destination is started only once the source is
			// confirmed off); something else started it. Leave both and say so loudly.
			r.c.log.Error("a cold-moved guest runs on both hosts; leaving both for an operator", "migration", m.GetId(),
				"devserver", g.name, "source", g.srcHost, "destination", g.dstHost)
		} else if err := r.fenced(m, v1.ColdStep_COLD_STEP_STARTING, "remove from "+g.srcHost); err == nil {
			if err := g.src.Undefine(r.ctx, g.name); err != nil && !hypervisor.IsNotFound(err) {
				r.c.log.Warn("the source's shut-off copy of a cold-moved guest could not be removed; it stays (an orphan report will show it)",
					"migration", m.GetId(), "host", g.srcHost, "error", err)
			}
		}
	}
	var p *v1.MigrationProgress
	if !c.down.IsZero() {
		st := c.disk
		st.Downtime = time.Since(c.down)
		p = progressOf(st)
	}
	r.finish(m, v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED, "", p)
}

// coldRestore ends a cold move that was aborted or failed for good: the destination's copy goes
// (unless it runs: then the move is done after all) and the guest runs on its source again. It
// reports whether the migration ended.
func (r *run) coldRestore(m *v1.Migration, g guest, at coldView, aborted bool, c cold) bool {
	outcome, why := v1.MigrationPhase_MIGRATION_PHASE_FAILED, fmt.Sprintf("%d cold steps failed; last: %s", c.failures, m.GetFailureReason())
	if aborted {
		outcome, why = v1.MigrationPhase_MIGRATION_PHASE_ABORTED, "aborted on request; the guest stays on "+g.srcHost
	}
	if g.inPlace {
		if at.srcDef && at.src.Metadata.Flavor == g.to.GetName() {
			// Redefined already: the resize goes on to its end (the old definition is gone).
			if err := r.coldStep(m, g, at, &c); err != nil {
				r.c.log.Warn("finishing a resize that was asked to stop failed", "migration", m.GetId(), "error", err)
			}
			return false
		}
	} else if !at.srcDef {
		if at.dstDef { // only the destination has it: go forward, never remove the last copy
			if err := r.coldStep(m, g, at, &c); err != nil {
				r.c.log.Warn("starting the destination's copy, the only one left, failed", "migration", m.GetId(), "error", err)
			}
			return false
		}
		r.finish(m, v1.MigrationPhase_MIGRATION_PHASE_FAILED, fmt.Sprintf("the guest is defined on neither %s nor %s", g.srcHost, g.dstHost), nil)
		return true
	} else if at.dstDef {
		if err := r.fenced(m, v1.ColdStep_COLD_STEP_RESTORING, "remove from "+g.dstHost); err != nil {
			return false
		}
		if err := g.dst.Undefine(r.ctx, g.name); err != nil && !hypervisor.IsNotFound(err) {
			r.c.log.Warn("removing the destination's copy of a cold move failed", "migration", m.GetId(), "error", err)
			return false
		}
	} else if vols, err := g.src.DomainVolumes(r.ctx, g.name); err == nil {
		for _, v := range vols { // a copy cut short
			if err := g.dst.RemoveVolume(r.ctx, v.Name); err != nil && hypervisor.KindOf(err) != hypervisor.KindFailedPrecondition {
				r.c.log.Warn("removing a cold move's half-copied volume failed; it stays", "migration", m.GetId(), "volume", v.Name, "error", err)
			}
		}
	}
	if at.srcDef && !at.srcRuns() {
		if err := r.confirmOff(m, g, g.dst, v1.ColdStep_COLD_STEP_RESTORING, g.srcHost); err != nil {
			return false
		}
		if err := g.src.Start(r.ctx, g.name); err != nil {
			r.c.log.Warn("starting a cold-moving guest on its source again failed; will retry", "migration", m.GetId(), "error", err)
			return false
		}
	}
	r.finish(m, outcome, why, nil)
	return true
}

// abortable returns a context that also ends when an abort of m is asked: a long disk copy stops
// at once, and the move is then restored.
func (r *run) abortable(m *v1.Migration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.ctx)
	go func() {
		t := time.NewTicker(r.c.cfg.Sample)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if cur, err := r.c.cfg.Store.View().GetMigration(m.GetId()); err == nil && cur.GetAbortRequested() {
				cancel()
				return
			}
		}
	}()
	return ctx, cancel
}

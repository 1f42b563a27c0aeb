package migrate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/fsm"
	"github.com/devfleet/devfleet/controlplane/hypervisor"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Proposer replicates a command (the raft node).
type Proposer interface {
	Propose(ctx context.Context, cmd *fsmv1.Command) (fsm.Result, error)
}

// Leader confirms, before every side effect on a host, that this node still leads, in the term
// it started leading in: a deposed leader's late calls never reach libvirt.
type Leader interface {
	VerifyLeader(ctx context.Context) error
	Term() uint64
}

// Hypervisors opens hosts' libvirt (hypervisor.Connector).
type Hypervisors interface {
	Open(name, uri string) (hypervisor.Hypervisor, error)
}

// Policy defaults.
const (
	DefaultMaxAttempts      = 3
	DefaultProgressTimeout  = 30 * time.Second
	DefaultCompletionPerGiB = 60 * time.Second
	DefaultMaxDowntime      = 300 * time.Millisecond
)

// cleanupTimeout bounds the removal of a finished migration's leftover volumes, so that an
// unreachable host does not hold the record of the outcome.
const cleanupTimeout = 30 * time.Second

// Config wires a Controller.
type Config struct {
	Store       *state.Store
	Raft        Proposer
	Leader      Leader
	Hypervisors Hypervisors
	Limits      Limits
	// Placer chooses another destination when the first stops answering (capacity.Index); nil
	// retries on the same destination.
	Placer Placer
	Logger *slog.Logger
	// Sample is how often a running migration's progress is read from libvirt (default 500ms);
	// Flush how often the samples of all migrations are written, in one batch (default 500ms).
	Sample, Flush time.Duration
	// ShutdownGrace is how long a cold-moving guest may take to power off before it is cut
	// (default 30s).
	ShutdownGrace time.Duration
}

// Placer chooses a host for a devserver (capacity.Index).
type Placer interface {
	Place(req *capacity.Request) capacity.Decision
}

// Controller runs recorded migrations on the leader.
type Controller struct {
	cfg Config
	log *slog.Logger
}

// New returns a migration controller.
func New(cfg Config) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Sample <= 0 {
		cfg.Sample = 500 * time.Millisecond
	}
	if cfg.Flush <= 0 {
		cfg.Flush = 500 * time.Millisecond
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 30 * time.Second
	}
	return &Controller{cfg: cfg, log: cfg.Logger.With("controller", "migrations")}
}

// Name identifies the controller.
func (c *Controller) Name() string { return "migrations" }

// Run schedules pending migrations as slots free, runs scheduled ones, and adopts those a
// previous leader left under way, until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	r := &run{c: c, ctx: ctx, cancel: cancel, term: c.cfg.Leader.Term(), inflight: map[string]bool{}, progress: map[string]*fsmv1.MigrationUpdate{}, postCopy: map[string]bool{}, poke: make(chan struct{}, 1)}
	defer func() {
		cancel(nil)
		r.wg.Wait()
	}()
	r.wg.Go(r.flushProgress)
	for {
		v := c.cfg.Store.View()
		next := r.pass(v)
		changed, stop := c.cfg.Store.Changed(v, state.TableMigrations, state.TableHosts)
		var due *time.Timer
		if !next.IsZero() {
			due = time.AfterFunc(time.Until(next), r.wake) // a migration asked to start later may now
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-r.poke:
		}
		stop()
		if due != nil {
			due.Stop()
		}
		if ctx.Err() != nil {
			if cause := context.Cause(ctx); errors.Is(cause, errDeposed) {
				return cause // restarted (in the new term) if this node leads again
			}
			return nil
		}
	}
}

type run struct {
	c   *Controller
	ctx context.Context
	wg  sync.WaitGroup
	// term is the raft term this controller leads in: the first half of the fencing token of
	// its side effects. cancel stops the whole run when it finds itself deposed.
	term   uint64
	cancel context.CancelCauseFunc

	mu       sync.Mutex
	inflight map[string]bool
	progress map[string]*fsmv1.MigrationUpdate // latest sample per migration, not yet written
	postCopy map[string]bool                   // migrations this run switched to post-copy
	poke     chan struct{}
}

func (r *run) wake() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

// pass ends pending migrations whose abort was asked, gives free slots to pending ones, and
// runs every migration that holds a slot and has no goroutine yet (after a failover, all). It
// returns when the next migration asked to start later may start (zero: none waits).
func (r *run) pass(v *state.View) time.Time {
	all := v.Migrations()
	var updates []*fsmv1.MigrationUpdate
	for _, m := range all {
		if m.GetPhase() == v1.MigrationPhase_MIGRATION_PHASE_PENDING && m.GetAbortRequested() {
			r.finish(m, v1.MigrationPhase_MIGRATION_PHASE_ABORTED, "aborted before it started", nil)
		}
	}
	siteOf := func(host string) string {
		h, err := v.GetHost(host)
		if err != nil {
			return ""
		}
		return h.GetSite()
	}
	now := time.Now()
	for _, m := range Schedule(all, r.c.cfg.Limits, siteOf, now) {
		updates = append(updates, &fsmv1.MigrationUpdate{Id: m.GetId(), Phase: v1.MigrationPhase_MIGRATION_PHASE_SCHEDULED,
			From: []v1.MigrationPhase{v1.MigrationPhase_MIGRATION_PHASE_PENDING}})
	}
	if len(updates) > 0 {
		if _, err := r.propose(&fsmv1.Command{Op: &fsmv1.Command_UpdateMigrations{UpdateMigrations: &fsmv1.UpdateMigrations{Updates: updates}}}); err != nil {
			r.c.log.Warn("scheduling migrations failed", "error", err)
		}
		return nextStart(all, now) // the write wakes the next pass, which starts them
	}
	for _, m := range all {
		if !running(m) {
			continue
		}
		r.mu.Lock()
		busy := r.inflight[m.GetId()]
		r.inflight[m.GetId()] = true
		r.mu.Unlock()
		if busy {
			continue
		}
		r.wg.Go(func() {
			defer func() {
				r.mu.Lock()
				delete(r.inflight, m.GetId())
				r.mu.Unlock()
				r.wake()
			}()
			r.execute(m)
		})
	}
	return nextStart(all, now)
}

func (r *run) propose(cmd *fsmv1.Command) (any, error) {
	ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	defer cancel()
	res, err := r.c.cfg.Raft.Propose(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return res.Value, res.Err
}

func (r *run) setPhase(m *v1.Migration, to v1.MigrationPhase, attempts uint32, reason string) error {
	return r.decide(m, &fsmv1.MigrationUpdate{Phase: to, Attempts: attempts, Reason: reason})
}

// errDeposed marks a side effect refused because this node no longer leads in its term.
var errDeposed = errors.New("no longer the leader")

// decide records the controller's next step for migration m under this leader's term: the
// entry's index and the term become the migration's fencing token, which the side effect that
// follows carries (a domain it defines has them in its metadata). The FSM refuses a decision of
// an older term than the migration's last.
func (r *run) decide(m *v1.Migration, u *fsmv1.MigrationUpdate) error {
	u.Id, u.FenceTerm = m.GetId(), r.term
	ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	defer cancel()
	res, err := r.c.cfg.Raft.Propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_UpdateMigrations{UpdateMigrations: &fsmv1.UpdateMigrations{
		Updates: []*fsmv1.MigrationUpdate{u}}}})
	if err == nil {
		err = res.Err
	}
	if err != nil {
		return err
	}
	m.FenceTerm, m.FenceIndex = r.term, res.Index
	return nil
}

// verify confirms, right before a side effect, that this node still leads and in the term it
// started in: a leader that lost leadership, even one that won it back, does not act on its old
// decisions.
func (r *run) verify(ctx context.Context) error {
	err := r.c.cfg.Leader.VerifyLeader(ctx)
	if err != nil {
		err = fmt.Errorf("%w: %v", errDeposed, err)
	} else if t := r.c.cfg.Leader.Term(); t != r.term {
		err = fmt.Errorf("%w: led in term %d, the term is now %d", errDeposed, r.term, t)
	}
	if err != nil {
		r.c.log.Warn("stopping: a side effect was refused", "error", err)
		r.cancel(err) // nothing more from this run; the leader's controller (if any) takes over
	}
	return err
}

// fenced records the decision to take a cold step and confirms leadership right before it.
func (r *run) fenced(m *v1.Migration, step v1.ColdStep, what string) error {
	if err := r.decide(m, &fsmv1.MigrationUpdate{Phase: v1.MigrationPhase_MIGRATION_PHASE_RUNNING, ColdStep: step}); err != nil {
		return fmt.Errorf("recording the decision to %s: %w", what, err)
	}
	return r.verify(r.ctx)
}

func (r *run) finish(m *v1.Migration, outcome v1.MigrationPhase, reason string, p *v1.MigrationProgress) {
	r.mu.Lock()
	delete(r.progress, m.GetId())
	delete(r.postCopy, m.GetId())
	r.mu.Unlock()
	_, err := r.propose(&fsmv1.Command{Op: &fsmv1.Command_FinishMigration{FinishMigration: &fsmv1.FinishMigration{
		Id: m.GetId(), Outcome: outcome, Reason: reason, Progress: p}}})
	if err != nil && apierror.KindOf(err) != apierror.FailedPrecondition {
		r.c.log.Warn("recording the end of a migration failed", "migration", m.GetId(), "error", err)
		return
	}
	r.c.log.Info("migration ended", "migration", m.GetId(), "devserver", m.GetDevserver(), "from", m.GetSourceHost(),
		"to", m.GetDestHost(), "outcome", state.StateOfMigration(outcome), "reason", reason)
}

// flushProgress writes the latest samples of all running migrations in one entry, every Flush.
func (r *run) flushProgress() {
	t := time.NewTicker(r.c.cfg.Flush)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		var updates []*fsmv1.MigrationUpdate
		for id, u := range r.progress {
			updates = append(updates, u)
			delete(r.progress, id)
		}
		r.mu.Unlock()
		if len(updates) > 0 {
			if _, err := r.propose(&fsmv1.Command{Op: &fsmv1.Command_UpdateMigrations{UpdateMigrations: &fsmv1.UpdateMigrations{Updates: updates}}}); err != nil && r.ctx.Err() == nil {
				r.c.log.Warn("recording migration progress failed", "error", err)
			}
		}
	}
}

// errAborted marks an attempt stopped because an abort was asked; errDestDown one whose
// destination did not answer.
var (
	errAborted  = errors.New("aborted on request")
	errDestDown = errors.New("unreachable")
)

// execute runs one migration that holds a slot, from wherever it is: first it finds where the
// guest runs (a previous leader may have finished or half-done it), then it runs attempts until
// one succeeds, an abort is asked, or the attempts are used up.
func (r *run) execute(m *v1.Migration) {
	// m is this goroutine's copy: the controller notes its fence, failures and destination in
	// it, and the store's records are shared with readers.
	m = proto.Clone(m).(*v1.Migration)
	v := r.c.cfg.Store.View()
	d, derr := v.GetDevserver(m.GetDevserver())
	src, serr := v.GetHost(m.GetSourceHost())
	dst, herr := v.GetHost(m.GetDestHost())
	if err := errors.Join(derr, serr, herr); err != nil {
		r.finish(m, v1.MigrationPhase_MIGRATION_PHASE_FAILED, "its devserver or a host is gone: "+err.Error(), nil)
		return
	}
	hvSrc, err := r.c.cfg.Hypervisors.Open(src.GetName(), src.GetLibvirtUri())
	if err != nil {
		r.finish(m, v1.MigrationPhase_MIGRATION_PHASE_FAILED, err.Error(), nil)
		return
	}
	hvDst, err := r.c.cfg.Hypervisors.Open(dst.GetName(), dst.GetLibvirtUri())
	if err != nil {
		r.finish(m, v1.MigrationPhase_MIGRATION_PHASE_FAILED, err.Error(), nil)
		return
	}
	g := guest{name: d.GetName(), id: d.GetId(), owner: d.GetOwner(), src: hvSrc, dst: hvDst, disk: true,
		srcHost: src.GetName(), dstHost: dst.GetName(), inPlace: src.GetName() == dst.GetName()}
	if f, err := v.GetFlavor(d.GetFlavor()); err == nil {
		g.disk = f.GetResources().GetDiskGib() > 0
		g.memory = uint64(max(f.GetResources().GetMemoryMib(), 0)) << 20
		g.to = f
	}
	if m.GetDestFlavor() != "" {
		g.to, err = v.GetFlavor(m.GetDestFlavor())
	}
	if g.to == nil || err != nil {
		r.finish(m, v1.MigrationPhase_MIGRATION_PHASE_FAILED, "the flavor it moves to is gone", nil)
		return
	}
	policy := withDefaults(m.GetPolicy())
	if m.GetCold() {
		r.executeCold(m, g, policy)
		return
	}
	attempts := m.GetAttempts()
	for {
		// Where is it? A copy running on the destination means the move happened (maybe
		// under the previous leader): record it, never start a second one.
		where, err := g.locate(r.ctx)
		if err != nil {
			r.c.log.Warn("cannot tell where a migrating guest runs; will look again", "migration", m.GetId(), "error", err)
			r.pause(time.Second)
			if r.ctx.Err() != nil {
				return
			}
			continue
		}
		switch where {
		case onDest:
			if g.disk {
				r.cleanUp(m, "source", g.removeSourceVolumes)
			}
			p := g.completedStats(r.ctx)
			r.mu.Lock()
			if r.postCopy[m.GetId()] {
				if p == nil {
					p = &v1.MigrationProgress{}
				}
				p.PostCopy = true
			}
			delete(r.postCopy, m.GetId())
			r.mu.Unlock()
			r.finish(m, v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED, "", p)
			return
		case nowhere:
			r.finish(m, v1.MigrationPhase_MIGRATION_PHASE_FAILED, "the guest runs on neither "+src.GetName()+" nor "+dst.GetName(), nil)
			return
		case migrating:
			// Adopted: a job of the previous leader is still copying. Follow it to its end.
			if err := r.follow(m, g, policy, nil); err != nil && r.ctx.Err() != nil {
				return
			}
			continue
		}
		// The guest runs on the source, and the migration may end here: an attempt may have left
		// volumes on the destination, which go (the source's are never touched).
		if cur, err := r.c.cfg.Store.View().GetMigration(m.GetId()); err == nil && cur.GetAbortRequested() {
			if g.disk && attempts > 0 {
				r.cleanUp(m, "destination", g.removeDestVolumes)
			}
			r.finish(m, v1.MigrationPhase_MIGRATION_PHASE_ABORTED, "aborted on request; the guest stays on "+src.GetName(), nil)
			return
		}
		if attempts >= policy.GetMaxAttempts() {
			if g.disk && attempts > 0 {
				r.cleanUp(m, "destination", g.removeDestVolumes)
			}
			if policy.GetColdFallback() {
				r.c.log.Info("live attempts are used up; moving cold", "migration", m.GetId(), "last", m.GetFailureReason())
				if err := r.decide(m, &fsmv1.MigrationUpdate{Cold: true, Reason: fmt.Sprintf("moving cold after %d live attempts; last: %s", attempts, m.GetFailureReason())}); err != nil {
					r.pause(time.Second)
					continue
				}
				m.Cold = true
				r.executeCold(m, g, policy)
				return
			}
			r.finish(m, v1.MigrationPhase_MIGRATION_PHASE_FAILED, fmt.Sprintf("%d attempts failed; last: %s", attempts, m.GetFailureReason()), nil)
			return
		}
		attempts++
		err = r.attempt(m, g, dst, policy, attempts)
		switch {
		case r.ctx.Err() != nil:
			return
		case errors.Is(err, errAborted):
			continue // the loop finds the guest on the source and records the abort
		case err != nil:
			m.FailureReason = err.Error()
			if policy.GetColdFallback() && liveImpossible(err) {
				attempts = policy.GetMaxAttempts() // no point in trying live again
			}
			r.c.log.Warn("migration attempt failed", "migration", m.GetId(), "attempt", attempts, "error", err)
			_ = r.setPhase(m, v1.MigrationPhase_MIGRATION_PHASE_SCHEDULED, attempts, "attempt "+fmt.Sprint(attempts)+": "+err.Error())
			if errors.Is(err, errDestDown) && attempts < policy.GetMaxAttempts() {
				if next, hv, ok := r.retarget(m, d, dst); ok {
					dst, g.dst = next, hv
					continue
				}
			}
			r.pause(time.Duration(attempts) * time.Second)
		}
	}
}

// retarget gives the migration another destination, chosen by capacity away from its source
// and its silent destination, for its next attempt.
func (r *run) retarget(m *v1.Migration, d *v1.Devserver, silent *v1.Host) (*v1.Host, hypervisor.Hypervisor, bool) {
	if r.c.cfg.Placer == nil {
		return nil, nil, false
	}
	v := r.c.cfg.Store.View()
	f, err := v.GetFlavor(d.GetFlavor())
	if err != nil {
		return nil, nil, false
	}
	dec := r.c.cfg.Placer.Place(&capacity.Request{Flavor: f, Region: d.GetRegion(), Spread: capacity.SpreadHosts, Owner: d.GetOwner(),
		Avoid: capacity.Avoid{Hosts: map[string]bool{m.GetSourceHost(): true, silent.GetName(): true}}})
	if dec.Host == nil {
		r.c.log.Warn("no other destination for a migration", "migration", m.GetId(), "why", dec.Explanation.String())
		return nil, nil, false
	}
	hv, err := r.c.cfg.Hypervisors.Open(dec.Host.GetName(), dec.Host.GetLibvirtUri())
	if err != nil {
		return nil, nil, false
	}
	if _, err := r.propose(&fsmv1.Command{Op: &fsmv1.Command_RetargetMigration{RetargetMigration: &fsmv1.RetargetMigration{
		Id: m.GetId(), DestHost: dec.Host.GetName(), Reason: silent.GetName() + " stopped answering; trying " + dec.Host.GetName()}}}); err != nil {
		r.c.log.Warn("changing a migration's destination failed", "migration", m.GetId(), "error", err)
		return nil, nil, false
	}
	r.c.log.Info("migration goes elsewhere", "migration", m.GetId(), "from", silent.GetName(), "to", dec.Host.GetName())
	m.DestHost = dec.Host.GetName()
	return dec.Host, hv, true
}

// cleanUp removes a finished migration's leftover volumes on one of its hosts (remove), as the
// leader, within cleanupTimeout. A failure is logged and leaves the volumes: the outcome is
// recorded regardless.
func (r *run) cleanUp(m *v1.Migration, where string, remove func(context.Context) ([]string, error)) {
	ctx, cancel := context.WithTimeout(r.ctx, cleanupTimeout)
	defer cancel()
	if err := r.verify(ctx); err != nil {
		return // the next leader looks again
	}
	removed, err := remove(ctx)
	if len(removed) > 0 {
		r.c.log.Info("a migration's leftover volumes are gone", "migration", m.GetId(), "devserver", m.GetDevserver(), "on", where, "volumes", removed)
	}
	if err != nil {
		r.c.log.Warn("a migration's leftover volumes could not be removed; they stay", "migration", m.GetId(),
			"devserver", m.GetDevserver(), "on", where, "error", err)
	}
}

func (r *run) pause(d time.Duration) {
	select {
	case <-r.ctx.Done():
	case <-time.After(d):
	}
}

// attempt runs one live migration of the guest to dst and follows it to its end.
func (r *run) attempt(m *v1.Migration, g guest, dst *v1.Host, policy *v1.MigrationPolicy, attempt uint32) error {
	if err := r.setPhase(m, v1.MigrationPhase_MIGRATION_PHASE_PREPARING_TARGET, attempt, ""); err != nil {
		return err
	}
	if err := g.dst.Ping(r.ctx); err != nil {
		return fmt.Errorf("destination %s does not answer: %w: %w", dst.GetName(), errDestDown, err)
	}
	var volumes []hypervisor.Volume
	if g.disk {
		if err := r.verify(r.ctx); err != nil {
			return err
		}
		v, err := g.prepareVolumes(r.ctx)
		if err != nil {
			return fmt.Errorf("preparing the destination %s: %w", dst.GetName(), err)
		}
		volumes = v
	}
	if err := r.setPhase(m, v1.MigrationPhase_MIGRATION_PHASE_RUNNING, attempt, ""); err != nil {
		return err
	}
	if err := r.verify(r.ctx); err != nil {
		return err
	}
	target := hypervisor.MigrationTarget{Host: dst.GetName(), URI: cmp.Or(dst.GetMigrationUri(), dst.GetLibvirtUri())}
	params := hypervisor.MigrationParams{BandwidthMiBps: policy.GetBandwidthMibps(), MaxDowntime: time.Duration(policy.GetMaxDowntimeMs()) * time.Millisecond,
		AutoConverge: policy.GetAutoConverge(), PostCopy: policy.GetAllowPostCopy(), ParallelConnections: int(policy.GetParallelConnections()),
		CopyStorage: len(volumes) > 0}
	done := make(chan error, 1)
	go func() { done <- g.src.Migrate(r.ctx, g.name, target, params) }()
	err := r.follow(m, g, policy, done)
	if err != nil && !errors.Is(err, errAborted) && r.ctx.Err() == nil {
		// Did the destination go away under the move? Then the next attempt goes elsewhere.
		if perr := g.dst.Ping(r.ctx); perr != nil {
			return fmt.Errorf("%w; destination %s does not answer: %w: %w", err, dst.GetName(), errDestDown, perr)
		}
	}
	return err
}

// follow samples a migration job until it ends (done, when this leader started it, delivers
// Migrate's answer), aborting it when an abort is asked, it stops making progress (no bytes of
// disk or memory moved for the progress timeout), or it takes longer than the completion
// timeout per GiB of memory and disk, plus one.
func (r *run) follow(m *v1.Migration, g guest, policy *v1.MigrationPolicy, done <-chan error) error {
	tick := time.NewTicker(r.c.cfg.Sample)
	defer tick.Stop()
	var lastProcessed uint64
	lastMove := time.Now()
	aborted := ""
	postCopy := false
	for {
		select {
		case <-r.ctx.Done():
			return r.ctx.Err()
		case err := <-done:
			if aborted != "" && hypervisor.KindOf(err) == hypervisor.KindAborted {
				if aborted == "request" {
					return errAborted
				}
				return errors.New(aborted)
			}
			return err
		case <-tick.C:
		}
		st, err := g.src.JobStats(r.ctx, g.name)
		switch {
		case hypervisor.IsNotFound(err), err == nil && !st.Type.Active():
			if done == nil {
				return nil // an adopted job ended: the caller looks where the guest is
			}
			continue // Migrate is about to return
		case err != nil:
			continue
		}
		if moved := max(st.DataProcessed, st.MemoryProcessed+st.DiskProcessed); moved > lastProcessed {
			lastProcessed, lastMove = moved, time.Now()
		}
		if !postCopy && r.switchToPostCopy(m, g, policy, st) {
			postCopy = true
			r.mu.Lock()
			r.postCopy[m.GetId()] = true
			r.mu.Unlock()
		}
		p := progressOf(st)
		p.PostCopy = postCopy
		r.recordProgress(m, p)
		if aborted != "" || postCopy { // a migration in post-copy cannot be aborted: it ends on the destination
			continue
		}
		cur, _ := r.c.cfg.Store.View().GetMigration(m.GetId())
		switch {
		case cur.GetAbortRequested():
			aborted = "request"
		case time.Since(lastMove) > policy.GetProgressTimeout().AsDuration():
			aborted = fmt.Sprintf("no progress for %s", policy.GetProgressTimeout().AsDuration())
		case st.Elapsed > completionBudget(policy, st, g.memory):
			aborted = fmt.Sprintf("not done after %s", st.Elapsed.Round(time.Second))
		default:
			continue
		}
		if err := g.src.AbortJob(r.ctx, g.name); err != nil {
			r.c.log.Warn("aborting a migration failed", "migration", m.GetId(), "error", err)
		}
		if done == nil {
			if aborted == "request" {
				return errAborted
			}
			return errors.New(aborted)
		}
	}
}

// completionBudget is how long a migration may take: the policy's time per GiB of what it moves
// (guest memory, and the disk it copies), plus one. While libvirt copies the disk it reports no
// memory yet: the flavor's memory stands in. With nothing known (no memory reported, none by
// flavor) there is no budget yet.
func completionBudget(policy *v1.MigrationPolicy, st hypervisor.JobStats, flavorMemory uint64) time.Duration {
	memory := cmp.Or(st.MemoryTotal, flavorMemory)
	if memory == 0 {
		return math.MaxInt64
	}
	perGiB := float64(policy.GetCompletionTimeoutPerGib().AsDuration())
	return time.Duration(perGiB*float64(memory+st.DiskTotal)/(1<<30) + perGiB)
}

// record keeps a migration's latest sample for the next batched write.
func (r *run) record(m *v1.Migration, st hypervisor.JobStats) { r.recordProgress(m, progressOf(st)) }

func (r *run) recordProgress(m *v1.Migration, p *v1.MigrationProgress) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.progress[m.GetId()] = &fsmv1.MigrationUpdate{Id: m.GetId(), Progress: p,
		From: []v1.MigrationPhase{v1.MigrationPhase_MIGRATION_PHASE_RUNNING}}
}

// DefaultPostCopyAfterPasses is how many passes over memory a migration that may switch to
// post-copy makes before it does.
const DefaultPostCopyAfterPasses = 3

// switchToPostCopy switches a live migration that its policy lets switch to post-copy, once it
// has made the policy's passes over memory without converging or has reached its completion
// budget, and reports whether it did. It is a side effect: fenced like the others.
func (r *run) switchToPostCopy(m *v1.Migration, g guest, policy *v1.MigrationPolicy, st hypervisor.JobStats) bool {
	if !policy.GetAllowPostCopy() || st.MemoryTotal == 0 || st.MemoryRemaining == 0 {
		return false
	}
	passes := uint64(cmp.Or(policy.GetPostCopyAfterPasses(), DefaultPostCopyAfterPasses))
	over := st.Elapsed > completionBudget(policy, st, g.memory)
	if st.Iteration <= passes && !over {
		return false
	}
	if err := r.verify(r.ctx); err != nil {
		return false
	}
	if err := g.src.StartPostCopy(r.ctx, g.name); err != nil {
		r.c.log.Warn("switching a migration to post-copy failed; it goes on in pre-copy", "migration", m.GetId(), "error", err)
		return false
	}
	r.c.log.Info("migration switched to post-copy: the guest runs on the destination", "migration", m.GetId(),
		"passes", st.Iteration-1, "elapsed", st.Elapsed, "remaining_bytes", st.MemoryRemaining)
	return true
}

// liveImpossible reports whether a live attempt failed in a way that another live attempt would
// repeat (the hosts refuse the move itself, not a passing fault).
func liveImpossible(err error) bool {
	k := hypervisor.KindOf(err)
	return k == hypervisor.KindFailedPrecondition || k == hypervisor.KindInvalidArgument
}

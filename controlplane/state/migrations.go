package state

import (
	"cmp"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/devfleet/devfleet/capacity/fit"
	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/validate"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// DefaultPriority is a migration's priority when the caller gives none: evacuations, then
// maintenance, go before developers' own moves, and rebalancing comes last.
func DefaultPriority(r v1.MigrationReason) int32 {
	switch r {
	case v1.MigrationReason_MIGRATION_REASON_EVACUATION:
		return 300
	case v1.MigrationReason_MIGRATION_REASON_MAINTENANCE:
		return 200
	case v1.MigrationReason_MIGRATION_REASON_USER:
		return 100
	}
	return 0
}

// Final reports whether a migration phase is an end.
func Final(p v1.MigrationPhase) bool {
	return p == v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED || p == v1.MigrationPhase_MIGRATION_PHASE_FAILED ||
		p == v1.MigrationPhase_MIGRATION_PHASE_ABORTED
}

// GetMigration returns a migration or NotFound.
func (v *View) GetMigration(id string) (*v1.Migration, error) {
	if raw := v.first(TableMigrations, "id", id); raw != nil {
		return raw.(*v1.Migration), nil
	}
	return nil, apierror.Missing("migration", id)
}

// Migrations returns every migration, by ID.
func (v *View) Migrations() []*v1.Migration { return rows[*v1.Migration](v, TableMigrations, "id") }

// MigrationsOf returns a devserver's migrations, past and present.
func (v *View) MigrationsOf(devserver string) []*v1.Migration {
	return rows[*v1.Migration](v, TableMigrations, "devserver", devserver)
}

// ActiveMigration returns the devserver's migration that has not ended, or nil.
func (v *View) ActiveMigration(devserver string) *v1.Migration {
	for _, m := range v.MigrationsOf(devserver) {
		if !Final(m.GetPhase()) {
			return m
		}
	}
	return nil
}

// activeTo returns the migrations that have not ended and hold room on host.
func (v *View) activeTo(host string) []*v1.Migration {
	return slices.DeleteFunc(rows[*v1.Migration](v, TableMigrations, "dest", host), func(m *v1.Migration) bool { return Final(m.GetPhase()) })
}

// CreateMigration records a migration the leader planned: the devserver must be running (and
// not a whole machine), the destination an active, healthy host with room (another host of its
// region for a live move; for a cold one, a host of dest_region, or its own host for a resize in
// place), and no other migration of it may be under way. Another flavor or region makes the
// move cold. The devserver becomes MIGRATING and the destination's room (for the flavor it will
// have) is held until the migration ends.
func (w *WriteTxn) CreateMigration(in *v1.Migration) (*v1.Migration, error) {
	m := &v1.Migration{Id: in.GetId(), Devserver: in.GetDevserver(), DevserverId: in.GetDevserverId(), DestHost: in.GetDestHost(),
		Reason: in.GetReason(), Priority: in.GetPriority(), Policy: in.GetPolicy(), RequestedBy: in.GetRequestedBy(), Cold: in.GetCold(),
		DestFlavor: in.GetDestFlavor(), DestRegion: in.GetDestRegion(), NotBefore: in.GetNotBefore()}
	if m.GetId() == "" {
		return nil, apierror.Invalid("migration.id", "must be stamped by the leader")
	}
	if _, ok := v1.MigrationReason_name[int32(m.GetReason())]; !ok || m.GetReason() == v1.MigrationReason_MIGRATION_REASON_UNSPECIFIED {
		return nil, apierror.Invalid("migration.reason", "must be maintenance, user, rebalance or evacuation")
	}
	if err := validate.Name("migration.dest_host", m.GetDestHost()); err != nil {
		return nil, err
	}
	if err := validate.OptionalName("migration.dest_flavor", m.GetDestFlavor()); err != nil {
		return nil, err
	}
	if err := validate.OptionalName("migration.dest_region", m.GetDestRegion()); err != nil {
		return nil, err
	}
	if err := validate.Text("migration.requested_by", m.GetRequestedBy(), 256); err != nil {
		return nil, err
	}
	if w.first(TableMigrations, "id", m.GetId()) != nil {
		return nil, apierror.Exists("migration", m.GetId())
	}
	d, err := w.sameDevserver(m.GetDevserver(), m.GetDevserverId())
	if err != nil {
		return nil, err
	}
	if cur := w.ActiveMigration(d.GetName()); cur != nil {
		return nil, apierror.Blocked("devserver %q is already moving (migration %s to %s)", d.GetName(), cur.GetId(), cur.GetDestHost())
	}
	if d.GetState() != v1.DevserverState_DEVSERVER_STATE_RUNNING || Deleting(d) {
		return nil, apierror.Blocked("devserver %q is %s: only a running devserver moves", d.GetName(), StateName(d.GetState()))
	}
	f, err := w.GetFlavor(d.GetFlavor())
	if err != nil {
		return nil, err
	}
	if fit.Physical(f) {
		return nil, apierror.Blocked("devserver %q is a whole machine (flavor %s): it cannot be moved", d.GetName(), f.GetName())
	}
	if m.GetDestFlavor() == f.GetName() {
		m.DestFlavor = ""
	}
	if m.GetDestRegion() == d.GetRegion() {
		m.DestRegion = ""
	}
	to, err := w.targetFlavor(d, f, m)
	if err != nil {
		return nil, err
	}
	if m.GetDestRegion() != "" {
		if _, err := w.GetRegion(m.GetDestRegion()); err != nil {
			return nil, err
		}
	}
	m.Cold = m.GetCold() || m.GetDestFlavor() != "" || m.GetDestRegion() != ""
	h, err := w.destination(d, f, to, m)
	if err != nil {
		return nil, err
	}
	if m.GetPriority() == 0 {
		m.Priority = DefaultPriority(m.GetReason())
	}
	m.SourceHost = d.GetHost()
	m.Phase = v1.MigrationPhase_MIGRATION_PHASE_PENDING
	m.CreateTime, m.UpdateTime, m.CreateIndex, m.ModifyIndex = w.now, w.now, w.index, w.index
	if err := w.insert(TableMigrations, m); err != nil {
		return nil, err
	}
	if err := w.allocate(h.GetName(), to, false); err != nil {
		return nil, err
	}
	nd := proto.Clone(d).(*v1.Devserver)
	nd.State, nd.StateReason = v1.DevserverState_DEVSERVER_STATE_MIGRATING, "moving to "+h.GetName()+" (migration "+m.GetId()+")"
	if m.GetDestHost() == d.GetHost() {
		nd.StateReason = "resizing to " + to.GetName() + " (migration " + m.GetId() + ")"
	}
	if nb := m.GetNotBefore(); nb != nil && nb.AsTime().After(w.now.AsTime()) {
		nd.StateReason += "; booked for " + nb.AsTime().UTC().Format(time.RFC3339) + " or later, running until then"
	}
	nd.UpdateTime, nd.ModifyIndex = w.now, w.index
	return m, w.insert(TableDevservers, nd)
}

// targetFlavor is the flavor devserver d (of flavor f) has once migration m is done: its own, or
// m's dest_flavor for a resize, which must be a flavor that can hold its disk.
func (w *WriteTxn) targetFlavor(d *v1.Devserver, f *v1.Flavor, m *v1.Migration) (*v1.Flavor, error) {
	if m.GetDestFlavor() == "" || m.GetDestFlavor() == f.GetName() {
		return f, nil
	}
	to, err := w.GetFlavor(m.GetDestFlavor())
	if err != nil {
		return nil, err
	}
	switch {
	case fit.Physical(to):
		return nil, apierror.Blocked("flavor %s is a whole machine: a devserver is not resized into one", to.GetName())
	case to.GetResources().GetDiskGib() < f.GetResources().GetDiskGib():
		return nil, apierror.Blocked("flavor %s has a %d GiB disk, smaller than the %d GiB of devserver %q (flavor %s): its data may not fit",
			to.GetName(), to.GetResources().GetDiskGib(), f.GetResources().GetDiskGib(), d.GetName(), f.GetName())
	}
	return to, nil
}

// destination checks that migration m's destination host can take devserver d (of flavor f,
// becoming flavor to): an active, healthy host of the region it moves to, with room. Its own
// host only for a resize in place, where its present room counts as free.
func (w *WriteTxn) destination(d *v1.Devserver, f, to *v1.Flavor, m *v1.Migration) (*v1.Host, error) {
	host, region := m.GetDestHost(), cmp.Or(m.GetDestRegion(), d.GetRegion())
	inPlace := host == d.GetHost()
	if inPlace && to.GetName() == f.GetName() {
		return nil, apierror.Blocked("devserver %q already runs on %s", d.GetName(), d.GetHost())
	}
	h, err := w.GetHost(host)
	if err != nil {
		return nil, err
	}
	switch {
	case h.GetRegion() != region:
		return nil, apierror.Blocked("host %q is in region %q; devserver %q moves within %q", h.GetName(), h.GetRegion(), d.GetName(), region)
	case h.GetState() != v1.HostState_HOST_STATE_ACTIVE:
		return nil, apierror.Blocked("host %q is %s and takes no new devservers", h.GetName(), HostStateName(h.GetState()))
	case h.GetHealth() == v1.HostHealth_HOST_HEALTH_UNHEALTHY:
		return nil, apierror.Blocked("host %q is unhealthy: %s", h.GetName(), h.GetHealthReason())
	}
	free := fit.Free(h)
	if inPlace {
		free = free.Add(fit.Need(f, h))
	}
	if s := fit.Check(to, h, free); s != fit.None {
		e := apierror.Blocked("host %q has no room for it: its free resources %s", h.GetName(), s.Describe(to))
		e.Code = apierror.CodeNoRoom
		return nil, e
	}
	return h, nil
}

// RetargetMigration moves a migration that is between attempts to another destination, and the
// room held with it.
func (w *WriteTxn) RetargetMigration(id, dest, reason string) (*v1.Migration, error) {
	if err := validate.Name("dest_host", dest); err != nil {
		return nil, err
	}
	if err := validate.Reason("reason", reason); err != nil {
		return nil, err
	}
	cur, err := w.GetMigration(id)
	if err != nil {
		return nil, err
	}
	if p := cur.GetPhase(); p != v1.MigrationPhase_MIGRATION_PHASE_PENDING && p != v1.MigrationPhase_MIGRATION_PHASE_SCHEDULED {
		return nil, apierror.Blocked("migration %s is %s: only one between attempts changes destination", id, p)
	}
	d, err := w.sameDevserver(cur.GetDevserver(), cur.GetDevserverId())
	if err != nil {
		return nil, err
	}
	f, err := w.GetFlavor(d.GetFlavor())
	if err != nil {
		return nil, err
	}
	to, err := w.targetFlavor(d, f, cur)
	if err != nil {
		return nil, err
	}
	if dest == cur.GetDestHost() {
		return cur, nil
	}
	m := proto.Clone(cur).(*v1.Migration)
	m.DestHost = dest
	if _, err := w.destination(d, f, to, m); err != nil {
		return nil, err
	}
	if err := w.allocate(cur.GetDestHost(), to, true); err != nil {
		return nil, err
	}
	if err := w.allocate(dest, to, false); err != nil {
		return nil, err
	}
	m.FailureReason, m.UpdateTime, m.ModifyIndex = reason, w.now, w.index
	return m, w.insert(TableMigrations, m)
}

// UpdateMigrations records phases, progress and attempts of migrations under way. An update
// for a migration that ended, or that is no longer in one of its from phases, is skipped (a
// late sample); a bad update refuses the whole batch.
func (w *WriteTxn) UpdateMigrations(updates []*MigrationUpdate) error {
	for i, u := range updates {
		if _, ok := v1.MigrationPhase_name[int32(u.Phase)]; !ok || Final(u.Phase) {
			return apierror.Invalid("updates.phase", "update %d: phase %s cannot be set here; FinishMigration ends a migration", i, u.Phase)
		}
		if err := validate.Text("updates.reason", u.Reason, validate.MaxReasonLen); err != nil {
			return err
		}
	}
	for _, u := range updates {
		cur, ok := w.first(TableMigrations, "id", u.ID).(*v1.Migration)
		if !ok || Final(cur.GetPhase()) || (len(u.From) > 0 && !slices.Contains(u.From, cur.GetPhase())) {
			continue
		}
		if u.FenceTerm > 0 && u.FenceTerm < cur.GetFenceTerm() {
			return apierror.Blocked("migration %s is driven by the leader of term %d; this update comes from term %d", u.ID, cur.GetFenceTerm(), u.FenceTerm)
		}
		m := proto.Clone(cur).(*v1.Migration)
		if u.Phase != v1.MigrationPhase_MIGRATION_PHASE_UNSPECIFIED {
			if u.Phase == v1.MigrationPhase_MIGRATION_PHASE_RUNNING && m.GetStartTime() == nil {
				m.StartTime = w.now
			}
			m.Phase = u.Phase
		}
		if u.Progress != nil {
			m.Progress = proto.Clone(u.Progress).(*v1.MigrationProgress)
		}
		if u.Attempts > 0 {
			m.Attempts = u.Attempts
		}
		if u.Reason != "" {
			m.FailureReason = u.Reason
		}
		if u.Cold {
			m.Cold = true
		}
		if u.ColdStep != v1.ColdStep_COLD_STEP_UNSPECIFIED {
			m.ColdStep = u.ColdStep
		}
		if u.FenceTerm > 0 {
			m.FenceTerm, m.FenceIndex = u.FenceTerm, w.index
		}
		m.UpdateTime, m.ModifyIndex = w.now, w.index
		if err := w.insert(TableMigrations, m); err != nil {
			return err
		}
	}
	return nil
}

// MigrationUpdate is one migration's change in UpdateMigrations.
type MigrationUpdate struct {
	ID       string
	Phase    v1.MigrationPhase
	Progress *v1.MigrationProgress
	Attempts uint32
	From     []v1.MigrationPhase
	Reason   string
	// Cold switches the migration to a cold move; ColdStep records where one is.
	Cold     bool
	ColdStep v1.ColdStep
	// FenceTerm is the term of the leader that decided the update; the entry's index becomes the
	// migration's fencing token with it. An update from an older term than the migration's last
	// is refused.
	FenceTerm uint64
}

// FinishMigration ends a migration. Succeeded records the devserver on the destination (and
// frees the source's room); Failed and Aborted leave it on the source (and free the
// destination's). Either way the devserver is running again.
func (w *WriteTxn) FinishMigration(id string, outcome v1.MigrationPhase, reason string, progress *v1.MigrationProgress) (*v1.Migration, error) {
	if !Final(outcome) {
		return nil, apierror.Invalid("outcome", "must be succeeded, failed or aborted, got %s", outcome)
	}
	if err := validate.Text("reason", reason, validate.MaxReasonLen); err != nil {
		return nil, err
	}
	cur, err := w.GetMigration(id)
	if err != nil {
		return nil, err
	}
	if Final(cur.GetPhase()) {
		return nil, apierror.Blocked("migration %s already ended (%s)", id, cur.GetPhase())
	}
	d, err := w.sameDevserver(cur.GetDevserver(), cur.GetDevserverId())
	if err != nil {
		return nil, err
	}
	f, err := w.GetFlavor(d.GetFlavor())
	if err != nil {
		return nil, err
	}
	to := f
	if cur.GetDestFlavor() != "" {
		if to, err = w.GetFlavor(cur.GetDestFlavor()); err != nil {
			return nil, err
		}
	}
	m := proto.Clone(cur).(*v1.Migration)
	m.Phase, m.EndTime, m.UpdateTime, m.ModifyIndex = outcome, w.now, w.now, w.index
	if reason != "" {
		m.FailureReason = reason
	}
	if progress != nil {
		m.Progress = proto.Clone(progress).(*v1.MigrationProgress)
	}
	if err := w.insert(TableMigrations, m); err != nil {
		return nil, err
	}
	nd := proto.Clone(d).(*v1.Devserver)
	nd.State = v1.DevserverState_DEVSERVER_STATE_RUNNING
	if outcome == v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED {
		dest, err := w.GetHost(m.GetDestHost())
		if err != nil {
			return nil, err
		}
		if err := w.allocate(m.GetSourceHost(), f, true); err != nil {
			return nil, err
		}
		nd.Host, nd.Site, nd.Region, nd.Flavor = dest.GetName(), dest.GetSite(), dest.GetRegion(), to.GetName()
		switch {
		case m.GetSourceHost() == dest.GetName():
			nd.StateReason = "resized from " + f.GetName() + " to " + to.GetName() + " (migration " + id + ")"
		case to.GetName() != f.GetName():
			nd.StateReason = "moved from " + m.GetSourceHost() + " and resized from " + f.GetName() + " to " + to.GetName() + " (migration " + id + ")"
		default:
			nd.StateReason = "moved from " + m.GetSourceHost() + " (migration " + id + ")"
		}
	} else {
		if err := w.allocate(m.GetDestHost(), to, true); err != nil {
			return nil, err
		}
		nd.StateReason = "stayed on " + m.GetSourceHost() + ": migration " + id + " " + StateOfMigration(outcome)
	}
	nd.UpdateTime, nd.ModifyIndex = w.now, w.index
	return m, w.insert(TableDevservers, nd)
}

// RequestMigrationAbort asks the controller to stop a migration; the guest stays on the source.
func (w *WriteTxn) RequestMigrationAbort(id string) (*v1.Migration, error) {
	cur, err := w.GetMigration(id)
	if err != nil {
		return nil, err
	}
	if Final(cur.GetPhase()) {
		return nil, apierror.Blocked("migration %s already ended (%s)", id, cur.GetPhase())
	}
	m := proto.Clone(cur).(*v1.Migration)
	m.AbortRequested, m.UpdateTime, m.ModifyIndex = true, w.now, w.index
	return m, w.insert(TableMigrations, m)
}

// StateOfMigration is a final phase as words.
func StateOfMigration(p v1.MigrationPhase) string {
	switch p {
	case v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED:
		return "succeeded"
	case v1.MigrationPhase_MIGRATION_PHASE_FAILED:
		return "failed"
	case v1.MigrationPhase_MIGRATION_PHASE_ABORTED:
		return "was aborted"
	}
	return "is under way"
}

package fsm

import (
	"testing"

	"github.com/devfleet/devfleet/controlplane/apierror"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func cMigration(id, devserver, devserverID, dest string) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_CreateMigration{CreateMigration: &fsmv1.CreateMigration{Migration: &v1.Migration{
		Id: id, Devserver: devserver, DevserverId: devserverID, DestHost: dest, Reason: v1.MigrationReason_MIGRATION_REASON_MAINTENANCE, RequestedBy: "ops"}}}}
}

func finish(id string, outcome v1.MigrationPhase) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_FinishMigration{FinishMigration: &fsmv1.FinishMigration{Id: id, Outcome: outcome, Reason: "test"}}}
}

func running(name, id string) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_SetDevserverState{SetDevserverState: &fsmv1.SetDevserverState{
		Name: name, Id: id, State: v1.DevserverState_DEVSERVER_STATE_RUNNING, Reason: "up"}}}
}

// migrationFleet: region eu with hosts h1 (d1, running), h3 and a cordoned h4; us with h2.
func migrationFleet(t *testing.T) *harness {
	h := newHarness(t)
	seed(h)
	h.ok(cHost("h3", "eu-1"))
	h.ok(cHost("h4", "eu-1"))
	h.ok(cordon("h4", "rma"))
	h.ok(running("d1", "id-1"))
	return h
}

func TestMigrationRefusals(t *testing.T) {
	t.Parallel()
	h := migrationFleet(t)
	h.refused(cMigration("m1", "d1", "id-other", "h3"), apierror.FailedPrecondition) // another devserver now
	h.refused(cMigration("m1", "nope", "id-1", "h3"), apierror.NotFound)
	h.refused(cMigration("m1", "d1", "id-1", "h1"), apierror.FailedPrecondition) // to itself
	h.refused(cMigration("m1", "d1", "id-1", "h2"), apierror.FailedPrecondition) // other region
	h.refused(cMigration("m1", "d1", "id-1", "h4"), apierror.FailedPrecondition) // cordoned
	h.refused(cMigration("m1", "d1", "id-1", "ghost"), apierror.NotFound)
	h.refused(cMigration("", "d1", "id-1", "h3"), apierror.InvalidArgument)
	h.ok(&fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: &v1.Flavor{
		Name: "huge", Resources: res(64, 8192, 100, 0)}}}})
	h.ok(cDevserver("big", "bob", "huge", "eu", "h3", "id-big"))
	h.ok(running("big", "id-big"))
	r := h.apply(cMigration("m1", "big", "id-big", "h1")) // h1 has d1's 4 vCPUs taken
	if !apierror.HasCode(r.Err, apierror.CodeNoRoom) {
		t.Fatalf("move to a full host: %v", r.Err)
	}
	h.ok(deleteCmd("devserver", "big"))
	h.ok(cMigration("m1", "d1", "id-1", "h3"))
	h.refused(cMigration("m2", "d1", "id-1", "h3"), apierror.FailedPrecondition) // twice at once
	h.refused(deleteCmd("devserver", "d1"), apierror.FailedPrecondition)         // while moving
}

func TestMigrationSucceedsAndRoomMoves(t *testing.T) {
	t.Parallel()
	h := migrationFleet(t)
	v := h.fsm.Store().View
	m := h.ok(cMigration("m1", "d1", "id-1", "h3")).(*v1.Migration)
	if m.GetPhase() != v1.MigrationPhase_MIGRATION_PHASE_PENDING || m.GetSourceHost() != "h1" || m.GetPriority() != 200 {
		t.Fatalf("created: %v", m)
	}
	d, _ := v().GetDevserver("d1")
	h1, _ := v().GetHost("h1")
	h3, _ := v().GetHost("h3")
	if d.GetState() != v1.DevserverState_DEVSERVER_STATE_MIGRATING || h1.GetAllocated().GetVcpus() != 4 || h3.GetAllocated().GetVcpus() != 4 {
		t.Fatalf("while moving: devserver %s, h1 %v, h3 %v", d.GetState(), h1.GetAllocated(), h3.GetAllocated())
	}
	if err := v().CheckInvariants(); err != nil {
		t.Fatal(err)
	}
	h.ok(&fsmv1.Command{Op: &fsmv1.Command_UpdateMigrations{UpdateMigrations: &fsmv1.UpdateMigrations{Updates: []*fsmv1.MigrationUpdate{
		{Id: "m1", Phase: v1.MigrationPhase_MIGRATION_PHASE_RUNNING, Progress: &v1.MigrationProgress{MemoryTotalBytes: 100, MemoryProcessedBytes: 40}, Attempts: 1},
		{Id: "gone", Phase: v1.MigrationPhase_MIGRATION_PHASE_RUNNING}, // late sample of nothing: skipped
	}}}})
	h.refused(&fsmv1.Command{Op: &fsmv1.Command_UpdateMigrations{UpdateMigrations: &fsmv1.UpdateMigrations{Updates: []*fsmv1.MigrationUpdate{
		{Id: "m1", Phase: v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED}}}}}, apierror.InvalidArgument)
	if m, _ := v().GetMigration("m1"); m.GetStartTime() == nil || m.GetProgress().GetMemoryProcessedBytes() != 40 || m.GetAttempts() != 1 {
		t.Fatalf("after an update: %v", m)
	}
	h.ok(finish("m1", v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED))
	h.refused(finish("m1", v1.MigrationPhase_MIGRATION_PHASE_FAILED), apierror.FailedPrecondition)
	d, _ = v().GetDevserver("d1")
	h1, _ = v().GetHost("h1")
	h3, _ = v().GetHost("h3")
	if d.GetHost() != "h3" || d.GetState() != v1.DevserverState_DEVSERVER_STATE_RUNNING || h1.GetAllocated().GetVcpus() != 0 || h3.GetAllocated().GetVcpus() != 4 {
		t.Fatalf("after success: devserver on %s %s, h1 %v, h3 %v", d.GetHost(), d.GetState(), h1.GetAllocated(), h3.GetAllocated())
	}
	if err := v().CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

func TestMigrationAbortedLeavesTheSource(t *testing.T) {
	t.Parallel()
	h := migrationFleet(t)
	v := h.fsm.Store().View
	h.ok(cMigration("m1", "d1", "id-1", "h3"))
	h.refused(deleteCmd("host", "h3"), apierror.FailedPrecondition) // a move is headed there
	m := h.ok(&fsmv1.Command{Op: &fsmv1.Command_RequestMigrationAbort{RequestMigrationAbort: &fsmv1.RequestMigrationAbort{Id: "m1"}}}).(*v1.Migration)
	if !m.GetAbortRequested() {
		t.Fatalf("abort not recorded: %v", m)
	}
	h.ok(finish("m1", v1.MigrationPhase_MIGRATION_PHASE_ABORTED))
	h.refused(&fsmv1.Command{Op: &fsmv1.Command_RequestMigrationAbort{RequestMigrationAbort: &fsmv1.RequestMigrationAbort{Id: "m1"}}}, apierror.FailedPrecondition)
	d, _ := v().GetDevserver("d1")
	h3, _ := v().GetHost("h3")
	if d.GetHost() != "h1" || d.GetState() != v1.DevserverState_DEVSERVER_STATE_RUNNING || h3.GetAllocated().GetVcpus() != 0 {
		t.Fatalf("after abort: devserver on %s %s, h3 %v", d.GetHost(), d.GetState(), h3.GetAllocated())
	}
	if err := v().CheckInvariants(); err != nil {
		t.Fatal(err)
	}
	// A new move may start once the last one ended.
	h.ok(cMigration("m2", "d1", "id-1", "h3"))
}

func TestRetargetMovesTheHeldRoom(t *testing.T) {
	t.Parallel()
	h := migrationFleet(t)
	v := h.fsm.Store().View
	h.ok(cHost("h5", "eu-1"))
	h.ok(cMigration("m1", "d1", "id-1", "h3"))
	retarget := func(dest string) *fsmv1.Command {
		return &fsmv1.Command{Op: &fsmv1.Command_RetargetMigration{RetargetMigration: &fsmv1.RetargetMigration{Id: "m1", DestHost: dest, Reason: "h3 stopped answering"}}}
	}
	h.refused(retarget("h4"), apierror.FailedPrecondition) // cordoned
	h.refused(retarget("h1"), apierror.FailedPrecondition) // its own host
	m := h.ok(retarget("h5")).(*v1.Migration)
	h3, _ := v().GetHost("h3")
	h5, _ := v().GetHost("h5")
	if m.GetDestHost() != "h5" || h3.GetAllocated().GetVcpus() != 0 || h5.GetAllocated().GetVcpus() != 4 {
		t.Fatalf("after retarget: %v, h3 %v, h5 %v", m, h3.GetAllocated(), h5.GetAllocated())
	}
	if err := v().CheckInvariants(); err != nil {
		t.Fatal(err)
	}
	h.ok(&fsmv1.Command{Op: &fsmv1.Command_UpdateMigrations{UpdateMigrations: &fsmv1.UpdateMigrations{Updates: []*fsmv1.MigrationUpdate{
		{Id: "m1", Phase: v1.MigrationPhase_MIGRATION_PHASE_RUNNING}}}}})
	h.refused(retarget("h3"), apierror.FailedPrecondition) // mid-attempt
}

func cColdMigration(id, dest, region, flavor string) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_CreateMigration{CreateMigration: &fsmv1.CreateMigration{Migration: &v1.Migration{
		Id: id, Devserver: "d1", DevserverId: "id-1", DestHost: dest, DestRegion: region, DestFlavor: flavor,
		Reason: v1.MigrationReason_MIGRATION_REASON_USER, RequestedBy: "alice"}}}}
}

func fenceUpdate(id string, term uint64) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_UpdateMigrations{UpdateMigrations: &fsmv1.UpdateMigrations{Updates: []*fsmv1.MigrationUpdate{
		{Id: id, FenceTerm: term, ColdStep: v1.ColdStep_COLD_STEP_SHUTTING_DOWN}}}}}
}

// A resize in place holds the new size on the devserver's own host, and a move to another
// region lands it there; both are cold. Decisions of an older term than a migration's last are
// refused.
func TestColdResizeAndRegionMove(t *testing.T) {
	t.Parallel()
	h := migrationFleet(t)
	v := h.fsm.Store().View
	h.ok(cFlavor("large", 8, 16384))
	h.ok(&fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: &v1.Flavor{
		Name: "little-disk", Resources: res(1, 1024, 10, 0)}}}})
	h.refused(cColdMigration("m1", "h1", "", ""), apierror.FailedPrecondition)            // to itself, same flavor
	h.refused(cColdMigration("m1", "h2", "", ""), apierror.FailedPrecondition)            // another region, not asked
	h.refused(cColdMigration("m1", "h3", "", "little-disk"), apierror.FailedPrecondition) // its disk would not fit
	h.refused(cColdMigration("m1", "h3", "", "nope"), apierror.NotFound)
	h.refused(cColdMigration("m1", "h2", "mars", ""), apierror.NotFound)
	h.refused(cColdMigration("m1", "h3", "us", ""), apierror.FailedPrecondition) // h3 is in eu

	m := h.ok(cColdMigration("m1", "h1", "", "large")).(*v1.Migration)
	if !m.GetCold() || m.GetDestHost() != "h1" || m.GetDestFlavor() != "large" {
		t.Fatalf("resize recorded as %v", m)
	}
	if h1, _ := v().GetHost("h1"); h1.GetAllocated().GetVcpus() != 4+8 {
		t.Fatalf("h1 holds %v while resizing, want the old and the new size", h1.GetAllocated())
	}
	if err := v().CheckInvariants(); err != nil {
		t.Fatal(err)
	}
	h.ok(fenceUpdate("m1", 2))
	if m, _ := v().GetMigration("m1"); m.GetFenceTerm() != 2 || m.GetFenceIndex() != h.index || m.GetColdStep() != v1.ColdStep_COLD_STEP_SHUTTING_DOWN {
		t.Fatalf("fence after a decision: %v", m)
	}
	h.refused(fenceUpdate("m1", 1), apierror.FailedPrecondition) // a deposed leader's
	h.ok(finish("m1", v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED))
	d, _ := v().GetDevserver("d1")
	h1, _ := v().GetHost("h1")
	if d.GetFlavor() != "large" || d.GetHost() != "h1" || h1.GetAllocated().GetVcpus() != 8 {
		t.Fatalf("after the resize: devserver %s on %s, h1 %v", d.GetFlavor(), d.GetHost(), h1.GetAllocated())
	}

	h.ok(cColdMigration("m2", "h2", "us", ""))
	h.ok(finish("m2", v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED))
	d, _ = v().GetDevserver("d1")
	h1, _ = v().GetHost("h1")
	h2, _ := v().GetHost("h2")
	if d.GetRegion() != "us" || d.GetHost() != "h2" || d.GetSite() != "us-1" || h1.GetAllocated().GetVcpus() != 0 || h2.GetAllocated().GetVcpus() != 8 {
		t.Fatalf("after the region move: devserver %s/%s/%s, h1 %v, h2 %v", d.GetRegion(), d.GetSite(), d.GetHost(), h1.GetAllocated(), h2.GetAllocated())
	}
	if err := v().CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

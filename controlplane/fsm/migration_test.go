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

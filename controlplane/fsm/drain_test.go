package fsm

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/apierror"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func cDrain(id string, hosts ...string) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_StartDrain{StartDrain: &fsmv1.StartDrain{
		Drain: &v1.Drain{Id: id, Hosts: hosts, Reason: "disk swap", RequestedBy: "ops"},
		Items: []*v1.DrainItem{{Devserver: "d1", DevserverId: "id-1", SourceHost: "h1", DestHost: "h3", Kind: v1.DrainItemKind_DRAIN_ITEM_KIND_LIVE}},
	}}}
}

// A drain cordons its hosts in the same entry; a refused one changes nothing; a second drain of
// a host is refused naming the first; an ended drain can be neither cancelled nor extended.
func TestDrainLifecycleAndRefusals(t *testing.T) {
	t.Parallel()
	h := migrationFleet(t)
	v := h.fsm.Store().View
	h.refused(cDrain("dr-x", "h1", "ghost"), apierror.NotFound) // nothing cordoned: checked by refused
	h.refused(cDrain("dr-x"), apierror.InvalidArgument)
	past := cDrain("dr-x", "h1")
	past.GetStartDrain().Drain.Deadline = timestamppb.New(epoch)
	h.refused(past, apierror.InvalidArgument)
	noReason := cDrain("dr-x", "h1")
	noReason.GetStartDrain().Drain.Reason = " "
	h.refused(noReason, apierror.InvalidArgument)
	wrongHost := cDrain("dr-x", "h3")
	h.refused(wrongHost, apierror.InvalidArgument) // its item is on h1

	d := h.ok(cDrain("dr-1", "h1")).(*v1.Drain)
	if d.GetState() != v1.DrainState_DRAIN_STATE_RUNNING || d.GetItemsTotal() != 1 {
		t.Fatalf("started: %v", d)
	}
	if host, _ := v().GetHost("h1"); host.GetState() != v1.HostState_HOST_STATE_DRAINING {
		t.Fatalf("h1 is %s, want draining", host.GetState())
	}
	h.refused(cDrain("dr-2", "h1"), apierror.FailedPrecondition)                             // h1 is in dr-1
	h.refused(cordon("h1", "by hand"), apierror.FailedPrecondition)                          // a draining host
	h.refused(&fsmv1.Command{Op: &fsmv1.Command_ExtendDrain{ExtendDrain: &fsmv1.ExtendDrain{ // no deadline
		Id: "dr-1", By: durationpb.New(time.Hour)}}}, apierror.FailedPrecondition)

	h.ok(&fsmv1.Command{Op: &fsmv1.Command_UpdateDrain{UpdateDrain: &fsmv1.UpdateDrain{Id: "dr-1", Items: []*fsmv1.DrainItemUpdate{
		{Devserver: "d1", State: v1.DrainItemState_DRAIN_ITEM_STATE_MOVING, MigrationId: "m1", Attempts: 1, Event: "moving", Detail: "to h3"},
		{Devserver: "d1", State: v1.DrainItemState_DRAIN_ITEM_STATE_DONE, From: []v1.DrainItemState{v1.DrainItemState_DRAIN_ITEM_STATE_PENDING}}, // stale: skipped
	}}}})
	if d, _ := v().GetDrain("dr-1"); d.GetItemsMoving() != 1 || d.GetItemsDone() != 0 {
		t.Fatalf("counts after a move started: %v", d)
	}
	h.ok(&fsmv1.Command{Op: &fsmv1.Command_UpdateDrain{UpdateDrain: &fsmv1.UpdateDrain{Id: "dr-1", Items: []*fsmv1.DrainItemUpdate{
		{Devserver: "d1", State: v1.DrainItemState_DRAIN_ITEM_STATE_DONE, From: []v1.DrainItemState{v1.DrainItemState_DRAIN_ITEM_STATE_MOVING}, Event: "moved"}}}}})
	h.ok(&fsmv1.Command{Op: &fsmv1.Command_FinishDrain{FinishDrain: &fsmv1.FinishDrain{Id: "dr-1", State: v1.DrainState_DRAIN_STATE_SUCCEEDED}}})
	if host, _ := v().GetHost("h1"); host.GetState() != v1.HostState_HOST_STATE_DRAINED {
		t.Fatalf("h1 is %s after the drain, want drained", host.GetState())
	}
	h.refused(&fsmv1.Command{Op: &fsmv1.Command_RequestDrainCancel{RequestDrainCancel: &fsmv1.RequestDrainCancel{Id: "dr-1"}}}, apierror.FailedPrecondition)
	var kinds []string
	for _, e := range v().DrainEvents("dr-1") {
		kinds = append(kinds, e.GetKind())
	}
	if want := []string{"started", "cordoned", "moving", "moved", "finished"}; !slices.Equal(kinds, want) {
		t.Fatalf("timeline %v, want %v", kinds, want)
	}
	h.ok(uncordon("h1")) // back in service after maintenance
	if err := v().CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

package fsm

import (
	"bytes"
	"fmt"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func cManagedHost(name, site string) *fsmv1.Command {
	c := cHost(name, site)
	c.GetCreateHost().Host.LibvirtUri = "fake://" + name
	return c
}

func setState(name, id string, to v1.DevserverState, from ...v1.DevserverState) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_SetDevserverState{SetDevserverState: &fsmv1.SetDevserverState{
		Name: name, Id: id, State: to, Reason: "test", Domain: "dom-" + name, From: from}}}
}

func purge(name, id string) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_PurgeDevserver{PurgeDevserver: &fsmv1.PurgeDevserver{Name: name, Id: id}}}
}

func rehome(name, id, host string) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_RehomeDevserver{RehomeDevserver: &fsmv1.RehomeDevserver{Name: name, Id: id, Host: host, Reason: "guest vanished"}}}
}

// refused applies cmd, expects the error code, and checks that nothing changed.
func (h *harness) refused(cmd *fsmv1.Command, code apierror.Kind) {
	h.t.Helper()
	before := h.persisted()
	r := h.apply(cmd)
	if r.Err == nil {
		h.t.Fatalf("%s: accepted, want kind %d", TypeName(cmd), code)
	}
	if got := apierror.KindOf(r.Err); got != code {
		h.t.Fatalf("%s: %v (kind %d), want kind %d", TypeName(cmd), r.Err, got, code)
	}
	if !bytes.Equal(before, h.persisted()) {
		h.t.Fatalf("%s: refused but changed the state", TypeName(cmd))
	}
}

func TestDevserverLifecycleOnALibvirtHost(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	seed(h)
	h.ok(cManagedHost("m1", "eu-1"))
	h.ok(cManagedHost("m2", "eu-1"))
	h.ok(cDevserver("d2", "bob", "small", "eu", "m1", "id-2"))
	v := h.fsm.Store().View

	// The provisioner's reports apply only to the same devserver and from the expected state.
	h.refused(setState("d2", "id-other", v1.DevserverState_DEVSERVER_STATE_RUNNING), apierror.FailedPrecondition)
	h.refused(setState("d2", "id-2", v1.DevserverState_DEVSERVER_STATE_RUNNING, v1.DevserverState_DEVSERVER_STATE_STOPPED), apierror.FailedPrecondition)
	d := h.ok(setState("d2", "id-2", v1.DevserverState_DEVSERVER_STATE_RUNNING, v1.DevserverState_DEVSERVER_STATE_PROVISIONING)).(*v1.Devserver)
	if d.GetState() != v1.DevserverState_DEVSERVER_STATE_RUNNING || d.GetDomain() != "dom-d2" {
		t.Fatalf("after running: %v", d)
	}

	// A lost devserver is rehomed only where it fits, and its room moves with it.
	h.refused(rehome("d2", "id-2", "m2"), apierror.FailedPrecondition) // not lost
	h.ok(setState("d2", "id-2", v1.DevserverState_DEVSERVER_STATE_LOST))
	h.refused(rehome("d2", "id-2", "h2"), apierror.InvalidArgument) // other region
	h.refused(rehome("d2", "id-2", "nope"), apierror.NotFound)
	d = h.ok(rehome("d2", "id-2", "m2")).(*v1.Devserver)
	if d.GetHost() != "m2" || d.GetState() != v1.DevserverState_DEVSERVER_STATE_PROVISIONING || d.GetRepairs() != 1 || d.GetDomain() != "" {
		t.Fatalf("after rehome: %v", d)
	}
	m1, _ := v().GetHost("m1")
	m2, _ := v().GetHost("m2")
	if m1.GetAllocated().GetVcpus() != 0 || m2.GetAllocated().GetVcpus() != 4 {
		t.Fatalf("room did not move: m1 %v, m2 %v", m1.GetAllocated(), m2.GetAllocated())
	}

	// Deleting on a libvirt host marks; the name stays taken until the purge frees it and its room.
	d = h.ok(deleteCmd("devserver", "d2")).(*v1.Devserver)
	if d.GetDeleteTime() == nil || d.GetState() != v1.DevserverState_DEVSERVER_STATE_DELETED {
		t.Fatalf("after delete: %v", d)
	}
	h.ok(deleteCmd("devserver", "d2")) // asking again is fine
	h.refused(cDevserver("d2", "bob", "small", "eu", "m1", "id-3"), apierror.FailedPrecondition)
	h.refused(setState("d2", "id-2", v1.DevserverState_DEVSERVER_STATE_RUNNING), apierror.FailedPrecondition)
	h.refused(&fsmv1.Command{Op: &fsmv1.Command_UpdateDevserver{UpdateDevserver: &fsmv1.UpdateDevserver{
		Devserver: &v1.Devserver{Name: "d2", Power: v1.Power_POWER_OFF}, UpdateMask: mask("power")}}}, apierror.FailedPrecondition)
	h.refused(purge("d2", "id-9"), apierror.FailedPrecondition)
	h.ok(purge("d2", "id-2"))
	if m2, _ := v().GetHost("m2"); m2.GetAllocated().GetVcpus() != 0 {
		t.Fatalf("purge did not free the room: %v", m2.GetAllocated())
	}
	h.ok(cDevserver("d2", "bob", "small", "eu", "m1", "id-3"))

	// A devserver on a host without libvirt goes at once, and a live one cannot be purged.
	h.refused(purge("d1", "id-1"), apierror.FailedPrecondition)
	if got := h.ok(deleteCmd("devserver", "d1")); got != (*v1.Devserver)(nil) {
		t.Fatalf("delete on an unmanaged host returned %v", got)
	}
	if _, err := v().GetDevserver("d1"); apierror.KindOf(err) != apierror.NotFound {
		t.Fatalf("d1 still there: %v", err)
	}

	// Power is a command-only path.
	d = h.ok(&fsmv1.Command{Op: &fsmv1.Command_UpdateDevserver{UpdateDevserver: &fsmv1.UpdateDevserver{
		Devserver: &v1.Devserver{Name: "d2", Power: v1.Power_POWER_OFF}, UpdateMask: mask("power")}}}).(*v1.Devserver)
	if d.GetPower() != v1.Power_POWER_OFF {
		t.Fatalf("power not recorded: %v", d)
	}

	// The libvirt URI of a host with devservers cannot change under them.
	h.refused(&fsmv1.Command{Op: &fsmv1.Command_UpdateHost{UpdateHost: &fsmv1.UpdateHost{
		Host: &v1.Host{Name: "m1", LibvirtUri: "fake://other"}, UpdateMask: mask("libvirt_uri")}}}, apierror.FailedPrecondition)
}

func TestHostHealthReports(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	seed(h)
	report := func(rs ...*fsmv1.HostHealthReport) *fsmv1.Command {
		return &fsmv1.Command{Op: &fsmv1.Command_ReportHostHealth{ReportHostHealth: &fsmv1.ReportHostHealth{Reports: rs}}}
	}
	seen := timestamppb.New(epoch)
	h.ok(report(
		&fsmv1.HostHealthReport{Host: "h1", Health: v1.HostHealth_HOST_HEALTH_HEALTHY, LastSeenTime: seen},
		&fsmv1.HostHealthReport{Host: "h2", Health: v1.HostHealth_HOST_HEALTH_UNHEALTHY, Reason: "dial unix: connection refused"},
		&fsmv1.HostHealthReport{Host: "gone", Health: v1.HostHealth_HOST_HEALTH_HEALTHY},
	))
	v := h.fsm.Store().View()
	h1, _ := v.GetHost("h1")
	h2, _ := v.GetHost("h2")
	if h1.GetHealth() != v1.HostHealth_HOST_HEALTH_HEALTHY || !h1.GetLastSeenTime().AsTime().Equal(epoch) {
		t.Fatalf("h1: %v", h1)
	}
	if h2.GetHealth() != v1.HostHealth_HOST_HEALTH_UNHEALTHY || h2.GetHealthReason() != "dial unix: connection refused" {
		t.Fatalf("h2: %v", h2)
	}
	// An older report does not move last-seen backwards; a bad one changes nothing.
	h.ok(report(&fsmv1.HostHealthReport{Host: "h1", Health: v1.HostHealth_HOST_HEALTH_HEALTHY, LastSeenTime: timestamppb.New(epoch.Add(-1))}))
	if h1, _ := h.fsm.Store().View().GetHost("h1"); !h1.GetLastSeenTime().AsTime().Equal(epoch) {
		t.Fatalf("last seen went backwards: %v", h1.GetLastSeenTime())
	}
	h.refused(report(&fsmv1.HostHealthReport{Host: "h1", Health: 99}), apierror.InvalidArgument)
}

func TestNoticesKeepTheNewestPerOwner(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	notice := func(id, owner string) *fsmv1.Command {
		return &fsmv1.Command{Op: &fsmv1.Command_CreateNotice{CreateNotice: &fsmv1.CreateNotice{Notice: &v1.Notice{
			Id: id, Owner: owner, Kind: v1.NoticeKind_NOTICE_KIND_LOST, Subject: "d1", Message: "guest vanished"}}}}
	}
	for i := range 105 {
		h.ok(notice(fmt.Sprintf("n%03d", i), "alice"))
	}
	h.ok(notice("b1", "bob"))
	h.refused(notice("n104", "alice"), apierror.AlreadyExists)
	h.refused(notice("", "alice"), apierror.InvalidArgument)
	ns := h.fsm.Store().View().NoticesOf("alice")
	if len(ns) != 100 || ns[0].GetId() != "n104" || ns[99].GetId() != "n005" {
		t.Fatalf("got %d notices, first %s, last %s", len(ns), ns[0].GetId(), ns[len(ns)-1].GetId())
	}
}

// seedContainers adds profile www, a pool of 2 in eu and one warm container c-1 on h1.
func seedContainers(h *harness) {
	h.ok(&fsmv1.Command{Op: &fsmv1.Command_CreateProfile{CreateProfile: &fsmv1.CreateProfile{Profile: &v1.ContainerProfile{Name: "www", Vcpus: 2, MemoryMib: 2048}}}})
	h.ok(&fsmv1.Command{Op: &fsmv1.Command_SetPool{SetPool: &fsmv1.SetPool{Pool: &v1.ContainerPool{Region: "eu", Profile: "www", Target: 2}}}})
	h.ok(&fsmv1.Command{Op: &fsmv1.Command_CreateContainer{CreateContainer: &fsmv1.CreateContainer{Container: &v1.Container{
		Name: "c-1", Id: "cid-1", Profile: "www", Region: "eu", Host: "h1"}}}})
}

func TestContainerLifecycle(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	seed(h)
	seedContainers(h)
	v := h.fsm.Store().View
	claim := func(name, owner string) *fsmv1.Command {
		return &fsmv1.Command{Op: &fsmv1.Command_ClaimContainer{ClaimContainer: &fsmv1.ClaimContainer{Name: name, Owner: owner}}}
	}
	running := &fsmv1.Command{Op: &fsmv1.Command_SetContainerState{SetContainerState: &fsmv1.SetContainerState{
		Name: "c-1", Id: "cid-1", State: v1.ContainerState_CONTAINER_STATE_RUNNING, Reason: "up",
		From: []v1.ContainerState{v1.ContainerState_CONTAINER_STATE_PROVISIONING}}}}

	if got, _ := v().GetHost("h1"); got.GetAllocated().GetVcpus() != 4+2 {
		t.Fatalf("h1 allocation with d1 and c-1: %v", got.GetAllocated())
	}
	h.refused(claim("c-1", "bob"), apierror.FailedPrecondition) // still being made
	h.ok(running)
	h.refused(running, apierror.FailedPrecondition) // from-state guard
	c := h.ok(claim("c-1", "bob")).(*v1.Container)
	if c.GetClaimedBy() != "bob" || !c.GetExpireTime().AsTime().Equal(c.GetClaimTime().AsTime().Add(state.DefaultContainerTTL)) {
		t.Fatalf("claimed: %v", c)
	}
	h.refused(claim("c-1", "carol"), apierror.FailedPrecondition) // never handed out twice
	h.refused(claim("nope", "carol"), apierror.NotFound)
	h.refused(&fsmv1.Command{Op: &fsmv1.Command_DeleteProfile{DeleteProfile: &fsmv1.DeleteProfile{Name: "www"}}}, apierror.FailedPrecondition)
	h.refused(deleteCmd("host", "h1"), apierror.FailedPrecondition)
	h.refused(&fsmv1.Command{Op: &fsmv1.Command_PurgeContainer{PurgeContainer: &fsmv1.PurgeContainer{Name: "c-1", Id: "cid-1"}}}, apierror.FailedPrecondition)
	h.ok(release("c-1"))
	h.ok(release("c-1")) // again: nothing changes
	h.ok(&fsmv1.Command{Op: &fsmv1.Command_PurgeContainer{PurgeContainer: &fsmv1.PurgeContainer{Name: "c-1", Id: "cid-1"}}})
	if got, _ := v().GetHost("h1"); got.GetAllocated().GetVcpus() != 4 {
		t.Fatalf("h1 allocation after the purge: %v", got.GetAllocated())
	}
	// A container that does not fit is refused with NO_ROOM, like a devserver.
	h.ok(&fsmv1.Command{Op: &fsmv1.Command_CreateProfile{CreateProfile: &fsmv1.CreateProfile{Profile: &v1.ContainerProfile{Name: "huge", Vcpus: 64, MemoryMib: 2048}}}})
	r := h.apply(&fsmv1.Command{Op: &fsmv1.Command_CreateContainer{CreateContainer: &fsmv1.CreateContainer{Container: &v1.Container{
		Name: "c-2", Id: "cid-2", Profile: "huge", Region: "eu", Host: "h1", ClaimedBy: "bob"}}}})
	if !apierror.HasCode(r.Err, apierror.CodeNoRoom) {
		t.Fatalf("oversized container: %v", r.Err)
	}
	h.refused(&fsmv1.Command{Op: &fsmv1.Command_SetPool{SetPool: &fsmv1.SetPool{Pool: &v1.ContainerPool{Region: "eu", Profile: "www", Target: -1}}}}, apierror.InvalidArgument)
	h.ok(&fsmv1.Command{Op: &fsmv1.Command_SetPool{SetPool: &fsmv1.SetPool{Pool: &v1.ContainerPool{Region: "eu", Profile: "www", Target: 0}}}})
	if len(v().Pools()) != 0 {
		t.Fatal("a pool set to 0 was kept")
	}
	h.ok(&fsmv1.Command{Op: &fsmv1.Command_DeleteProfile{DeleteProfile: &fsmv1.DeleteProfile{Name: "www"}}})
}

func release(name string) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_ReleaseContainer{ReleaseContainer: &fsmv1.ReleaseContainer{Name: name, Reason: "released by its owner"}}}
}

// An update with a stale expected_modify_index is refused as Aborted and changes nothing; with
// the current one it applies.
func TestUpdateDevserverCompareAndSet(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	seed(h)
	d, _ := h.fsm.Store().View().GetDevserver("d1")
	update := func(expected uint64, sharer string) *fsmv1.Command {
		return &fsmv1.Command{Op: &fsmv1.Command_UpdateDevserver{UpdateDevserver: &fsmv1.UpdateDevserver{
			Devserver: &v1.Devserver{Name: "d1", Sharers: []string{sharer}}, UpdateMask: mask("sharers"), ExpectedModifyIndex: expected}}}
	}
	h.refused(update(d.GetModifyIndex()+1, "bob"), apierror.Aborted)
	got := h.ok(update(d.GetModifyIndex(), "bob")).(*v1.Devserver)
	h.refused(update(d.GetModifyIndex(), "carol"), apierror.Aborted) // read before bob's change
	if got.GetSharers()[0] != "bob" {
		t.Fatalf("sharers: %v", got.GetSharers())
	}
	h.ok(update(0, "carol")) // no expectation: last writer wins, as before
}

package decom

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/fsm/fsmtest"
	"github.com/devfleet/devfleet/controlplane/hypervisor"
	"github.com/devfleet/devfleet/controlplane/state"
	"github.com/devfleet/devfleet/drain"
	"github.com/devfleet/devfleet/migrate"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// fleet: region eu, site eu-1, in-memory hosts m1..m3, flavor small; the migration, drain and
// decommission controllers run on it, as on a leader.
func fleet(t *testing.T) (*fsmtest.Applier, *state.Store, *hypervisor.Connector) {
	t.Helper()
	raft, st := fsmtest.New(nil)
	conn := hypervisor.NewConnector(hypervisor.Options{AllowFake: true, PingInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { conn.Close() })
	raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_CreateRegion{CreateRegion: &fsmv1.CreateRegion{Region: &v1.Region{Name: "eu"}}}})
	raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_CreateSite{CreateSite: &fsmv1.CreateSite{Site: &v1.Site{Name: "eu-1", Region: "eu"}}}})
	for _, h := range []string{"m1", "m2", "m3"} {
		raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_CreateHost{CreateHost: &fsmv1.CreateHost{Host: &v1.Host{Name: h, Site: "eu-1",
			LibvirtUri: "fake://" + h, Capacity: &v1.Resources{Vcpus: 64, MemoryMib: 262144, DiskGib: 100}}}}})
	}
	raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: &v1.Flavor{
		Name: "small", Resources: &v1.Resources{Vcpus: 1, MemoryMib: 512}}}}})
	for i := range 3 {
		name, id := fmt.Sprintf("d%d", i), fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_CreateDevserver{CreateDevserver: &fsmv1.CreateDevserver{Devserver: &v1.Devserver{
			Name: name, Id: id, Owner: "alice", Flavor: "small", Region: "eu", Host: "m1", Lifespan: v1.Lifespan_LIFESPAN_PERMANENT}}}})
		m1, _ := conn.Fake("fake://m1")
		if _, err := m1.DefineAndStart(context.Background(), hypervisor.DomainSpec{Name: name, UUID: id, VCPUs: 1, MemoryMiB: 512,
			Metadata: hypervisor.Metadata{Kind: hypervisor.InstanceDevserver, ID: id, Owner: "alice", Flavor: "small"}}); err != nil {
			t.Fatal(err)
		}
		raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_SetDevserverState{SetDevserverState: &fsmv1.SetDevserverState{
			Name: name, Id: id, State: v1.DevserverState_DEVSERVER_STATE_RUNNING, Reason: "up"}}})
	}
	idx := capacity.NewIndex()
	st.Observe(idx)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = migrate.New(migrate.Config{Store: st, Raft: raft, Leader: raft, Hypervisors: conn, Placer: idx, Sample: 20 * time.Millisecond}).Run(ctx)
	})
	wg.Go(func() {
		_ = drain.New(drain.Config{Store: st, Raft: raft, Placer: idx, Tick: 20 * time.Millisecond}).Run(ctx)
	})
	wg.Go(func() {
		_ = New(Config{Store: st, Raft: raft, Hypervisors: conn, Tick: 20 * time.Millisecond}).Run(ctx)
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return raft, st, conn
}

func waitDecom(t *testing.T, st *state.Store, id string, want v1.DecomState) *v1.Decom {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		d, err := st.View().GetDecom(id)
		if err == nil && d.GetState() == want {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("decommission %s: %v at %v (%s), want %s", id, d.GetState(), d.GetStep(), d.GetStateReason(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A decommission runs every step: the owners are told, the devservers move, leftovers on the
// host (a stray domain, a stray volume) are wiped, and the host is retired.
func TestDecommissionEndToEnd(t *testing.T) {
	t.Parallel()
	raft, st, conn := fleet(t)
	m1, _ := conn.Fake("fake://m1")
	if _, err := m1.DefineAndStart(context.Background(), hypervisor.DomainSpec{Name: "stray", VCPUs: 1, MemoryMiB: 128,
		Metadata: hypervisor.Metadata{Kind: hypervisor.InstanceDevserver, ID: "11111111-1111-4111-8111-111111111111"}}); err != nil {
		t.Fatal(err)
	}
	if err := m1.Destroy(context.Background(), "stray"); err != nil { // shut off: a leftover, not someone's running work
		t.Fatal(err)
	}
	if err := m1.PrepareVolume(context.Background(), hypervisor.Volume{Name: "old.raw", Capacity: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_StartDecom{StartDecom: &fsmv1.StartDecom{Decom: &v1.Decom{
		Id: "dc-1", Hosts: []string{"m1"}, Reason: "end of life", RequestedBy: "ops"}}}})
	d := waitDecom(t, st, "dc-1", v1.DecomState_DECOM_STATE_SUCCEEDED)
	var steps []v1.DecomStep
	for _, s := range d.GetSteps() {
		if s.GetEndTime() == nil {
			t.Fatalf("step %s has no end: %v", s.GetStep(), d)
		}
		steps = append(steps, s.GetStep())
	}
	if len(steps) != 6 || steps[0] != v1.DecomStep_DECOM_STEP_ANNOUNCE || steps[5] != v1.DecomStep_DECOM_STEP_RETIRE {
		t.Fatalf("steps %v", steps)
	}
	v := st.View()
	if h, _ := v.GetHost("m1"); h.GetState() != v1.HostState_HOST_STATE_RETIRED {
		t.Fatalf("m1 is %s, want retired", h.GetState())
	}
	if doms, _ := m1.List(context.Background()); len(doms) != 0 {
		t.Fatalf("m1 still has domains %v", doms)
	}
	if vols := m1.Volumes(); len(vols) != 0 {
		t.Fatalf("m1 still has volumes %v", vols)
	}
	for i := range 3 {
		name := fmt.Sprintf("d%d", i)
		if dev, _ := v.GetDevserver(name); dev.GetHost() == "m1" || dev.GetState() != v1.DevserverState_DEVSERVER_STATE_RUNNING {
			t.Fatalf("after the decommission: %v", dev)
		}
		if _, err := v.GetNotice("decom-dc-1-" + name); err != nil {
			t.Fatalf("%s's owner was not told: %v", name, err)
		}
	}
	// A retired host takes nothing, and cannot be decommissioned again.
	r, _ := raft.Propose(context.Background(), &fsmv1.Command{Op: &fsmv1.Command_StartDecom{StartDecom: &fsmv1.StartDecom{Decom: &v1.Decom{
		Id: "dc-2", Hosts: []string{"m1"}, Reason: "again", RequestedBy: "ops"}}}})
	if r.Err == nil {
		t.Fatal("decommissioning a retired host was accepted")
	}
}

// An abort during the announce period ends the decommission; nothing moved; an abort after
// the wipe started is refused.
func TestDecommissionAbort(t *testing.T) {
	t.Parallel()
	raft, st, _ := fleet(t)
	raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_StartDecom{StartDecom: &fsmv1.StartDecom{Decom: &v1.Decom{
		Id: "dc-1", Hosts: []string{"m1"}, Reason: "end of life", RequestedBy: "ops", AnnounceUntil: timestamppb.New(time.Now().Add(time.Hour))}}}})
	// A drain of its host by anyone else is refused while it runs.
	r, _ := raft.Propose(context.Background(), &fsmv1.Command{Op: &fsmv1.Command_StartDrain{StartDrain: &fsmv1.StartDrain{Drain: &v1.Drain{
		Id: "dr-x", Hosts: []string{"m1"}, Reason: "other", RequestedBy: "ops"}}}})
	if r.Err == nil {
		t.Fatal("a drain of a host being decommissioned was accepted")
	}
	raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_RequestDecomAbort{RequestDecomAbort: &fsmv1.RequestDecomAbort{Id: "dc-1"}}})
	waitDecom(t, st, "dc-1", v1.DecomState_DECOM_STATE_ABORTED)
	for i := range 3 {
		if dev, _ := st.View().GetDevserver(fmt.Sprintf("d%d", i)); dev.GetHost() != "m1" {
			t.Fatalf("after the abort: %v", dev)
		}
	}
}

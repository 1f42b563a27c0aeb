package drain

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/hypervisor"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
	"github.com/devfleet/devfleet/provisioner"
)

// withProvisioner runs the provisioner (health reports, repairs, the fence on return) and an
// evacuation controller beside the fixture's controllers.
func (f *fixture) withEvacuation(after time.Duration, brake float64) *Evacuation {
	idx := capacity.NewIndex()
	f.store.Observe(idx)
	ev := NewEvacuation(EvacuatorConfig{Store: f.store, Raft: f.raft, Hypervisors: f.conn, After: after, Brake: brake, Tick: 20 * time.Millisecond})
	prov := provisioner.New(provisioner.Config{Store: f.store, Raft: f.raft, Hypervisors: f.conn, Placer: idx, Resync: 100 * time.Millisecond,
		RetryMin: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = ev.Run(ctx) })
	wg.Go(func() {
		if err := prov.Run(ctx); err != nil {
			f.t.Errorf("provisioner: %v", err)
		}
	})
	f.mu.Lock()
	f.stops = append(f.stops, func() { cancel(); wg.Wait() })
	f.mu.Unlock()
	return ev
}

func (f *fixture) petFlavor() {
	f.must(&fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: &v1.Flavor{
		Name: "pet", Repair: v1.RepairPolicy_REPAIR_POLICY_RECREATE, Resources: &v1.Resources{Vcpus: 1, MemoryMib: 512}}}}})
}

// A host unreachable beyond the grace is fenced and evacuated: its devservers are recreated
// elsewhere; when it answers again its leftover guests are powered off before anything else,
// so no devserver ever runs twice, and it stays cordoned.
func TestUnreachableHostIsFencedAndEvacuated(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.petFlavor()
	for i := range 3 {
		f.devserver(fmt.Sprintf("d%d", i), "m1", "pet")
	}
	f.lead("n1")
	f.withEvacuation(300*time.Millisecond, 0.3)
	f.host("m1").DropConnection()
	var dr *v1.Drain
	waitFor(t, "an evacuation of m1", func() bool {
		for _, d := range f.store.View().Drains() {
			if d.GetEvacuation() && slices.Contains(d.GetHosts(), "m1") {
				dr = d
				return true
			}
		}
		return false
	})
	f.waitDrain(dr.GetId(), v1.DrainState_DRAIN_STATE_SUCCEEDED)
	v := f.store.View()
	for i := range 3 {
		if d, _ := v.GetDevserver(fmt.Sprintf("d%d", i)); d.GetHost() == "m1" || d.GetState() != v1.DevserverState_DEVSERVER_STATE_RUNNING {
			t.Fatalf("after the evacuation: %v", d)
		}
	}
	if h, _ := v.GetHost("m1"); h.GetFencedTime() == nil {
		t.Fatalf("m1 is not fenced: %v", h)
	}
	// m1 answers again: its old guests still run there until the fence powers them off.
	f.host("m1").RestoreConnection()
	waitFor(t, "the fence lifted", func() bool {
		h, _ := f.store.View().GetHost("m1")
		return h.GetFencedTime() == nil
	})
	for i := range 3 {
		name := fmt.Sprintf("d%d", i)
		if dom, err := f.host("m1").Lookup(context.Background(), name); err == nil && dom.State == hypervisor.StateRunning {
			t.Fatalf("%s's old guest still runs on m1", name)
		}
	}
	f.runsOnly("d0", "d1", "d2")
	if h, _ := f.store.View().GetHost("m1"); h.GetState() == v1.HostState_HOST_STATE_ACTIVE {
		t.Fatalf("m1 returned to service by itself: %v", h)
	}
}

// When more than the brake's share of a site's hosts are unreachable at once, nothing is
// evacuated there, and the controller says why.
func TestEvacuationBrake(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.petFlavor()
	f.devserver("d0", "m1", "pet")
	f.devserver("d1", "m2", "pet")
	f.lead("n1")
	ev := f.withEvacuation(100*time.Millisecond, 0.3)
	f.host("m1").DropConnection()
	f.host("m2").DropConnection() // 2 of 4 hosts of eu-1: 50%
	waitFor(t, "the brake", func() bool { _, ok := ev.Paused()["eu-1"]; return ok })
	time.Sleep(500 * time.Millisecond) // well past the grace
	for _, d := range f.store.View().Drains() {
		t.Fatalf("an evacuation started despite the brake: %v", d)
	}
	if why := ev.Paused()["eu-1"]; why == "" {
		t.Fatal("no reason for the pause")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

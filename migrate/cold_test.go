package migrate

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/hypervisor"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// withRegionUS adds region us, site us-1, host u1 and flavor disk-big (2 vCPUs, 1 GiB, 2 GiB
// disk) to the fixture.
func (f *fixture) withRegionUS() {
	f.t.Helper()
	f.raft.Must(f.t, &fsmv1.Command{Op: &fsmv1.Command_CreateRegion{CreateRegion: &fsmv1.CreateRegion{Region: &v1.Region{Name: "us"}}}})
	f.raft.Must(f.t, &fsmv1.Command{Op: &fsmv1.Command_CreateSite{CreateSite: &fsmv1.CreateSite{Site: &v1.Site{Name: "us-1", Region: "us"}}}})
	f.raft.Must(f.t, &fsmv1.Command{Op: &fsmv1.Command_CreateHost{CreateHost: &fsmv1.CreateHost{Host: &v1.Host{Name: "u1", Site: "us-1",
		LibvirtUri: "fake://u1", Capacity: &v1.Resources{Vcpus: 64, MemoryMib: 262144, DiskGib: 100}}}}})
	f.raft.Must(f.t, &fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: &v1.Flavor{
		Name: "disk-big", Resources: &v1.Resources{Vcpus: 2, MemoryMib: 1024, DiskGib: 2}}}}})
}

// coldMigrate records a cold move of d to dest (another region or flavor when given).
func (f *fixture) coldMigrate(id string, d *v1.Devserver, dest, region, flavor string, policy *v1.MigrationPolicy) {
	f.t.Helper()
	f.raft.Must(f.t, &fsmv1.Command{Op: &fsmv1.Command_CreateMigration{CreateMigration: &fsmv1.CreateMigration{Migration: &v1.Migration{
		Id: id, Devserver: d.GetName(), DevserverId: d.GetId(), DestHost: dest, DestRegion: region, DestFlavor: flavor, Cold: true,
		Reason: v1.MigrationReason_MIGRATION_REASON_USER, RequestedBy: "alice", Policy: policy}}}})
}

// where lists the hosts on which the guest name is defined, with its state.
func (f *fixture) where(name string, hosts ...string) map[string]hypervisor.State {
	f.t.Helper()
	out := map[string]hypervisor.State{}
	for _, h := range hosts {
		if d, err := f.host(h).Lookup(context.Background(), name); err == nil {
			out[h] = d.State
		}
	}
	return out
}

var marker = []byte("devfleet keeps your disk")

// A move to another region is cold: the guest is shut down, its disk copied (data and all), and
// it runs on the destination only, with the record following it.
func TestColdMoveToAnotherRegionCopiesTheDisk(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Limits{})
	f.withRegionUS()
	d := f.devserverOf("d1", "m1", "disk")
	if err := f.host("m1").WriteVolumeAt("d1.raw", 5<<20, marker); err != nil {
		t.Fatal(err)
	}
	f.coldMigrate("mig-1", d, "u1", "us", "", nil)
	m := f.waitPhase("mig-1", v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED)
	if w := f.where("d1", "m1", "u1"); len(w) != 1 || w["u1"] != hypervisor.StateRunning {
		t.Fatalf("guest after the move: %v, want running on u1 only", w)
	}
	got, err := f.host("u1").ReadVolumeAt("d1.raw", 5<<20, len(marker))
	if err != nil || !bytes.Equal(got, marker) {
		t.Fatalf("the disk's data on u1: %q, %v", got, err)
	}
	if vols := f.host("m1").Volumes(); len(vols) != 0 {
		t.Fatalf("m1 kept volumes %v", vols)
	}
	rec, _ := f.store.View().GetDevserver("d1")
	if rec.GetHost() != "u1" || rec.GetRegion() != "us" || rec.GetSite() != "us-1" || rec.GetState() != v1.DevserverState_DEVSERVER_STATE_RUNNING {
		t.Fatalf("devserver after the move: %v", rec)
	}
	if !m.GetCold() || m.GetProgress().GetDiskTotalBytes() != 1<<30 || m.GetFenceTerm() != 1 || m.GetFenceIndex() == 0 {
		t.Fatalf("migration record: %v", m)
	}
	if err := f.store.View().CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

// A resize on its own host redefines the guest with the bigger flavor (and disk) and starts it
// again; the host's room follows.
func TestColdResizeInPlace(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Limits{})
	f.withRegionUS()
	d := f.devserverOf("d1", "m1", "disk")
	if err := f.host("m1").WriteVolumeAt("d1.raw", 0, marker); err != nil {
		t.Fatal(err)
	}
	f.coldMigrate("mig-1", d, "m1", "", "disk-big", nil)
	f.waitPhase("mig-1", v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED)
	dom, err := f.host("m1").Lookup(context.Background(), "d1")
	if err != nil || dom.State != hypervisor.StateRunning || dom.VCPUs != 2 || dom.MemoryMiB != 1024 || dom.Metadata.Flavor != "disk-big" {
		t.Fatalf("guest after the resize: %+v, %v", dom, err)
	}
	if vols := f.host("m1").Volumes(); vols["d1.raw"] != 2 { // GiB
		t.Fatalf("volumes after the resize: %v, want d1.raw of 2 GiB", vols)
	}
	if got, _ := f.host("m1").ReadVolumeAt("d1.raw", 0, len(marker)); !bytes.Equal(got, marker) {
		t.Fatalf("the disk's data after the resize: %q", got)
	}
	rec, _ := f.store.View().GetDevserver("d1")
	h, _ := f.store.View().GetHost("m1")
	if rec.GetFlavor() != "disk-big" || rec.GetHost() != "m1" || h.GetAllocated().GetVcpus() != 2 || h.GetAllocated().GetMemoryMib() != 1024 {
		t.Fatalf("after the resize: devserver %v, host allocated %v", rec, h.GetAllocated())
	}
	if err := f.store.View().CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

// When every live attempt fails and the policy allows it, the move goes cold and succeeds.
func TestColdFallbackAfterLiveAttempts(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Limits{})
	d := f.devserverOf("d1", "m1", "disk")
	for range 2 {
		f.host("m2").FailNext(hypervisor.OpMigrateIncoming, errors.New("injected: destination refuses live"))
	}
	f.migrate("mig-1", d, "m2", &v1.MigrationPolicy{MaxAttempts: 2, ColdFallback: true})
	m := f.waitPhase("mig-1", v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED)
	if !m.GetCold() || m.GetAttempts() != 2 {
		t.Fatalf("migration: cold %v, attempts %d; want cold after 2 live attempts", m.GetCold(), m.GetAttempts())
	}
	if w := f.where("d1", "m1", "m2"); len(w) != 1 || w["m2"] != hypervisor.StateRunning {
		t.Fatalf("guest after the move: %v, want running on m2 only", w)
	}
}

// A cold move whose destination keeps refusing to start the guest gives up and starts the guest
// on its source again; the half-made copy is removed.
func TestColdMoveThatFailsRestoresTheSource(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Limits{})
	d := f.devserverOf("d1", "m1", "disk")
	for range 2 {
		f.host("m2").FailNext(hypervisor.OpDefineAndStart, errors.New("injected: no start"))
	}
	f.coldMigrate("mig-1", d, "m2", "", "", &v1.MigrationPolicy{MaxAttempts: 2})
	m := f.waitPhase("mig-1", v1.MigrationPhase_MIGRATION_PHASE_FAILED)
	if w := f.where("d1", "m1", "m2"); len(w) != 1 || w["m1"] != hypervisor.StateRunning {
		t.Fatalf("guest after the failed move: %v, want running on m1 only", w)
	}
	if vols := f.host("m2").Volumes(); len(vols) != 0 {
		t.Fatalf("m2 kept volumes %v", vols)
	}
	rec, _ := f.store.View().GetDevserver("d1")
	if rec.GetHost() != "m1" || rec.GetState() != v1.DevserverState_DEVSERVER_STATE_RUNNING {
		t.Fatalf("devserver: %v (migration: %s)", rec, m.GetFailureReason())
	}
	if err := f.store.View().CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

// An abort during the disk copy stops it, and the guest runs on its source again.
func TestColdAbortDuringTheCopy(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Limits{})
	d := f.devserverOf("d1", "m1", "disk")
	f.host("m2").HangNext(hypervisor.OpUploadVolume)
	if err := f.host("m1").WriteVolumeAt("d1.raw", 0, marker); err != nil {
		t.Fatal(err)
	}
	f.coldMigrate("mig-1", d, "m2", "", "", nil)
	waitFor(t, "the copy to start", func() bool {
		m, _ := f.store.View().GetMigration("mig-1")
		return m.GetColdStep() == v1.ColdStep_COLD_STEP_COPYING_DISK
	})
	f.raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_RequestMigrationAbort{RequestMigrationAbort: &fsmv1.RequestMigrationAbort{Id: "mig-1"}}})
	f.waitPhase("mig-1", v1.MigrationPhase_MIGRATION_PHASE_ABORTED)
	if w := f.where("d1", "m1", "m2"); len(w) != 1 || w["m1"] != hypervisor.StateRunning {
		t.Fatalf("guest after the abort: %v, want running on m1 only", w)
	}
}

// A leader deposed in the middle of a cold move does nothing more on the hosts; the next leader
// finishes the move from where it is, and exactly one copy runs.
func TestColdMoveFencesADeposedLeader(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Limits{})
	d := f.devserverOf("d1", "m1", "disk")
	f.host("m2").HangNext(hypervisor.OpPrepareVolume) // holds the old leader inside the copy step
	f.coldMigrate("mig-1", d, "m2", "", "", nil)
	waitFor(t, "the copy to start", func() bool {
		m, _ := f.store.View().GetMigration("mig-1")
		return m.GetColdStep() == v1.ColdStep_COLD_STEP_COPYING_DISK
	})
	f.raft.SetTerm(2) // an election: the running controller now acts for a deposed leader
	defines := f.host("m2").Calls(hypervisor.OpDefineAndStart)
	f.host("m2").DropConnection() // releases the hung call
	f.host("m2").RestoreConnection()
	time.Sleep(300 * time.Millisecond)
	if n := f.host("m2").Calls(hypervisor.OpDefineAndStart); n != defines {
		t.Fatalf("the deposed leader defined the guest on m2 (%d calls)", n-defines)
	}
	f.stop()
	f.lead(Limits{}) // the new leader, in term 2
	m := f.waitPhase("mig-1", v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED)
	if w := f.where("d1", "m1", "m2"); len(w) != 1 || w["m2"] != hypervisor.StateRunning {
		t.Fatalf("guest after the move: %v, want running on m2 only", w)
	}
	if m.GetFenceTerm() != 2 {
		t.Fatalf("fence term %d, want 2", m.GetFenceTerm())
	}
	dom, _ := f.host("m2").Lookup(context.Background(), "d1")
	if dom.Metadata.Term != 2 || dom.Metadata.Index == 0 {
		t.Fatalf("the guest's fencing stamp: term %d index %d, want term 2", dom.Metadata.Term, dom.Metadata.Index)
	}
}

// A move booked for later waits in the queue until its time.
func TestMoveBookedForLaterWaits(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Limits{})
	d := f.devserver("d1", "m1")
	at := time.Now().Add(400 * time.Millisecond)
	f.raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_CreateMigration{CreateMigration: &fsmv1.CreateMigration{Migration: &v1.Migration{
		Id: "mig-1", Devserver: "d1", DevserverId: d.GetId(), DestHost: "m2", Reason: v1.MigrationReason_MIGRATION_REASON_USER,
		RequestedBy: "alice", NotBefore: timestampOf(at)}}}})
	time.Sleep(100 * time.Millisecond)
	if m, _ := f.store.View().GetMigration("mig-1"); m.GetPhase() != v1.MigrationPhase_MIGRATION_PHASE_PENDING {
		t.Fatalf("phase %s before its time, want pending", m.GetPhase())
	}
	m := f.waitPhase("mig-1", v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED)
	if m.GetStartTime().AsTime().Before(at) {
		t.Fatalf("started at %v, before its time %v", m.GetStartTime().AsTime(), at)
	}
}

func timestampOf(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

// waitFor polls cond until it holds, for up to 20s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

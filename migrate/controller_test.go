package migrate

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/fsm/fsmtest"
	"github.com/devfleet/devfleet/controlplane/hypervisor"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

type fixture struct {
	t     *testing.T
	raft  *fsmtest.Applier
	store *state.Store
	conn  *hypervisor.Connector
	stop  func()
	seq   int
}

// newFixture: region eu, site eu-1, in-memory hosts m1, m2, m3 (64 vCPUs, 256 GiB), flavor
// small (1 vCPU, 512 MiB, diskless); a migration controller with limits l runs on them.
func newFixture(t *testing.T, l Limits) *fixture {
	t.Helper()
	f := &fixture{t: t}
	f.raft, f.store = fsmtest.New(nil)
	f.conn = hypervisor.NewConnector(hypervisor.Options{AllowFake: true, PingInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { f.conn.Close() })
	f.raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_CreateRegion{CreateRegion: &fsmv1.CreateRegion{Region: &v1.Region{Name: "eu"}}}})
	f.raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_CreateSite{CreateSite: &fsmv1.CreateSite{Site: &v1.Site{Name: "eu-1", Region: "eu"}}}})
	for _, h := range []string{"m1", "m2", "m3"} {
		f.raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_CreateHost{CreateHost: &fsmv1.CreateHost{Host: &v1.Host{Name: h, Site: "eu-1",
			LibvirtUri: "fake://" + h, Capacity: &v1.Resources{Vcpus: 64, MemoryMib: 262144, DiskGib: 100}}}}})
	}
	f.raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: &v1.Flavor{
		Name: "small", Resources: &v1.Resources{Vcpus: 1, MemoryMib: 512}}}}})
	f.raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: &v1.Flavor{
		Name: "disk", Resources: &v1.Resources{Vcpus: 1, MemoryMib: 512, DiskGib: 1}}}}})
	f.lead(l)
	t.Cleanup(func() { f.stop() })
	return f
}

// lead starts a migration controller with limits l, as a (new) leader would.
func (f *fixture) lead(l Limits) {
	idx := capacity.NewIndex()
	f.store.Observe(idx)
	ctl := New(Config{Store: f.store, Raft: f.raft, Leader: f.raft, Hypervisors: f.conn, Limits: l, Placer: idx,
		Sample: 20 * time.Millisecond, Flush: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ctl.Run(ctx)
	}()
	f.stop = func() { cancel(); <-done }
}

func (f *fixture) host(name string) *hypervisor.Memory {
	f.t.Helper()
	m, err := f.conn.Fake("fake://" + name)
	if err != nil {
		f.t.Fatal(err)
	}
	return m
}

// devserver records a running devserver of flavor small on host with its guest running there.
func (f *fixture) devserver(name, host string) *v1.Devserver {
	f.t.Helper()
	return f.devserverOf(name, host, "small")
}

// devserverOf records a running devserver of a flavor on host with its guest running there (with
// its volume when the flavor has a disk, as the provisioner makes it).
func (f *fixture) devserverOf(name, host, flavor string) *v1.Devserver {
	f.t.Helper()
	fl, err := f.store.View().GetFlavor(flavor)
	if err != nil {
		f.t.Fatal(err)
	}
	f.seq++
	id := fmt.Sprintf("00000000-0000-4000-8000-%012d", f.seq)
	f.raft.Must(f.t, &fsmv1.Command{Op: &fsmv1.Command_CreateDevserver{CreateDevserver: &fsmv1.CreateDevserver{Devserver: &v1.Devserver{
		Name: name, Id: id, Owner: "alice", Flavor: flavor, Region: "eu", Host: host, Lifespan: v1.Lifespan_LIFESPAN_PERMANENT}}}})
	r := fl.GetResources()
	if _, err := f.host(host).DefineAndStart(context.Background(), hypervisor.DomainSpec{Name: name, UUID: id,
		VCPUs: r.GetVcpus(), MemoryMiB: r.GetMemoryMib(), DiskGiB: r.GetDiskGib(),
		Metadata: hypervisor.Metadata{Kind: hypervisor.InstanceDevserver, ID: id, Owner: "alice", Flavor: flavor}}); err != nil {
		f.t.Fatal(err)
	}
	return f.raft.Must(f.t, &fsmv1.Command{Op: &fsmv1.Command_SetDevserverState{SetDevserverState: &fsmv1.SetDevserverState{
		Name: name, Id: id, State: v1.DevserverState_DEVSERVER_STATE_RUNNING, Reason: "up"}}}).(*v1.Devserver)
}

func (f *fixture) migrate(id string, d *v1.Devserver, dest string, policy *v1.MigrationPolicy) {
	f.t.Helper()
	f.raft.Must(f.t, &fsmv1.Command{Op: &fsmv1.Command_CreateMigration{CreateMigration: &fsmv1.CreateMigration{Migration: &v1.Migration{
		Id: id, Devserver: d.GetName(), DevserverId: d.GetId(), DestHost: dest, Reason: v1.MigrationReason_MIGRATION_REASON_MAINTENANCE,
		RequestedBy: "ops", Policy: policy}}}})
}

func (f *fixture) waitPhase(id string, want v1.MigrationPhase) *v1.Migration {
	f.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		m, err := f.store.View().GetMigration(id)
		if err == nil && m.GetPhase() == want {
			return m
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("migration %s: %v (%v), want %s", id, m.GetPhase(), m.GetFailureReason(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runsOn reports which of the hosts run the guest name (not a paused placeholder).
func (f *fixture) runsOn(name string) []string {
	f.t.Helper()
	var out []string
	for _, h := range []string{"m1", "m2", "m3"} {
		d, err := f.host(h).Lookup(context.Background(), name)
		if err == nil && d.State == hypervisor.StateRunning {
			out = append(out, h)
		}
	}
	return out
}

func TestMigrationMovesTheGuestAndTheRecord(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Limits{})
	d := f.devserver("d1", "m1")
	f.migrate("mig-1", d, "m2", &v1.MigrationPolicy{BandwidthMibps: 1024})
	m := f.waitPhase("mig-1", v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED)
	got, _ := f.store.View().GetDevserver("d1")
	if got.GetHost() != "m2" || got.GetState() != v1.DevserverState_DEVSERVER_STATE_RUNNING {
		t.Fatalf("devserver after the move: %v", got)
	}
	if on := f.runsOn("d1"); len(on) != 1 || on[0] != "m2" {
		t.Fatalf("the guest runs on %v, want m2 only", on)
	}
	if m.GetAttempts() != 1 || m.GetStartTime() == nil || m.GetEndTime() == nil {
		t.Fatalf("migration record: %v", m)
	}
	if err := f.store.View().CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

func TestAbortKeepsTheGuestOnTheSource(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Limits{})
	d := f.devserver("d1", "m1")
	f.migrate("mig-1", d, "m2", &v1.MigrationPolicy{BandwidthMibps: 8}) // 512 MiB at 8 MiB/s: a minute
	f.waitPhase("mig-1", v1.MigrationPhase_MIGRATION_PHASE_RUNNING)
	deadline := time.Now().Add(10 * time.Second)
	for { // progress is sampled and written while it runs
		m, _ := f.store.View().GetMigration("mig-1")
		if m.GetProgress().GetMemoryProcessedBytes() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no progress recorded: %v", m)
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_RequestMigrationAbort{RequestMigrationAbort: &fsmv1.RequestMigrationAbort{Id: "mig-1"}}})
	f.waitPhase("mig-1", v1.MigrationPhase_MIGRATION_PHASE_ABORTED)
	got, _ := f.store.View().GetDevserver("d1")
	if got.GetHost() != "m1" || got.GetState() != v1.DevserverState_DEVSERVER_STATE_RUNNING {
		t.Fatalf("devserver after the abort: %v", got)
	}
	if on := f.runsOn("d1"); len(on) != 1 || on[0] != "m1" {
		t.Fatalf("the guest runs on %v, want m1 only", on)
	}
	if err := f.store.View().CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

// A destination that refuses the guest fails the attempt; the next attempt succeeds, and with
// every attempt refused the migration fails with the guest still on its source.
func TestFailedAttemptsAreRetriedThenGivenUp(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Limits{})
	d1 := f.devserver("d1", "m1")
	f.host("m2").FailNext(hypervisor.OpMigrateIncoming, fmt.Errorf("injected: destination refuses"))
	f.migrate("mig-1", d1, "m2", &v1.MigrationPolicy{BandwidthMibps: 1024})
	m := f.waitPhase("mig-1", v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED)
	if m.GetAttempts() != 2 {
		t.Fatalf("attempts %d, want 2", m.GetAttempts())
	}

	d2 := f.devserver("d2", "m1")
	for range 3 {
		f.host("m3").FailNext(hypervisor.OpMigrateIncoming, fmt.Errorf("injected: destination refuses"))
	}
	f.migrate("mig-2", d2, "m3", &v1.MigrationPolicy{BandwidthMibps: 1024, MaxAttempts: 2})
	m = f.waitPhase("mig-2", v1.MigrationPhase_MIGRATION_PHASE_FAILED)
	if m.GetAttempts() != 2 || m.GetFailureReason() == "" {
		t.Fatalf("failed migration: %v", m)
	}
	if on := f.runsOn("d2"); len(on) != 1 || on[0] != "m1" {
		t.Fatalf("the guest runs on %v, want m1 only", on)
	}
	if got, _ := f.store.View().GetDevserver("d2"); got.GetHost() != "m1" || got.GetState() != v1.DevserverState_DEVSERVER_STATE_RUNNING {
		t.Fatalf("devserver after the failure: %v", got)
	}
}

// Six moves off one host with a per-source limit of 2: never more than 2 hold a slot at once,
// and all end.
func TestLimitsHoldWhileMigrationsRun(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Limits{PerSource: 2})
	for i := range 6 {
		d := f.devserver(fmt.Sprintf("d%d", i), "m1")
		f.migrate(fmt.Sprintf("mig-%d", i), d, []string{"m2", "m3"}[i%2], &v1.MigrationPolicy{BandwidthMibps: 2048})
	}
	var peak atomic.Int32
	deadline := time.Now().Add(30 * time.Second)
	for {
		slots, ended := int32(0), 0
		for _, m := range f.store.View().Migrations() {
			switch {
			case running(m):
				slots++
			case state.Final(m.GetPhase()):
				ended++
			}
		}
		if slots > peak.Load() {
			peak.Store(slots)
		}
		if ended == 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 6 migrations ended", ended)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if p := peak.Load(); p > 2 || p == 0 {
		t.Fatalf("peak of %d migrations leaving m1 at once, limit 2", p)
	}
	for _, m := range f.store.View().Migrations() {
		if m.GetPhase() != v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED {
			t.Errorf("%s: %s (%s)", m.GetId(), m.GetPhase(), m.GetFailureReason())
		}
	}
}

// A new leader adopts a migration the old one left running, and records its outcome once.
func TestNewLeaderAdoptsARunningMigration(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Limits{})
	d := f.devserver("d1", "m1")
	f.migrate("mig-1", d, "m2", &v1.MigrationPolicy{BandwidthMibps: 256}) // 2 s
	f.waitPhase("mig-1", v1.MigrationPhase_MIGRATION_PHASE_RUNNING)
	f.stop() // the leader goes; libvirt carries on with the job
	f.lead(Limits{})
	m := f.waitPhase("mig-1", v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED)
	if m.GetAttempts() != 1 {
		t.Fatalf("the new leader started another attempt: %v", m)
	}
	if on := f.runsOn("d1"); len(on) != 1 || on[0] != "m2" {
		t.Fatalf("the guest runs on %v, want m2 only", on)
	}
}

// volumes returns the volumes of each in-memory host that has any.
func (f *fixture) volumes() map[string]map[string]int64 {
	f.t.Helper()
	out := map[string]map[string]int64{}
	for _, h := range []string{"m1", "m2", "m3"} {
		if v := f.host(h).Volumes(); len(v) > 0 {
			out[h] = v
		}
	}
	return out
}

// waitDiskCopy waits until the source's migration job of name has copied some of its disk.
func (f *fixture) waitDiskCopy(host, name string) hypervisor.JobStats {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := f.host(host).JobStats(context.Background(), name)
		if err == nil && st.Type.Active() && st.DiskProcessed > 0 {
			return st
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("no disk copy of %s on %s: %+v, %v", name, host, st, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A devserver whose flavor has a disk moves with its volume: prepared on the destination,
// copied, and removed from the source, also when the leader changes during the copy.
func TestMigrationMovesTheDisk(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Limits{})
	d1 := f.devserverOf("d1", "m1", "disk")
	d2 := f.devserverOf("d2", "m1", "disk")
	if got := f.volumes(); len(got) != 1 || len(got["m1"]) != 2 || got["m1"]["d1.raw"] != 1 {
		t.Fatalf("volumes before: %v", got)
	}
	f.migrate("mig-1", d1, "m2", &v1.MigrationPolicy{BandwidthMibps: 2048})
	m := f.waitPhase("mig-1", v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED)
	if on := f.runsOn("d1"); len(on) != 1 || on[0] != "m2" {
		t.Fatalf("d1 runs on %v, want m2 only", on)
	}
	if got, _ := f.store.View().GetDevserver("d1"); got.GetHost() != "m2" || m.GetAttempts() != 1 {
		t.Fatalf("after the move: devserver on %s, %d attempts", got.GetHost(), m.GetAttempts())
	}
	got := f.volumes()
	if _, ok := got["m1"]["d1.raw"]; ok || got["m2"]["d1.raw"] != 1 {
		t.Fatalf("volumes after the move: %v; want d1.raw on m2 only", got)
	}
	vols, err := f.host("m2").DomainVolumes(context.Background(), "d1")
	if err != nil || len(vols) != 1 || vols[0].Name != "d1.raw" {
		t.Fatalf("d1's volumes on m2: %v, %v", vols, err)
	}

	// The leader goes during the disk copy (1 s of disk at the fake link's 1024 MiB/s, then
	// 0.5 s of memory); the next one follows the job and removes the source's volume.
	f.migrate("mig-2", d2, "m3", &v1.MigrationPolicy{BandwidthMibps: 1024})
	f.waitDiskCopy("m1", "d2")
	f.stop()
	f.lead(Limits{})
	m = f.waitPhase("mig-2", v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED)
	if m.GetAttempts() != 1 {
		t.Fatalf("the new leader started another attempt: %v", m)
	}
	if on := f.runsOn("d2"); len(on) != 1 || on[0] != "m3" {
		t.Fatalf("d2 runs on %v, want m3 only", on)
	}
	if got := f.volumes(); len(got["m1"]) != 0 || got["m2"]["d1.raw"] != 1 || got["m3"]["d2.raw"] != 1 {
		t.Fatalf("volumes after the second move: %v; want d1.raw on m2, d2.raw on m3, none on m1", got)
	}
	if err := f.store.View().CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

// A move of a guest with a disk that is aborted (during the disk copy) or fails leaves the
// guest and its volume on the source, and removes what it prepared on the destination, unless a
// domain there uses a volume of that name.
func TestFailedDiskMoveKeepsTheSourceVolume(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Limits{})
	ctx := context.Background()

	d1 := f.devserverOf("d1", "m1", "disk")
	f.migrate("mig-1", d1, "m2", &v1.MigrationPolicy{BandwidthMibps: 8}) // 1 GiB of disk: two minutes
	f.waitDiskCopy("m1", "d1")
	if got := f.host("m2").Volumes(); got["d1.raw"] != 1 {
		t.Fatalf("m2 volumes during the copy: %v; want the prepared d1.raw", got)
	}
	f.raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_RequestMigrationAbort{RequestMigrationAbort: &fsmv1.RequestMigrationAbort{Id: "mig-1"}}})
	f.waitPhase("mig-1", v1.MigrationPhase_MIGRATION_PHASE_ABORTED)

	d2 := f.devserverOf("d2", "m1", "disk")
	f.host("m3").FailNext(hypervisor.OpMigrateIncoming, fmt.Errorf("injected: destination refuses"))
	f.migrate("mig-2", d2, "m3", &v1.MigrationPolicy{BandwidthMibps: 1024, MaxAttempts: 1})
	f.waitPhase("mig-2", v1.MigrationPhase_MIGRATION_PHASE_FAILED)

	// m2 has a domain d3 of its own (not the devserver's) with its volume d3.raw: the attempt
	// cannot prepare it, and the failed migration leaves it alone.
	d3 := f.devserverOf("d3", "m1", "disk")
	if _, err := f.host("m2").DefineAndStart(ctx, hypervisor.DomainSpec{Name: "d3", VCPUs: 1, MemoryMiB: 128, DiskGiB: 2,
		Metadata: hypervisor.Metadata{Kind: hypervisor.InstanceDevserver, ID: "someone-else", Owner: "bob"}}); err != nil {
		t.Fatal(err)
	}
	f.migrate("mig-3", d3, "m2", &v1.MigrationPolicy{MaxAttempts: 1})
	m := f.waitPhase("mig-3", v1.MigrationPhase_MIGRATION_PHASE_FAILED)
	t.Logf("into a volume in use: %s", m.GetFailureReason())

	for _, name := range []string{"d1", "d2", "d3"} {
		if d, err := f.host("m1").Lookup(ctx, name); err != nil || d.State != hypervisor.StateRunning || d.Metadata.ID == "someone-else" {
			t.Errorf("%s on m1: %+v, %v; want it running", name, d, err)
		}
		if d, err := f.host("m3").Lookup(ctx, name); !hypervisor.IsNotFound(err) {
			t.Errorf("%s on m3: %+v, %v; want none", name, d, err)
		}
		if got, _ := f.store.View().GetDevserver(name); got.GetHost() != "m1" || got.GetState() != v1.DevserverState_DEVSERVER_STATE_RUNNING {
			t.Errorf("devserver %s after the failed move: %v", name, got)
		}
		if vols, err := f.host("m1").DomainVolumes(ctx, name); err != nil || len(vols) != 1 || vols[0].Name != name+".raw" {
			t.Errorf("%s's volumes on m1: %v, %v", name, vols, err)
		}
	}
	got := f.volumes()
	if want := (map[string]map[string]int64{"m1": {"d1.raw": 1, "d2.raw": 1, "d3.raw": 1}, "m2": {"d3.raw": 2}}); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("volumes after the failed moves: %v, want %v", got, want)
	}
	if d, err := f.host("m2").Lookup(ctx, "d3"); err != nil || d.Metadata.ID != "someone-else" || d.State != hypervisor.StateRunning {
		t.Fatalf("m2's own d3: %+v, %v", d, err)
	}
}

// A destination that stops answering: the next attempt goes to another host, chosen by
// capacity, and the held room moves with it.
func TestSilentDestinationIsReplaced(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Limits{})
	d := f.devserver("d1", "m1")
	f.host("m2").DropConnection()
	f.migrate("mig-1", d, "m2", &v1.MigrationPolicy{BandwidthMibps: 1024})
	m := f.waitPhase("mig-1", v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED)
	if m.GetDestHost() != "m3" {
		t.Fatalf("migration went to %s, want m3: %v", m.GetDestHost(), m)
	}
	if on := f.runsOn("d1"); len(on) != 1 || on[0] != "m3" {
		t.Fatalf("the guest runs on %v, want m3 only", on)
	}
	if got, _ := f.store.View().GetDevserver("d1"); got.GetHost() != "m3" {
		t.Fatalf("devserver recorded on %s", got.GetHost())
	}
	if err := f.store.View().CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

// A guest that dirties memory almost as fast as the migration sends it would take long to
// converge: with post-copy allowed, the migration switches after its passes and ends on the
// destination.
func TestPostCopyEndsAMigrationThatDoesNotConverge(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Limits{})
	d := f.devserver("d1", "m1") // 512 MiB
	if err := f.host("m1").SetDirtyRate("d1", 1000<<20); err != nil {
		t.Fatal(err)
	}
	// 1 GiB/s against 1000 MiB/s dirtied: a pass every half second, convergence in ~9s.
	f.migrate("mig-1", d, "m2", &v1.MigrationPolicy{BandwidthMibps: 1024, AllowPostCopy: true, PostCopyAfterPasses: 2})
	m := f.waitPhase("mig-1", v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED)
	if !m.GetProgress().GetPostCopy() || f.host("m1").Calls(hypervisor.OpStartPostCopy) != 1 {
		t.Fatalf("post-copy %v, %d StartPostCopy calls; want one switch", m.GetProgress().GetPostCopy(), f.host("m1").Calls(hypervisor.OpStartPostCopy))
	}
	if on := f.runsOn("d1"); len(on) != 1 || on[0] != "m2" {
		t.Fatalf("the guest runs on %v, want m2 only", on)
	}
}

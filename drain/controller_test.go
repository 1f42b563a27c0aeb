package drain

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/fsm/fsmtest"
	"github.com/devfleet/devfleet/controlplane/hypervisor"
	"github.com/devfleet/devfleet/controlplane/state"
	"github.com/devfleet/devfleet/migrate"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// fixture: region eu, site eu-1 with in-memory hosts m1..m4 (64 vCPUs, 256 GiB), flavors small
// (1 vCPU, 512 MiB) and metal (a whole machine); a migration controller and a drain controller
// run on them, as on a leader.
type fixture struct {
	t     *testing.T
	raft  *fsmtest.Applier
	store *state.Store
	conn  *hypervisor.Connector
	seq   int

	mu    sync.Mutex
	now   time.Time // the drain controller's clock, when set
	stops []func()
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t}
	f.raft, f.store = fsmtest.New(nil)
	f.conn = hypervisor.NewConnector(hypervisor.Options{AllowFake: true, PingInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { f.conn.Close() })
	f.must(&fsmv1.Command{Op: &fsmv1.Command_CreateRegion{CreateRegion: &fsmv1.CreateRegion{Region: &v1.Region{Name: "eu"}}}})
	f.must(&fsmv1.Command{Op: &fsmv1.Command_CreateSite{CreateSite: &fsmv1.CreateSite{Site: &v1.Site{Name: "eu-1", Region: "eu"}}}})
	for _, h := range []string{"m1", "m2", "m3", "m4"} {
		f.must(&fsmv1.Command{Op: &fsmv1.Command_CreateHost{CreateHost: &fsmv1.CreateHost{Host: &v1.Host{Name: h, Site: "eu-1",
			LibvirtUri: "fake://" + h, Capacity: &v1.Resources{Vcpus: 64, MemoryMib: 262144, DiskGib: 100}}}}})
	}
	f.must(&fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: &v1.Flavor{
		Name: "small", Resources: &v1.Resources{Vcpus: 1, MemoryMib: 512}}}}})
	f.must(&fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: &v1.Flavor{
		Name: "metal", Kind: v1.FlavorKind_FLAVOR_KIND_PHYSICAL, Resources: &v1.Resources{Vcpus: 8, MemoryMib: 8192}}}}})
	t.Cleanup(f.stopAll)
	return f
}

func (f *fixture) must(cmd *fsmv1.Command) any { f.t.Helper(); return f.raft.Must(f.t, cmd) }

func (f *fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.now.IsZero() {
		return time.Now()
	}
	return f.now
}

func (f *fixture) setClock(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = t
}

// lead starts a migration controller and a drain controller, as a new leader does.
func (f *fixture) lead(node string) {
	idx := capacity.NewIndex()
	f.store.Observe(idx)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	mig := migrate.New(migrate.Config{Store: f.store, Raft: f.raft, Leader: f.raft, Hypervisors: f.conn, Placer: idx,
		Sample: 20 * time.Millisecond, Flush: 50 * time.Millisecond})
	dr := New(Config{Store: f.store, Raft: f.raft, Placer: idx, Node: node, Now: f.clock, Tick: 20 * time.Millisecond})
	wg.Go(func() { _ = mig.Run(ctx) })
	wg.Go(func() { _ = dr.Run(ctx) })
	f.mu.Lock()
	f.stops = append(f.stops, func() { cancel(); wg.Wait() })
	f.mu.Unlock()
}

func (f *fixture) stopAll() {
	f.mu.Lock()
	stops := f.stops
	f.stops = nil
	f.mu.Unlock()
	for _, s := range stops {
		s()
	}
}

func (f *fixture) host(name string) *hypervisor.Memory {
	f.t.Helper()
	m, err := f.conn.Fake("fake://" + name)
	if err != nil {
		f.t.Fatal(err)
	}
	return m
}

// devserver records a running devserver of a flavor on host, with its guest running there.
func (f *fixture) devserver(name, host, flavor string) {
	f.t.Helper()
	f.seq++
	id := fmt.Sprintf("00000000-0000-4000-8000-%012d", f.seq)
	f.must(&fsmv1.Command{Op: &fsmv1.Command_CreateDevserver{CreateDevserver: &fsmv1.CreateDevserver{Devserver: &v1.Devserver{
		Name: name, Id: id, Owner: "alice", Flavor: flavor, Region: "eu", Host: host, Lifespan: v1.Lifespan_LIFESPAN_PERMANENT}}}})
	if flavor != "metal" {
		if _, err := f.host(host).DefineAndStart(context.Background(), hypervisor.DomainSpec{Name: name, UUID: id, VCPUs: 1, MemoryMiB: 512,
			Metadata: hypervisor.Metadata{Kind: hypervisor.InstanceDevserver, ID: id, Owner: "alice", Flavor: flavor}}); err != nil {
			f.t.Fatal(err)
		}
	}
	f.must(&fsmv1.Command{Op: &fsmv1.Command_SetDevserverState{SetDevserverState: &fsmv1.SetDevserverState{
		Name: name, Id: id, State: v1.DevserverState_DEVSERVER_STATE_RUNNING, Reason: "up"}}})
}

// start plans and records a drain of hosts, as the API does.
func (f *fixture) start(id string, hosts []string, b *v1.DrainBudgets, deadline time.Time, action v1.DeadlineAction) *v1.Drain {
	f.t.Helper()
	plan := MakePlan(capacity.Load(f.store.View()), hosts, BudgetsOf(b))
	var items []*v1.DrainItem
	for _, it := range plan.Items {
		items = append(items, &v1.DrainItem{Devserver: it.Devserver, DevserverId: it.DevserverID, Owner: it.Owner, Flavor: it.Flavor,
			SourceHost: it.Source, DestHost: it.Dest, DestRegion: it.DestRegion, Kind: v1.DrainItemKind(it.Kind), Blocker: it.Blocker,
			Wave: uint32(it.Wave), MemoryBytes: it.MemoryBytes})
	}
	d := &v1.Drain{Id: id, Hosts: hosts, Reason: "test maintenance", RequestedBy: "ops", Budgets: b, DeadlineAction: action, Priority: 200}
	if !deadline.IsZero() {
		d.Deadline = timestamppb.New(deadline)
	}
	return f.must(&fsmv1.Command{Op: &fsmv1.Command_StartDrain{StartDrain: &fsmv1.StartDrain{Drain: d, Items: items}}}).(*v1.Drain)
}

func (f *fixture) waitDrain(id string, want v1.DrainState) *v1.Drain {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		d, err := f.store.View().GetDrain(id)
		if err == nil && d.GetState() == want {
			return d
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("drain %s: %v (%s), want %s; items: %v", id, d.GetState(), d.GetStateReason(), want, f.store.View().DrainItems(id))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (f *fixture) events(id string) []string {
	var out []string
	for _, e := range f.store.View().DrainEvents(id) {
		out = append(out, e.GetKind())
	}
	return out
}

// runsOnly checks that each devserver's guest runs on exactly the host the state records.
func (f *fixture) runsOnly(names ...string) {
	f.t.Helper()
	v := f.store.View()
	for _, name := range names {
		d, err := v.GetDevserver(name)
		if err != nil {
			f.t.Fatal(err)
		}
		var on []string
		for _, h := range []string{"m1", "m2", "m3", "m4"} {
			if dom, err := f.host(h).Lookup(context.Background(), name); err == nil && dom.State == hypervisor.StateRunning {
				on = append(on, h)
			}
		}
		if len(on) != 1 || on[0] != d.GetHost() {
			f.t.Fatalf("%s is recorded on %s; its guest runs on %v", name, d.GetHost(), on)
		}
	}
}

// maxOverlap is the most of the drain's migrations that were under way at once, in all and
// leaving one host: each counts from its record to its end.
func maxOverlap(ms []*v1.Migration) (total, perSource int) {
	type ev struct {
		t    time.Time
		d    int
		host string
	}
	var evs []ev
	for _, m := range ms {
		evs = append(evs, ev{m.GetCreateTime().AsTime(), +1, m.GetSourceHost()}, ev{m.GetEndTime().AsTime(), -1, m.GetSourceHost()})
	}
	slices.SortFunc(evs, func(a, b ev) int { return cmp.Or(a.t.Compare(b.t), cmp.Compare(a.d, b.d)) })
	cur, src := 0, map[string]int{}
	for _, e := range evs {
		cur += e.d
		src[e.host] += e.d
		total, perSource = max(total, cur), max(perSource, src[e.host])
	}
	return total, perSource
}

func drainMigrations(v *state.View, id string) []*v1.Migration {
	return slices.DeleteFunc(v.Migrations(), func(m *v1.Migration) bool { return m.GetRequestedBy() != RequestedBy(id) })
}

// A drain of a host moves every devserver off it under the budgets, leaves a whole-machine
// devserver (its owner told), and ends with the host drained and a timeline of every step.
func TestDrainMovesEveryDevserverUnderBudgets(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var names []string
	for i := range 6 {
		names = append(names, fmt.Sprintf("d%d", i))
		f.devserver(names[i], "m1", "small")
	}
	f.devserver("box", "m2", "metal") // a whole machine: alone on its host
	f.lead("n1")
	f.start("dr-1", []string{"m1", "m2"}, &v1.DrainBudgets{PerSource: 2, BandwidthMibps: 2048}, time.Time{}, 0)
	if h, _ := f.store.View().GetHost("m1"); h.GetState() != v1.HostState_HOST_STATE_DRAINING {
		t.Fatalf("m1 is %s once the drain started, want draining", h.GetState())
	}
	d := f.waitDrain("dr-1", v1.DrainState_DRAIN_STATE_SUCCEEDED)
	if d.GetItemsDone() != 6 || d.GetItemsBlocked() != 1 || d.GetItemsTotal() != 7 {
		t.Fatalf("counts: %v", d)
	}
	v := f.store.View()
	for _, n := range names {
		if dev, _ := v.GetDevserver(n); dev.GetHost() == "m1" || dev.GetHost() == "m2" {
			t.Fatalf("%s is still on %s", n, dev.GetHost())
		}
	}
	f.runsOnly(names...)
	if h, _ := v.GetHost("m1"); h.GetState() != v1.HostState_HOST_STATE_DRAINED {
		t.Fatalf("m1 is %s after the drain, want drained", h.GetState())
	}
	total, perSource := maxOverlap(drainMigrations(v, "dr-1"))
	if perSource > 2 || total > DefaultTotal {
		t.Fatalf("moves at once: %d in all, %d leaving m1; budgets 5 and 2", total, perSource)
	}
	if _, err := v.GetNotice(fmt.Sprintf("drain-dr-1-box-%d", v1.NoticeKind_NOTICE_KIND_MAINTENANCE)); err != nil {
		t.Fatalf("box's owner was not told: %v", err)
	}
	ev := f.events("dr-1")
	for _, want := range []string{"started", "cordoned", "leader", "moving", "moved", "finished"} {
		if !slices.Contains(ev, want) {
			t.Fatalf("timeline %v has no %q", ev, want)
		}
	}
	if err := v.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

// Cancelling with --abort-in-flight stops the moves under way: every devserver stays where it
// runs and the host stays cordoned; a second cancel of the ended drain is refused.
func TestDrainCancelAbortsInFlight(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for i := range 3 {
		f.devserver(fmt.Sprintf("d%d", i), "m1", "small")
	}
	f.lead("n1")
	f.start("dr-1", []string{"m1"}, &v1.DrainBudgets{BandwidthMibps: 4}, time.Time{}, 0) // 512 MiB at 4 MiB/s: two minutes
	deadline := time.Now().Add(10 * time.Second)
	for {
		if d, _ := f.store.View().GetDrain("dr-1"); d.GetItemsMoving() == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no moves started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.must(&fsmv1.Command{Op: &fsmv1.Command_RequestDrainCancel{RequestDrainCancel: &fsmv1.RequestDrainCancel{Id: "dr-1", AbortInFlight: true}}})
	f.waitDrain("dr-1", v1.DrainState_DRAIN_STATE_CANCELLED)
	v := f.store.View()
	for i := range 3 {
		if dev, _ := v.GetDevserver(fmt.Sprintf("d%d", i)); dev.GetHost() != "m1" || dev.GetState() != v1.DevserverState_DEVSERVER_STATE_RUNNING {
			t.Fatalf("after the cancel: %v", dev)
		}
	}
	f.runsOnly("d0", "d1", "d2")
	if h, _ := v.GetHost("m1"); h.GetState() != v1.HostState_HOST_STATE_CORDONED {
		t.Fatalf("m1 is %s after the cancel, want cordoned", h.GetState())
	}
	if r, _ := f.raft.Propose(context.Background(), &fsmv1.Command{Op: &fsmv1.Command_RequestDrainCancel{RequestDrainCancel: &fsmv1.RequestDrainCancel{Id: "dr-1"}}}); r.Err == nil {
		t.Fatal("cancelling an ended drain was accepted")
	}
}

// At the deadline with action stop, what has not moved is stopped, stranded and its owner told;
// the drain ends incomplete once the move in flight ends.
func TestDrainDeadlineStopsWhatIsLeft(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for i := range 3 {
		f.devserver(fmt.Sprintf("d%d", i), "m1", "small")
	}
	deadline := time.Now().Add(time.Hour)
	f.lead("n1")
	f.start("dr-1", []string{"m1"}, &v1.DrainBudgets{Total: 1, BandwidthMibps: 256}, deadline, v1.DeadlineAction_DEADLINE_ACTION_STOP)
	deadlineWait := time.Now().Add(10 * time.Second)
	for {
		if d, _ := f.store.View().GetDrain("dr-1"); d.GetItemsMoving() == 1 {
			break
		}
		if time.Now().After(deadlineWait) {
			t.Fatal("no move started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.setClock(deadline.Add(time.Second)) // the deadline passes while the first move runs
	d := f.waitDrain("dr-1", v1.DrainState_DRAIN_STATE_INCOMPLETE)
	if d.GetItemsDone() != 1 || d.GetItemsBlocked() != 2 {
		t.Fatalf("counts at the end: %v", d)
	}
	v := f.store.View()
	stranded := 0
	for _, it := range v.DrainItems("dr-1") {
		if it.GetState() != v1.DrainItemState_DRAIN_ITEM_STATE_STRANDED {
			continue
		}
		stranded++
		dev, _ := v.GetDevserver(it.GetDevserver())
		if dev.GetPower() != v1.Power_POWER_OFF {
			t.Fatalf("stranded %s is not being stopped: %v", dev.GetName(), dev)
		}
		if _, err := v.GetNotice(fmt.Sprintf("drain-dr-1-%s-%d", it.GetDevserver(), v1.NoticeKind_NOTICE_KIND_STRANDED)); err != nil {
			t.Fatalf("%s's owner was not told: %v", it.GetDevserver(), err)
		}
	}
	if stranded != 2 || !slices.Contains(f.events("dr-1"), "deadline") {
		t.Fatalf("%d stranded, timeline %v", stranded, f.events("dr-1"))
	}
}

// A new leader continues a drain from the state: the moves of the old one are followed or
// adopted, nothing is moved twice, and the timeline shows both leaders.
func TestDrainContinuesAfterFailover(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var names []string
	for i := range 5 {
		names = append(names, fmt.Sprintf("d%d", i))
		f.devserver(names[i], "m1", "small")
	}
	f.lead("n1")
	f.start("dr-1", []string{"m1"}, &v1.DrainBudgets{BandwidthMibps: 512}, time.Time{}, 0) // a second a move
	deadline := time.Now().Add(10 * time.Second)
	for {
		if d, _ := f.store.View().GetDrain("dr-1"); d.GetItemsDone() >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no move ended")
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.stopAll() // the leader dies
	f.lead("n2")
	f.waitDrain("dr-1", v1.DrainState_DRAIN_STATE_SUCCEEDED)
	f.runsOnly(names...)
	v := f.store.View()
	moved := map[string]int{}
	for _, m := range drainMigrations(v, "dr-1") {
		if m.GetPhase() == v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED {
			moved[m.GetDevserver()]++
		}
	}
	for _, n := range names {
		if moved[n] != 1 {
			t.Fatalf("%s moved %d times", n, moved[n])
		}
	}
	leaders := 0
	for _, e := range v.DrainEvents("dr-1") {
		if e.GetKind() == "leader" {
			leaders++
		}
	}
	if leaders != 2 {
		t.Fatalf("timeline shows %d leaders, want 2: %v", leaders, f.events("dr-1"))
	}
}

// Containers do not move: a drained host's warm container is released (its pool refills
// elsewhere) and a claimed one's owner is told; the drain does not wait for them.
func TestDrainReleasesWarmContainersAndTellsClaimers(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.must(&fsmv1.Command{Op: &fsmv1.Command_CreateProfile{CreateProfile: &fsmv1.CreateProfile{Profile: &v1.ContainerProfile{Name: "www", Vcpus: 1, MemoryMib: 256}}}})
	for _, name := range []string{"c-warm", "c-mine"} {
		f.must(&fsmv1.Command{Op: &fsmv1.Command_CreateContainer{CreateContainer: &fsmv1.CreateContainer{Container: &v1.Container{
			Name: name, Id: "id-" + name, Profile: "www", Region: "eu", Host: "m1"}}}})
		f.must(&fsmv1.Command{Op: &fsmv1.Command_SetContainerState{SetContainerState: &fsmv1.SetContainerState{
			Name: name, Id: "id-" + name, State: v1.ContainerState_CONTAINER_STATE_RUNNING, Reason: "up"}}})
	}
	f.must(&fsmv1.Command{Op: &fsmv1.Command_ClaimContainer{ClaimContainer: &fsmv1.ClaimContainer{Name: "c-mine", Owner: "bob"}}})
	f.devserver("d0", "m1", "small")
	f.lead("n1")
	f.start("dr-1", []string{"m1"}, nil, time.Time{}, 0)
	f.waitDrain("dr-1", v1.DrainState_DRAIN_STATE_SUCCEEDED)
	v := f.store.View()
	if c, _ := v.GetContainer("c-warm"); c.GetState() != v1.ContainerState_CONTAINER_STATE_DELETED {
		t.Fatalf("the warm container on the drained host: %v", c)
	}
	if c, _ := v.GetContainer("c-mine"); c.GetState() != v1.ContainerState_CONTAINER_STATE_RUNNING {
		t.Fatalf("the claimed container: %v", c)
	}
	if _, err := v.GetNotice(fmt.Sprintf("drain-dr-1-c-mine-%d", v1.NoticeKind_NOTICE_KIND_MAINTENANCE)); err != nil {
		t.Fatalf("the claimer was not told: %v", err)
	}
}

// startSlow starts a drain of three devservers on m1 whose first move runs while the deadline
// passes (one move at a time); it returns once that move runs.
func (f *fixture) startSlow(action v1.DeadlineAction) time.Time {
	f.t.Helper()
	for i := range 3 {
		f.devserver(fmt.Sprintf("d%d", i), "m1", "small")
	}
	deadline := time.Now().Add(time.Hour)
	f.lead("n1")
	f.start("dr-1", []string{"m1"}, &v1.DrainBudgets{Total: 1, BandwidthMibps: 256}, deadline, action)
	waitFor(f.t, "a move", func() bool { d, _ := f.store.View().GetDrain("dr-1"); return d.GetItemsMoving() == 1 })
	return deadline
}

// At the deadline with action leave, no new move starts: what has not moved stays where it
// runs, and the drain ends incomplete.
func TestDrainDeadlineLeavesTheRest(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.setClock(f.startSlow(v1.DeadlineAction_DEADLINE_ACTION_LEAVE).Add(time.Second))
	d := f.waitDrain("dr-1", v1.DrainState_DRAIN_STATE_INCOMPLETE)
	v := f.store.View()
	left := 0
	for _, it := range v.DrainItems("dr-1") {
		if it.GetState() == v1.DrainItemState_DRAIN_ITEM_STATE_LEFT {
			left++
			if dev, _ := v.GetDevserver(it.GetDevserver()); dev.GetHost() != "m1" || dev.GetState() != v1.DevserverState_DEVSERVER_STATE_RUNNING {
				t.Fatalf("left %s: %v", it.GetDevserver(), dev)
			}
		}
	}
	if left != 2 || d.GetItemsDone() != 1 {
		t.Fatalf("%d left, %d done; want 2 and 1", left, d.GetItemsDone())
	}
}

// At the deadline with action cold-migrate, what is left moves cold.
func TestDrainDeadlineMovesTheRestCold(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.setClock(f.startSlow(v1.DeadlineAction_DEADLINE_ACTION_COLD_MIGRATE).Add(time.Second))
	f.waitDrain("dr-1", v1.DrainState_DRAIN_STATE_SUCCEEDED)
	cold := 0
	for _, m := range drainMigrations(f.store.View(), "dr-1") {
		if m.GetCold() {
			cold++
		}
	}
	if cold != 2 {
		t.Fatalf("%d cold moves, want 2", cold)
	}
	f.runsOnly("d0", "d1", "d2")
}

// The drain controller restarted (a new leader) after each move it recorded ends the drain with
// every devserver moved exactly once.
func TestDrainSurvivesARestartAtEveryStep(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var names []string
	for i := range 4 {
		names = append(names, fmt.Sprintf("d%d", i))
		f.devserver(names[i], "m1", "small")
	}
	f.lead("n0")
	f.start("dr-1", []string{"m1"}, &v1.DrainBudgets{Total: 1, BandwidthMibps: 1024}, time.Time{}, 0)
	for n := 1; ; n++ {
		d, _ := f.store.View().GetDrain("dr-1")
		if state.DrainFinal(d.GetState()) {
			break
		}
		steps := func() int { // every event but the leaders' own
			n := 0
			for _, e := range f.store.View().DrainEvents("dr-1") {
				if e.GetKind() != "leader" {
					n++
				}
			}
			return n
		}
		before := steps()
		waitFor(t, "the next step", func() bool { return steps() > before })
		f.stopAll()
		f.lead(fmt.Sprintf("n%d", n))
		if n > 50 {
			t.Fatal("the drain does not end")
		}
	}
	if d, _ := f.store.View().GetDrain("dr-1"); d.GetState() != v1.DrainState_DRAIN_STATE_SUCCEEDED {
		t.Fatalf("drain ended %s: %s", d.GetState(), d.GetStateReason())
	}
	f.runsOnly(names...)
	moved := map[string]int{}
	for _, m := range drainMigrations(f.store.View(), "dr-1") {
		if m.GetPhase() == v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED {
			moved[m.GetDevserver()]++
		}
	}
	for _, n := range names {
		if moved[n] != 1 {
			t.Fatalf("%s moved %d times", n, moved[n])
		}
	}
}

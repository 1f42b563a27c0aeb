package provisioner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/fsm/fsmtest"
	"github.com/devfleet/devfleet/controlplane/hypervisor"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// clock is a test clock that only moves when told.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	t     *testing.T
	store *state.Store
	raft  *fsmtest.Applier
	conn  *hypervisor.Connector
	clock *clock
	ctl   *Controller
	stop  func()
}

const hostURI = "fake://m1"

// newFixture builds region eu, site eu-1, libvirt hosts m1 and m2 (in memory) and flavors small
// (recreated when lost) and pet (notify only), and runs a provisioner on them.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, clock: &clock{now: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}}
	f.raft, f.store = fsmtest.New(f.clock.Now)
	f.conn = hypervisor.NewConnector(hypervisor.Options{AllowFake: true, PingInterval: 50 * time.Millisecond,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { f.conn.Close() })
	f.ok(&fsmv1.Command{Op: &fsmv1.Command_CreateRegion{CreateRegion: &fsmv1.CreateRegion{Region: &v1.Region{Name: "eu"}}}})
	f.ok(&fsmv1.Command{Op: &fsmv1.Command_CreateSite{CreateSite: &fsmv1.CreateSite{Site: &v1.Site{Name: "eu-1", Region: "eu"}}}})
	for _, h := range []string{"m1", "m2"} {
		f.ok(&fsmv1.Command{Op: &fsmv1.Command_CreateHost{CreateHost: &fsmv1.CreateHost{Host: &v1.Host{
			Name: h, Site: "eu-1", LibvirtUri: "fake://" + h,
			Capacity: &v1.Resources{Vcpus: 16, MemoryMib: 65536, DiskGib: 1000}}}}})
	}
	f.ok(&fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: &v1.Flavor{
		Name: "small", Resources: &v1.Resources{Vcpus: 2, MemoryMib: 4096, DiskGib: 10}}}}})
	f.ok(&fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: &v1.Flavor{
		Name: "pet", Resources: &v1.Resources{Vcpus: 2, MemoryMib: 4096}, Repair: v1.RepairPolicy_REPAIR_POLICY_NOTIFY_ONLY}}}})
	idx := capacity.NewIndex()
	f.store.Observe(idx)
	f.ctl = New(Config{Store: f.store, Raft: f.raft, Hypervisors: f.conn, Placer: idx, Logger: slog.New(slog.NewTextHandler(testLog{t}, nil)),
		CallTimeout: 300 * time.Millisecond, ShutdownGrace: 50 * time.Millisecond, Resync: 100 * time.Millisecond,
		RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, Now: f.clock.Now})
	f.start()
	return f
}

func (f *fixture) start() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := f.ctl.Run(ctx); err != nil {
			f.t.Errorf("provisioner: %v", err)
		}
	}()
	f.stop = func() { cancel(); <-done }
	f.t.Cleanup(func() { f.stop() })
}

func (f *fixture) ok(cmd *fsmv1.Command) any {
	f.t.Helper()
	return f.raft.Must(f.t, cmd)
}

func (f *fixture) host(name string) *hypervisor.Memory {
	f.t.Helper()
	m, err := f.conn.Fake("fake://" + name)
	if err != nil {
		f.t.Fatal(err)
	}
	return m
}

func (f *fixture) create(name, flavor, host string, mutate ...func(*v1.Devserver)) *v1.Devserver {
	d := &v1.Devserver{Name: name, Id: fmt.Sprintf("00000000-0000-4000-8000-%012d", len(name)*1000+int(name[len(name)-1])),
		Owner: "alice", Flavor: flavor, Region: "eu", Host: host, Lifespan: v1.Lifespan_LIFESPAN_PERMANENT}
	for _, m := range mutate {
		m(d)
	}
	return f.ok(&fsmv1.Command{Op: &fsmv1.Command_CreateDevserver{CreateDevserver: &fsmv1.CreateDevserver{Devserver: d}}}).(*v1.Devserver)
}

// eventually waits until cond holds on the state, failing with what it last saw.
func (f *fixture) eventually(what string, cond func(v *state.View) bool) {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond(f.store.View()) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.t.Fatalf("timed out waiting for %s", what)
}

func (f *fixture) waitState(name string, s v1.DevserverState) *v1.Devserver {
	f.t.Helper()
	var last *v1.Devserver
	f.eventually(fmt.Sprintf("%s to be %s", name, state.StateName(s)), func(v *state.View) bool {
		last, _ = v.GetDevserver(name)
		return last != nil && last.GetState() == s
	})
	return last
}

func (f *fixture) gone(name string) {
	f.t.Helper()
	f.eventually(name+" to be purged", func(v *state.View) bool {
		_, err := v.GetDevserver(name)
		return err != nil
	})
}

func domainState(t *testing.T, m *hypervisor.Memory, name string) (hypervisor.State, bool) {
	t.Helper()
	d, err := m.Lookup(context.Background(), name)
	if hypervisor.IsNotFound(err) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return d.State, true
}

func notices(v *state.View, kind v1.NoticeKind) []*v1.Notice {
	var out []*v1.Notice
	for _, n := range v.NoticesOf("alice") {
		if n.GetKind() == kind {
			out = append(out, n)
		}
	}
	return out
}

func TestCreateStopStartDelete(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("d1", "small", "m1")
	d := f.waitState("d1", v1.DevserverState_DEVSERVER_STATE_RUNNING)
	m1 := f.host("m1")
	dom, err := m1.Lookup(context.Background(), "d1")
	if err != nil {
		t.Fatal(err)
	}
	if dom.State != hypervisor.StateRunning || dom.Metadata.ID != d.GetId() || dom.Metadata.Owner != "alice" || dom.VCPUs != 2 || dom.MemoryMiB != 4096 || d.GetDomain() != "d1" {
		t.Fatalf("guest %+v for %v", dom, d)
	}
	if vols := m1.Volumes(); vols["d1.qcow2"] != 10 && len(vols) != 1 {
		t.Fatalf("volumes: %v", vols)
	}

	f.ok(updatePower("d1", v1.Power_POWER_OFF))
	f.waitState("d1", v1.DevserverState_DEVSERVER_STATE_STOPPED)
	if s, ok := domainState(t, m1, "d1"); !ok || s != hypervisor.StateShutOff {
		t.Fatalf("stopped devserver's guest is %q (exists %v)", s, ok)
	}
	f.ok(updatePower("d1", v1.Power_POWER_ON))
	f.waitState("d1", v1.DevserverState_DEVSERVER_STATE_RUNNING)
	if s, _ := domainState(t, m1, "d1"); s != hypervisor.StateRunning {
		t.Fatalf("started devserver's guest is %q", s)
	}

	f.ok(&fsmv1.Command{Op: &fsmv1.Command_DeleteDevserver{DeleteDevserver: &fsmv1.DeleteDevserver{Name: "d1"}}})
	f.gone("d1")
	if _, ok := domainState(t, m1, "d1"); ok {
		t.Fatal("the deleted devserver's guest is still defined")
	}
	if len(m1.Volumes()) != 0 {
		t.Fatalf("volumes left: %v", m1.Volumes())
	}
	if h, _ := f.store.View().GetHost("m1"); h.GetAllocated().GetVcpus() != 0 {
		t.Fatalf("room not freed: %v", h.GetAllocated())
	}
}

func updatePower(name string, p v1.Power) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_UpdateDevserver{UpdateDevserver: &fsmv1.UpdateDevserver{
		Devserver: &v1.Devserver{Name: name, Power: p}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"power"}}}}}
}

// Faults at each call of a create: the step is retried until the guest runs, the owner can see
// why it waits meanwhile, and there is never a second guest.
func TestCreateSurvivesFaults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		inject func(m *hypervisor.Memory)
	}{
		{"lookup fails", func(m *hypervisor.Memory) { m.FailNext(hypervisor.OpLookup, errors.New("injected")) }},
		{"define fails", func(m *hypervisor.Memory) { m.FailNext(hypervisor.OpDefineAndStart, errors.New("injected")) }},
		{"define hangs", func(m *hypervisor.Memory) { m.HangNext(hypervisor.OpDefineAndStart) }},
		{"connection drops", func(m *hypervisor.Memory) {
			m.DropConnection()
			time.AfterFunc(200*time.Millisecond, m.RestoreConnection)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			m1 := f.host("m1")
			tc.inject(m1)
			f.create("d1", "small", "m1")
			f.waitState("d1", v1.DevserverState_DEVSERVER_STATE_RUNNING)
			doms, err := m1.List(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(doms) != 1 {
				t.Fatalf("%d guests on m1, want 1: %+v", len(doms), doms)
			}
		})
	}
}

// A guest that vanishes behind devfleet's back is noticed from libvirt's events, the devserver is
// marked lost, its owner told, and it is made again (same host or another) and told again.
func TestLostDevserverIsRecreated(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("d1", "small", "m1")
	f.waitState("d1", v1.DevserverState_DEVSERVER_STATE_RUNNING)
	if err := f.host("m1").Vanish("d1"); err != nil {
		t.Fatal(err)
	}
	f.eventually("d1 recreated", func(v *state.View) bool {
		d, _ := v.GetDevserver("d1")
		return d.GetRepairs() == 1 && d.GetState() == v1.DevserverState_DEVSERVER_STATE_RUNNING
	})
	d, _ := f.store.View().GetDevserver("d1")
	if s, ok := domainState(t, f.host(d.GetHost()), "d1"); !ok || s != hypervisor.StateRunning {
		t.Fatalf("recreated guest on %s: %q %v", d.GetHost(), s, ok)
	}
	v := f.store.View()
	if len(notices(v, v1.NoticeKind_NOTICE_KIND_LOST)) != 1 || len(notices(v, v1.NoticeKind_NOTICE_KIND_RECREATED)) != 1 {
		t.Fatalf("notices: %v", v.NoticesOf("alice"))
	}
	var vcpus int64
	for _, h := range []string{"m1", "m2"} {
		hh, _ := v.GetHost(h)
		vcpus += hh.GetAllocated().GetVcpus()
	}
	if vcpus != 2 {
		t.Fatalf("fleet allocation after the repair is %d vCPUs, want 2", vcpus)
	}
}

func TestNotifyOnlyFlavorStaysLost(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("d1", "pet", "m1")
	f.waitState("d1", v1.DevserverState_DEVSERVER_STATE_RUNNING)
	if err := f.host("m1").Crash("d1"); err != nil {
		t.Fatal(err)
	}
	f.waitState("d1", v1.DevserverState_DEVSERVER_STATE_LOST)
	time.Sleep(300 * time.Millisecond) // a few resyncs: nothing more happens
	d, _ := f.store.View().GetDevserver("d1")
	if d.GetState() != v1.DevserverState_DEVSERVER_STATE_LOST || d.GetRepairs() != 0 {
		t.Fatalf("notify-only devserver: %v", d)
	}
	if n := notices(f.store.View(), v1.NoticeKind_NOTICE_KIND_LOST); len(n) != 1 {
		t.Fatalf("lost notices: %v", n)
	}
}

// A new leader's first pass: a devserver recorded running whose guest is gone is lost; a guest
// with devfleet's metadata that no devserver owns is reported and left alone.
func TestReconcileOnStart(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.stop()
	d := f.create("d1", "pet", "m1")
	f.ok(setState(d, v1.DevserverState_DEVSERVER_STATE_RUNNING, "recorded by the previous leader", "d1"))
	m1 := f.host("m1")
	orphan := hypervisor.DomainSpec{Name: "stray", VCPUs: 1, MemoryMiB: 128,
		Metadata: hypervisor.Metadata{Kind: hypervisor.InstanceDevserver, ID: "11111111-1111-4111-8111-111111111111", Owner: "bob"}}
	if _, err := m1.DefineAndStart(context.Background(), orphan); err != nil {
		t.Fatal(err)
	}
	f.start()
	f.waitState("d1", v1.DevserverState_DEVSERVER_STATE_LOST)
	if s, ok := domainState(t, m1, "stray"); !ok || s != hypervisor.StateRunning {
		t.Fatalf("the orphan was touched: %q %v", s, ok)
	}
	f.eventually("the orphan counted", func(*state.View) bool {
		return testutil.ToFloat64(f.ctl.metrics.orphans.WithLabelValues("m1")) == 1
	})
}

func TestEarliest(t *testing.T) {
	t.Parallel()
	a, b := time.Unix(10, 0), time.Unix(20, 0)
	for _, tc := range []struct{ x, y, want time.Time }{
		{time.Time{}, time.Time{}, time.Time{}}, {a, time.Time{}, a}, {time.Time{}, a, a}, {a, b, a}, {b, a, a},
	} {
		if got := earliest(tc.x, tc.y); !got.Equal(tc.want) {
			t.Errorf("earliest(%v, %v) = %v, want %v", tc.x, tc.y, got, tc.want)
		}
	}
}

// The reaper warns the owner ahead of expiry, then deletes the devserver at expiry; an extension
// after the warning earns a new warning.
func TestReaperWarnsThenDeletes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	expire := f.clock.Now().Add(36 * time.Hour)
	f.create("d1", "small", "m1", func(d *v1.Devserver) {
		d.Lifespan, d.ExpireTime = v1.Lifespan_LIFESPAN_TEMPORARY, timestamppb.New(expire)
	})
	f.waitState("d1", v1.DevserverState_DEVSERVER_STATE_RUNNING)
	if n := notices(f.store.View(), v1.NoticeKind_NOTICE_KIND_EXPIRING); len(n) != 0 {
		t.Fatalf("warned 36h ahead: %v", n)
	}
	f.clock.advance(13 * time.Hour) // 23h left
	f.eventually("the expiry warning", func(v *state.View) bool { return len(notices(v, v1.NoticeKind_NOTICE_KIND_EXPIRING)) == 1 })
	f.clock.advance(23 * time.Hour)
	f.gone("d1")
	if n := notices(f.store.View(), v1.NoticeKind_NOTICE_KIND_EXPIRED); len(n) != 1 {
		t.Fatalf("expired notices: %v", n)
	}
	if _, ok := domainState(t, f.host("m1"), "d1"); ok {
		t.Fatal("the reaped devserver's guest is still there")
	}
}

func TestNext(t *testing.T) {
	t.Parallel()
	managed := &v1.Host{Name: "m1", LibvirtUri: "fake://m1", Health: v1.HostHealth_HOST_HEALTH_HEALTHY}
	sick := &v1.Host{Name: "m1", LibvirtUri: "fake://m1", Health: v1.HostHealth_HOST_HEALTH_UNHEALTHY}
	plain := &v1.Host{Name: "p1"}
	recreate := &v1.Flavor{Name: "small"}
	notify := &v1.Flavor{Name: "pet", Repair: v1.RepairPolicy_REPAIR_POLICY_NOTIFY_ONLY}
	dev := func(s v1.DevserverState, p v1.Power, deleting bool) *v1.Devserver {
		d := &v1.Devserver{Name: "d", State: s, Power: p}
		if deleting {
			d.DeleteTime = timestamppb.Now()
		}
		return d
	}
	const (
		prov    = v1.DevserverState_DEVSERVER_STATE_PROVISIONING
		running = v1.DevserverState_DEVSERVER_STATE_RUNNING
		stopped = v1.DevserverState_DEVSERVER_STATE_STOPPED
		lost    = v1.DevserverState_DEVSERVER_STATE_LOST
		on      = v1.Power_POWER_ON
		off     = v1.Power_POWER_OFF
	)
	for _, tc := range []struct {
		name string
		d    *v1.Devserver
		h    *v1.Host
		f    *v1.Flavor
		want step
	}{
		{"provisioning", dev(prov, on, false), managed, recreate, stepCreate},
		{"provisioning powered off is still created", dev(prov, off, false), managed, recreate, stepCreate},
		{"host without libvirt", dev(prov, on, false), plain, recreate, stepNone},
		{"unhealthy host waits", dev(prov, on, false), sick, recreate, stepNone},
		{"running as asked", dev(running, on, false), managed, recreate, stepNone},
		{"running, owner asked off", dev(running, off, false), managed, recreate, stepStop},
		{"stopped, owner asked on", dev(stopped, on, false), managed, recreate, stepStart},
		{"stopped as asked", dev(stopped, off, false), managed, recreate, stepNone},
		{"deleting", dev(running, on, true), managed, recreate, stepDelete},
		{"deleting on an unhealthy host waits", dev(running, on, true), sick, recreate, stepNone},
		{"lost, recreate", dev(lost, on, false), managed, recreate, stepRepair},
		{"lost on an unhealthy host is still recreated", dev(lost, on, false), sick, recreate, stepRepair},
		{"lost, notify only", dev(lost, on, false), managed, notify, stepNone},
	} {
		if got := next(tc.d, tc.h, tc.f); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestReapStep(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	temp := func(left time.Duration, warned bool) *v1.Devserver {
		d := &v1.Devserver{Lifespan: v1.Lifespan_LIFESPAN_TEMPORARY, ExpireTime: timestamppb.New(now.Add(left))}
		if warned {
			d.ExpiryNoticeTime = timestamppb.New(now.Add(-time.Hour))
		}
		return d
	}
	for _, tc := range []struct {
		name   string
		d      *v1.Devserver
		want   reaping
		wantAt time.Time
	}{
		{"permanent", &v1.Devserver{Lifespan: v1.Lifespan_LIFESPAN_PERMANENT}, reapNothing, time.Time{}},
		{"far off", temp(48*time.Hour, false), reapNothing, now.Add(24 * time.Hour)},
		{"warn", temp(23*time.Hour, false), reapWarn, now.Add(23 * time.Hour)},
		{"warned", temp(23*time.Hour, true), reapNothing, now.Add(23 * time.Hour)},
		{"expired", temp(0, true), reapDelete, time.Time{}},
		{"expired unwarned", temp(-time.Minute, false), reapDelete, time.Time{}},
		{"expired while moving", func() *v1.Devserver {
			d := temp(-time.Minute, true)
			d.State = v1.DevserverState_DEVSERVER_STATE_MIGRATING
			return d
		}(), reapNothing, now.Add(time.Minute)},
	} {
		got, at := reapStep(tc.d, now, 24*time.Hour)
		if got != tc.want || !at.Equal(tc.wantAt) {
			t.Errorf("%s: got %v at %v, want %v at %v", tc.name, got, at, tc.want, tc.wantAt)
		}
	}
}

// testLog sends the provisioner's log to the test's log.
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

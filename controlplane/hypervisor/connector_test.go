package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// healthLog collects OnHealth reports.
type healthLog struct {
	ch chan Health
}

func newHealthLog() *healthLog { return &healthLog{ch: make(chan Health, 1024)} }

func (l *healthLog) report(h Health) { l.ch <- h }

// expect waits for the next report of host and checks its verdict.
func (l *healthLog) expect(t *testing.T, host string, reachable bool) Health {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case h := <-l.ch:
			if h.Host != host {
				continue
			}
			if h.Reachable != reachable {
				t.Fatalf("health of %s: reachable = %v (%v), want %v", host, h.Reachable, h.Err, reachable)
			}
			return h
		case <-deadline:
			t.Fatalf("no health report for %s", host)
		}
	}
}

// fastOptions make a Connector that pings and retries quickly.
func fastOptions(t *testing.T, hl *healthLog) Options {
	o := Options{
		PingInterval: 20 * time.Millisecond,
		PingTimeout:  20 * time.Millisecond,
		BackoffMin:   5 * time.Millisecond,
		BackoffMax:   40 * time.Millisecond,
		AllowFake:    true,
		Logger:       testLogger(t),
	}
	if hl != nil {
		o.OnHealth = hl.report
	}
	return o
}

func newConnector(t *testing.T, o Options) *Connector {
	c := NewConnector(o)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestConnectorRefusesFakeWithoutAllowFake(t *testing.T) {
	c := newConnector(t, Options{})
	for _, uri := range []string{"fake://h1", "fake://h1?cpus=4", "fake:h1"} {
		_, err := c.Open("h1", uri)
		wantKind(t, err, KindInvalidArgument)
		if !strings.Contains(err.Error(), "AllowFake") {
			t.Errorf("error %q does not say how to allow it", err)
		}
		_, err = c.Fake(uri)
		wantKind(t, err, KindInvalidArgument)
	}
	if len(c.Healths()) != 0 {
		t.Error("a refused host was kept")
	}
}

func TestConnectorRefusesBadURIs(t *testing.T) {
	c := newConnector(t, Options{AllowFake: true})
	for _, uri := range []string{"qemu+ssh://h1/system", "http://h1", "qemu+tcp:///system"} {
		_, err := c.Open("h1", uri)
		wantKind(t, err, KindInvalidArgument)
	}
	_, err := c.Fake("qemu:///system")
	wantKind(t, err, KindInvalidArgument)
}

func TestConnectorFakeHost(t *testing.T) {
	ctx := testCtx(t)
	hl := newHealthLog()
	c := newConnector(t, fastOptions(t, hl))
	const uri = "fake://h1?cpus=8&memory_mib=16384"
	hv, err := c.Open("h1", uri)
	if err != nil {
		t.Fatal(err)
	}
	// The first call waits for the connection.
	info, err := hv.NodeInfo(ctx)
	if err != nil || info.CPUs != 8 || info.MemoryMiB != 16384 {
		t.Fatalf("NodeInfo = %+v, %v", info, err)
	}
	h := hl.expect(t, "h1", true)
	if h.URI != uri || h.LastSeen.IsZero() || h.Since.IsZero() || h.Err != nil {
		t.Errorf("health = %+v", h)
	}
	if _, err := hv.DefineAndStart(ctx, devserverSpec("d1", 2, 1024, 0)); err != nil {
		t.Fatal(err)
	}
	// The same name and URI are the same host; the Memory behind it is reachable for tests.
	again, err := c.Open("h1", uri)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := again.Lookup(ctx, "d1"); err != nil || d.Metadata.ID != "id-d1" {
		t.Errorf("Lookup through a second Open = %+v, %v", d, err)
	}
	m, err := c.Fake(uri)
	if err != nil {
		t.Fatal(err)
	}
	if cpus, _ := m.Used(); cpus != 2 {
		t.Errorf("the fake behind the host uses %d CPUs, want 2", cpus)
	}
	if len(c.Healths()) != 1 {
		t.Errorf("Healths = %+v, want one host", c.Healths())
	}
	// Close on a Connector's host does not close the shared connection.
	if err := hv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := again.Ping(ctx); err != nil {
		t.Errorf("Ping after a handle's Close: %v", err)
	}
}

func TestConnectorReportsDropAndRestore(t *testing.T) {
	ctx := testCtx(t)
	hl := newHealthLog()
	c := newConnector(t, fastOptions(t, hl))
	hv, err := c.Open("h1", "fake://h1")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := c.Fake("fake://h1")
	hl.expect(t, "h1", true)

	m.DropConnection()
	down := hl.expect(t, "h1", false)
	if down.Err == nil || down.Failures < 1 {
		t.Errorf("unreachable report = %+v, want the failure and its count", down)
	}
	// While unreachable, calls fail at once, and the Connector keeps trying.
	begin := time.Now()
	err = hv.Ping(ctx)
	wantKind(t, err, KindUnavailable)
	if time.Since(begin) > waitTimeout/2 {
		t.Errorf("a call to an unreachable host took %v", time.Since(begin))
	}
	attempts := m.Calls(OpConnect)
	eventually(t, "more connection attempts", func() bool { return m.Calls(OpConnect) >= attempts+3 })
	if h, _ := c.Health("h1", "fake://h1"); h.Reachable || h.Failures < 3 {
		t.Errorf("health while down = %+v", h)
	}

	m.RestoreConnection()
	up := hl.expect(t, "h1", true)
	if up.Failures != 0 || up.Err != nil || !up.Since.After(down.Since) {
		t.Errorf("reachable report = %+v (unreachable since %v)", up, down.Since)
	}
	if err := hv.Ping(ctx); err != nil {
		t.Errorf("Ping after restore: %v", err)
	}
}

func TestConnectorDropsUnresponsiveHost(t *testing.T) {
	ctx := testCtx(t)
	hl := newHealthLog()
	o := fastOptions(t, hl)
	o.MaxMissedPings = 2
	c := newConnector(t, o)
	hv, err := c.Open("h1", "fake://h1")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := c.Fake("fake://h1")
	hl.expect(t, "h1", true)
	// A call in flight when the host stops answering: it is cut loose when the connection is
	// dropped, as go-libvirt's calls are when their socket closes.
	m.HangNext(OpList)
	listed := make(chan error, 1)
	go func() { _, err := hv.List(ctx); listed <- err }()
	eventually(t, "the list call to hang", func() bool { return m.Calls(OpList) == 1 })
	m.HangNext(OpPing)
	m.HangNext(OpPing)
	h := hl.expect(t, "h1", false)
	if !errors.Is(h.Err, errUnresponsive) {
		t.Errorf("unreachable because %v, want unresponsive", h.Err)
	}
	// Dropping the connection released the hung call, as unavailable.
	select {
	case err := <-listed:
		wantKind(t, err, KindUnavailable)
	case <-time.After(waitTimeout):
		t.Fatal("the call in flight was not released when the connection was dropped")
	}
	hl.expect(t, "h1", true) // the faults are used up: it answers again
	if err := hv.Ping(ctx); err != nil {
		t.Errorf("Ping after recovery: %v", err)
	}
}

func TestConnectorCallDuringDrop(t *testing.T) {
	ctx := testCtx(t)
	c := newConnector(t, fastOptions(t, nil))
	hv, err := c.Open("h1", "fake://h1")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := c.Fake("fake://h1")
	if err := hv.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	m.HangNext(OpLookup)
	done := make(chan error, 1)
	go func() { _, err := hv.Lookup(ctx, "d1"); done <- err }()
	eventually(t, "the lookup to hang", func() bool { return m.Calls(OpLookup) == 1 })
	m.DropConnection()
	select {
	case err := <-done:
		wantKind(t, err, KindUnavailable)
	case <-time.After(waitTimeout):
		t.Fatal("a call in flight was not released by the drop")
	}
	m.RestoreConnection()
	eventually(t, "the host to come back", func() bool { return hv.Ping(ctx) == nil })
}

func TestConnectorCallWaitsForConnectionAttempt(t *testing.T) {
	ctx := testCtx(t)
	o := fastOptions(t, nil)
	o.BackoffMin, o.BackoffMax = time.Hour, time.Hour // one attempt only in this test
	o.Conn.DialTimeout = 50 * time.Millisecond
	c := newConnector(t, o)
	m, err := c.Fake("fake://h1")
	if err != nil {
		t.Fatal(err)
	}
	m.HangNext(OpConnect)
	hv, err := c.Open("h1", "fake://h1")
	if err != nil {
		t.Fatal(err)
	}
	// The call waits for the hung attempt, then fails as unavailable, not as its own timeout.
	err = hv.Ping(ctx)
	wantKind(t, err, KindUnavailable)
	if m.Calls(OpPing) != 0 {
		t.Error("the ping reached the host")
	}
	// A call whose context ends while it waits is a timeout.
	c2 := newConnector(t, o)
	m2, _ := c2.Fake("fake://h2")
	m2.HangNext(OpConnect)
	hv2, _ := c2.Open("h2", "fake://h2")
	short, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
	defer cancel()
	wantKind(t, hv2.Ping(short), KindTimeout)
}

func TestBackoffDelay(t *testing.T) {
	lo, hi := 500*time.Millisecond, 30*time.Second
	want := []time.Duration{lo, lo, 2 * lo, 4 * lo, 8 * lo, 16 * lo, 32 * lo, hi, hi}
	for n, w := range want {
		if got := backoffDelay(n, lo, hi); got != w {
			t.Errorf("backoffDelay(%d) = %v, want %v", n, got, w)
		}
	}
	if got := backoffDelay(1000, lo, hi); got != hi {
		t.Errorf("backoffDelay(1000) = %v, want the cap", got)
	}
	for range 1000 {
		if j := jitter(time.Second, 0.2); j < 800*time.Millisecond || j > 1200*time.Millisecond {
			t.Fatalf("jitter = %v, want within ±20%%", j)
		}
	}
}

func TestConnectorEventsAcrossReconnection(t *testing.T) {
	ctx := testCtx(t)
	c := newConnector(t, fastOptions(t, nil))
	hv, err := c.Open("h1", "fake://h1")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := c.Fake("fake://h1")
	ch, err := hv.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	expectEvents(t, ch, "resync")
	if _, err := hv.DefineAndStart(ctx, devserverSpec("d1", 1, 128, 0)); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, ch, "d1 defined/added", "d1 started/booted")

	m.DropConnection()
	eventually(t, "the host to be unreachable", func() bool { h, _ := c.Health("h1", "fake://h1"); return !h.Reachable })
	if err := m.Crash("d1"); err != nil { // missed: nobody is connected
		t.Fatal(err)
	}
	m.RestoreConnection()
	ev := next(t, ch)
	if ev.Type != EventResync || ev.Host != "h1" {
		t.Fatalf("after reconnection got %s, want resync", eventString(ev))
	}
	if err := m.Vanish("d1"); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, ch, "d1 undefined/removed")
	c.Forget("h1", "fake://h1")
	expectClosed(t, ch)
}

func TestConnectorForget(t *testing.T) {
	ctx := testCtx(t)
	c := newConnector(t, fastOptions(t, nil))
	hv, err := c.Open("h1", "fake://h1")
	if err != nil {
		t.Fatal(err)
	}
	if err := hv.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	c.Forget("h1", "fake://h1")
	wantKind(t, hv.Ping(ctx), KindUnavailable)
	_, err = hv.Events(ctx)
	wantKind(t, err, KindUnavailable)
	if _, ok := c.Health("h1", "fake://h1"); ok {
		t.Error("a forgotten host still has health")
	}
	c.Forget("h1", "fake://h1") // twice is fine
	// Open again: a new connection to the same in-memory host.
	hv, err = c.Open("h1", "fake://h1")
	if err != nil {
		t.Fatal(err)
	}
	if err := hv.Ping(ctx); err != nil {
		t.Errorf("Ping after reopening: %v", err)
	}
}

func TestConnectorCloseStopsEverything(t *testing.T) {
	ctx := testCtx(t)
	before := runtime.NumGoroutine()
	c := NewConnector(fastOptions(t, nil))
	var streams []<-chan Event
	for i := range 20 {
		hv, err := c.Open(fmt.Sprint("h", i), fmt.Sprint("fake://h", i))
		if err != nil {
			t.Fatal(err)
		}
		ch, err := hv.Events(ctx)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, ch)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ch := range streams {
		expectClosed(t, ch)
	}
	_, err := c.Open("h1", "fake://h1")
	wantKind(t, err, KindUnavailable)
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	eventually(t, "the connector's goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

// TestConnectorConcurrent exercises the Connector from many goroutines while connections drop
// and hosts come and go; run with -race.
func TestConnectorConcurrent(t *testing.T) {
	ctx := testCtx(t)
	o := fastOptions(t, nil)
	o.PingInterval = 2 * time.Millisecond
	o.PingTimeout = 2 * time.Millisecond
	o.Logger = slog.New(slog.DiscardHandler)
	var reports sync.WaitGroup
	o.OnHealth = func(Health) {}
	c := newConnector(t, o)
	const hosts = 8
	for i := range hosts {
		if _, err := c.Open(fmt.Sprint("h", i), fmt.Sprint("fake://h", i)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			name, uri := fmt.Sprint("h", w%hosts), fmt.Sprint("fake://h", w%hosts)
			hv, err := c.Open(name, uri)
			if err != nil {
				t.Error(err)
				return
			}
			ectx, cancel := context.WithCancel(ctx)
			defer cancel()
			ch, err := hv.Events(ectx)
			if err == nil {
				reports.Go(func() {
					for range ch {
					}
				})
			}
			for i := range 100 {
				dom := fmt.Sprintf("w%d-%d", w, i)
				_, err := hv.DefineAndStart(ctx, devserverSpec(dom, 1, 128, 0))
				if err != nil && !IsUnavailable(err) {
					t.Error(err)
				}
				_, _ = hv.List(ctx)
				_ = hv.Destroy(ctx, dom)
				_ = hv.Undefine(ctx, dom)
				_ = c.Healths()
			}
		})
	}
	wg.Go(func() {
		for i := range 100 {
			m, _ := c.Fake(fmt.Sprint("fake://h", i%hosts))
			m.DropConnection()
			time.Sleep(time.Millisecond)
			m.RestoreConnection()
			if i%10 == 0 {
				c.Forget(fmt.Sprint("h", i%hosts), fmt.Sprint("fake://h", i%hosts))
				_, _ = c.Open(fmt.Sprint("h", i%hosts), fmt.Sprint("fake://h", i%hosts))
			}
		}
	})
	wg.Wait()
	c.Close()
	reports.Wait()
}

// TestConnectorMigratesBetweenFakes migrates through the Connector's handles: the destination
// is found by its fake:// URI (here by its NAME only), the simulated migration runs on the
// Connector's FakeClock, and a source whose connection drops mid-way returns KindUnavailable
// while the migration goes on.
func TestConnectorMigratesBetweenFakes(t *testing.T) {
	ctx := testCtx(t)
	clock := NewManualClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	o := fastOptions(t, nil)
	o.FakeClock = clock
	c := newConnector(t, o)
	const u1, u2 = "fake://m1?cpus=8&memory_mib=8192", "fake://m2?cpus=8&memory_mib=8192&migration_mibps=100"
	h1, err := c.Open("m1", u1)
	if err != nil {
		t.Fatal(err)
	}
	h2, err := c.Open("m2", u2)
	if err != nil {
		t.Fatal(err)
	}
	ev1, _ := h1.Events(ctx)
	ev2, _ := h2.Events(ctx)
	expectEvents(t, ev1, "resync")
	expectEvents(t, ev2, "resync")
	if _, err := h1.DefineAndStart(ctx, devserverSpec("d1", 2, 1024, 0)); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, ev1, "d1 defined/added", "d1 started/booted")

	done := make(chan error, 1)
	go func() {
		done <- h1.Migrate(ctx, "d1", MigrationTarget{Host: "m2", URI: "fake://m2"}, MigrationParams{BandwidthMiBps: 100})
	}()
	expectEvents(t, ev2, "d1 started/migrated")
	clock.Advance(2 * time.Second)
	s, err := h1.JobStats(ctx, "d1")
	if err != nil || s.DataProcessed != 200*mib {
		t.Fatalf("JobStats through the handle = %+v, %v", s, err)
	}
	if err := h1.SetMaxSpeed(ctx, "d1", 1000); err != nil { // the source's link is 1024 MiB/s
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if err := waitErr(t, done); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, ev1, "d1 suspended/migrated", "d1 stopped/migrated")
	expectEvents(t, ev2, "d1 defined/added", "d1 resumed/migrated")
	if d, err := h2.Lookup(ctx, "d1"); err != nil || d.State != StateRunning {
		t.Fatalf("destination Lookup = %+v, %v", d, err)
	}
	if s, err := h2.JobStats(ctx, "d1"); err != nil || s.Type != JobCompleted {
		t.Errorf("destination JobStats = %+v, %v", s, err)
	}

	// Back over m2's 100 MiB/s link; m2's connection drops mid-way: the caller learns nothing
	// more (KindUnavailable), the migration completes regardless.
	go func() {
		done <- h2.Migrate(ctx, "d1", MigrationTarget{Host: "m1", URI: u1}, MigrationParams{})
	}()
	expectEvents(t, ev1, "d1 started/migrated")
	if s, err := h2.JobStats(ctx, "d1"); err != nil || s.DataRate != 100*mib {
		t.Fatalf("JobStats = %+v, %v; want the link's 100 MiB/s", s, err)
	}
	m2, _ := c.Fake(u2)
	m2.DropConnection()
	wantKind(t, waitErr(t, done), KindUnavailable)
	clock.Advance(10 * time.Second)
	expectEvents(t, ev1, "d1 defined/added", "d1 resumed/migrated")
	m2.RestoreConnection()
	eventually(t, "m2 to be reachable", func() bool { return h2.Ping(ctx) == nil })
	if _, err := h2.Lookup(ctx, "d1"); !IsNotFound(err) {
		t.Errorf("m2 Lookup after the migration: %v", err)
	}
	// A destination the Connector does not know.
	err = h1.Migrate(ctx, "d1", MigrationTarget{URI: "fake://m3"}, MigrationParams{})
	wantKind(t, err, KindInvalidArgument)
}

// The storage calls go through the Connector's handles: a guest with a disk moves between fakes.
func TestConnectorMigratesDiskBetweenFakes(t *testing.T) {
	ctx := testCtx(t)
	clock := NewManualClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	o := fastOptions(t, nil)
	o.FakeClock = clock
	c := newConnector(t, o)
	h1, err := c.Open("m1", "fake://m1?migration_mibps=512")
	if err != nil {
		t.Fatal(err)
	}
	h2, err := c.Open("m2", "fake://m2")
	if err != nil {
		t.Fatal(err)
	}
	if err := h2.Ping(ctx); err != nil { // connected: the in-memory host exists
		t.Fatal(err)
	}
	if _, err := h1.DefineAndStart(ctx, devserverSpec("d1", 1, 512, 2)); err != nil {
		t.Fatal(err)
	}
	vols, err := h1.DomainVolumes(ctx, "d1")
	if err != nil || len(vols) != 1 || vols[0].Name != "d1.raw" || vols[0].Capacity != 2<<30 {
		t.Fatalf("DomainVolumes through the handle = %+v, %v", vols, err)
	}
	to2 := MigrationTarget{Host: "m2", URI: "fake://m2"}
	wantKind(t, h1.Migrate(ctx, "d1", to2, MigrationParams{CopyStorage: true}), KindNotFound) // no pool on m2
	if err := h2.PrepareVolume(ctx, vols[0]); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h1.Migrate(ctx, "d1", to2, MigrationParams{CopyStorage: true}) }()
	eventually(t, "the disk copy to start", func() bool {
		s, err := h1.JobStats(ctx, "d1")
		return err == nil && s.Type.Active()
	})
	clock.Advance(5 * time.Second) // 2 GiB of disk and 512 MiB of memory at 512 MiB/s
	if err := waitErr(t, done); err != nil {
		t.Fatal(err)
	}
	wantKind(t, h2.RemoveVolume(ctx, "d1.raw"), KindFailedPrecondition)
	if err := h1.RemoveVolume(ctx, "d1.raw"); err != nil {
		t.Fatal(err)
	}
	m1, _ := c.Fake("fake://m1")
	m2, _ := c.Fake("fake://m2")
	if len(m1.Volumes()) != 0 || m2.Volumes()["d1.raw"] != 2 {
		t.Errorf("volumes after the move: m1 %v, m2 %v", m1.Volumes(), m2.Volumes())
	}
}

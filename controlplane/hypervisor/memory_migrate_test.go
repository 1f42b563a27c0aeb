package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

const mib = 1 << 20

// memPair is two in-memory hosts that migrate to each other by URI, on one manual clock.
type memPair struct {
	clock    *ManualClock
	src, dst *Memory
	srcEv    <-chan Event
	dstEv    <-chan Event
	target   MigrationTarget
}

func newMemPair(t *testing.T, dstMiB int64) *memPair {
	t.Helper()
	p := &memPair{clock: NewManualClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))}
	hosts := map[string]*Memory{}
	resolve := func(uri string) (*Memory, error) {
		if m, ok := hosts[uri]; ok {
			return m, nil
		}
		return nil, fmt.Errorf("no host %s", uri)
	}
	p.src = NewMemory(MemoryOptions{Host: "m1", CPUs: 8, MemoryMiB: 8192, Clock: p.clock, Resolve: resolve})
	p.dst = NewMemory(MemoryOptions{Host: "m2", CPUs: 8, MemoryMiB: dstMiB, Clock: p.clock, Resolve: resolve})
	hosts["fake://m1"], hosts["fake://m2"] = p.src, p.dst
	p.target = MigrationTarget{Host: "m2", URI: "fake://m2"}
	ctx := testCtx(t)
	var err error
	if p.srcEv, err = p.src.Events(ctx); err != nil {
		t.Fatal(err)
	}
	if p.dstEv, err = p.dst.Events(ctx); err != nil {
		t.Fatal(err)
	}
	return p
}

// start defines and starts a diskless domain on the source.
func (p *memPair) start(t *testing.T, name string, mibs int64) {
	t.Helper()
	if _, err := p.src.DefineAndStart(testCtx(t), devserverSpec(name, 2, mibs, 0)); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, p.srcEv, name+" defined/added", name+" started/booted")
}

// migrate starts Migrate in the background and waits until the job runs.
func (p *memPair) migrate(t *testing.T, name string, params MigrationParams) <-chan error {
	t.Helper()
	ctx := testCtx(t)
	done := make(chan error, 1)
	go func() { done <- p.src.Migrate(ctx, name, p.target, params) }()
	eventually(t, "the migration to start", func() bool {
		s, err := p.src.JobStats(ctx, name)
		return err == nil && s.Type.Active()
	})
	return done
}

func waitErr(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(waitTimeout):
		t.Fatal("Migrate did not return")
	}
	return nil
}

func TestMemoryMigrateProgressAndSuccess(t *testing.T) {
	ctx := testCtx(t)
	p := newMemPair(t, 8192)
	p.start(t, "d1", 1024)
	done := p.migrate(t, "d1", MigrationParams{BandwidthMiBps: 100})
	expectEvents(t, p.dstEv, "d1 started/migrated")

	// The destination holds a paused placeholder that takes the capacity; it has no statistics.
	if d, err := p.dst.Lookup(ctx, "d1"); err != nil || d.State != StatePaused || d.Metadata.ID != "id-d1" {
		t.Errorf("destination Lookup during the migration = %+v, %v; want a paused placeholder", d, err)
	}
	if cpus, mibs := p.dst.Used(); cpus != 2 || mibs != 1024 {
		t.Errorf("destination uses %d CPUs, %d MiB during the migration; want 2, 1024", cpus, mibs)
	}
	_, err := p.dst.JobStats(ctx, "d1")
	wantKind(t, err, KindFailedPrecondition)
	wantKind(t, p.dst.AbortJob(ctx, "d1"), KindFailedPrecondition)

	// 100 MiB/s: 1024 MiB take ~10 s, the last 30 MiB (300 ms of max downtime) in the switch-over.
	var last JobStats
	for i := 1; i <= 5; i++ {
		p.clock.Advance(time.Second)
		s, err := p.src.JobStats(ctx, "d1")
		if err != nil {
			t.Fatal(err)
		}
		if s.Type != JobUnbounded || s.Operation != JobMigrationOut || s.DataTotal != 1024*mib {
			t.Fatalf("JobStats = %+v", s)
		}
		if s.DataProcessed != uint64(i)*100*mib || s.DataRemaining != uint64(1024-i*100)*mib {
			t.Errorf("after %d s: processed %d MiB, remaining %d MiB; want %d and %d",
				i, s.DataProcessed/mib, s.DataRemaining/mib, i*100, 1024-i*100)
		}
		if s.Elapsed != time.Duration(i)*time.Second || s.DataRate != 100*mib || s.Iteration != 1 {
			t.Errorf("after %d s: elapsed %v, rate %d, iteration %d", i, s.Elapsed, s.DataRate, s.Iteration)
		}
		last = s
	}
	if want := time.Duration(float64(last.DataRemaining) / float64(last.DataRate) * 1e9); last.ExpectedDowntime != want {
		t.Errorf("expected downtime %v, want remaining/rate %v", last.ExpectedDowntime, want)
	}

	// Faster from now on: the remaining 524 MiB less 60 MiB at 200 MiB/s take 2.32 s.
	if err := p.src.SetMaxSpeed(ctx, "d1", 200); err != nil {
		t.Fatal(err)
	}
	p.clock.Advance(time.Second)
	if s, _ := p.src.JobStats(ctx, "d1"); s.DataProcessed != 700*mib || s.DataRate != 200*mib {
		t.Errorf("a second after SetMaxSpeed(200): processed %d MiB at %d MiB/s; want 700 at 200", s.DataProcessed/mib, s.DataRate/mib)
	}
	select {
	case err := <-done:
		t.Fatalf("Migrate returned early: %v", err)
	default:
	}
	p.clock.Advance(1320 * time.Millisecond)
	if err := waitErr(t, done); err != nil {
		t.Fatalf("Migrate: %v", err)
	}

	expectEvents(t, p.srcEv, "d1 suspended/migrated", "d1 stopped/migrated")
	expectEvents(t, p.dstEv, "d1 defined/added", "d1 resumed/migrated")
	_, err = p.src.Lookup(ctx, "d1")
	wantKind(t, err, KindNotFound)
	_, err = p.src.JobStats(ctx, "d1")
	wantKind(t, err, KindNotFound)
	d, err := p.dst.Lookup(ctx, "d1")
	if err != nil || d.State != StateRunning || d.Metadata.ID != "id-d1" || d.MemoryMiB != 1024 {
		t.Errorf("destination Lookup = %+v, %v", d, err)
	}
	if cpus, mibs := p.src.Used(); cpus != 0 || mibs != 0 {
		t.Errorf("source still uses %d CPUs, %d MiB", cpus, mibs)
	}
	s, err := p.dst.JobStats(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("completed: %+v", s)
	if s.Type != JobCompleted || s.Operation != JobMigrationIn || s.DataProcessed != 1024*mib ||
		s.Downtime != 300*time.Millisecond || s.Elapsed != 7620*time.Millisecond {
		t.Errorf("completed stats = %+v; want migration in, 1024 MiB, 300 ms downtime, 7.62 s", s)
	}
	if again, _ := p.dst.JobStats(ctx, "d1"); again != s {
		t.Errorf("completed stats read twice differ: %+v", again)
	}
	// It can go back, and the destination's settings came along.
	p.target, p.src, p.dst = MigrationTarget{Host: "m1", URI: "fake://m1"}, p.dst, p.src
	done = p.migrate(t, "d1", MigrationParams{})
	if s, _ := p.src.JobStats(ctx, "d1"); s.DataRate != 200*mib {
		t.Errorf("rate of the way back = %d MiB/s, want the domain's max speed 200", s.DataRate/mib)
	}
	p.clock.Advance(10 * time.Second)
	if err := waitErr(t, done); err != nil {
		t.Fatalf("Migrate back: %v", err)
	}
	if d, err := p.dst.Lookup(ctx, "d1"); err != nil || d.State != StateRunning {
		t.Errorf("after the way back: %+v, %v", d, err)
	}
}

func TestMemoryMigrateAbort(t *testing.T) {
	ctx := testCtx(t)
	p := newMemPair(t, 8192)
	p.start(t, "d1", 1024)
	wantKind(t, p.src.AbortJob(ctx, "d1"), KindFailedPrecondition) // no job
	wantKind(t, p.src.AbortJob(ctx, "nope"), KindNotFound)
	done := p.migrate(t, "d1", MigrationParams{BandwidthMiBps: 100})
	p.clock.Advance(3 * time.Second)
	if err := p.src.AbortJob(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	err := waitErr(t, done)
	wantKind(t, err, KindAborted)
	t.Logf("aborted: %v", err)
	expectEvents(t, p.dstEv, "d1 started/migrated", "d1 crashed/failed")
	if d, err := p.src.Lookup(ctx, "d1"); err != nil || d.State != StateRunning {
		t.Errorf("source after the abort: %+v, %v; want it running", d, err)
	}
	if s, err := p.src.JobStats(ctx, "d1"); err != nil || s.Type != JobNone {
		t.Errorf("source JobStats after the abort = %+v, %v; want none", s, err)
	}
	_, err = p.dst.Lookup(ctx, "d1")
	wantKind(t, err, KindNotFound)
	if cpus, mibs := p.dst.Used(); cpus != 0 || mibs != 0 {
		t.Errorf("destination still holds %d CPUs, %d MiB", cpus, mibs)
	}
	wantKind(t, p.src.AbortJob(ctx, "d1"), KindFailedPrecondition)
	// Nothing is left in the way of another try.
	done = p.migrate(t, "d1", MigrationParams{})
	p.clock.Advance(2 * time.Second)
	if err := waitErr(t, done); err != nil {
		t.Fatalf("Migrate after an abort: %v", err)
	}
}

func TestMemoryMigrateDestinationFails(t *testing.T) {
	ctx := testCtx(t)
	p := newMemPair(t, 8192)
	p.start(t, "d1", 1024)

	// Dropped mid-way.
	done := p.migrate(t, "d1", MigrationParams{BandwidthMiBps: 100})
	p.clock.Advance(2 * time.Second)
	p.dst.DropConnection()
	err := waitErr(t, done)
	wantKind(t, err, KindUnavailable)
	t.Logf("destination dropped: %v", err)
	if d, err := p.src.Lookup(ctx, "d1"); err != nil || d.State != StateRunning {
		t.Errorf("source after the failure: %+v, %v", d, err)
	}
	p.dst.RestoreConnection()
	if list, _ := p.dst.List(ctx); len(list) != 0 {
		t.Errorf("destination after the failure: %+v", list)
	}

	// Unreachable from the start.
	p.dst.DropConnection()
	wantKind(t, p.src.Migrate(ctx, "d1", p.target, MigrationParams{}), KindUnavailable)
	p.dst.RestoreConnection()
	if p.dstEv, err = p.dst.Events(ctx); err != nil { // the drops ended the stream
		t.Fatal(err)
	}

	// A fault injected on the destination's side.
	p.dst.FailNext(OpMigrateIncoming, &Error{Kind: KindInternal, Message: "injected: qemu failed to start"})
	err = p.src.Migrate(ctx, "d1", p.target, MigrationParams{})
	wantKind(t, err, KindInternal)
	if p.dst.Calls(OpMigrateIncoming) != 3 {
		t.Errorf("incoming migrations counted: %d, want 3", p.dst.Calls(OpMigrateIncoming))
	}

	// A destination that hangs: the migration waits until it is aborted.
	p.dst.HangNext(OpMigrateIncoming)
	done = p.migrate(t, "d1", MigrationParams{})
	if err := p.src.AbortJob(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	wantKind(t, waitErr(t, done), KindAborted)

	// The guest stopping on the destination's side fails the migration too.
	done = p.migrate(t, "d1", MigrationParams{BandwidthMiBps: 100})
	expectEvents(t, p.dstEv, "d1 started/migrated")
	if err := p.dst.Destroy(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	wantKind(t, waitErr(t, done), KindInternal)
	expectEvents(t, p.dstEv, "d1 stopped/destroyed")
	if _, err := p.dst.Lookup(ctx, "d1"); !IsNotFound(err) {
		t.Errorf("the destroyed placeholder stays: %v", err)
	}

	// And on the source's: the guest is gone.
	done = p.migrate(t, "d1", MigrationParams{BandwidthMiBps: 100})
	if err := p.src.Crash("d1"); err != nil {
		t.Fatal(err)
	}
	wantKind(t, waitErr(t, done), KindFailedPrecondition)
	if list, _ := p.dst.List(ctx); len(list) != 0 {
		t.Errorf("destination after the source crashed: %+v", list)
	}
	if cpus, _ := p.dst.Used(); cpus != 0 {
		t.Errorf("destination holds %d CPUs", cpus)
	}
}

func TestMemoryMigratePreconditions(t *testing.T) {
	ctx := testCtx(t)
	p := newMemPair(t, 1024) // room for one 1 GiB guest
	p.start(t, "big", 2048)
	p.start(t, "d1", 512)
	if _, err := p.src.DefineAndStart(ctx, devserverSpec("disk", 1, 128, 10)); err != nil {
		t.Fatal(err)
	}

	// The destination's capacity is respected: the guest stays where it is.
	err := p.src.Migrate(ctx, "big", p.target, MigrationParams{})
	wantKind(t, err, KindFailedPrecondition)
	t.Logf("too big: %v", err)
	if d, _ := p.src.Lookup(ctx, "big"); d.State != StateRunning {
		t.Errorf("source after a refused migration: %s", d.State)
	}
	if s, err := p.src.JobStats(ctx, "big"); err != nil || s.Type != JobNone {
		t.Errorf("JobStats after a refused migration = %+v, %v", s, err)
	}
	// A running guest on the destination takes the room too.
	if _, err := p.dst.DefineAndStart(ctx, devserverSpec("other", 1, 768, 0)); err != nil {
		t.Fatal(err)
	}
	wantKind(t, p.src.Migrate(ctx, "d1", p.target, MigrationParams{}), KindFailedPrecondition)
	if err := p.dst.Destroy(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	// The name is taken on the destination (by a shut-off domain).
	if _, err := p.dst.DefineAndStart(ctx, devserverSpec("d1", 1, 128, 0)); err != nil {
		t.Fatal(err)
	}
	if err := p.dst.Destroy(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	wantKind(t, p.src.Migrate(ctx, "d1", p.target, MigrationParams{}), KindAlreadyExists)
	if err := p.dst.Undefine(ctx, "d1"); err != nil {
		t.Fatal(err)
	}

	wantKind(t, p.src.Migrate(ctx, "disk", p.target, MigrationParams{}), KindFailedPrecondition)
	wantKind(t, p.src.Migrate(ctx, "nope", p.target, MigrationParams{}), KindNotFound)
	wantKind(t, p.src.Migrate(ctx, "d1", MigrationTarget{URI: "fake://m1"}, MigrationParams{}), KindInvalidArgument)
	wantKind(t, p.src.Migrate(ctx, "d1", MigrationTarget{URI: "fake://m9"}, MigrationParams{}), KindInvalidArgument)
	wantKind(t, p.src.Migrate(ctx, "d1", MigrationTarget{URI: "qemu+tcp://10.0.0.2/system"}, MigrationParams{}), KindInvalidArgument)
	wantKind(t, p.src.Migrate(ctx, "d1", p.target, MigrationParams{MaxDowntime: -time.Second}), KindInvalidArgument)
	wantKind(t, p.src.SetMaxSpeed(ctx, "d1", 1<<60), KindInvalidArgument)
	if err := p.src.Destroy(ctx, "big"); err != nil {
		t.Fatal(err)
	}
	wantKind(t, p.src.Migrate(ctx, "big", p.target, MigrationParams{}), KindFailedPrecondition) // not running
	_, err = p.src.JobStats(ctx, "big")
	wantKind(t, err, KindNotFound) // not running: no job

	// One migration at a time.
	done := p.migrate(t, "d1", MigrationParams{BandwidthMiBps: 100})
	wantKind(t, p.src.Migrate(ctx, "d1", p.target, MigrationParams{}), KindFailedPrecondition)
	p.clock.Advance(10 * time.Second)
	if err := waitErr(t, done); err != nil {
		t.Fatal(err)
	}
	// Injected faults and calls are counted as for every operation.
	p.dst.FailNext(OpMigrate, errors.New("boom"))
	wantKind(t, p.dst.Migrate(ctx, "d1", MigrationTarget{URI: "fake://m1"}, MigrationParams{}), KindInternal)
	if p.dst.Calls(OpMigrate) != 1 {
		t.Errorf("Calls(OpMigrate) = %d", p.dst.Calls(OpMigrate))
	}
}

// TestMemoryMigrateGoesOn: a caller that gives up (ctx) or loses its connection leaves the
// migration running, as with libvirt.
func TestMemoryMigrateGoesOn(t *testing.T) {
	ctx := testCtx(t)
	p := newMemPair(t, 8192)
	p.start(t, "d1", 1024)
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.src.Migrate(mctx, "d1", p.target, MigrationParams{BandwidthMiBps: 100}) }()
	eventually(t, "the migration to start", func() bool {
		s, err := p.src.JobStats(ctx, "d1")
		return err == nil && s.Type.Active()
	})
	cancel()
	wantKind(t, waitErr(t, done), KindTimeout)
	p.clock.Advance(5 * time.Second)
	if s, err := p.src.JobStats(ctx, "d1"); err != nil || s.DataProcessed != 500*mib {
		t.Errorf("JobStats after the caller left = %+v, %v", s, err)
	}
	p.src.DropConnection()
	p.clock.Advance(5 * time.Second)
	eventually(t, "the migration to complete", func() bool {
		d, err := p.dst.Lookup(ctx, "d1")
		return err == nil && d.State == StateRunning
	})
	p.src.RestoreConnection()
	if _, err := p.src.Lookup(ctx, "d1"); !IsNotFound(err) {
		t.Errorf("source after the migration: %v", err)
	}
}

// TestMemoryMigrateDirtyRate: a guest that dirties memory as fast as it is sent never converges
// until the bandwidth, the max downtime or auto-converge lets it.
func TestMemoryMigrateDirtyRate(t *testing.T) {
	ctx := testCtx(t)
	p := newMemPair(t, 8192)
	p.start(t, "d1", 1024)
	if err := p.src.SetDirtyRate("d1", 100*mib); err != nil {
		t.Fatal(err)
	}
	done := p.migrate(t, "d1", MigrationParams{BandwidthMiBps: 100})
	p.clock.Advance(30 * time.Second)
	s, err := p.src.JobStats(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if s.DataRemaining != 1024*mib || s.DataProcessed != 3000*mib || s.DirtyRate != 100*mib || s.Iteration != 3 {
		t.Errorf("a non-converging migration: %+v", s)
	}
	// Twice the bandwidth: 1024 MiB less 60 MiB left, shrinking by 100 MiB/s.
	if err := p.src.SetMaxSpeed(ctx, "d1", 200); err != nil {
		t.Fatal(err)
	}
	p.clock.Advance(9640 * time.Millisecond)
	if err := waitErr(t, done); err != nil {
		t.Fatal(err)
	}
	if s, _ := p.dst.JobStats(ctx, "d1"); s.Downtime != 300*time.Millisecond {
		t.Errorf("downtime = %v", s.Downtime)
	}

	// Back, with auto-converge: the guest is throttled to half the bandwidth.
	p.target, p.src, p.dst = MigrationTarget{URI: "fake://m1"}, p.dst, p.src
	done = p.migrate(t, "d1", MigrationParams{BandwidthMiBps: 100, AutoConverge: true, MaxDowntime: time.Second})
	p.clock.Advance(time.Second)
	if s, _ := p.src.JobStats(ctx, "d1"); s.AutoConvergeThrottle != 50 || s.DirtyRate != 50*mib {
		t.Errorf("auto-converge: throttle %d%%, dirty rate %d MiB/s; want 50, 50", s.AutoConvergeThrottle, s.DirtyRate/mib)
	}
	// (1024 - 100) MiB left for the 1 s downtime, shrinking by 50 MiB/s: 18.48 s in all.
	p.clock.Advance(17480 * time.Millisecond)
	if err := waitErr(t, done); err != nil {
		t.Fatal(err)
	}
	if s, _ := p.dst.JobStats(ctx, "d1"); s.Downtime != time.Second {
		t.Errorf("downtime = %v, want the 1 s max", s.Downtime)
	}
}

// TestMemoryMigrateConcurrent migrates guests back and forth between two hosts from many
// goroutines while others sample, abort, change speeds and drop connections; run with -race.
// Each guest must end up on exactly one host, and the capacity accounts must add up.
func TestMemoryMigrateConcurrent(t *testing.T) {
	ctx := testCtx(t)
	hosts := map[string]*Memory{}
	resolve := func(uri string) (*Memory, error) { return hosts[uri], nil }
	for _, n := range []string{"m1", "m2"} {
		hosts["fake://"+n] = NewMemory(MemoryOptions{Host: n, CPUs: 64, MemoryMiB: 64 << 10,
			MigrationMiBps: 16 << 10, Resolve: resolve})
	}
	m1, m2 := hosts["fake://m1"], hosts["fake://m2"]
	const guests = 8
	for i := range guests {
		if _, err := m1.DefineAndStart(ctx, devserverSpec(fmt.Sprint("g", i), 1, 64, 0)); err != nil {
			t.Fatal(err)
		}
	}
	where := func(name string) (*Memory, *Memory, string) {
		if d, err := m1.Lookup(ctx, name); err == nil && d.State == StateRunning {
			return m1, m2, "fake://m2"
		}
		return m2, m1, "fake://m1"
	}
	var outcomes outcomeCount
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := range guests {
		name := fmt.Sprint("g", i)
		wg.Go(func() {
			// Until six migrations of this guest succeeded (others fail, or find the guest
			// still moving after a call that lost its connection).
			for ok, deadline := 0, time.Now().Add(waitTimeout/2); ok < 6 && time.Now().Before(deadline); {
				src, _, uri := where(name)
				err := src.Migrate(ctx, name, MigrationTarget{URI: uri},
					MigrationParams{BandwidthMiBps: uint64(1024 << (i % 4)), MaxDowntime: 2 * time.Millisecond})
				outcomes.add(err)
				switch KindOf(err) {
				case KindAborted, KindUnavailable, KindFailedPrecondition, KindNotFound:
					time.Sleep(2 * time.Millisecond)
				default:
					if err != nil {
						t.Errorf("migrate %s: %v", name, err)
					}
					ok++
				}
			}
		})
	}
	var chaos sync.WaitGroup
	chaos.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprint("g", rand.IntN(guests))
			src, dst, _ := where(name)
			_, _ = src.JobStats(ctx, name)
			_, _ = dst.JobStats(ctx, name)
			_, _ = dst.List(ctx)
			switch {
			case i%40 == 0:
				_ = src.AbortJob(ctx, name)
			case i%10 == 3:
				_ = src.SetMaxSpeed(ctx, name, uint64(i%3)*2048)
			case i%20 == 5:
				_ = src.SetDirtyRate(name, uint64(i%2)*64*mib)
			case i%50 == 49:
				dst.DropConnection()
				time.Sleep(100 * time.Microsecond)
				dst.RestoreConnection()
			}
			time.Sleep(time.Millisecond)
		}
	})
	wg.Wait()
	close(stop)
	chaos.Wait()
	t.Logf("outcomes: %v", outcomes.m)
	if outcomes.m["ok"] < 6*guests {
		t.Errorf("only %d migrations succeeded", outcomes.m["ok"])
	}
	// Migrations whose caller lost its connection go on: wait for them.
	eventually(t, "the migrations to end", func() bool {
		for _, m := range []*Memory{m1, m2} {
			list, err := m.List(ctx)
			if err != nil {
				return false
			}
			for _, d := range list {
				if s, err := m.JobStats(ctx, d.Name); err != nil || s.Type.Active() {
					return false
				}
			}
		}
		return true
	})
	var cpus, mibs [2]int64
	for i := range guests {
		name := fmt.Sprint("g", i)
		var on []string
		for j, m := range []*Memory{m1, m2} {
			if d, err := m.Lookup(ctx, name); err == nil {
				on = append(on, m.Host()+":"+string(d.State))
				cpus[j] += d.VCPUs
				mibs[j] += d.MemoryMiB
			}
		}
		if len(on) != 1 || !strings.HasSuffix(on[0], string(StateRunning)) {
			t.Errorf("%s is on %v, want running on one host", name, on)
		}
	}
	for j, m := range []*Memory{m1, m2} {
		if c, mb := m.Used(); c != cpus[j] || mb != mibs[j] {
			t.Errorf("%s uses %d CPUs, %d MiB; its guests %d, %d", m.Host(), c, mb, cpus[j], mibs[j])
		}
	}
}

// outcomeCount counts migration outcomes by kind.
type outcomeCount struct {
	mu sync.Mutex
	m  map[string]int
}

func (o *outcomeCount) add(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = make(map[string]int)
	}
	k := "ok"
	if err != nil {
		k = KindOf(err).String()
	}
	o.m[k]++
}

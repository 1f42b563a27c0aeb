package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestMemoryLifecycle(t *testing.T) {
	ctx := testCtx(t)
	m := NewMemory(MemoryOptions{Host: "h1", CPUs: 8, MemoryMiB: 8192})
	info, err := m.NodeInfo(ctx)
	if err != nil || info.CPUs != 8 || info.MemoryMiB != 8192 || info.Hostname != "h1" || info.UUID == "" {
		t.Fatalf("NodeInfo = %+v, %v", info, err)
	}
	spec := devserverSpec("b", 2, 1024, 10)
	d, err := m.DefineAndStart(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if d.State != StateRunning || d.UUID == "" || d.Metadata != spec.Metadata || !d.Managed() {
		t.Errorf("DefineAndStart = %+v", d)
	}
	if _, err := m.DefineAndStart(ctx, devserverSpec("a", 1, 512, 0)); err != nil {
		t.Fatal(err)
	}
	_, err = m.DefineAndStart(ctx, spec)
	wantKind(t, err, KindAlreadyExists)
	_, err = m.DefineAndStart(ctx, DomainSpec{Name: "bad/name", VCPUs: 1, MemoryMiB: 128})
	wantKind(t, err, KindInvalidArgument)
	sameUUID := devserverSpec("c", 1, 128, 0)
	sameUUID.UUID = d.UUID
	_, err = m.DefineAndStart(ctx, sameUUID)
	wantKind(t, err, KindAlreadyExists)

	list, err := m.List(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "a" || list[1].Name != "b" {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if got, err := m.Lookup(ctx, "b"); err != nil || got != d {
		t.Errorf("Lookup = %+v, %v; want %+v", got, err, d)
	}
	if vols := m.Volumes(); vols["b.raw"] != 10 || len(vols) != 1 {
		t.Errorf("Volumes = %v, want b.raw of 10 GiB", vols)
	}

	wantKind(t, m.Undefine(ctx, "b"), KindFailedPrecondition)
	if err := m.Shutdown(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Lookup(ctx, "b"); got.State != StateShutOff {
		t.Errorf("after Shutdown state = %s", got.State)
	}
	if err := m.Shutdown(ctx, "b"); err != nil {
		t.Errorf("Shutdown of a shut-off domain: %v", err)
	}
	if err := m.Start(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Lookup(ctx, "b"); got.State != StateRunning {
		t.Errorf("after Start state = %s", got.State)
	}
	if err := m.Start(ctx, "b"); err != nil {
		t.Errorf("Start of a running domain: %v", err)
	}
	wantKind(t, m.Start(ctx, "nope"), KindNotFound)
	if err := m.Shutdown(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := m.Destroy(ctx, "b"); err != nil {
		t.Errorf("Destroy of a shut-off domain: %v", err)
	}
	if err := m.Undefine(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if len(m.Volumes()) != 0 {
		t.Errorf("volume left after Undefine: %v", m.Volumes())
	}
	_, err = m.Lookup(ctx, "b")
	wantKind(t, err, KindNotFound)
	wantKind(t, m.Undefine(ctx, "b"), KindNotFound)
	wantKind(t, m.Destroy(ctx, "b"), KindNotFound)
	wantKind(t, m.Shutdown(ctx, "b"), KindNotFound)
}

func TestMemoryCapacity(t *testing.T) {
	ctx := testCtx(t)
	m := NewMemory(MemoryOptions{Host: "h1", CPUs: 4, MemoryMiB: 4096})
	if _, err := m.DefineAndStart(ctx, devserverSpec("a", 2, 3072, 0)); err != nil {
		t.Fatal(err)
	}
	_, err := m.DefineAndStart(ctx, devserverSpec("b", 1, 2048, 0))
	wantKind(t, err, KindFailedPrecondition) // memory
	_, err = m.DefineAndStart(ctx, devserverSpec("c", 3, 512, 0))
	wantKind(t, err, KindFailedPrecondition) // CPUs
	if err := m.Destroy(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if cpus, mib := m.Used(); cpus != 0 || mib != 0 {
		t.Errorf("Used after destroy = %d, %d", cpus, mib)
	}
	if _, err := m.DefineAndStart(ctx, devserverSpec("b", 1, 2048, 0)); err != nil {
		t.Errorf("a stopped domain still holds capacity: %v", err)
	}
	wantKind(t, m.Start(ctx, "a"), KindFailedPrecondition) // b took its room
	if err := m.Destroy(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, "a"); err != nil {
		t.Errorf("Start once there is room: %v", err)
	}
}

func TestMemoryEvents(t *testing.T) {
	ctx := testCtx(t)
	m := NewMemory(MemoryOptions{Host: "h1", CPUs: 1000})
	sctx, stop := context.WithCancel(ctx)
	ch, err := m.Events(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.DefineAndStart(ctx, devserverSpec("d1", 1, 128, 0)); err != nil {
		t.Fatal(err)
	}
	if err := m.Destroy(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	if err := m.Undefine(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, ch, "d1 defined/added", "d1 started/booted", "d1 stopped/destroyed", "d1 undefined/removed")
	stop()
	expectClosed(t, ch)

	// A slow consumer never blocks the host: events queue up.
	ch, err = m.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if _, err := m.DefineAndStart(ctx, devserverSpec(fmt.Sprint("q", i), 1, 128, 0)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 100 {
		expectEvents(t, ch, fmt.Sprintf("q%d defined/added", i), fmt.Sprintf("q%d started/booted", i))
	}
}

func TestMemoryFailNext(t *testing.T) {
	ctx := testCtx(t)
	m := NewMemory(MemoryOptions{Host: "h1"})
	m.FailNext(OpDefineAndStart, &Error{Kind: KindUnavailable, Message: "injected"})
	m.FailNext(OpDefineAndStart, errors.New("plain"))
	m.FailNext(OpLookup, nil)

	_, err := m.DefineAndStart(ctx, devserverSpec("d1", 1, 128, 0))
	wantKind(t, err, KindUnavailable)
	var e *Error
	if !errors.As(err, &e) || e.Host != "h1" || e.Op != OpDefineAndStart || e.Domain != "d1" {
		t.Errorf("injected error = %#v, want host, op and domain filled in", e)
	}
	_, err = m.DefineAndStart(ctx, devserverSpec("d1", 1, 128, 0))
	wantKind(t, err, KindInternal)
	if _, err := m.Lookup(ctx, "d1"); err == nil {
		t.Error("the injected lookup failure did not happen")
	}
	// The faults are used up; the failed calls did nothing.
	if _, err := m.DefineAndStart(ctx, devserverSpec("d1", 1, 128, 0)); err != nil {
		t.Fatalf("third DefineAndStart: %v", err)
	}
	if got := m.Calls(OpDefineAndStart); got != 3 {
		t.Errorf("Calls = %d, want 3", got)
	}
}

func TestMemoryHangNext(t *testing.T) {
	ctx := testCtx(t)
	m := NewMemory(MemoryOptions{Host: "h1"})
	m.HangNext(OpDestroy)
	if _, err := m.DefineAndStart(ctx, devserverSpec("d1", 1, 128, 0)); err != nil {
		t.Fatal(err)
	}
	hctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	err := m.Destroy(hctx, "d1")
	wantKind(t, err, KindTimeout)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hung call error %v does not wrap the deadline", err)
	}
	if d, _ := m.Lookup(ctx, "d1"); d.State != StateRunning {
		t.Errorf("a hung destroy did something: %s", d.State)
	}

	// A hung call returns when the connection drops, as go-libvirt's do.
	m.HangNext(OpList)
	done := make(chan error, 1)
	go func() { _, err := m.List(ctx); done <- err }()
	eventually(t, "the list call to hang", func() bool { return m.Calls(OpList) == 1 })
	m.DropConnection()
	select {
	case err := <-done:
		wantKind(t, err, KindUnavailable)
	case <-time.After(waitTimeout):
		t.Fatal("hung call not released by DropConnection")
	}
}

func TestMemoryDropConnection(t *testing.T) {
	ctx := testCtx(t)
	m := NewMemory(MemoryOptions{Host: "h1"})
	if _, err := m.DefineAndStart(ctx, devserverSpec("d1", 1, 128, 0)); err != nil {
		t.Fatal(err)
	}
	ch, err := m.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m.DropConnection()
	expectClosed(t, ch)
	wantKind(t, m.Ping(ctx), KindUnavailable)
	_, err = m.Lookup(ctx, "d1")
	wantKind(t, err, KindUnavailable)
	_, err = m.Events(ctx)
	wantKind(t, err, KindUnavailable)
	m.RestoreConnection()
	if d, err := m.Lookup(ctx, "d1"); err != nil || d.State != StateRunning {
		t.Errorf("after restore Lookup = %+v, %v; the domain should have lived on", d, err)
	}
}

func TestMemoryBehindTheBack(t *testing.T) {
	ctx := testCtx(t)
	m := NewMemory(MemoryOptions{Host: "h1"})
	for _, n := range []string{"v", "c", "p"} {
		if _, err := m.DefineAndStart(ctx, devserverSpec(n, 1, 128, 5)); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := m.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}

	if err := m.Vanish("v"); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, ch, "v stopped/destroyed", "v undefined/removed")
	_, err = m.Lookup(ctx, "v")
	wantKind(t, err, KindNotFound)
	if _, ok := m.Volumes()["v.raw"]; !ok {
		t.Error("Vanish took the volume too")
	}
	if err := m.Undefine(ctx, "v"); err != nil {
		t.Errorf("Undefine of a vanished domain with a leftover volume: %v", err)
	}
	if _, ok := m.Volumes()["v.raw"]; ok {
		t.Error("Undefine left the volume of a vanished domain")
	}

	if err := m.Crash("c"); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, ch, "c crashed/crashed")
	if d, _ := m.Lookup(ctx, "c"); d.State != StateShutOff {
		t.Errorf("crashed domain state = %s", d.State)
	}
	wantKind(t, m.Crash("c"), KindFailedPrecondition)

	if err := m.PowerOff("p"); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, ch, "p shutdown/finished", "p stopped/shutdown")
	if cpus, _ := m.Used(); cpus != 0 {
		t.Errorf("stopped domains still use %d CPUs", cpus)
	}
	wantKind(t, m.Vanish("nope"), KindNotFound)
}

func TestMemoryClose(t *testing.T) {
	ctx := testCtx(t)
	m := NewMemory(MemoryOptions{Host: "h1"})
	ch, err := m.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, ch)
	wantKind(t, m.Ping(ctx), KindUnavailable)
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestMemoryConcurrent drives one host from many goroutines while its connection flaps; run
// with -race.
func TestMemoryConcurrent(t *testing.T) {
	ctx := testCtx(t)
	m := NewMemory(MemoryOptions{Host: "h1", CPUs: 1 << 20, MemoryMiB: 1 << 30})
	ectx, stopEvents := context.WithCancel(ctx)
	defer stopEvents()
	ch, err := m.Events(ectx)
	if err != nil {
		t.Fatal(err)
	}
	var consumed sync.WaitGroup
	consumed.Go(func() {
		for range ch {
		}
	})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 200 {
				name := fmt.Sprintf("w%d-%d", w, i)
				if _, err := m.DefineAndStart(ctx, devserverSpec(name, 1, 128, int64(i%2))); err != nil {
					if !IsUnavailable(err) {
						t.Error(err)
					}
					continue
				}
				_, _ = m.Lookup(ctx, name)
				_, _ = m.List(ctx)
				_ = m.Destroy(ctx, name)
				_ = m.Undefine(ctx, name)
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			m.DropConnection()
			m.RestoreConnection()
			m.FailNext(OpLookup, nil)
		}
	})
	wg.Wait()
	stopEvents()
	consumed.Wait()
}

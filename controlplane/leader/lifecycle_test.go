package leader

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log = append(e.log, s)
}

func (e *events) get() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.log)
}

// testController records its starts and stops; it can fail its first runs.
type testController struct {
	name     string
	ev       *events
	failures atomic.Int32
}

func (c *testController) Name() string { return c.name }

func (c *testController) Run(ctx context.Context) error {
	c.ev.add("start " + c.name)
	if c.failures.Load() > 0 {
		c.failures.Add(-1)
		c.ev.add("fail " + c.name)
		return errors.New("boom")
	}
	<-ctx.Done()
	c.ev.add("stop " + c.name)
	return nil
}

type fakeRaft struct {
	ev       *events
	failures atomic.Int32
	block    chan struct{} // if set, Barrier waits on it
}

func (r *fakeRaft) Barrier(ctx context.Context) error {
	if r.block != nil {
		select {
		case <-r.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if r.failures.Load() > 0 {
		r.failures.Add(-1)
		r.ev.add("barrier failed")
		return errors.New("no quorum")
	}
	r.ev.add("barrier")
	return nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func setup(t *testing.T, r *fakeRaft, ev *events, cs ...*testController) (*Lifecycle, chan bool) {
	l := New(r, slog.New(slog.DiscardHandler))
	l.BarrierRetry, l.RestartBackoff = time.Millisecond, time.Millisecond
	for _, c := range cs {
		l.Register(c)
	}
	changes := make(chan bool)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx, changes) }()
	t.Cleanup(func() { cancel(); <-done })
	return l, changes
}

func TestStartInOrderStopInReverse(t *testing.T) {
	t.Parallel()
	ev := &events{}
	r := &fakeRaft{ev: ev}
	r.failures.Store(2)
	a, b := &testController{name: "a", ev: ev}, &testController{name: "b", ev: ev}
	l, changes := setup(t, r, ev, a, b)

	changes <- true
	waitFor(t, "ready", l.Ready)
	waitFor(t, "both controllers running", func() bool {
		ev := ev.get()
		return slices.Contains(ev, "start a") && slices.Contains(ev, "start b")
	})
	changes <- false
	waitFor(t, "not ready", func() bool { return !l.Ready() })
	want := []string{"barrier failed", "barrier failed", "barrier", "start a", "start b", "stop b", "stop a"}
	waitFor(t, "both stopped", func() bool { return len(ev.get()) == len(want) })
	got := ev.get()
	// The controllers start concurrently; only the barrier-before-start and the stop order are promised.
	if !slices.Equal(got[:3], want[:3]) || !slices.Equal(got[5:], want[5:]) {
		t.Fatalf("events %v, want %v", got, want)
	}
}

func TestFailedControllerRestarts(t *testing.T) {
	t.Parallel()
	ev := &events{}
	c := &testController{name: "c", ev: ev}
	c.failures.Store(2)
	l, changes := setup(t, &fakeRaft{ev: ev}, ev, c)
	changes <- true
	waitFor(t, "third start", func() bool {
		n := 0
		for _, e := range ev.get() {
			if e == "start c" {
				n++
			}
		}
		return n == 3
	})
	if !l.Ready() {
		t.Fatal("not ready while leading")
	}
}

func TestLosingLeadershipDuringBarrierStartsNothing(t *testing.T) {
	t.Parallel()
	ev := &events{}
	r := &fakeRaft{ev: ev, block: make(chan struct{})}
	l, changes := setup(t, r, ev, &testController{name: "a", ev: ev})
	changes <- true
	changes <- false
	close(r.block)
	time.Sleep(20 * time.Millisecond)
	if l.Ready() || slices.Contains(ev.get(), "start a") {
		t.Fatalf("controllers started after leadership was lost: %v", ev.get())
	}
	// Gaining it again works.
	changes <- true
	waitFor(t, "ready", l.Ready)
}

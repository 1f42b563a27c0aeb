package hypervisor

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"
)

// waitTimeout bounds every wait in the unit tests: generous, since a wait that times out is a
// failure, not a measurement.
const waitTimeout = 10 * time.Second

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func devserverSpec(name string, vcpus, mib, disk int64) DomainSpec {
	return DomainSpec{Name: name, VCPUs: vcpus, MemoryMiB: mib, DiskGiB: disk,
		Metadata: Metadata{Kind: InstanceDevserver, ID: "id-" + name, Owner: "alice", Flavor: "small"}}
}

// next returns the next event of ch, failing the test if none comes in time or ch closes.
func next(t *testing.T, ch <-chan Event) Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("event stream closed")
		}
		return ev
	case <-time.After(waitTimeout):
		t.Fatal("no event")
	}
	return Event{}
}

// expectEvents reads events and checks their domain, type and detail ("domain type/detail").
func expectEvents(t *testing.T, ch <-chan Event, want ...string) {
	t.Helper()
	for _, w := range want {
		ev := next(t, ch)
		if got := eventString(ev); got != w {
			t.Fatalf("event %s, want %s", got, w)
		}
	}
}

func eventString(ev Event) string {
	if ev.Type == EventResync {
		return string(EventResync)
	}
	return fmt.Sprintf("%s %s/%s", ev.Domain, ev.Type, ev.Detail)
}

// expectClosed waits until ch is closed, skipping events.
func expectClosed(t *testing.T, ch <-chan Event) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("event stream not closed")
		}
	}
}

func wantKind(t *testing.T, err error, want Kind) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", want)
	}
	if got := KindOf(err); got != want {
		t.Fatalf("error %v is %v, want %v", err, got, want)
	}
}

// eventually polls cond until it holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testLogger logs to the test's output (shown when the test fails or with -v).
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

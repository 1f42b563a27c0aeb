package eventlog

import (
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	devfleetv1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// clock is an injectable Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testLogger sends the log's records to t.Log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// openTest opens a log in a fresh temp dir, without fsync unless o says otherwise through sync.
func openTest(t testing.TB, o Options) (*Log, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.db")
	o.noSync = true
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l, path
}

func event(index uint64, n uint32, at time.Time, topic, key string, size int) *devfleetv1.Event {
	return &devfleetv1.Event{
		Index: index, N: n, Time: timestamppb.New(at), Topic: topic, Key: key,
		Object: &anypb.Any{TypeUrl: "type.googleapis.com/devfleet.v1.Devserver", Value: make([]byte, size)},
	}
}

// batch is one raft entry's k events at index.
func batch(index uint64, k int, at time.Time) []*devfleetv1.Event {
	evs := make([]*devfleetv1.Event, k)
	for i := range evs {
		evs[i] = event(index, uint32(i), at, "devserver", "d"+string(rune('a'+i%26)), 64)
	}
	return evs
}

func mustAppend(t testing.TB, l *Log, evs []*devfleetv1.Event) {
	t.Helper()
	if err := l.Append(evs); err != nil {
		t.Fatal(err)
	}
}

func positions(evs []*devfleetv1.Event) []Position {
	out := make([]Position, len(evs))
	for i, e := range evs {
		out[i] = Position{e.GetIndex(), e.GetN()}
	}
	return out
}

func readAll(t testing.TB, l *Log, from Position, f Filter) []*devfleetv1.Event {
	t.Helper()
	evs, err := l.Read(from, f, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// retainAll runs retention passes until nothing is due.
func retainAll(t testing.TB, l *Log) {
	t.Helper()
	for {
		more, err := l.retainOnce()
		if err != nil {
			t.Fatal(err)
		}
		if !more {
			return
		}
	}
}

package eventlog

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	devfleetv1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func TestAppendKeepsFeedOrderAndRefusesWhatIsNotAfterLast(t *testing.T) {
	t.Parallel()
	l, _ := openTest(t, Options{})
	now := time.Now()
	if i, n := l.Last(); i != 0 || n != 0 {
		t.Fatalf("empty log: Last = %d/%d", i, n)
	}
	mustAppend(t, l, batch(3, 2, now))
	mustAppend(t, l, batch(4, 1, now))
	mustAppend(t, l, batch(10, 3, now))
	if i, n := l.Last(); i != 10 || n != 2 {
		t.Fatalf("Last = %d/%d, want 10/2", i, n)
	}
	want := []Position{{3, 0}, {3, 1}, {4, 0}, {10, 0}, {10, 1}, {10, 2}}
	if got := positions(readAll(t, l, Position{}, Filter{})); !reflect.DeepEqual(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}

	for _, tc := range []struct {
		name string
		evs  []*devfleetv1.Event
		want string
	}{
		{"replayed entry", batch(10, 3, now), "index 10 n 0 is not after index 10 n 2"},
		{"older entry", batch(4, 1, now), "index 4 n 0"},
		{"within the batch", []*devfleetv1.Event{event(11, 1, now, "host", "h", 1), event(11, 0, now, "host", "h", 1)}, "events[1] at index 11 n 0 is not after index 11 n 1"},
		{"index 0", batch(0, 1, now), "events[0]: index is 0"},
		{"nil", []*devfleetv1.Event{nil}, "events[0]: nil"},
	} {
		err := l.Append(tc.evs)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Append error %v, want it to name %q", tc.name, err, tc.want)
		}
	}
	if err := l.Append(batch(10, 1, now)); !errors.Is(err, ErrOutOfOrder) {
		t.Errorf("replayed entry: %v, want ErrOutOfOrder", err)
	}
	// A refused batch stores nothing, not even its valid prefix.
	if i, n := l.Last(); i != 10 || n != 2 {
		t.Fatalf("after refusals Last = %d/%d, want 10/2", i, n)
	}
	if got := len(readAll(t, l, Position{}, Filter{})); got != 6 {
		t.Fatalf("after refusals %d events stored, want 6", got)
	}
	// The FSM's restart contract: skip what is at or before Last, append the rest.
	li, ln := l.Last()
	var fresh []*devfleetv1.Event
	for _, e := range append(batch(10, 3, now), batch(11, 2, now)...) {
		if (Position{li, ln}).Less(Position{e.GetIndex(), e.GetN()}) {
			fresh = append(fresh, e)
		}
	}
	mustAppend(t, l, fresh)
	if i, n := l.Last(); i != 11 || n != 1 {
		t.Fatalf("Last = %d/%d, want 11/1", i, n)
	}
}

func TestAppendKeepsACopy(t *testing.T) {
	t.Parallel()
	l, _ := openTest(t, Options{})
	evs := batch(1, 1, time.Now())
	sub := l.Subscribe(t.Context(), Position{}, Filter{}, 4)
	mustAppend(t, l, evs)
	evs[0].Key = "changed by the caller"
	if got := (<-sub.C()).Event.GetKey(); got != "da" {
		t.Fatalf("delivered key %q, want the appended one", got)
	}
}

func TestReopenKeepsLastAndEvents(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "events.db")
	clk := newClock()
	l, err := Open(path, Options{Now: clk.Now, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var all []*devfleetv1.Event
	for i := uint64(1); i <= 20; i++ {
		b := batch(i*2, int(i%3)+1, clk.Now().Add(time.Duration(i)*time.Minute))
		all = append(all, b...)
		mustAppend(t, l, b)
	}
	li, ln := l.Last()
	bytes := l.st.bytes
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(batch(100, 1, clk.Now())); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v, want ErrClosed", err)
	}
	if _, err := l.Read(Position{}, Filter{}, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close: %v, want ErrClosed", err)
	}

	l, err = Open(path, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if i, n := l.Last(); i != li || n != ln {
		t.Fatalf("reopened Last = %d/%d, want %d/%d", i, n, li, ln)
	}
	if o, ok := l.Oldest(); !ok || o != 2 {
		t.Fatalf("reopened Oldest = %d %v, want 2", o, ok)
	}
	if l.st.bytes != bytes {
		t.Fatalf("reopened bytes = %d, want %d", l.st.bytes, bytes)
	}
	got := readAll(t, l, Position{}, Filter{})
	if len(got) != len(all) {
		t.Fatalf("reopened: %d events, want %d", len(got), len(all))
	}
	for i := range got {
		if !proto.Equal(got[i], all[i]) {
			t.Fatalf("event %d: %v, want %v", i, got[i], all[i])
		}
	}
	if err := l.Append(batch(li, 1, clk.Now())); !errors.Is(err, ErrOutOfOrder) {
		t.Fatalf("reopened: replay of the last entry: %v, want ErrOutOfOrder", err)
	}
	mustAppend(t, l, batch(li+1, 1, clk.Now()))
}

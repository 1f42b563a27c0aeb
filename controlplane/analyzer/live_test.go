package analyzer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/eventlog"
	"github.com/devfleet/devfleet/controlplane/feed"
	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func TestLiveStateAt(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	stamps := history(f)
	end := stamps[len(stamps)-1].at.Add(time.Minute)
	live := NewLive(f.store, f.log, fixedClock(end)).WithFeed(f.feed)
	if !live.Now().Equal(end) {
		t.Fatalf("now %v", live.Now())
	}
	// No wait for the feed here: StateAt must wait for it itself.
	checkStates(t, "live", live, stamps, time.Time{}, probeTimes(stamps))

	ctx := context.Background()
	// The present, and later, is the store as it is.
	for _, at := range []time.Time{end, end.Add(time.Hour)} {
		v, err := live.StateAt(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		if d := diffRows(rows(t, v), rows(t, f.store.View())); d != "" {
			t.Fatalf("at %v: %s", at, d)
		}
	}

	// Spelled out, between the writes at 16s and 17s.
	v, err := live.StateAt(ctx, sec(16.5))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.GetHost("h3"); err == nil {
		t.Error("h3, created at 19s, is there at 16.5s")
	}
	if _, err := v.GetHost("h2"); err != nil {
		t.Error("h2, deleted at 18s, is not there at 16.5s")
	}
	if h, err := v.GetHost("h1"); err != nil || h.GetLabels()["rack"] != "r1" {
		t.Errorf("h1 at 16.5s: %v %v", h, err)
	}
	if d, err := v.GetDevserver("d1"); err != nil || d.GetState() != v1.DevserverState_DEVSERVER_STATE_PROVISIONING {
		t.Errorf("d1 at 16.5s: %v %v", d, err)
	}
	if v, _ = live.StateAt(ctx, sec(15.5)); v != nil {
		if h, _ := v.GetHost("h1"); len(h.GetLabels()) != 0 {
			t.Errorf("h1 at 15.5s has the labels it got at 16s: %v", h)
		}
	}
	// The store is untouched by all this.
	if d := diffRows(rows(t, f.store.View()), stamps[len(stamps)-1].rows); d != "" {
		t.Fatalf("the store changed: %s", d)
	}
}

// Through an Env, a live analysis sees the fleet at the time it started, whatever is written
// while it runs.
func TestLiveEnvState(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	stamps := history(f)
	now := stamps[len(stamps)-1].at.Add(time.Second)
	clock := now
	live := NewLive(f.store, f.log, func() time.Time { return clock }).WithFeed(f.feed)
	reg := mustRegistry(t, &Analyzer{Name: "a", Run: func(ctx context.Context, env *Env, _ Inputs) ([]*v1.Finding, error) {
		f.write(now.Add(time.Second), func(w *state.WriteTxn) error { _, err := w.CreateRegion(&v1.Region{Name: "us"}); return err })
		clock = now.Add(2 * time.Second) // (no other goroutine reads it)
		v, err := env.State(ctx)
		if err != nil {
			return nil, err
		}
		var names []string
		for _, r := range v.Regions() {
			names = append(names, r.GetName())
		}
		return []*v1.Finding{{Summary: strings.Join(names, " ")}}, nil
	}})
	rep, err := reg.Run(context.Background(), live, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.GetFindings()[0].GetSummary(); got != "eu" {
		t.Fatalf("regions %q, want those at the start (eu)", got)
	}
}

func TestLiveEvents(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	history(f)
	all := f.events()
	live := NewLive(f.store, f.log, fixedClock(sec(100))).WithFeed(f.feed)
	ctx := context.Background()
	for _, q := range queries() {
		got, err := live.Events(ctx, q)
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		sameEvents(t, fmt.Sprintf("%+v", q), got, filterEvents(all, q))
		if len(q.Topics) == 1 && len(q.Keys) > 0 {
			// The same query by scanning (two topics, the same one twice).
			scan := q
			scan.Topics = []string{q.Topics[0], q.Topics[0]}
			got, err := live.Events(ctx, scan)
			if err != nil {
				t.Fatal(err)
			}
			sameEvents(t, fmt.Sprintf("%+v by scanning", q), got, filterEvents(all, q))
		}
	}
}

// bulkLog is a log of n events of hosts a and b, two a second from sec(0), appended in a few
// transactions, and a store holding the state they lead to (as a node whose feed wrote them).
func bulkLog(t *testing.T, n int) (*state.Store, *eventlog.Log, []*v1.Event) {
	t.Helper()
	l, err := eventlog.Open(filepath.Join(t.TempDir(), "events.db"), eventlog.Options{Now: fixedClock(sec(float64(n)))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	var all []*v1.Event
	store := state.New()
	for i := 0; i < n; {
		var batch []*v1.Event
		for ; i < n && len(batch) < 2000; i++ {
			key := []string{"a", "b"}[i%2]
			at := sec(float64(i / 2))
			var e *v1.Event
			if i%10 == 9 {
				e = ev(t, uint64(i/2+1), uint32(i%2), at, "host", key, true, &v1.Host{Name: key})
			} else {
				e = ev(t, uint64(i/2+1), uint32(i%2), at, "host", key, false, &v1.Host{Name: key, Site: "s", Labels: map[string]string{"i": fmt.Sprint(i)}})
			}
			batch = append(batch, e)
		}
		if err := l.Append(batch); err != nil {
			t.Fatal(err)
		}
		all = append(all, batch...)
	}
	w := store.Begin(uint64(n/2), sec(float64(n/2)))
	for _, e := range all[len(all)-2:] {
		if err := ApplyEvent(w, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	return store, l, all
}

// Many events: the reads page, and Limit trims as it goes.
func TestLiveManyEvents(t *testing.T) {
	t.Parallel()
	const n = 9000
	store, l, all := bulkLog(t, n)
	live := NewLive(store, l, fixedClock(sec(n))).WithFeed(&logFeed{log: l})
	ctx := context.Background()
	for _, q := range []Query{
		{},
		{Limit: n},
		{Limit: 100},
		{Topics: []string{"host"}, Keys: []string{"a"}},
		{Topics: []string{"host"}, Keys: []string{"a"}, Limit: 10},
		{Topics: []string{"host"}, Keys: []string{"b", "a"}, Since: sec(100), Until: sec(4000)},
		{Topics: []string{"host", "x"}, Keys: []string{"b"}, Since: sec(100), Until: sec(4000)},
		{Keys: []string{"b"}, Limit: 4500},
		{Since: sec(2000), Limit: 3},
		{Until: sec(10)},
	} {
		got, err := live.Events(ctx, q)
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		sameEvents(t, fmt.Sprintf("%+v", q), got, filterEvents(all, q))
	}
	// Past states rebuilt from thousands of changes equal a replay of the events up to then.
	oracle := NewRecording(&v1.RecordingHeader{Since: timestamppb.New(sec(-1))}, nil, all)
	for _, at := range []time.Time{sec(-1), sec(0), sec(1.5), sec(700), sec(4499), sec(n)} {
		got, err := live.StateAt(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		want, err := oracle.StateAt(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		if d := diffRows(rows(t, got), rows(t, want)); d != "" {
			t.Fatalf("at %v: %s", at, d)
		}
	}
}

func TestLiveRecord(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	stamps := history(f)
	end := stamps[len(stamps)-1].at.Add(time.Minute)
	live := NewLive(f.store, f.log, fixedClock(end)).WithFeed(f.feed)
	ctx := context.Background()
	for _, since := range []time.Time{sec(0), stamps[0].at, sec(13.5), sec(17), stamps[len(stamps)-1].at, end} {
		var buf bytes.Buffer
		w := NewWriter(&buf)
		if err := live.Record(ctx, since, "n1", w.Put); err != nil {
			t.Fatalf("since %v: %v", since, err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		rec := decode(t, buf.Bytes())
		if h := rec.Header; h.GetNode() != "n1" || !rec.Since().Equal(since) || !rec.Now().Equal(end) || h.GetVersion() != RecordingVersion {
			t.Fatalf("since %v: header %v", since, h)
		}
		// Its start is the live state then, its end the store now, and in between, the history.
		got, err := rec.StateAt(ctx, since)
		if err != nil {
			t.Fatal(err)
		}
		want, err := live.StateAt(ctx, since)
		if err != nil {
			t.Fatal(err)
		}
		if d := diffRows(rows(t, got), rows(t, want)); d != "" {
			t.Fatalf("since %v: the start: %s", since, d)
		}
		if got, _ = rec.StateAt(ctx, rec.Now()); got == nil || diffRows(rows(t, got), rows(t, f.store.View())) != "" {
			t.Fatalf("since %v: the end: %s", since, diffRows(rows(t, got), rows(t, f.store.View())))
		}
		checkStates(t, fmt.Sprintf("recording since %v", since), rec, stamps, since, probeTimes(stamps))
		sameEvents(t, fmt.Sprintf("since %v", since), rec.Segment, filterEvents(f.events(), Query{Since: since.Add(time.Nanosecond)}))
	}
	// A put that fails stops the recording with its error.
	boom := errors.New("boom")
	n := 0
	err := live.Record(ctx, sec(12.5), "n1", func(*v1.RecordingChunk) error {
		if n++; n == 4 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("%v", err)
	}
}

// Stamps step back when a new leader's clock is behind: the live node and a recording of it
// agree on the state at every time.
func TestLiveSkewedStampsAgreeWithRecording(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	for _, w := range []struct {
		at   float64
		name string
	}{{10, "a"}, {20, "b"}, {15, "c"}, {30, "d"}, {25, "e"}} {
		f.write(sec(w.at), func(w2 *state.WriteTxn) error { _, err := w2.CreateRegion(&v1.Region{Name: w.name}); return err })
	}
	live := NewLive(f.store, f.log, fixedClock(sec(40))).WithFeed(f.feed)
	rec := NewRecording(&v1.RecordingHeader{Since: timestamppb.New(sec(0))}, nil, f.events())
	ctx := context.Background()
	for _, at := range []float64{5, 10, 12, 15, 17, 20, 22, 25, 29, 30, 35} {
		lv, err := live.StateAt(ctx, sec(at))
		if err != nil {
			t.Fatal(err)
		}
		rv, err := rec.StateAt(ctx, sec(at))
		if err != nil {
			t.Fatal(err)
		}
		if d := diffRows(rows(t, rv), rows(t, lv)); d != "" {
			t.Fatalf("at %vs: recording against live: %s", at, d)
		}
	}
}

// A node that attached its feed to a store already holding state has no history before it:
// asking for the fleet then is an error naming where the history starts.
func TestLiveBeforeTheHistory(t *testing.T) {
	t.Parallel()
	store := state.New()
	w := store.Begin(1, sec(1))
	if _, err := w.CreateRegion(&v1.Region{Name: "eu"}); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Open(filepath.Join(t.TempDir(), "events.db"), eventlog.Options{Now: fixedClock(sec(50))})
	if err != nil {
		t.Fatal(err)
	}
	fd := feed.New(l, nil)
	fd.Start()
	store.ObserveAll(fd)
	t.Cleanup(func() { fd.Close(); _ = l.Close() })
	w = store.Begin(2, sec(60))
	if _, err := w.CreateRegion(&v1.Region{Name: "us"}); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	live := NewLive(store, l, fixedClock(sec(100))).WithFeed(fd)
	ctx := context.Background()
	_, err = live.StateAt(ctx, sec(10))
	var old *eventlog.TooOldError
	if !errors.As(err, &old) || !strings.Contains(err.Error(), "history starts") {
		t.Fatalf("%v", err)
	}
	// From the start of the history until the next change, the objects changed since cannot be
	// told apart from new ones.
	if _, err := live.StateAt(ctx, sec(59)); !errors.As(err, &old) {
		t.Fatalf("%v", err)
	}
	v, err := live.StateAt(ctx, sec(60.5))
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Regions()) != 2 {
		t.Fatalf("regions %v", v.Regions())
	}
	if _, err := live.Events(ctx, Query{Since: sec(10)}); !errors.As(err, &old) {
		t.Fatalf("events since before the history: %v", err)
	}
	if err := live.Record(ctx, sec(10), "n", func(*v1.RecordingChunk) error { return nil }); !errors.As(err, &old) {
		t.Fatalf("record since before the history: %v", err)
	}
}

// logFeed is a Feed that waits for the log to hold an index, after running hook once.
type logFeed struct {
	log  *eventlog.Log
	hook func()
}

func (f *logFeed) Wait(ctx context.Context, index uint64) error {
	if h := f.hook; h != nil {
		f.hook = nil
		h()
	}
	for {
		if last, _ := f.log.Last(); last >= index {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// regionsLog is a store of regions a and b, created at 1s and 2s, and a log without their events.
func regionsLog(t *testing.T) (*state.Store, *eventlog.Log, []*v1.Event) {
	t.Helper()
	store := state.New()
	l, err := eventlog.Open(filepath.Join(t.TempDir(), "events.db"), eventlog.Options{Now: fixedClock(sec(50))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	var evs []*v1.Event
	for i, name := range []string{"a", "b"} {
		r := &v1.Region{Name: name}
		w := store.Begin(uint64(i+1), sec(float64(i+1)))
		if err := w.Put(r); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev(t, uint64(i+1), 0, sec(float64(i+1)), "region", name, false, r))
	}
	return store, l, evs
}

func regionNames(v *state.View) string {
	var names []string
	for _, r := range v.Regions() {
		names = append(names, r.GetName())
	}
	return strings.Join(names, " ")
}

// The feed writes a commit's events just after it: a past state waits for them rather than
// leave the latest changes in.
func TestLiveWaitsForTheHistory(t *testing.T) {
	t.Parallel()
	store, l, evs := regionsLog(t)
	live := NewLive(store, l, fixedClock(sec(10))).WithFeed(&logFeed{log: l})

	// Without the events, no answer (rather than a wrong one).
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if v, err := live.StateAt(ctx, sec(1.5)); err == nil {
		t.Fatalf("a state without the history: regions %s", regionNames(v))
	}
	if _, err := live.Events(ctx, Query{}); err == nil {
		t.Fatal("events without the history")
	}

	appended := make(chan error, 1)
	go func() {
		time.Sleep(30 * time.Millisecond)
		appended <- l.Append(evs)
	}()
	defer func() {
		if err := <-appended; err != nil {
			t.Error(err)
		}
	}()
	v, err := live.StateAt(context.Background(), sec(1.5))
	if err != nil {
		t.Fatal(err)
	}
	if got := regionNames(v); got != "a" {
		t.Fatalf("regions %q, want a", got)
	}
	got, err := live.Events(context.Background(), Query{})
	if err != nil || len(got) != 2 {
		t.Fatalf("%d events, %v", len(got), err)
	}
}

// A change committed while a past state is being rebuilt, whose events are not written yet, is
// not in it.
func TestLiveStateAtIgnoresLaterCommits(t *testing.T) {
	t.Parallel()
	store, l, evs := regionsLog(t)
	if err := l.Append(evs); err != nil {
		t.Fatal(err)
	}
	commit := func() {
		w := store.Begin(3, sec(3))
		if err := w.Put(&v1.Region{Name: "c"}); err != nil {
			t.Error(err)
		}
		if err := w.Commit(); err != nil {
			t.Error(err)
		}
	}
	live := NewLive(store, l, fixedClock(sec(10))).WithFeed(&logFeed{log: l, hook: commit})
	v, err := live.StateAt(context.Background(), sec(1.5))
	if err != nil {
		t.Fatal(err)
	}
	if got := regionNames(v); got != "a" {
		t.Fatalf("regions %q, want a", got)
	}
}

func TestLiveCancelled(t *testing.T) {
	t.Parallel()
	store, l, _ := bulkLog(t, 9000)
	live := NewLive(store, l, fixedClock(sec(9000))).WithFeed(&logFeed{log: l})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := live.StateAt(ctx, sec(1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("state: %v", err)
	}
	if _, err := live.Events(ctx, Query{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("events: %v", err)
	}
	if err := live.Record(ctx, sec(1), "n", func(*v1.RecordingChunk) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("record: %v", err)
	}
}

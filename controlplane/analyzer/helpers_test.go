package analyzer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/devfleet/devfleet/controlplane/eventlog"
	"github.com/devfleet/devfleet/controlplane/feed"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// t0 is the start of every test's history: in the future, so that the event log's retention
// (measured by its own clock, pinned below) never expires it.
var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// sec is t0 plus s seconds.
func sec(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// fleet is a store whose changes reach an event log through a feed, as on a node.
type fleet struct {
	t     testing.TB
	store *state.Store
	log   *eventlog.Log
	feed  *feed.Feed
	index uint64
}

func newFleet(t testing.TB) *fleet {
	t.Helper()
	l, err := eventlog.Open(filepath.Join(t.TempDir(), "events.db"), eventlog.Options{Now: func() time.Time { return t0.Add(time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{t: t, store: state.New(), log: l, feed: feed.New(l, nil)}
	f.feed.Start()
	f.store.ObserveAll(f.feed)
	t.Cleanup(func() {
		f.feed.Close()
		_ = l.Close()
	})
	return f
}

// write commits one transaction at the next raft index, stamped at.
func (f *fleet) write(at time.Time, do func(w *state.WriteTxn) error) {
	f.t.Helper()
	f.index++
	w := f.store.Begin(f.index, at)
	if err := do(w); err != nil {
		w.Abort()
		f.t.Fatalf("write at index %d: %v", f.index, err)
	}
	if err := w.Commit(); err != nil {
		f.t.Fatalf("commit index %d: %v", f.index, err)
	}
}

// put writes recorded rows as they are.
func (f *fleet) put(at time.Time, ms ...proto.Message) {
	f.t.Helper()
	f.write(at, func(w *state.WriteTxn) error {
		for _, m := range ms {
			if err := w.Put(m); err != nil {
				return err
			}
		}
		return nil
	})
}

// del removes recorded rows.
func (f *fleet) del(at time.Time, ms ...proto.Message) {
	f.t.Helper()
	f.write(at, func(w *state.WriteTxn) error {
		for _, m := range ms {
			if err := w.Delete(m); err != nil {
				return err
			}
		}
		return nil
	})
}

// synced waits until the feed has written the events of every write.
func (f *fleet) synced() {
	f.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if last, _ := f.log.Last(); last >= f.index {
			return
		}
		if time.Now().After(deadline) {
			last, _ := f.log.Last()
			f.t.Fatalf("the feed wrote up to index %d of %d", last, f.index)
		}
		time.Sleep(time.Millisecond)
	}
}

// events returns every event of the log, in feed order.
func (f *fleet) events() []*v1.Event {
	f.t.Helper()
	f.synced()
	return readAll(f.t, f.log, eventlog.Position{})
}

func readAll(t testing.TB, l *eventlog.Log, from eventlog.Position) []*v1.Event {
	t.Helper()
	var out []*v1.Event
	for {
		evs, err := l.Read(from, eventlog.Filter{}, 7)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, evs...)
		if len(evs) < 7 {
			return out
		}
		last := evs[len(evs)-1]
		from = eventlog.Position{Index: last.GetIndex(), N: last.GetN()}
	}
}

// rows lists the rows of every fleet table of v (not the table indexes, which a rebuilt state
// need not share), in snapshot order.
func rows(t testing.TB, v *state.View) []*fsmv1.SnapshotRecord {
	t.Helper()
	var buf bytes.Buffer
	if err := v.Persist(&buf); err != nil {
		t.Fatal(err)
	}
	var out []*fsmv1.SnapshotRecord
	br := bufio.NewReader(&buf)
	for {
		rec := &fsmv1.SnapshotRecord{}
		err := protodelim.UnmarshalFrom(br, rec)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if rec.GetHeader() != nil || rec.GetTableIndex() != nil {
			continue
		}
		out = append(out, rec)
	}
}

// diffRows describes how got differs from want ("" when they hold the same rows).
func diffRows(got, want []*fsmv1.SnapshotRecord) string {
	show := func(rs []*fsmv1.SnapshotRecord) string {
		var s []string
		for _, r := range rs {
			s = append(s, prototext.MarshalOptions{}.Format(r))
		}
		return strings.Join(s, "\n")
	}
	if len(got) != len(want) {
		return fmt.Sprintf("%d rows, want %d\ngot:\n%s\nwant:\n%s", len(got), len(want), show(got), show(want))
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			return fmt.Sprintf("row %d:\ngot:  %v\nwant: %v", i, got[i], want[i])
		}
	}
	return ""
}

// stamp is the fleet as it was after a write.
type stamp struct {
	at    time.Time
	rows  []*fsmv1.SnapshotRecord
	store *state.Store // a clone of the store then
}

// history writes a small fleet's history, one write a second from sec(10), and returns its
// rows after each write: objects created, changed and deleted, over tables keyed by name, by
// id, and whose feed key is shared by several rows (pools, all keyed "", and a drain's events,
// keyed by the drain).
func history(f *fleet) []stamp {
	t := f.t
	t.Helper()
	var out []stamp
	s := 10.0
	step := func(do func(w *state.WriteTxn) error) {
		t.Helper()
		at := sec(s)
		s++
		f.write(at, do)
		out = append(out, stamp{at: at, rows: rows(t, f.store.View()), store: f.store.Clone()})
	}
	step(func(w *state.WriteTxn) error { _, err := w.CreateRegion(&v1.Region{Name: "eu"}); return err })
	step(func(w *state.WriteTxn) error {
		_, err := w.CreateSite(&v1.Site{Name: "eu-1", Region: "eu"})
		return err
	})
	step(func(w *state.WriteTxn) error { // two hosts in one entry: events n 0 and 1
		for _, h := range []string{"h1", "h2"} {
			if _, err := w.CreateHost(&v1.Host{Name: h, Site: "eu-1", Capacity: &v1.Resources{Vcpus: 8, MemoryMib: 8192, DiskGib: 100}}); err != nil {
				return err
			}
		}
		return nil
	})
	step(func(w *state.WriteTxn) error {
		_, err := w.CreateFlavor(&v1.Flavor{Name: "small", Kind: v1.FlavorKind_FLAVOR_KIND_VM, Resources: &v1.Resources{Vcpus: 2, MemoryMib: 1024, DiskGib: 10}})
		return err
	})
	step(func(w *state.WriteTxn) error {
		return w.Put(&v1.Devserver{Name: "d1", Id: "id-d1", Owner: "ann", Region: "eu", Host: "h1", Flavor: "small", State: v1.DevserverState_DEVSERVER_STATE_PROVISIONING})
	})
	step(func(w *state.WriteTxn) error {
		return putAll(w, &v1.ContainerPool{Region: "eu", Profile: "p1", Target: 1}, &v1.ContainerPool{Region: "eu", Profile: "p2", Target: 2},
			&v1.DrainEvent{DrainId: "dr1", Seq: 1, Kind: "started"})
	})
	step(func(w *state.WriteTxn) error {
		_, err := w.UpdateHost(&v1.Host{Name: "h1", Labels: map[string]string{"rack": "r1"}}, []string{"labels"})
		return err
	})
	step(func(w *state.WriteTxn) error {
		return putAll(w, &v1.Devserver{Name: "d1", Id: "id-d1", Owner: "ann", Region: "eu", Host: "h1", Flavor: "small", State: v1.DevserverState_DEVSERVER_STATE_RUNNING},
			&v1.ContainerPool{Region: "eu", Profile: "p1", Target: 5}, &v1.DrainEvent{DrainId: "dr1", Seq: 2, Kind: "cordoned"})
	})
	step(func(w *state.WriteTxn) error { return w.DeleteHost("h2") })
	step(func(w *state.WriteTxn) error {
		_, err := w.CreateHost(&v1.Host{Name: "h3", Site: "eu-1", Capacity: &v1.Resources{Vcpus: 4, MemoryMib: 4096, DiskGib: 100}})
		return err
	})
	step(func(w *state.WriteTxn) error {
		if err := w.Delete(&v1.ContainerPool{Region: "eu", Profile: "p2"}); err != nil {
			return err
		}
		return putAll(w, &v1.ContainerPool{Region: "eu", Profile: "p3", Target: 3}, &v1.DrainEvent{DrainId: "dr1", Seq: 3, Kind: "finished"})
	})
	step(func(w *state.WriteTxn) error {
		return w.Delete(&v1.Devserver{Name: "d1"})
	})
	return out
}

func putAll(w *state.WriteTxn, ms ...proto.Message) error {
	for _, m := range ms {
		if err := w.Put(m); err != nil {
			return err
		}
	}
	return nil
}

// rowsAt is the fleet's rows at t, by the stamps.
func rowsAt(stamps []stamp, t time.Time) []*fsmv1.SnapshotRecord {
	var out []*fsmv1.SnapshotRecord
	for _, s := range stamps {
		if !s.at.After(t) {
			out = s.rows
		}
	}
	return out
}

// probeTimes are the times the state is checked at: before the history, at each write, between
// writes, and after the last.
func probeTimes(stamps []stamp) []time.Time {
	ts := []time.Time{stamps[0].at.Add(-time.Second), stamps[0].at.Add(-time.Nanosecond)}
	for _, s := range stamps {
		ts = append(ts, s.at, s.at.Add(time.Nanosecond), s.at.Add(500*time.Millisecond))
	}
	return append(ts, stamps[len(stamps)-1].at.Add(time.Hour))
}

// filterEvents is Query's meaning, spelled out over a slice of events in feed order.
func filterEvents(evs []*v1.Event, q Query) []*v1.Event {
	var out []*v1.Event
	for _, e := range evs {
		if len(q.Topics) > 0 && !contains(q.Topics, e.GetTopic()) {
			continue
		}
		if len(q.Keys) > 0 && !contains(q.Keys, e.GetKey()) {
			continue
		}
		at := e.GetTime().AsTime()
		if !q.Since.IsZero() && at.Before(q.Since) {
			continue
		}
		if !q.Until.IsZero() && at.After(q.Until) {
			continue
		}
		out = append(out, e)
	}
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// positions shows events as index/n, for messages.
func positions(evs []*v1.Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, fmt.Sprintf("%d/%d", e.GetIndex(), e.GetN()))
	}
	return "[" + strings.Join(s, " ") + "]"
}

func sameEvents(t testing.TB, what string, got, want []*v1.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: events %s, want %s", what, positions(got), positions(want))
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("%s: event %d is %v, want %v", what, i, got[i], want[i])
		}
	}
}

// queries is a set of queries over history's events.
func queries() []Query {
	return []Query{
		{},
		{Limit: 1},
		{Limit: 3},
		{Topics: []string{"host"}},
		{Topics: []string{"host"}, Keys: []string{"h1"}},
		{Topics: []string{"host"}, Keys: []string{"h1", "h3"}},
		{Topics: []string{"host"}, Keys: []string{"h1", "h1"}},
		{Topics: []string{"host"}, Keys: []string{"h3", "h1"}, Limit: 2},
		{Topics: []string{"host"}, Keys: []string{"nope"}},
		{Topics: []string{"devserver"}, Keys: []string{"d1"}, Since: sec(15), Until: sec(20)},
		{Topics: []string{"devserver"}, Keys: []string{"d1"}, Since: sec(17.5)},
		{Topics: []string{"devserver"}, Keys: []string{"d1"}, Until: sec(17)},
		{Topics: []string{"pool"}, Keys: []string{""}},
		{Topics: []string{"drain-event"}, Keys: []string{"dr1"}, Limit: 2},
		{Topics: []string{"host", "devserver"}},
		{Topics: []string{"host", "devserver"}, Keys: []string{"h1", "d1"}, Since: sec(13)},
		{Keys: []string{"h1", "eu"}},
		{Since: sec(12), Until: sec(16)},
		{Since: sec(12.5), Until: sec(12.7)},
		{Since: sec(100)},
		{Until: sec(0)},
		{Since: sec(14), Limit: 2},
		{Topics: []string{"nope"}},
	}
}

// stubSource is a Source with no fleet and no events, at a fixed time.
type stubSource struct {
	now time.Time
}

func (s stubSource) Now() time.Time { return s.now }

func (s stubSource) StateAt(context.Context, time.Time) (*state.View, error) {
	return state.New().View(), nil
}

func (s stubSource) Events(context.Context, Query) ([]*v1.Event, error) { return nil, nil }

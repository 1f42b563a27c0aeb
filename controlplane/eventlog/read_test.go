package eventlog

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	devfleetv1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func contains(err error, s string) bool { return strings.Contains(err.Error(), s) }

func TestReadFromAPositionAndTooOld(t *testing.T) {
	t.Parallel()
	clk := newClock()
	l, _ := openTest(t, Options{MaxAge: time.Hour, Now: clk.Now})
	for i := uint64(1); i <= 6; i++ {
		mustAppend(t, l, batch(i, 3, clk.Now()))
		clk.Add(10 * time.Minute)
	}
	got := positions(readAll(t, l, Position{2, 1}, Filter{}))
	if got[0] != (Position{2, 2}) || len(got) != 13 {
		t.Fatalf("after 2/1: %v", got)
	}
	// "After every event of entry 5".
	if got := positions(readAll(t, l, Position{5, math.MaxUint32}, Filter{})); got[0] != (Position{6, 0}) {
		t.Fatalf("after 5/max: %v", got)
	}
	// Limit, and resuming from the last event read.
	page, err := l.Read(Position{}, Filter{}, 4)
	if err != nil || len(page) != 4 {
		t.Fatalf("page: %d events, %v", len(page), err)
	}
	next, _ := l.Read(positions(page)[3], Filter{}, 4)
	if positions(next)[0] != (Position{2, 1}) {
		t.Fatalf("next page starts at %v", positions(next)[0])
	}
	if _, err := l.Read(Position{}, Filter{}, 0); err == nil || !contains(err, "limit") {
		t.Fatalf("limit 0: %v", err)
	}
	// Now is 60 minutes after entry 1's stamp: entries 1 and 2 (stamped +0, +10) are older
	// than an hour at +71.
	clk.Add(11 * time.Minute)
	retainAll(t, l)
	var too *TooOldError
	for _, from := range []Position{{1, 0}, {2, 1}} {
		if _, err := l.Read(from, Filter{}, 10); !errors.As(err, &too) || too.Oldest != 3 {
			t.Fatalf("from %v: %v, want TooOldError{Oldest: 3}", from, err)
		}
	}
	if !contains(too, "index 3") {
		t.Fatalf("error %q does not name the oldest index", too)
	}
	if got := positions(readAll(t, l, Position{2, 2}, Filter{})); got[0] != (Position{3, 0}) {
		t.Fatalf("from the last deleted: %v", got)
	}
	if got := positions(readAll(t, l, Position{}, Filter{})); got[0] != (Position{3, 0}) {
		t.Fatalf("from the oldest: %v", got)
	}
}

func TestFromTime(t *testing.T) {
	t.Parallel()
	clk := newClock()
	l, _ := openTest(t, Options{MaxAge: time.Hour, Now: clk.Now})
	t0 := clk.Now()
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	// Stamps in minutes by entry; entry 4's leader was 5 minutes ahead; entry 5's stamp has
	// no time at all.
	for i, m := range []int{0, 10, 20, 35, -1, 31, 40} {
		evs := batch(uint64(i+1), 2, at(m))
		if m < 0 {
			for _, e := range evs {
				e.Time = nil
			}
		}
		mustAppend(t, l, evs)
	}
	for _, tc := range []struct {
		min  int
		want Position
	}{
		{-100, Position{0, math.MaxUint32}}, // before everything: from the first
		{0, Position{0, math.MaxUint32}},
		{5, Position{1, math.MaxUint32}},  // first stamped >= 5 is entry 2
		{10, Position{1, math.MaxUint32}}, // at or after
		{21, Position{3, math.MaxUint32}}, // entry 4 (35) is the first at or after 21
		{32, Position{3, math.MaxUint32}}, // entry 6 (31) comes after entry 4: included, never missed
		{36, Position{6, math.MaxUint32}}, // entry 7
		{41, Position{7, 1}},              // nothing yet: after the last
	} {
		p, err := l.FromTime(at(tc.min))
		if err != nil || p != tc.want {
			t.Errorf("FromTime(+%dm) = %v %v, want %v", tc.min, p, err, tc.want)
		}
	}
	// Every event stamped at or after t is in the read from FromTime(t).
	p, _ := l.FromTime(at(32))
	evs := readAll(t, l, p, Filter{})
	for _, e := range readAll(t, l, Position{}, Filter{}) {
		if e.GetTime() != nil && !e.GetTime().AsTime().Before(at(32)) && !containsEvent(evs, e) {
			t.Fatalf("event %d/%d stamped %v missed", e.GetIndex(), e.GetN(), e.GetTime().AsTime())
		}
	}

	// Delete entries 1..3 (stamped up to minute 20): times up to 20 are no longer answerable.
	clk.Add(time.Hour + 21*time.Minute)
	retainAll(t, l)
	if o, _ := l.Oldest(); o != 4 {
		t.Fatalf("Oldest = %d, want 4", o)
	}
	var too *TooOldError
	if _, err := l.FromTime(at(20)); !errors.As(err, &too) || too.Oldest != 4 {
		t.Fatalf("FromTime(+20m) after retention: %v, want TooOldError{4}", err)
	}
	if p, err := l.FromTime(at(21)); err != nil || p != (Position{3, math.MaxUint32}) {
		t.Fatalf("FromTime(+21m) after retention = %v %v, want 3/max", p, err)
	}
}

func containsEvent(evs []*devfleetv1.Event, e *devfleetv1.Event) bool {
	for _, x := range evs {
		if x.GetIndex() == e.GetIndex() && x.GetN() == e.GetN() {
			return true
		}
	}
	return false
}

func TestFilters(t *testing.T) {
	t.Parallel()
	l, _ := openTest(t, Options{})
	now := time.Now()
	topics := []string{"host", "devserver", "drain"}
	for i := uint64(1); i <= 30; i++ {
		mustAppend(t, l, []*devfleetv1.Event{
			event(i, 0, now, topics[i%3], "k"+string(rune('0'+i%4)), 10),
			event(i, 1, now, "devserver", "d", 10),
		})
	}
	count := func(f Filter, match func(*devfleetv1.Event) bool) {
		t.Helper()
		got := readAll(t, l, Position{}, f)
		var want []Position
		for _, e := range readAll(t, l, Position{}, Filter{}) {
			if match(e) {
				want = append(want, Position{e.GetIndex(), e.GetN()})
			}
		}
		if !reflect.DeepEqual(positions(got), want) || len(want) == 0 {
			t.Fatalf("filter %+v: %v, want %v", f, positions(got), want)
		}
		// The same through a subscription (the tail, in memory).
		sub := l.Subscribe(t.Context(), Position{}, f, 100)
		for _, w := range want {
			if e := (<-sub.C()).Event; (Position{e.GetIndex(), e.GetN()}) != w {
				t.Fatalf("filter %+v subscribed: %d/%d, want %v", f, e.GetIndex(), e.GetN(), w)
			}
		}
	}
	count(Filter{Topics: []string{"host"}}, func(e *devfleetv1.Event) bool { return e.GetTopic() == "host" })
	count(Filter{Topics: []string{"host", "drain"}}, func(e *devfleetv1.Event) bool { return e.GetTopic() != "devserver" })
	count(Filter{Keys: []string{"k1", "d"}}, func(e *devfleetv1.Event) bool { return e.GetKey() == "k1" || e.GetKey() == "d" })
	count(Filter{Topics: []string{"devserver"}, Keys: []string{"k2"}}, func(e *devfleetv1.Event) bool {
		return e.GetTopic() == "devserver" && e.GetKey() == "k2"
	})
	if got := readAll(t, l, Position{}, Filter{Topics: []string{"nothing"}}); len(got) != 0 {
		t.Fatalf("no match: %d events", len(got))
	}
	// Limit counts matching events, not those looked at.
	if got, _ := l.Read(Position{}, Filter{Topics: []string{"host"}}, 3); len(got) != 3 {
		t.Fatalf("limit 3: %d", len(got))
	}
}

// TestSparseFilterReadsInBoundedTransactions: a filter matching little still reads it all,
// in transactions of at most scanBudget keys.
func TestSparseFilterReadsInBoundedTransactions(t *testing.T) {
	t.Parallel()
	l, _ := openTest(t, Options{})
	now := time.Now()
	for i := uint64(1); i <= 300; i++ {
		evs := batch(i, 32, now)
		if i%100 == 0 {
			evs[5].Topic = "rare"
		}
		mustAppend(t, l, evs)
	}
	got := readAll(t, l, Position{}, Filter{Topics: []string{"rare"}})
	if want := []Position{{100, 5}, {200, 5}, {300, 5}}; !reflect.DeepEqual(positions(got), want) {
		t.Fatalf("rare events %v, want %v", positions(got), want)
	}
	evs, next, atEnd, err := l.scan(Position{}, Filter{Topics: []string{"rare"}}.compile(), 10, true)
	if err != nil || len(evs) != 1 || atEnd || next != (Position{128, 31}) {
		t.Fatalf("one scan: %d events, next %v, atEnd %v, %v", len(evs), next, atEnd, err)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	l, _ := openTest(t, Options{Registry: reg, MaxBytes: 1000})
	for i := uint64(1); i <= 20; i++ {
		mustAppend(t, l, batch(i, 1, time.Now()))
	}
	waitFor(t, "size retention", func() bool { o, _ := l.Oldest(); return o > 1 })
	if n := testutil.ToFloat64(l.m.appendedTotal); n != 20 {
		t.Fatalf("appended %v", n)
	}
	if n := testutil.ToFloat64(l.m.deletedTotal.WithLabelValues("size")); n == 0 {
		t.Fatal("no deletion counted")
	}
	if _, err := Open(t.TempDir()+"/x.db", Options{Registry: reg}); err == nil || !contains(err, "metrics") {
		t.Fatalf("second log on one registry: %v", err)
	}
}

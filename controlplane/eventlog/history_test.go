package eventlog

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	devfleetv1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// objectEvents is the brute-force KeyEvents: the object's events among all, after from and up
// to to.
func objectEvents(all []*devfleetv1.Event, topic, key string, from, to Position) []Position {
	var out []Position
	for _, e := range all {
		p := Position{e.GetIndex(), e.GetN()}
		if e.GetTopic() == topic && e.GetKey() == key && from.Less(p) && (to.IsZero() || !to.Less(p)) {
			out = append(out, p)
		}
	}
	return out
}

// objectAt is the brute-force At: the object's last event at or before at.
func objectAt(all []*devfleetv1.Event, topic, key string, at Position) *devfleetv1.Event {
	var out *devfleetv1.Event
	for _, e := range all {
		if e.GetTopic() == topic && e.GetKey() == key && !at.Less(Position{e.GetIndex(), e.GetN()}) {
			out = e
		}
	}
	return out
}

// checkKeyIndex checks that the key index holds exactly one key per stored event.
func checkKeyIndex(t testing.TB, l *Log) {
	t.Helper()
	err := l.db.View(func(tx *bbolt.Tx) error {
		var want, got []string
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			ik, err := rawIndexKey(keyPos(k), v)
			if err != nil {
				return err
			}
			want = append(want, string(ik))
		}
		slices.Sort(want)
		if err := tx.Bucket(bucketKeys).ForEach(func(k, _ []byte) error { got = append(got, string(k)); return nil }); err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("key index: %d keys, want one for each of the %d events stored", len(got), len(want))
		}
		if !keyIndexValid(tx) {
			return errors.New("key index marker does not match the state")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// historyLog holds 40 entries of events for a few objects whose keys are prefixes of each
// other, or whose topic and key run together alike, and one whose key is too long to store.
func historyLog(t *testing.T) (*Log, []*devfleetv1.Event, [][2]string) {
	l, _ := openTest(t, Options{})
	objects := [][2]string{
		{"devserver", "d1"}, {"devserver", "d10"}, {"devserver", "d"}, {"host", "d1"},
		{"ab", "c"}, {"a", "bc"}, {"devserver", strings.Repeat("long", 200)}, {"devserver", ""},
	}
	rng := rand.New(rand.NewPCG(1, 1))
	now := time.Now()
	var all []*devfleetv1.Event
	for i := uint64(1); i <= 40; i++ {
		var evs []*devfleetv1.Event
		for n := range uint32(rng.IntN(4)) {
			o := objects[rng.IntN(len(objects))]
			evs = append(evs, event(i, n, now, o[0], o[1], 8))
		}
		if len(evs) > 0 {
			mustAppend(t, l, evs)
			all = append(all, evs...)
		}
	}
	return l, all, objects
}

func TestKeyEventsWindowsAndLimit(t *testing.T) {
	t.Parallel()
	l, all, objects := historyLog(t)
	checkKeyIndex(t, l)
	// Every window between positions that matter (events, their neighbours, the ends).
	var cuts []Position
	for _, e := range all {
		p := Position{e.GetIndex(), e.GetN()}
		cuts = append(cuts, p, before(p), Position{p.Index, math.MaxUint32})
	}
	cuts = append(cuts, Position{}, Position{100, 0})
	for _, o := range objects {
		if len(objectEvents(all, o[0], o[1], Position{}, Position{})) == 0 {
			t.Fatalf("object %q/%.10q has no events: a weak test", o[0], o[1])
		}
		for _, from := range cuts {
			for _, to := range cuts {
				want := objectEvents(all, o[0], o[1], from, to)
				got, err := l.KeyEvents(o[0], o[1], from, to, 1000)
				if err != nil || !slices.Equal(positions(got), want) {
					t.Fatalf("KeyEvents(%q, %.10q, %v, %v) = %v %v, want %v", o[0], o[1], from, to, positions(got), err, want)
				}
				for _, e := range got {
					if e.GetTopic() != o[0] || e.GetKey() != o[1] || e.GetObject() == nil {
						t.Fatalf("KeyEvents(%q, %.10q) returned %v", o[0], o[1], e)
					}
				}
			}
		}
		// Paging by a small limit gives the same events.
		want := objectEvents(all, o[0], o[1], Position{}, Position{})
		var got []Position
		var from Position
		for {
			page, err := l.KeyEvents(o[0], o[1], from, Position{}, 2)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, positions(page)...)
			if len(page) < 2 {
				break
			}
			from = positions(page)[1]
		}
		if !slices.Equal(got, want) {
			t.Fatalf("paged KeyEvents(%q, %.10q) = %v, want %v", o[0], o[1], got, want)
		}
	}
	if got, err := l.KeyEvents("devserver", "nothing", Position{}, Position{}, 10); err != nil || len(got) != 0 {
		t.Fatalf("unknown object: %v %v", positions(got), err)
	}
	if _, err := l.KeyEvents("devserver", "d1", Position{}, Position{}, 0); err == nil || !contains(err, "limit") {
		t.Fatalf("limit 0: %v", err)
	}
}

func TestKeyEventsInBoundedTransactions(t *testing.T) {
	t.Parallel()
	l, _ := openTest(t, Options{})
	now := time.Now()
	for i := uint64(1); i <= 150; i++ {
		evs := batch(i, 32, now)
		for _, e := range evs {
			e.Key = "d"
		}
		mustAppend(t, l, evs)
	}
	evs, next, atEnd, err := l.keyScan("devserver", "d", keyPrefix("devserver", "d"), Position{}, Position{}, 1<<20)
	if err != nil || len(evs) != scanBudget || atEnd || next != positions(evs)[scanBudget-1] {
		t.Fatalf("one scan: %d events, next %v, atEnd %v, %v", len(evs), next, atEnd, err)
	}
	got, err := l.KeyEvents("devserver", "d", Position{}, Position{}, 1<<20)
	if err != nil || len(got) != 4800 || positions(got)[4799] != (Position{150, 31}) {
		t.Fatalf("KeyEvents: %d events, %v, want 4800", len(got), err)
	}
}

func TestAtWithDeletedObjects(t *testing.T) {
	t.Parallel()
	l, _ := openTest(t, Options{})
	now := time.Now()
	// d: created at 2, updated at 5, deleted at 8, created again at 12. Other objects between.
	var all []*devfleetv1.Event
	add := func(evs ...*devfleetv1.Event) {
		mustAppend(t, l, evs)
		all = append(all, evs...)
	}
	gone := event(8, 1, now, "devserver", "d", 4)
	gone.Deleted = true
	add(event(1, 0, now, "devserver", "other", 4))
	add(event(2, 0, now, "host", "d", 4), event(2, 1, now, "devserver", "d", 4))
	add(event(5, 0, now, "devserver", "d", 5))
	add(event(8, 0, now, "devserver", "dd", 4), gone, event(8, 2, now, "devserver", "e", 4))
	add(event(12, 0, now, "devserver", "d", 6))
	add(event(13, 0, now, "devserver", "e", 6))
	for _, tc := range []struct {
		at   Position
		want Position // zero: nil
	}{
		{Position{}, Position{}},
		{Position{1, math.MaxUint32}, Position{}},
		{Position{2, 0}, Position{}},
		{Position{2, 1}, Position{2, 1}},
		{Position{4, 7}, Position{2, 1}},
		{Position{5, 0}, Position{5, 0}},
		{Position{8, 0}, Position{5, 0}},
		{Position{8, 1}, Position{8, 1}},
		{Position{11, math.MaxUint32}, Position{8, 1}},
		{Position{12, 0}, Position{12, 0}},
		{Position{1000, 0}, Position{12, 0}},
	} {
		e, err := l.At("devserver", "d", tc.at)
		if err != nil {
			t.Fatal(err)
		}
		var got Position
		if e != nil {
			got = Position{e.GetIndex(), e.GetN()}
			if !proto.Equal(e, objectAt(all, "devserver", "d", tc.at)) {
				t.Fatalf("At(%v) = %v, want the stored event", tc.at, e)
			}
		}
		if got != tc.want {
			t.Fatalf("At(%v) = %v, want %v", tc.at, got, tc.want)
		}
		if e.GetDeleted() != (got == Position{8, 1}) {
			t.Fatalf("At(%v): Deleted %v", tc.at, e.GetDeleted())
		}
	}
	if e, err := l.At("devserver", "nothing", Position{100, 0}); e != nil || err != nil {
		t.Fatalf("unknown object: %v %v", e, err)
	}
}

func TestAtAgreesWithTheFeed(t *testing.T) {
	t.Parallel()
	l, all, objects := historyLog(t)
	for _, o := range objects {
		for _, e := range all {
			for _, at := range []Position{{e.GetIndex(), e.GetN()}, before(Position{e.GetIndex(), e.GetN()})} {
				got, err := l.At(o[0], o[1], at)
				if want := objectAt(all, o[0], o[1], at); err != nil || !proto.Equal(got, want) {
					t.Fatalf("At(%q, %.10q, %v) = %v %v, want %v", o[0], o[1], at, got, err, want)
				}
			}
		}
	}
}

func TestAtAndKeyEventsAfterRetention(t *testing.T) {
	t.Parallel()
	clk := newClock()
	l, _ := openTest(t, Options{MaxAge: time.Hour, Now: clk.Now})
	// Entries 1..6, ten minutes apart: "a" changes in every one, "b" only in 1 and 2, "c" in 2
	// and 5.
	for i := uint64(1); i <= 6; i++ {
		evs := []*devfleetv1.Event{event(i, 0, clk.Now(), "devserver", "a", 8)}
		if i <= 2 {
			evs = append(evs, event(i, 1, clk.Now(), "devserver", "b", 8))
		}
		if i == 2 || i == 5 {
			evs = append(evs, event(i, uint32(len(evs)), clk.Now(), "devserver", "c", 8))
		}
		mustAppend(t, l, evs)
		clk.Add(10 * time.Minute)
	}
	// Now +71m: entries 1 and 2 expire.
	clk.Add(11 * time.Minute)
	retainAll(t, l)
	checkKeyIndex(t, l)
	if o, _ := l.Oldest(); o != 3 {
		t.Fatalf("Oldest = %d, want 3", o)
	}
	var too *TooOldError
	// Before the oldest retained event (3/0): the cut (2/2), and before it.
	for _, at := range []Position{{}, {1, 0}, {2, 1}, {2, 2}, {2, 5}, {2, math.MaxUint32}} {
		if e, err := l.At("devserver", "a", at); !errors.As(err, &too) || too.Oldest != 3 {
			t.Fatalf("At(%v) = %v %v, want TooOldError{3}", at, e, err)
		}
	}
	if e, err := l.At("devserver", "a", Position{3, 0}); err != nil || e.GetIndex() != 3 {
		t.Fatalf("At(3/0) = %v %v", e, err)
	}
	if e, err := l.At("devserver", "c", Position{4, 0}); err != nil || e != nil {
		// c's event at 2 is gone: "none retained".
		t.Fatalf("At(c, 4/0) = %v %v, want nil", e, err)
	}
	if e, err := l.At("devserver", "c", Position{6, 0}); err != nil || e.GetIndex() != 5 {
		t.Fatalf("At(c, 6/0) = %v %v", e, err)
	}
	if e, err := l.At("devserver", "b", Position{6, 0}); err != nil || e != nil {
		t.Fatalf("At(b, 6/0) = %v %v, want nil", e, err)
	}
	// KeyEvents: as Read, from the cut or later is whole; from before it is too old.
	if _, err := l.KeyEvents("devserver", "a", Position{2, 1}, Position{}, 10); !errors.As(err, &too) || too.Oldest != 3 {
		t.Fatalf("KeyEvents from 2/1: %v, want TooOldError{3}", err)
	}
	for _, from := range []Position{{}, {2, 2}} {
		if got, err := l.KeyEvents("devserver", "a", from, Position{}, 10); err != nil || len(got) != 4 || got[0].GetIndex() != 3 {
			t.Fatalf("KeyEvents from %v: %v %v", from, positions(got), err)
		}
	}
	// Everything expired: every position up to the last is before the oldest.
	clk.Add(time.Hour)
	retainAll(t, l)
	checkKeyIndex(t, l)
	if _, err := l.At("devserver", "a", Position{6, 0}); !errors.As(err, &too) || too.Oldest != 7 {
		t.Fatalf("At(6/0) with nothing retained: %v, want TooOldError{7}", err)
	}
	if e, err := l.At("devserver", "a", Position{7, 0}); err != nil || e != nil {
		t.Fatalf("At(7/0) with nothing retained: %v %v, want nil", e, err)
	}
	if got, err := l.KeyEvents("devserver", "a", Position{}, Position{}, 10); err != nil || len(got) != 0 {
		t.Fatalf("KeyEvents with nothing retained: %v %v", positions(got), err)
	}
}

func TestRetentionDeletesKeyIndexEntries(t *testing.T) {
	t.Parallel()
	clk := newClock()
	l, _ := openTest(t, Options{MaxAge: time.Hour, MaxBytes: 40_000, Now: clk.Now})
	rng := rand.New(rand.NewPCG(2, 2))
	key := func() string { return fmt.Sprintf("ds-%d", rng.IntN(50)) }
	// More than a chunk of expired events, then size retention of what remains.
	for i := uint64(1); i <= 100; i++ {
		evs := make([]*devfleetv1.Event, 16)
		for n := range evs {
			evs[n] = event(i, uint32(n), clk.Now(), "devserver", key(), 8)
		}
		mustAppend(t, l, evs)
	}
	clk.Add(2 * time.Hour)
	for i := uint64(101); i <= 400; i++ {
		mustAppend(t, l, []*devfleetv1.Event{event(i, 0, clk.Now(), "devserver", key(), 100)})
	}
	retainAll(t, l)
	if o, _ := l.Oldest(); o <= 101 {
		t.Fatalf("Oldest = %d: size retention did not run", o)
	}
	checkKeyIndex(t, l)

	// Restored: the events before the cut wait for the worker, but are not answered from.
	mustAppend(t, l, []*devfleetv1.Event{event(401, 0, clk.Now(), "devserver", "x", 8)})
	if err := l.Restored(500); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, []*devfleetv1.Event{event(501, 0, clk.Now(), "devserver", "y", 8)})
	if e, err := l.At("devserver", "x", Position{501, 0}); err != nil || e != nil {
		t.Fatalf("At(x) after the restore = %v %v, want nil", e, err)
	}
	if got, err := l.KeyEvents("devserver", "x", Position{}, Position{}, 10); err != nil || len(got) != 0 {
		t.Fatalf("KeyEvents(x) after the restore = %v %v, want none", positions(got), err)
	}
	retainAll(t, l)
	checkKeyIndex(t, l)
	if got := positions(readAll(t, l, Position{}, Filter{})); !reflect.DeepEqual(got, []Position{{501, 0}}) {
		t.Fatalf("after the restore: %v", got)
	}
}

func TestAtTime(t *testing.T) {
	t.Parallel()
	clk := newClock()
	l, _ := openTest(t, Options{MaxAge: time.Hour, Now: clk.Now})
	t0 := clk.Now()
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	if p, err := l.AtTime(at(0)); err != nil || !p.IsZero() {
		t.Fatalf("empty log: AtTime = %v %v", p, err)
	}
	// As TestFromTime: entry 4's leader was 5 minutes ahead; entry 5 has no time. Watermarks
	// by entry: 0 10 20 35 35 35 40.
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
		{-100, Position{}}, // none
		{0, Position{1, 1}},
		{5, Position{1, 1}},
		{10, Position{2, 1}},
		{21, Position{3, 1}},
		{32, Position{3, 1}}, // entry 6 (31) comes after entry 4 (35): on the later side
		{35, Position{6, 1}}, // entry 5 (no time) and 6 are on entry 4's side
		{39, Position{6, 1}},
		{40, Position{7, 1}},
		{1000, Position{7, 1}},
	} {
		p, err := l.AtTime(at(tc.min))
		if err != nil || p != tc.want {
			t.Errorf("AtTime(+%dm) = %v %v, want %v", tc.min, p, err, tc.want)
		}
	}
	// Consistent with FromTime: reading after AtTime(t) is reading after FromTime(t+1ns), and
	// no event up to AtTime(t) comes after one stamped later than t.
	all := readAll(t, l, Position{}, Filter{})
	for m := -2; m <= 42; m++ {
		for _, d := range []time.Duration{-time.Nanosecond, 0, time.Nanosecond} {
			ts := at(m).Add(d)
			p, err := l.AtTime(ts)
			if err != nil {
				t.Fatal(err)
			}
			f, err := l.FromTime(ts.Add(time.Nanosecond))
			if err != nil {
				t.Fatal(err)
			}
			if a, b := positions(readAll(t, l, p, Filter{})), positions(readAll(t, l, f, Filter{})); !slices.Equal(a, b) {
				t.Fatalf("t = %v: after AtTime %v reads %v, after FromTime(t+1ns) %v reads %v", ts, p, a, f, b)
			}
			for _, e := range all {
				if !p.Less(Position{e.GetIndex(), e.GetN()}) && e.GetTime() != nil && e.GetTime().AsTime().After(ts) {
					t.Fatalf("AtTime(%v) = %v is after %d/%d stamped %v", ts, p, e.GetIndex(), e.GetN(), e.GetTime().AsTime())
				}
			}
		}
	}
	// The state at a time.
	if e, err := l.At("devserver", "da", mustAtTime(t, l, at(32))); err != nil || e.GetIndex() != 3 {
		t.Fatalf("At(da, AtTime(+32m)) = %v %v", e, err)
	}

	// Delete entries 1..3 (watermark up to 20). Before 20 the answer is gone; from 20 until the
	// watermark rises again (35, at entry 4) it is the cut, which At refuses.
	clk.Add(time.Hour + 21*time.Minute)
	retainAll(t, l)
	var too *TooOldError
	if _, err := l.AtTime(at(19)); !errors.As(err, &too) || too.Oldest != 4 {
		t.Fatalf("AtTime(+19m) after retention: %v, want TooOldError{4}", err)
	}
	for _, m := range []int{20, 34} {
		p, err := l.AtTime(at(m))
		if err != nil || p != (Position{3, 1}) {
			t.Fatalf("AtTime(+%dm) after retention = %v %v, want the cut 3/1", m, p, err)
		}
		if _, err := l.At("devserver", "da", p); !errors.As(err, &too) {
			t.Fatalf("At(AtTime(+%dm)) after retention: %v, want TooOldError", m, err)
		}
	}
	if p, err := l.AtTime(at(35)); err != nil || p != (Position{6, 1}) {
		t.Fatalf("AtTime(+35m) after retention = %v %v", p, err)
	}

	// A snapshot restore: times before it are gone, and after it the answer is Last.
	if err := l.Restored(9); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AtTime(clk.Now().Add(-time.Second)); !errors.As(err, &too) {
		t.Fatalf("AtTime before the restore: %v, want TooOldError", err)
	}
	if p, err := l.AtTime(clk.Now()); err != nil || p != (Position{9, math.MaxUint32}) {
		t.Fatalf("AtTime at the restore = %v %v, want 9/max", p, err)
	}
}

func mustAtTime(t *testing.T, l *Log, ts time.Time) Position {
	t.Helper()
	p, err := l.AtTime(ts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestOpenBuildsTheKeyIndex: a file written before the key index (or by a version that did not
// maintain it) gets one at Open, over many transactions; a half-built one is started over.
func TestOpenBuildsTheKeyIndex(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "events.db")
	l, err := Open(path, Options{noSync: true})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	now := time.Now()
	var all []*devfleetv1.Event
	for i := uint64(1); i <= 200; i++ {
		evs := make([]*devfleetv1.Event, 5)
		for n := range evs {
			evs[n] = event(i, uint32(n), now, "devserver", fmt.Sprintf("ds-%d", rng.IntN(30)), 8)
		}
		mustAppend(t, l, evs)
		all = append(all, evs...)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	db := func(f func(tx *bbolt.Tx) error) {
		t.Helper()
		db, err := bbolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.Update(f); err != nil {
			t.Fatal(err)
		}
	}
	reopen := func(what string) {
		t.Helper()
		l, err := Open(path, Options{noSync: true, indexChunk: 64, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		checkKeyIndex(t, l)
		for k := range 30 {
			key := fmt.Sprintf("ds-%d", k)
			got, err := l.KeyEvents("devserver", key, Position{}, Position{}, 1000)
			if want := objectEvents(all, "devserver", key, Position{}, Position{}); err != nil || !slices.Equal(positions(got), want) {
				t.Fatalf("%s: KeyEvents(%s) = %v %v, want %v", what, key, positions(got), err, want)
			}
			if e, err := l.At("devserver", key, Position{150, 0}); err != nil || !proto.Equal(e, objectAt(all, "devserver", key, Position{150, 0})) {
				t.Fatalf("%s: At(%s, 150/0) = %v %v", what, key, e, err)
			}
		}
	}
	// The old format: no key bucket, no marker.
	db(func(tx *bbolt.Tx) error {
		if err := tx.DeleteBucket(bucketKeys); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Delete(keyMarker)
	})
	reopen("old format")
	// A build that stopped midway: a partial bucket (with a stray key), no marker.
	db(func(tx *bbolt.Tx) error {
		if err := tx.Bucket(bucketKeys).Put(indexKey(keyPrefix("devserver", "stray"), Position{1, 0}), empty); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Delete(keyMarker)
	})
	reopen("half built")
	// An older version appended an event (and rewrote the state) without indexing it.
	db(func(tx *bbolt.Tx) error {
		e := event(201, 0, now, "devserver", "ds-1", 8)
		all = append(all, e)
		b, err := proto.Marshal(e)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketEvents).Put(posKey(Position{201, 0}), b); err != nil {
			return err
		}
		st, err := loadState(tx)
		if err != nil {
			return err
		}
		st.last, st.bytes = Position{201, 0}, st.bytes+int64(len(b))
		return tx.Bucket(bucketMeta).Put(keyState, st.encode())
	})
	reopen("appended to by an older version")
	// Nothing to do: the index is there.
	l, err = Open(path, Options{noSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if n, err := ensureKeyIndex(l.db, 64); n != -1 || err != nil {
		t.Fatalf("index already there: ensureKeyIndex = %d %v", n, err)
	}
}

// TestHistoryWhileAppendingAndRetaining: the reads run against Append and retention, race
// detector on, and never see an index out of step with the events.
func TestHistoryWhileAppendingAndRetaining(t *testing.T) {
	t.Parallel()
	clk := newClock()
	l, _ := openTest(t, Options{MaxAge: time.Minute, Now: clk.Now})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := range 3 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 4))
			for {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("d%c", 'a'+rng.IntN(8))
				li, _ := l.Last()
				at := Position{uint64(rng.IntN(int(li) + 2)), math.MaxUint32}
				var too *TooOldError
				if e, err := l.At("devserver", key, at); err != nil && !errors.As(err, &too) {
					t.Error(err)
				} else if e != nil && (e.GetKey() != key || at.Less(Position{e.GetIndex(), e.GetN()})) {
					t.Errorf("At(%s, %v) = %v", key, at, e)
				}
				if _, err := l.KeyEvents("devserver", key, Position{}, Position{}, 100); err != nil {
					t.Error(err)
				}
				if _, err := l.AtTime(clk.Now().Add(-30 * time.Second)); err != nil && !errors.As(err, &too) {
					t.Error(err)
				}
			}
		})
	}
	for i := uint64(1); i <= 400; i++ {
		mustAppend(t, l, batch(i, 8, clk.Now()))
		clk.Add(time.Second)
	}
	close(stop)
	wg.Wait()
	retainAll(t, l)
	checkKeyIndex(t, l)
}

// TestRetentionChunksAreBoundedByObjects: a chunk of retention rewrites a key-index page per
// object, so it stops at retainObjects objects (or retainChunk events).
func TestRetentionChunksAreBoundedByObjects(t *testing.T) {
	t.Parallel()
	clk := newClock()
	l, _ := openTest(t, Options{MaxAge: time.Hour, Now: clk.Now})
	for i := uint64(1); i <= 600; i++ {
		mustAppend(t, l, []*devfleetv1.Event{
			event(i, 0, clk.Now(), "devserver", fmt.Sprintf("ds-%d", i), 8),
			event(i, 1, clk.Now(), "host", "h", 8),
		})
	}
	l.rmu.Lock() // keep the worker out
	clk.Add(2 * time.Hour)
	p, err := l.plan()
	l.rmu.Unlock()
	if err != nil || !p.full || p.through != (Position{retainObjects - 1, 1}) || len(p.keys) != 2*(retainObjects-1) {
		t.Fatalf("plan: full %v through %v, %d keys, %v; want %d objects", p.full, p.through, len(p.keys), err, retainObjects)
	}
	retainAll(t, l)
	if _, ok := l.Oldest(); ok {
		t.Fatal("not all deleted")
	}
	checkKeyIndex(t, l)
}

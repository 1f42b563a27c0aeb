package eventlog

import (
	"errors"
	"math"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

func TestRetentionByAge(t *testing.T) {
	t.Parallel()
	clk := newClock()
	l, path := openTest(t, Options{MaxAge: time.Hour, Now: clk.Now})
	t0 := clk.Now()
	// Entries 1..10 stamped a minute apart; entry 6's stamp is behind entry 5's (a new leader
	// with a slower clock): it stays as long as entry 5 does.
	stamps := []int{0, 1, 2, 3, 4, 10, 6, 7, 8, 9}
	for i, m := range stamps {
		mustAppend(t, l, batch(uint64(i+1), 2, t0.Add(time.Duration(m)*time.Minute)))
	}
	retainAll(t, l)
	if o, _ := l.Oldest(); o != 1 {
		t.Fatalf("nothing expired yet, Oldest = %d", o)
	}
	clk.Add(time.Hour + 3*time.Minute + time.Second) // entries stamped before minute 3:01 expire
	retainAll(t, l)
	if o, ok := l.Oldest(); !ok || o != 5 {
		t.Fatalf("Oldest = %d %v, want 5", o, ok)
	}
	clk.Add(5 * time.Minute) // now minute 8:01: entry 5 expires; 6 (stamped 10) holds 7 (stamped 6)
	retainAll(t, l)
	if o, _ := l.Oldest(); o != 6 {
		t.Fatalf("Oldest = %d, want 6", o)
	}
	clk.Add(2 * time.Minute) // 10:01: all expired
	retainAll(t, l)
	if o, ok := l.Oldest(); ok {
		t.Fatalf("all expired, Oldest = %d", o)
	}
	if l.st.bytes != 0 {
		t.Fatalf("all expired, bytes = %d", l.st.bytes)
	}
	// Nothing retained: reading from the oldest gives nothing, from an old position TooOld,
	// and Last is kept for the FSM.
	if evs := readAll(t, l, Position{}, Filter{}); len(evs) != 0 {
		t.Fatalf("read %d events", len(evs))
	}
	var too *TooOldError
	if _, err := l.Read(Position{3, 1}, Filter{}, 10); !errors.As(err, &too) || too.Oldest != 11 {
		t.Fatalf("Read from 3/1: %v, want TooOldError{11}", err)
	}
	if i, n := l.Last(); i != 10 || n != 1 {
		t.Fatalf("Last = %d/%d, want 10/1", i, n)
	}
	// Reading from exactly the last deleted event loses nothing: allowed.
	if _, err := l.Read(Position{10, 1}, Filter{}, 10); err != nil {
		t.Fatal(err)
	}
	// The cut survives a restart.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, err := Open(path, Options{MaxAge: time.Hour, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if _, err := l2.Read(Position{3, 1}, Filter{}, 10); !errors.As(err, &too) {
		t.Fatalf("after reopen, Read from 3/1: %v, want TooOldError", err)
	}
}

func TestRetentionBySize(t *testing.T) {
	t.Parallel()
	l, _ := openTest(t, Options{MaxBytes: 10_000})
	now := time.Now()
	for i := uint64(1); i <= 100; i++ {
		mustAppend(t, l, batch(i, 4, now)) // ~100 bytes each
	}
	// The background worker, kicked by Append, gets there alone.
	waitFor(t, "retention by size", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.st.bytes <= 10_000
	})
	evs := readAll(t, l, Position{}, Filter{})
	if last := evs[len(evs)-1]; last.GetIndex() != 100 || last.GetN() != 3 {
		t.Fatalf("the newest was deleted: last read %d/%d", last.GetIndex(), last.GetN())
	}
	if o, _ := l.Oldest(); o != evs[0].GetIndex() || o < 2 {
		t.Fatalf("Oldest = %d, first read %d", o, evs[0].GetIndex())
	}
	// Exactly the oldest beyond the bound went: one more event would not have fit.
	var sum int64
	for _, e := range evs {
		sum += int64(proto.Size(e))
	}
	one := int64(proto.Size(evs[0]))
	if l.st.bytes != sum || sum > 10_000 || sum+one <= 10_000 {
		t.Fatalf("kept %d events, %d bytes (tracked %d), for MaxBytes 10000", len(evs), sum, l.st.bytes)
	}
}

// TestRetentionInChunksLetsAppendThrough: a backlog far larger than a chunk goes in many short
// transactions, and Append runs between them.
func TestRetentionInChunksLetsAppendThrough(t *testing.T) {
	t.Parallel()
	clk := newClock()
	l, _ := openTest(t, Options{MaxAge: time.Hour, Now: clk.Now})
	for i := uint64(1); i <= 200; i++ {
		mustAppend(t, l, batch(i, 32, clk.Now()))
	}
	clk.Add(2 * time.Hour)
	var worst time.Duration
	for i := uint64(201); ; i++ {
		start := time.Now()
		mustAppend(t, l, batch(i, 32, clk.Now()))
		worst = max(worst, time.Since(start))
		if o, _ := l.Oldest(); o > 200 {
			t.Logf("6400 expired events deleted in chunks of at most %d while %d batches were appended; slowest Append %v", retainChunk, i-200, worst)
			break
		}
		if i > 100000 {
			t.Fatal("retention made no progress")
		}
	}
	if worst > time.Second {
		t.Fatalf("an Append waited %v behind retention", worst)
	}
}

func TestRestoredDeclaresMissingHistory(t *testing.T) {
	t.Parallel()
	clk := newClock()
	l, _ := openTest(t, Options{Now: clk.Now})
	for i := uint64(1); i <= 5; i++ {
		mustAppend(t, l, batch(i, 2, clk.Now()))
	}
	// A restart restoring this node's own snapshot: the log is ahead of it; nothing changes.
	if err := l.Restored(4); err != nil {
		t.Fatal(err)
	}
	if err := l.Restored(5); err != nil {
		t.Fatal(err)
	}
	if got := len(readAll(t, l, Position{}, Filter{})); got != 10 {
		t.Fatalf("after a covered restore %d events, want 10", got)
	}
	sub := l.Subscribe(t.Context(), Position{2, 0}, Filter{}, 100)
	// A leader's snapshot at 9: events 6..9 never reached this node.
	if err := l.Restored(9); err != nil {
		t.Fatal(err)
	}
	if i, n := l.Last(); i != 9 || n != math.MaxUint32 {
		t.Fatalf("Last = %d/%d, want 9/max", i, n)
	}
	var too *TooOldError
	if _, err := l.Read(Position{5, 1}, Filter{}, 10); !errors.As(err, &too) || too.Oldest != 10 {
		t.Fatalf("Read across the gap: %v, want TooOldError{10}", err)
	}
	if _, err := l.FromTime(clk.Now().Add(-time.Second)); !errors.As(err, &too) {
		t.Fatalf("FromTime before the restore: %v, want TooOldError", err)
	}
	for range sub.C() {
	}
	if !errors.As(sub.Err(), &too) {
		t.Fatalf("subscription across the gap ended with %v, want TooOldError", sub.Err())
	}
	if err := l.Append(batch(9, 1, clk.Now())); !errors.Is(err, ErrOutOfOrder) {
		t.Fatalf("Append at the restored index: %v, want ErrOutOfOrder", err)
	}
	clk.Add(time.Second)
	mustAppend(t, l, batch(10, 1, clk.Now()))
	waitFor(t, "the old events deleted", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.st.bytes < 200
	})
	if got := positions(readAll(t, l, Position{}, Filter{})); len(got) != 1 || got[0] != (Position{10, 0}) {
		t.Fatalf("after the restore read %v, want [10/0]", got)
	}
	if p, err := l.FromTime(clk.Now()); err != nil || p != (Position{9, math.MaxUint32}) {
		t.Fatalf("FromTime after the restore = %v %v, want 9/max", p, err)
	}
}

func TestOpenRefusesBadOptions(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "events.db")
	if _, err := Open(path, Options{MaxAge: -time.Second}); err == nil || !contains(err, "MaxAge") {
		t.Fatalf("negative MaxAge: %v", err)
	}
	if _, err := Open(path, Options{MaxBytes: -1}); err == nil || !contains(err, "MaxBytes") {
		t.Fatalf("negative MaxBytes: %v", err)
	}
}

func TestAFailedAppendIsRetriedOrDeclaredMissing(t *testing.T) {
	t.Parallel()
	l, _ := openTest(t, Options{})
	now := time.Now()
	mustAppend(t, l, batch(1, 2, now))
	mustAppend(t, l, batch(2, 2, now))
	disk := errors.New("disk full")
	l.fault = func() error { return disk }
	if err := l.Append(batch(3, 2, now)); !errors.Is(err, disk) {
		t.Fatalf("failed append: %v", err)
	}
	l.fault = nil
	// Retried: nothing was lost.
	mustAppend(t, l, batch(3, 2, now))
	if got := len(readAll(t, l, Position{1, 0}, Filter{})); got != 5 {
		t.Fatalf("after a retried append: %d events after 1/0, want 5", got)
	}
	// Not retried: entry 4's events are lost, and readers from before them are told.
	sub := l.Subscribe(t.Context(), Position{3, 1}, Filter{}, 10)
	l.fault = func() error { return disk }
	if err := l.Append(batch(4, 2, now)); err == nil {
		t.Fatal("append did not fail")
	}
	l.fault = nil
	mustAppend(t, l, batch(5, 1, now))
	var too *TooOldError
	if _, err := l.Read(Position{3, 1}, Filter{}, 10); !errors.As(err, &too) || too.Oldest != 5 {
		t.Fatalf("read across the lost events: %v, want TooOldError{5}", err)
	}
	for range sub.C() {
	}
	if !errors.As(sub.Err(), &too) {
		t.Fatalf("subscription across the lost events ended with %v, want TooOldError", sub.Err())
	}
	if got := positions(readAll(t, l, Position{}, Filter{})); len(got) != 1 || got[0] != (Position{5, 0}) {
		t.Fatalf("from the oldest: %v, want [5/0]", got)
	}
	if o, _ := l.Oldest(); o != 5 {
		t.Fatalf("Oldest = %d, want 5", o)
	}
}

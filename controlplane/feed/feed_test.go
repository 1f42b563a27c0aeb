package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/devfleet/devfleet/controlplane/eventlog"
	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

var start = time.Now()

func changes(i uint64) []state.Change {
	now := start.Add(time.Duration(i) * time.Millisecond)
	return []state.Change{
		{Table: state.TableRegions, Row: &v1.Region{Name: fmt.Sprint("r", i)}, Time: now},
		{Table: "no-topic", Row: &v1.Region{Name: "ignored"}, Time: now},
		{Table: state.TableHosts, Row: &v1.Host{Name: fmt.Sprint("h", i)}, Deleted: i%2 == 0, Time: now},
	}
}

// TestWriterCoalescesWhatQueued: entries queued while the writer was behind are written
// together, in order, each with its own index and places; a restore in between is recorded in
// its place; entries re-applied after a restart are skipped.
func TestWriterCoalescesWhatQueued(t *testing.T) {
	l, err := eventlog.Open(filepath.Join(t.TempDir(), "events.db"), eventlog.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f := New(l, nil)
	for i := uint64(1); i <= 300; i++ {
		f.Changed(i, changes(i))
	}
	f.ch <- batch{index: 400, restored: true} // a snapshot through 400 installed
	for i := uint64(401); i <= 700; i++ {     // more than maxCoalesce after it
		f.Changed(i, changes(i))
	}
	f.Start()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := f.Wait(ctx, 700); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if idx, n := l.Last(); idx != 700 || n != 1 {
		t.Fatalf("last %d/%d", idx, n)
	}
	// Before the restore: declared missing.
	var old *eventlog.TooOldError
	if _, err := l.Read(eventlog.Position{Index: 300, N: 1}, eventlog.Filter{}, 10); !errors.As(err, &old) {
		t.Fatalf("read from before the restore: %v", err)
	}
	evs, err := l.Read(eventlog.Position{Index: 400, N: math.MaxUint32}, eventlog.Filter{}, 1000)
	if err != nil || len(evs) != 600 {
		t.Fatalf("read %d events: %v", len(evs), err)
	}
	for k, e := range evs {
		i := 401 + uint64(k/2)
		want := fmt.Sprint("region r", i)
		if k%2 == 1 {
			want = fmt.Sprint("host h", i)
		}
		if e.GetIndex() != i || e.GetN() != uint32(k%2) || e.GetTopic()+" "+e.GetKey() != want || e.GetDeleted() != (k%2 == 1 && i%2 == 0) {
			t.Fatalf("event %d: %d/%d %s %s deleted %v, want %d/%d %s", k, e.GetIndex(), e.GetN(), e.GetTopic(), e.GetKey(), e.GetDeleted(), i, k%2, want)
		}
	}
	// A restart: raft re-applies entries the history holds; only the new one is written.
	f = New(l, nil)
	for i := uint64(699); i <= 701; i++ {
		f.Changed(i, changes(i))
	}
	f.Start()
	f.Close()
	evs, err = l.Read(eventlog.Position{Index: 698, N: 1}, eventlog.Filter{}, 100)
	if err != nil || len(evs) != 6 || evs[4].GetIndex() != 701 || evs[5].GetN() != 1 {
		t.Fatalf("after the restart: %d events %v", len(evs), err)
	}
}

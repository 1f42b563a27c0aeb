// Package feed turns every committed change of the replicated state into events (topic, key,
// raft index, time, the object's new state) in the node's event history (eventlog), in commit
// order, so that consumers follow the fleet without reading back.
package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/eventlog"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Topics are the feed's topics, by the table their objects live in.
var Topics = map[string]string{
	state.TableRegions:     "region",
	state.TableSites:       "site",
	state.TableHosts:       "host",
	state.TableFlavors:     "flavor",
	state.TableDevservers:  "devserver",
	state.TableNotices:     "notice",
	state.TableProfiles:    "profile",
	state.TablePools:       "pool",
	state.TableContainers:  "container",
	state.TableMigrations:  "migration",
	state.TableDrains:      "drain",
	state.TableDrainItems:  "drain-item",
	state.TableDrainEvents: "drain-event",
	state.TableDecoms:      "decom",
	state.TableDeadLetters: "dead-letter",
	state.TableAlerts:      "alert",
	state.TableNodes:       "node",
}

// KnownTopic reports whether topic is one of the feed's.
func KnownTopic(topic string) bool {
	for _, t := range Topics {
		if t == topic {
			return true
		}
	}
	return false
}

// queue is how many committed transactions may wait for the writer before the FSM waits: the
// feed never drops a change (a consumer must be able to trust it has no gap), so a writer that
// cannot keep up slows the applies down rather than losing events.
const queue = 4096

type batch struct {
	index    uint64
	changes  []state.Change
	restored bool
}

// Feed is a state observer (state.Store.ObserveAll) that writes events to an eventlog on a
// goroutine of its own.
type Feed struct {
	log    *eventlog.Log
	logger *slog.Logger
	ch     chan batch
	done   chan struct{}
	once   sync.Once

	// mu guards written, the raft index of the last batch written (events or none), and
	// progress, closed and replaced whenever it rises: readers that mix the state with the
	// history wait for the history to catch up with the state they read.
	mu       sync.Mutex
	written  uint64
	progress chan struct{}
}

// New returns a feed writing to l; Start it, and Close it after the store stops applying.
func New(l *eventlog.Log, logger *slog.Logger) *Feed {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Feed{log: l, logger: logger.With("component", "feed"), ch: make(chan batch, queue), done: make(chan struct{}), progress: make(chan struct{})}
}

// Reset implements state.Observer: the whole state was replaced (a snapshot installed, or the
// feed added). History before its index that the log does not hold is declared missing, so a
// reader gets an error naming the oldest index rather than a silent gap.
func (f *Feed) Reset(v *state.View) {
	f.ch <- batch{index: v.LatestIndex(), restored: true}
}

// Changed implements state.Observer. It only queues: the events are built and written on the
// feed's goroutine (the rows are immutable once committed).
func (f *Feed) Changed(index uint64, changes []state.Change) {
	f.ch <- batch{index: index, changes: changes}
}

// maxCoalesce bounds the entries one Append writes. A writer that keeps up writes each entry's
// events as it comes; one that fell behind writes what queued up meanwhile in one transaction,
// which wakes the history's subscribers once, rather than once per entry.
const maxCoalesce = 256

// Start runs the writer until Close.
func (f *Feed) Start() {
	go func() {
		defer close(f.done)
		bs := make([]batch, 0, maxCoalesce)
		for b := range f.ch {
			bs = append(bs[:0], b)
		more:
			for len(bs) < maxCoalesce {
				select {
				case b, ok := <-f.ch:
					if !ok {
						break more
					}
					bs = append(bs, b)
				default:
					break more
				}
			}
			f.write(bs)
			clear(bs) // the changes are garbage once written
		}
	}()
}

func (f *Feed) wrote(index uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if index > f.written {
		f.written = index
		close(f.progress)
		f.progress = make(chan struct{})
	}
}

// Wait returns once the history holds every change up to raft index index (or ctx ends): a
// reader of the state at that index then finds its events in the history too.
func (f *Feed) Wait(ctx context.Context, index uint64) error {
	for {
		f.mu.Lock()
		written, progress := f.written, f.progress
		f.mu.Unlock()
		if written >= index {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the event history is behind the state (index %d of %d): %w", written, index, ctx.Err())
		case <-f.done:
			return errors.New("the event feed has stopped")
		case <-progress:
		}
	}
}

// Close stops the writer once every queued change is written.
func (f *Feed) Close() {
	f.once.Do(func() { close(f.ch) })
	<-f.done
}

// write writes the events of consecutive batches, in one Append (a restore in between ends it).
func (f *Feed) write(bs []batch) {
	last, lastN := f.log.Last()
	var events []*v1.Event
	flush := func() {
		if len(events) == 0 {
			return
		}
		if err := f.log.Append(events); err != nil {
			f.logger.Error("writing events failed; readers from before them get an error, not a gap", "index", events[0].GetIndex(), "error", err)
		}
		events = nil
	}
	for _, b := range bs {
		if !b.restored {
			events = f.events(events, b, last, lastN)
			continue
		}
		flush()
		if err := f.log.Restored(b.index); err != nil {
			f.logger.Error("recording a restore in the event history failed", "index", b.index, "error", err)
		}
		f.wrote(b.index)
		last, lastN = f.log.Last()
	}
	flush()
	f.wrote(bs[len(bs)-1].index)
}

// events appends the events of b's changes to events, skipping those at or before (last, lastN):
// written before a restart, re-applied by raft.
func (f *Feed) events(events []*v1.Event, b batch, last uint64, lastN uint32) []*v1.Event {
	n := uint32(0)
	for _, c := range b.changes {
		topic, ok := Topics[c.Table]
		if !ok {
			continue
		}
		m, ok := c.Row.(proto.Message)
		if !ok {
			continue
		}
		if b.index < last || (b.index == last && n <= lastN) {
			n++ // written before a restart: raft re-applied the entry
			continue
		}
		obj, err := anypb.New(m)
		if err != nil {
			f.logger.Error("an event's object cannot be encoded; skipped", "index", b.index, "table", c.Table, "error", err)
			continue
		}
		events = append(events, &v1.Event{Index: b.index, N: n, Time: timestamppb.New(c.Time), Topic: topic, Key: keyOf(m), Deleted: c.Deleted, Object: obj})
		n++
	}
	return events
}

// keyOf is an object's key in its topic: its name, else its ID.
func keyOf(m proto.Message) string {
	switch r := m.(type) {
	case *v1.DrainItem:
		return r.GetDrainId() + "/" + r.GetDevserver()
	case *v1.DrainEvent:
		return r.GetDrainId()
	case *v1.DeadLetter:
		return r.GetSink() + "/" + r.GetMessageId()
	case *v1.ContainerPool:
		return r.GetRegion() + "/" + r.GetProfile()
	case *fsmv1.Node:
		return r.GetId()
	case interface{ GetName() string }:
		if name := r.GetName(); name != "" {
			return name
		}
	}
	if r, ok := m.(interface{ GetId() string }); ok {
		return r.GetId()
	}
	return ""
}

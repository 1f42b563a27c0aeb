package eventlog

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	devfleetv1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// TestSubscribeReplayThenLiveNoGapNoDuplicate races subscribers that start at random positions
// and moments, with random filters and paces, against a writer appending random batches; a
// tiny tail makes lagging subscribers go back and forth between the store and memory. Each
// must see exactly the matching events after its start, in order.
func TestSubscribeReplayThenLiveNoGapNoDuplicate(t *testing.T) {
	t.Parallel()
	for seed := uint64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			t.Parallel()
			subscribeRace(t, seed)
		})
	}
}

type subscriber struct {
	from Position
	f    Filter
	sub  *Subscription
	mu   sync.Mutex
	got  []Position
	// badEncoding: a delivery whose Encoded does not decode to its Event.
	badEncoding string
	done        chan struct{}
}

func (s *subscriber) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

func subscribeRace(t *testing.T, seed uint64) {
	rnd := rand.New(rand.NewPCG(seed, 7))
	path := filepath.Join(t.TempDir(), "events.db")
	o := Options{noSync: true, tailEvents: 4 + rnd.IntN(40)}
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	topics := []string{"host", "devserver", "drain"}
	index := uint64(0)
	randomBatch := func(rnd *rand.Rand) []*devfleetv1.Event {
		index += 1 + uint64(rnd.IntN(3))
		evs := make([]*devfleetv1.Event, 1+rnd.IntN(6))
		for n := range evs {
			evs[n] = event(index, uint32(n), time.Now(), topics[rnd.IntN(3)], fmt.Sprint("k", rnd.IntN(4)), rnd.IntN(200))
		}
		return evs
	}
	for range rnd.IntN(300) {
		mustAppend(t, l, randomBatch(rnd))
	}
	if seed%2 == 0 { // reopened: what was preloaded is only in the store
		l.Close()
		if l, err = Open(path, o); err != nil {
			t.Fatal(err)
		}
	}
	defer l.Close()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var subs []*subscriber
	var subsMu sync.Mutex
	start := func(rnd *rand.Rand) {
		stored := readAll(t, l, Position{}, Filter{})
		s := &subscriber{done: make(chan struct{})}
		switch k := rnd.IntN(4); {
		case k == 0 || len(stored) == 0: // from the oldest
		case k == 1:
			s.from = positions(stored)[rnd.IntN(len(stored))]
		case k == 2:
			s.from = before(positions(stored)[rnd.IntN(len(stored))])
		default:
			li, _ := l.Last()
			s.from = Position{li + uint64(rnd.IntN(20)), 0} // in the future
		}
		switch rnd.IntN(3) {
		case 1:
			s.f.Topics = []string{topics[rnd.IntN(3)]}
		case 2:
			s.f.Keys = []string{"k1", "k3"}
		}
		s.sub = l.Subscribe(ctx, s.from, s.f, 1<<16)
		pace := rnd.IntN(3) // 0: as fast as it can; else a pause every few events
		go func() {
			defer close(s.done)
			for d := range s.sub.C() {
				e := d.Event
				var dec devfleetv1.Event
				if err := proto.Unmarshal(d.Encoded, &dec); (err != nil || !proto.Equal(&dec, e)) && s.badEncoding == "" {
					s.badEncoding = fmt.Sprintf("%d/%d: %v", e.GetIndex(), e.GetN(), err)
				}
				s.mu.Lock()
				s.got = append(s.got, Position{e.GetIndex(), e.GetN()})
				n := len(s.got)
				s.mu.Unlock()
				if pace > 0 && n%(pace*7) == 0 {
					time.Sleep(50 * time.Microsecond)
				}
			}
		}()
		subsMu.Lock()
		subs = append(subs, s)
		subsMu.Unlock()
	}
	for range 3 {
		start(rnd)
	}
	// The writer, and more subscribers starting while it writes.
	writer := make(chan struct{})
	wrnd := rand.New(rand.NewPCG(seed, 11))
	go func() {
		defer close(writer)
		for i := range 400 {
			if err := l.Append(randomBatch(wrnd)); err != nil {
				t.Error(err)
				return
			}
			if i%37 == 0 {
				time.Sleep(time.Duration(wrnd.IntN(200)) * time.Microsecond)
			}
		}
	}()
	for range 5 {
		time.Sleep(time.Duration(rnd.IntN(2000)) * time.Microsecond)
		start(rnd)
	}
	<-writer

	all := readAll(t, l, Position{}, Filter{})
	for i, s := range subs {
		m := s.f.compile()
		var want []Position
		for _, e := range all {
			if p := (Position{e.GetIndex(), e.GetN()}); s.from.Less(p) && m.match(e.GetTopic(), e.GetKey()) {
				want = append(want, p)
			}
		}
		waitFor(t, fmt.Sprintf("subscriber %d to get %d events", i, len(want)), func() bool {
			return s.count() >= len(want) || s.sub.Err() != nil
		})
		if err := s.sub.Err(); err != nil {
			t.Fatalf("subscriber %d (from %v, %+v) ended: %v", i, s.from, s.f, err)
		}
		_ = s
	}
	cancel()
	for i, s := range subs {
		<-s.done
		m := s.f.compile()
		var want []Position
		for _, e := range all {
			if p := (Position{e.GetIndex(), e.GetN()}); s.from.Less(p) && m.match(e.GetTopic(), e.GetKey()) {
				want = append(want, p)
			}
		}
		if !reflect.DeepEqual(s.got, want) {
			t.Fatalf("subscriber %d (from %v, %+v): got %d events, want %d; first difference at %d",
				i, s.from, s.f, len(s.got), len(want), firstDiff(s.got, want))
		}
		if s.badEncoding != "" {
			t.Fatalf("subscriber %d: a delivery's encoding is not its event: %s", i, s.badEncoding)
		}
		if !errors.Is(s.sub.Err(), context.Canceled) {
			t.Fatalf("subscriber %d ended with %v, want context.Canceled", i, s.sub.Err())
		}
	}
}

func firstDiff(a, b []Position) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestSlowConsumerIsCutOffWhileAppendKeepsGoing(t *testing.T) {
	t.Parallel()
	l, _ := openTest(t, Options{})
	mustAppend(t, l, batch(1, 8, time.Now()))
	healthy := l.Subscribe(t.Context(), Position{}, Filter{}, 1<<16)
	// Live from the start (nothing to replay), and never read while appending.
	slow := l.Subscribe(t.Context(), Position{1, 7}, Filter{}, 4)
	var healthyGot atomic.Int64
	go func() {
		for range healthy.C() {
			healthyGot.Add(1)
		}
	}()
	var worst time.Duration
	for i := uint64(2); i <= 300; i++ {
		start := time.Now()
		mustAppend(t, l, batch(i, 8, time.Now()))
		worst = max(worst, time.Since(start))
	}
	waitFor(t, "the slow consumer cut off", func() bool { return slow.Err() != nil })
	if !errors.Is(slow.Err(), ErrSlowConsumer) {
		t.Fatalf("slow consumer ended with %v", slow.Err())
	}
	var slowGot []Position
	for d := range slow.C() {
		slowGot = append(slowGot, Position{d.Event.GetIndex(), d.Event.GetN()})
	}
	// What it did get is the feed's start, in order, within its buffer.
	if len(slowGot) > 4 || (len(slowGot) > 0 && slowGot[0] != (Position{2, 0})) {
		t.Fatalf("slow consumer got %v", slowGot)
	}
	waitFor(t, "the healthy consumer to get every event", func() bool { return healthyGot.Load() == 300*8 })
	if healthy.Err() != nil {
		t.Fatalf("healthy consumer ended: %v", healthy.Err())
	}
	t.Logf("300 batches of 8 appended beside a stuck subscriber; slowest Append %v", worst)
	if worst > time.Second {
		t.Fatalf("Append took %v beside a stuck subscriber", worst)
	}
}

// TestReplayIsPacedByTheConsumer: a small buffer does not cut off a consumer that is behind
// only because it is replaying history.
func TestReplayIsPacedByTheConsumer(t *testing.T) {
	t.Parallel()
	l, _ := openTest(t, Options{})
	for i := uint64(1); i <= 100; i++ {
		mustAppend(t, l, batch(i, 10, time.Now()))
	}
	sub := l.Subscribe(t.Context(), Position{}, Filter{}, 2)
	for i := range 1000 {
		e := (<-sub.C()).Event
		if e == nil {
			t.Fatalf("ended after %d events: %v", i, sub.Err())
		}
		if i%100 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	// Live now, and keeping up.
	for i := uint64(101); i <= 110; i++ {
		mustAppend(t, l, batch(i, 1, time.Now()))
		if e := (<-sub.C()).Event; e.GetIndex() != i {
			t.Fatalf("live: got %d, want %d (%v)", e.GetIndex(), i, sub.Err())
		}
	}
}

func TestSubscriptionEndsWithItsContext(t *testing.T) {
	t.Parallel()
	l, _ := openTest(t, Options{})
	for i := uint64(1); i <= 10; i++ {
		mustAppend(t, l, batch(i, 10, time.Now()))
	}
	// Blocked replaying to a consumer that does not read.
	ctx, cancel := context.WithCancel(t.Context())
	replaying := l.Subscribe(ctx, Position{}, Filter{}, 1)
	// Waiting, live, for appends.
	ctx2, cancel2 := context.WithCancel(t.Context())
	waiting := l.Subscribe(ctx2, Position{10, 9}, Filter{}, 1)
	time.Sleep(10 * time.Millisecond)
	cancel()
	cancel2()
	for _, s := range []*Subscription{replaying, waiting} {
		for range s.C() {
		}
		if !errors.Is(s.Err(), context.Canceled) {
			t.Fatalf("ended with %v, want context.Canceled", s.Err())
		}
	}
	waitFor(t, "the subscribers' goroutines to end", func() bool {
		return l.Close() == nil
	})
}

func TestSubscriptionsEndWhenTheLogCloses(t *testing.T) {
	t.Parallel()
	l, _ := openTest(t, Options{})
	mustAppend(t, l, batch(1, 5, time.Now()))
	blocked := l.Subscribe(t.Context(), Position{}, Filter{}, 1)
	waiting := l.Subscribe(t.Context(), Position{1, 4}, Filter{}, 1)
	time.Sleep(5 * time.Millisecond)
	done := make(chan error)
	go func() { done <- l.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung on a subscriber")
	}
	for _, s := range []*Subscription{blocked, waiting, l.Subscribe(t.Context(), Position{}, Filter{}, 1)} {
		for range s.C() {
		}
		if !errors.Is(s.Err(), ErrClosed) {
			t.Fatalf("ended with %v, want ErrClosed", s.Err())
		}
	}
}

// TestRetentionOvertakingASubscriber: a subscriber whose next events are deleted before it
// reads them gets TooOldError, never a silent gap.
func TestRetentionOvertakingASubscriber(t *testing.T) {
	t.Parallel()
	clk := newClock()
	l, _ := openTest(t, Options{MaxAge: time.Hour, Now: clk.Now})
	for i := uint64(1); i <= 50; i++ {
		mustAppend(t, l, batch(i, 10, clk.Now()))
	}
	sub := l.Subscribe(t.Context(), Position{}, Filter{}, 1)
	if e := (<-sub.C()).Event; e.GetIndex() != 1 {
		t.Fatalf("first event %d/%d", e.GetIndex(), e.GetN())
	}
	clk.Add(2 * time.Hour)
	mustAppend(t, l, batch(51, 1, clk.Now()))
	retainAll(t, l)
	var n int
	for range sub.C() {
		n++
	}
	var too *TooOldError
	if !errors.As(sub.Err(), &too) || too.Oldest != 51 {
		t.Fatalf("after %d more events ended with %v, want TooOldError{51}", n, sub.Err())
	}
	// Starting too old fails at once.
	late := l.Subscribe(t.Context(), Position{3, 0}, Filter{}, 1)
	for range late.C() {
	}
	if !errors.As(late.Err(), &too) {
		t.Fatalf("subscribing from a deleted position: %v", late.Err())
	}
}

// TestDeliveriesCarryTheirEncoding: live deliveries (the tail) share one encoding between
// subscribers, replayed ones (the store) carry a copy; both are the stored bytes of the event.
func TestDeliveriesCarryTheirEncoding(t *testing.T) {
	t.Parallel()
	l, _ := openTest(t, Options{tailEvents: 4})
	for i := uint64(1); i <= 10; i++ {
		mustAppend(t, l, batch(i, 2, time.Now()))
	}
	check := func(what string, d Delivery) {
		t.Helper()
		var dec devfleetv1.Event
		if err := proto.Unmarshal(d.Encoded, &dec); err != nil || !proto.Equal(&dec, d.Event) || len(d.Encoded) == 0 {
			t.Fatalf("%s: %d/%d: encoding %d bytes does not decode to the event (%v)", what, d.Event.GetIndex(), d.Event.GetN(), len(d.Encoded), err)
		}
	}
	replay := l.Subscribe(t.Context(), Position{}, Filter{}, 100) // 20 events, the tail holds 4
	a := l.Subscribe(t.Context(), Position{10, 1}, Filter{}, 100)
	b := l.Subscribe(t.Context(), Position{10, 1}, Filter{}, 100)
	for range 20 {
		check("replayed", <-replay.C())
	}
	mustAppend(t, l, batch(11, 2, time.Now()))
	for range 2 {
		da, db := <-a.C(), <-b.C()
		check("live", da)
		if da.Event != db.Event || &da.Encoded[0] != &db.Encoded[0] {
			t.Fatalf("live subscribers do not share the tail's event and encoding")
		}
	}
}

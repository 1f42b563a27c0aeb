package api

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/eventlog"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// watchServer serves EventService.Watch from l over loopback, with the given server options,
// and returns a client connection to it (with opts).
func watchServer(t *testing.T, l *eventlog.Log, sopts []grpc.ServerOption, opts ...grpc.DialOption) v1.EventServiceClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(sopts...)
	v1.RegisterEventServiceServer(g, &Server{cfg: Config{Events: l}})
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return v1.NewEventServiceClient(conn)
}

func openLog(t *testing.T) *eventlog.Log {
	t.Helper()
	l, err := eventlog.Open(filepath.Join(t.TempDir(), "events.db"), eventlog.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// appendEntries appends entries first..last, two events each (topics devserver and host), with
// objects of size bytes.
func appendEntries(t *testing.T, l *eventlog.Log, first, last uint64, size int) []*v1.Event {
	t.Helper()
	var all []*v1.Event
	for i := first; i <= last; i++ {
		evs := []*v1.Event{
			{Index: i, N: 0, Time: timestamppb.Now(), Topic: "devserver", Key: fmt.Sprint("d", i%7),
				Object: &anypb.Any{TypeUrl: "type.googleapis.com/devfleet.v1.Devserver", Value: make([]byte, size)}},
			{Index: i, N: 1, Time: timestamppb.Now(), Topic: "host", Key: fmt.Sprint("h", i%3), Deleted: i%5 == 0,
				Object: &anypb.Any{TypeUrl: "type.googleapis.com/devfleet.v1.Host", Value: []byte(fmt.Sprint("host ", i))}},
		}
		if err := l.Append(evs); err != nil {
			t.Fatal(err)
		}
		all = append(all, evs...)
	}
	return all
}

// recvEvents receives n events from s (skipping heartbeats).
func recvEvents(t *testing.T, s grpc.ServerStreamingClient[v1.WatchResponse], n int) []*v1.Event {
	t.Helper()
	var got []*v1.Event
	for len(got) < n {
		r, err := s.Recv()
		if err != nil {
			t.Fatalf("after %d events: %v", len(got), err)
		}
		if e := r.GetEvent(); e != nil {
			got = append(got, e)
		}
	}
	return got
}

func sameEvents(t *testing.T, what string, got, want []*v1.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d events, want %d", what, len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("%s: event %d is %v, want %v", what, i, got[i], want[i])
		}
	}
}

func filterEvents(evs []*v1.Event, keep func(*v1.Event) bool) []*v1.Event {
	var out []*v1.Event
	for _, e := range evs {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}

// TestWatchSendsEventsEncodedOnce: streams replaying (from the store) and following (the tail),
// filtered or not, receive exactly the stored events, through the server's codec (which sends
// the encoding made once per node) and through the plain proto codec (which marshals the same
// messages again).
func TestWatchSendsEventsEncodedOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		sopts []grpc.ServerOption
	}{
		{"server codec", []grpc.ServerOption{grpc.ForceServerCodecV2(newServerCodec())}},
		{"plain proto codec", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := openLog(t)
			// More than the tail keeps (4,096 events), so that a replay from the start reads the
			// store first.
			stored := appendEntries(t, l, 1, 2500, 32)
			c := watchServer(t, l, tc.sopts)
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			type watch struct {
				name string
				req  *v1.WatchRequest
				keep func(*v1.Event) bool
			}
			all := func(*v1.Event) bool { return true }
			watches := []watch{
				{"replay", &v1.WatchRequest{Since: timestamppb.New(time.Unix(0, 0))}, all},
				{"replay of devservers d3", &v1.WatchRequest{Since: timestamppb.New(time.Unix(0, 0)), Topics: []string{"devserver"}, Keys: []string{"d3"}},
					func(e *v1.Event) bool { return e.GetTopic() == "devserver" && e.GetKey() == "d3" }},
				{"live 1", &v1.WatchRequest{AfterIndex: 2500, AfterN: 1}, all},
				{"live 2", &v1.WatchRequest{AfterIndex: 2500, AfterN: 1}, all},
				{"live hosts", &v1.WatchRequest{AfterIndex: 2500, AfterN: 1, Topics: []string{"host"}}, func(e *v1.Event) bool { return e.GetTopic() == "host" }},
			}
			streams := make([]grpc.ServerStreamingClient[v1.WatchResponse], len(watches))
			for i, w := range watches {
				s, err := c.Watch(ctx, w.req)
				if err != nil {
					t.Fatal(err)
				}
				streams[i] = s
			}
			live := appendEntries(t, l, 2501, 2600, 300)
			everything := append(stored, live...)
			var wg sync.WaitGroup
			for i, w := range watches {
				want := filterEvents(everything, w.keep)
				if strings.HasPrefix(w.name, "live") {
					want = filterEvents(live, w.keep)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					sameEvents(t, w.name, recvEvents(t, streams[i], len(want)), want)
				}()
			}
			wg.Wait()
		})
	}
}

// TestWatchCutsOffASlowConsumer: a stream whose client stops reading is cut off with
// ResourceExhausted, naming the last event it was sent; what it was sent has no gap.
func TestWatchCutsOffASlowConsumer(t *testing.T) {
	t.Parallel()
	l := openLog(t)
	appendEntries(t, l, 1, 1, 8)
	// A fixed window (no BDP estimation): the stream holds at most 64 KiB unread.
	c := watchServer(t, l, []grpc.ServerOption{grpc.ForceServerCodecV2(newServerCodec())}, grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	s, err := c.Watch(ctx, &v1.WatchRequest{AfterIndex: 1, AfterN: 1})
	if err != nil {
		t.Fatal(err)
	}
	// Live: it received what was appended after it started.
	first := appendEntries(t, l, 2, 2, 8)
	sameEvents(t, "live", recvEvents(t, s, 2), first)
	want := appendEntries(t, l, 3, 1502, 1024)
	var got []*v1.Event
	for {
		r, err := s.Recv()
		if err != nil {
			last := got[len(got)-1]
			if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), fmt.Sprintf("resume after index %d n %d", last.GetIndex(), last.GetN())) {
				t.Fatalf("after %d events, ended with %v", len(got), err)
			}
			break
		}
		if e := r.GetEvent(); e != nil {
			got = append(got, e)
		}
		if len(got) == len(want) {
			t.Fatalf("got all %d events: not cut off", len(got))
		}
	}
	sameEvents(t, "before the cut-off", got, want[:len(got)])
}

// TestWatchHeartbeat: a heartbeat goes when no event was sent for the interval, and not while
// events keep coming.
func TestWatchHeartbeat(t *testing.T) {
	t.Parallel()
	l := openLog(t)
	c := watchServer(t, l, []grpc.ServerOption{grpc.ForceServerCodecV2(newServerCodec())})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	appendEntries(t, l, 1, 1, 8)
	s, err := c.Watch(ctx, &v1.WatchRequest{AfterIndex: 1, AfterN: 1, Topics: []string{"devserver"}, Heartbeat: durationpb.New(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r, err := s.Recv()
	if err != nil || r.GetHeartbeat() == nil {
		t.Fatalf("first message: %v %v", r, err)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("heartbeat after %v, before its interval", d)
	}
	// An event every 200 ms for 2 s: no heartbeat in between.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := uint64(2); i <= 11; i++ {
			time.Sleep(200 * time.Millisecond)
			appendEntries(t, l, i, i, 8)
		}
	}()
	for i := uint64(2); i <= 11; i++ {
		r, err := s.Recv()
		if err != nil || r.GetEvent().GetIndex() != i {
			t.Fatalf("want the event of %d, got %v %v", i, r, err)
		}
	}
	<-done
	start = time.Now()
	if r, err := s.Recv(); err != nil || r.GetHeartbeat() == nil {
		t.Fatalf("after the events: %v %v", r, err)
	}
	if d := time.Since(start); d < 700*time.Millisecond {
		t.Fatalf("heartbeat %v after the last event", d)
	}
}

// TestServerCodec: other messages go through the proto codec; an encodedResponse is the bytes
// that marshalling its message gives.
func TestServerCodec(t *testing.T) {
	t.Parallel()
	c := newServerCodec()
	if c.Name() != "proto" {
		t.Fatalf("name %q", c.Name())
	}
	ev := &v1.Event{Index: 7, N: 2, Topic: "host", Key: "m1", Time: timestamppb.Now(),
		Object: &anypb.Any{TypeUrl: "type.googleapis.com/devfleet.v1.Host", Value: make([]byte, 300)}}
	raw, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []eventlog.Delivery{{Event: ev, Encoded: raw}, {Event: ev}} {
		r, err := newEncodedResponse(d)
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := proto.Marshal(&v1.WatchResponse{Kind: &v1.WatchResponse_Event{Event: ev}})
		if got := b.Materialize(); string(got) != string(want) {
			t.Fatalf("encoded %x, want %x", got, want)
		}
		var back v1.WatchResponse
		if err := c.Unmarshal(b, &back); err != nil || !proto.Equal(back.GetEvent(), ev) {
			t.Fatalf("decoded %v %v", &back, err)
		}
	}
	hb := &v1.WatchResponse{Kind: &v1.WatchResponse_Heartbeat{Heartbeat: &v1.Heartbeat{Time: timestamppb.Now()}}}
	b, err := c.Marshal(hb)
	if err != nil {
		t.Fatal(err)
	}
	var back v1.WatchResponse
	if err := c.Unmarshal(b, &back); err != nil || !proto.Equal(&back, hb) {
		t.Fatalf("heartbeat decoded %v %v", &back, err)
	}
	// The cache frames an event once, and tells events apart.
	var cache encodedCache
	d := eventlog.Delivery{Event: ev, Encoded: raw}
	r1, _ := cache.get(d)
	r2, _ := cache.get(d)
	other := proto.Clone(ev).(*v1.Event)
	r3, _ := cache.get(eventlog.Delivery{Event: other})
	if r1 != r2 || r3 == r1 || r3.GetEvent() != other {
		t.Fatalf("cache: %p %p %p", r1, r2, r3)
	}
}

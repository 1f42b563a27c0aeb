package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
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
	conn, err := grpc.NewClient(serveWatch(t, l, sopts), append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return v1.NewEventServiceClient(conn)
}

// serveWatch serves EventService from l over loopback, and returns its address.
func serveWatch(t *testing.T, l *eventlog.Log, sopts []grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(sopts...)
	v1.RegisterEventServiceServer(g, &Server{cfg: Config{Events: l}})
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String()
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

// recvEvents receives n events from s (skipping heartbeats, taking batches apart).
func recvEvents(t *testing.T, s grpc.ServerStreamingClient[v1.WatchResponse], n int) []*v1.Event {
	t.Helper()
	got, _ := recvBatched(t, s, n)
	return got
}

// recvUntilError receives up to n events from s as recvBatched does, until an error.
func recvUntilError(s grpc.ServerStreamingClient[v1.WatchResponse], n int) (got []*v1.Event, batches int, err error) {
	for len(got) < n {
		r, err := s.Recv()
		if err != nil {
			return got, batches, err
		}
		if e := r.GetEvent(); e != nil {
			got = append(got, e)
		}
		if b := r.GetBatch(); b != nil {
			if k := len(b.GetEvents()); k < 2 || k > maxBatchEvents {
				return got, batches, fmt.Errorf("after %d events: a batch of %d", len(got), k)
			}
			got = append(got, b.GetEvents()...)
			batches++
		}
	}
	return got, batches, nil
}

// recvBatched receives n events from s as recvEvents does, and counts the batches they came
// in; a batch must hold at least two events, at most maxBatchEvents, and not more than n in all.
func recvBatched(t *testing.T, s grpc.ServerStreamingClient[v1.WatchResponse], n int) (got []*v1.Event, batches int) {
	t.Helper()
	for len(got) < n {
		r, err := s.Recv()
		if err != nil {
			t.Fatalf("after %d events: %v", len(got), err)
		}
		if e := r.GetEvent(); e != nil {
			got = append(got, e)
		}
		if b := r.GetBatch(); b != nil {
			if k := len(b.GetEvents()); k < 2 || k > maxBatchEvents {
				t.Fatalf("after %d events: a batch of %d", len(got), k)
			}
			got = append(got, b.GetEvents()...)
			batches++
		}
	}
	if len(got) > n {
		t.Fatalf("%d events, want %d", len(got), n)
	}
	return got, batches
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
			// The same, batched.
			for _, w := range slices.Clone(watches) {
				req := proto.Clone(w.req).(*v1.WatchRequest)
				req.Batch = true
				watches = append(watches, watch{w.name + ", batched", req, w.keep})
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
					// A replay that catches up with a full buffer while the live events come may
					// be cut off (as designed): resume after the last event, as a client does.
					var got []*v1.Event
					batches, resumed := 0, 0
					s := streams[i]
					for len(got) < len(want) {
						evs, k, err := recvUntilError(s, len(want)-len(got))
						got, batches = append(got, evs...), batches+k
						if err == nil {
							break
						}
						if status.Code(err) != codes.ResourceExhausted || len(got) == 0 || resumed > 10 {
							t.Errorf("%s: after %d events: %v", w.name, len(got), err)
							return
						}
						resumed++
						req := proto.Clone(w.req).(*v1.WatchRequest)
						req.Since, req.AfterIndex, req.AfterN = nil, got[len(got)-1].GetIndex(), got[len(got)-1].GetN()
						if s, err = c.Watch(ctx, req); err != nil {
							t.Errorf("%s: %v", w.name, err)
							return
						}
					}
					sameEvents(t, w.name, got, want)
					switch {
					case !w.req.GetBatch() && batches > 0:
						t.Errorf("%s: %d batches, not asked for", w.name, batches)
					case w.name == "replay, batched" && batches == 0:
						// The replay reads the store ahead of the stream: events wait.
						t.Errorf("%s: no batch", w.name)
					}
					t.Logf("%s: %d events in %d batches, resumed %d times", w.name, len(got), batches, resumed)
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
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprint("batch=", batch), func(t *testing.T) {
			t.Parallel()
			l := openLog(t)
			appendEntries(t, l, 1, 1, 8)
			// A fixed window (no BDP estimation): the stream holds at most 64 KiB unread.
			c := watchServer(t, l, []grpc.ServerOption{grpc.ForceServerCodecV2(newServerCodec())}, grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			s, err := c.Watch(ctx, &v1.WatchRequest{AfterIndex: 1, AfterN: 1, Batch: batch})
			if err != nil {
				t.Fatal(err)
			}
			// Live: it received what was appended after it started.
			first := appendEntries(t, l, 2, 2, 8)
			sameEvents(t, "live", recvEvents(t, s, 2), first)
			want := appendEntries(t, l, 3, 1502, 1024)
			var got []*v1.Event
			batches := 0
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
				if b := r.GetBatch(); b != nil {
					got = append(got, b.GetEvents()...)
					batches++
				}
				if len(got) == len(want) {
					t.Fatalf("got all %d events: not cut off", len(got))
				}
			}
			sameEvents(t, "before the cut-off", got, want[:len(got)])
			if !batch && batches > 0 {
				t.Fatalf("%d batches, not asked for", batches)
			}
			t.Logf("cut off after %d events, %d batches", len(got), batches)
		})
	}
}

// TestWatchBatchLimits: a batched replay of large events: no batch holds more than about 1 MiB
// of events (more only when its first event alone is), and every event comes once, in order.
func TestWatchBatchLimits(t *testing.T) {
	t.Parallel()
	l := openLog(t)
	want := appendEntries(t, l, 1, 100, 200<<10)
	huge := appendEntries(t, l, 101, 101, 1500<<10)
	want = append(want, huge...)
	c := watchServer(t, l, []grpc.ServerOption{grpc.ForceServerCodecV2(newServerCodec())})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	s, err := c.Watch(ctx, &v1.WatchRequest{Since: timestamppb.New(time.Unix(0, 0)), Batch: true})
	if err != nil {
		t.Fatal(err)
	}
	var got []*v1.Event
	batches := 0
	for len(got) < len(want) {
		r, err := s.Recv()
		if err != nil {
			t.Fatalf("after %d events: %v", len(got), err)
		}
		if e := r.GetEvent(); e != nil {
			got = append(got, e)
		}
		if b := r.GetBatch(); b != nil {
			size := 0
			for _, e := range b.GetEvents()[1:] {
				size += proto.Size(e)
			}
			if first := proto.Size(b.GetEvents()[0]); first < maxBatchBytes && first+size > maxBatchBytes {
				t.Fatalf("a batch of %d events, %d bytes of events", len(b.GetEvents()), first+size)
			}
			got = append(got, b.GetEvents()...)
			batches++
		}
	}
	sameEvents(t, "batched replay", got, want)
	if batches == 0 {
		t.Fatal("no batch")
	}
}

// TestWatchHeartbeat: a heartbeat goes when no event was sent for the interval, and not while
// events keep coming.
func TestWatchHeartbeat(t *testing.T) {
	t.Parallel()
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprint("batch=", batch), func(t *testing.T) {
			t.Parallel()
			testWatchHeartbeat(t, batch)
		})
	}
}

// testWatchHeartbeat: events one at a time come as events, batched or not.
func testWatchHeartbeat(t *testing.T, batch bool) {
	l := openLog(t)
	c := watchServer(t, l, []grpc.ServerOption{grpc.ForceServerCodecV2(newServerCodec())})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	appendEntries(t, l, 1, 1, 8)
	s, err := c.Watch(ctx, &v1.WatchRequest{AfterIndex: 1, AfterN: 1, Topics: []string{"devserver"}, Heartbeat: durationpb.New(time.Second), Batch: batch})
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
	// A batch is the bytes of marshalling its message, from the events' encodings (stored, or
	// made for a delivery that has none), and decodes back to the events.
	ev2 := &v1.Event{Index: 7, N: 3, Topic: "devserver", Key: "d1", Deleted: true, Time: timestamppb.Now(),
		Object: &anypb.Any{TypeUrl: "type.googleapis.com/devfleet.v1.Devserver", Value: make([]byte, 200)}}
	big := &v1.Event{Index: 8, Topic: "devserver", Key: "d2", Object: &anypb.Any{Value: make([]byte, 70000)}} // lengths of 3 bytes
	for _, ds := range [][]eventlog.Delivery{
		{{Event: ev, Encoded: raw}, {Event: ev2}},
		{{Event: ev2}, {Event: big}, {Event: ev, Encoded: raw}},
		{{Event: ev, Encoded: raw}},
	} {
		var encoded [][]byte
		var evs []*v1.Event
		for _, d := range ds {
			b, err := eventBytes(d)
			if err != nil {
				t.Fatal(err)
			}
			encoded, evs = append(encoded, b), append(evs, d.Event)
		}
		r := newEncodedBatch(ds, encoded)
		msg := &v1.WatchResponse{Kind: &v1.WatchResponse_Batch{Batch: &v1.WatchEventBatch{Events: evs}}}
		if !proto.Equal(r.WatchResponse, msg) {
			t.Fatalf("batch message %v", r.WatchResponse)
		}
		b, err := c.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
		if got := b.Materialize(); string(got) != string(want) {
			t.Fatalf("batch of %d encoded %d bytes, want %d bytes", len(ds), len(got), len(want))
		}
		var back v1.WatchResponse
		if err := c.Unmarshal(b, &back); err != nil || !proto.Equal(&back, msg) {
			t.Fatalf("batch decoded %v", err)
		}
		b.Free()
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

// TestWatchREST: through the gateway, a watch is newline-delimited JSON, one response a line;
// with batch=true a line may hold a batch of events.
func TestWatchREST(t *testing.T) {
	t.Parallel()
	l := openLog(t)
	// Objects JSON can show (appendEntries' are not valid messages).
	var want []*v1.Event
	for i := uint64(1); i <= 300; i++ {
		var evs []*v1.Event
		for n := range uint32(2) {
			obj, err := anypb.New(&v1.Host{Name: fmt.Sprint("h", i, n)})
			if err != nil {
				t.Fatal(err)
			}
			evs = append(evs, &v1.Event{Index: i, N: n, Time: timestamppb.Now(), Topic: "host", Key: fmt.Sprint("h", i, n), Object: obj})
		}
		if err := l.Append(evs); err != nil {
			t.Fatal(err)
		}
		want = append(want, evs...)
	}
	addr := serveWatch(t, l, []grpc.ServerOption{grpc.ForceServerCodecV2(newServerCodec())})
	h, err := (&Server{cfg: Config{Events: l}}).HTTPHandler(t.Context(), addr, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(h)
	t.Cleanup(web.Close)
	for _, batch := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/v1/events:watch?since=1970-01-01T00:00:00Z&batch=%v", web.URL, batch), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewReader(resp.Body)
		var got []*v1.Event
		batches := 0
		for len(got) < len(want) {
			line, err := lines.ReadBytes('\n')
			if err != nil {
				t.Fatalf("batch=%v: after %d events: %v", batch, len(got), err)
			}
			var wrapped struct {
				Result json.RawMessage `json:"result"`
			}
			var r v1.WatchResponse
			if err := json.Unmarshal(line, &wrapped); err != nil || wrapped.Result == nil {
				t.Fatalf("batch=%v: line %q: %v", batch, line, err)
			}
			if err := protojson.Unmarshal(wrapped.Result, &r); err != nil {
				t.Fatalf("batch=%v: line %q: %v", batch, line, err)
			}
			if e := r.GetEvent(); e != nil {
				got = append(got, e)
			}
			if b := r.GetBatch(); b != nil {
				if !bytes.Contains(line, []byte(`{"result":{"batch":{"events":[{"index":"`)) {
					t.Fatalf("batch=%v: a batch reads %.100q", batch, line)
				}
				got = append(got, b.GetEvents()...)
				batches++
			}
		}
		resp.Body.Close()
		cancel()
		sameEvents(t, fmt.Sprint("REST, batch=", batch), got, want)
		if batch != (batches > 0) {
			t.Fatalf("batch=%v: %d batches", batch, batches)
		}
		t.Logf("batch=%v: %d events in %d batches", batch, len(got), batches)
	}
}

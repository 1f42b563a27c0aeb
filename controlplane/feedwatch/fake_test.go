package feedwatch_test

import (
	"context"
	"errors"
	"math"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/devfleet/devfleet/controlplane/feedwatch"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// fakeNode serves a fixed history of events with injected misbehaviour: the Watcher's decisions
// without a cluster.
type fakeNode struct {
	v1.UnimplementedEventServiceServer
	v1.UnimplementedClusterServiceServer
	addr    string
	history []*v1.Event
	applied uint64
	members []string

	mu   sync.Mutex
	reqs []*v1.WatchRequest
	// serve decides the fate of the k-th stream (from 0): how many events it sends (-1: all,
	// then it follows forever), and the error it ends with.
	serve func(k int) (send int, end error)
	// dup re-sends the event before the first one of every stream.
	dup bool
}

func startFake(t *testing.T, f *fakeNode) *fakeNode {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	v1.RegisterEventServiceServer(s, f)
	v1.RegisterClusterServiceServer(s, f)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	f.addr = lis.Addr().String()
	return f
}

func (f *fakeNode) Watch(req *v1.WatchRequest, stream grpc.ServerStreamingServer[v1.WatchResponse]) error {
	f.mu.Lock()
	k := len(f.reqs)
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	send, end := -1, error(nil)
	if f.serve != nil {
		send, end = f.serve(k)
	}
	after := feedwatch.Position{Index: req.GetAfterIndex(), N: req.GetAfterN()}
	var out []*v1.Event
	sent := 0
	for i, e := range f.history {
		if !less(after, e) {
			continue
		}
		if send >= 0 && sent == send {
			break
		}
		if sent == 0 && f.dup && i > 0 {
			out = append(out, f.history[i-1])
		}
		out = append(out, e)
		sent++
	}
	// Batched when asked (as a node does when several events wait): fakeBatch at a time, the
	// last one alone as an event.
	for len(out) > 0 {
		k := 1
		if req.GetBatch() {
			k = min(fakeBatch, len(out))
		}
		r := &v1.WatchResponse{Kind: &v1.WatchResponse_Event{Event: out[0]}}
		if k > 1 {
			r = &v1.WatchResponse{Kind: &v1.WatchResponse_Batch{Batch: &v1.WatchEventBatch{Events: out[:k]}}}
		}
		if err := stream.Send(r); err != nil {
			return err
		}
		out = out[k:]
	}
	if end != nil || send >= 0 {
		return end
	}
	<-stream.Context().Done()
	return nil
}

// fakeBatch is how many events a fake node's batch holds.
const fakeBatch = 3

func less(p feedwatch.Position, e *v1.Event) bool {
	return p.Index < e.GetIndex() || (p.Index == e.GetIndex() && p.N < e.GetN())
}

func (f *fakeNode) GetStatus(context.Context, *v1.GetStatusRequest) (*v1.ClusterStatus, error) {
	return &v1.ClusterStatus{AppliedIndex: f.applied}, nil
}

func (f *fakeNode) ListMembers(context.Context, *v1.ListMembersRequest) (*v1.ListMembersResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &v1.ListMembersResponse{}
	for _, a := range f.members {
		out.Members = append(out.Members, &v1.Member{GrpcAddress: a})
	}
	return out, nil
}

func (f *fakeNode) requests() []*v1.WatchRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*v1.WatchRequest(nil), f.reqs...)
}

// history is n events, two per raft index from index 10.
func history(n int) []*v1.Event {
	var out []*v1.Event
	for i := range n {
		out = append(out, &v1.Event{Index: 10 + uint64(i/2), N: uint32(i % 2), Topic: "host", Key: "h"})
	}
	return out
}

// collect runs w until it delivered n events (then stops it) or Run returns.
func collect(t *testing.T, w *feedwatch.Watcher, n int) ([]*v1.Event, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got []*v1.Event
	err := w.Run(ctx, func(e *v1.Event) error {
		got = append(got, e)
		if len(got) == n {
			cancel()
		}
		return nil
	})
	if len(got) == n && errors.Is(err, context.Canceled) {
		err = nil
	}
	return got, err
}

func checkExactlyOnce(t *testing.T, got, want []*v1.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].GetIndex() != want[i].GetIndex() || got[i].GetN() != want[i].GetN() {
			t.Fatalf("event %d is %d/%d, want %d/%d", i, got[i].GetIndex(), got[i].GetN(), want[i].GetIndex(), want[i].GetN())
		}
	}
}

func newWatcher(t *testing.T, o feedwatch.Options) *feedwatch.Watcher {
	t.Helper()
	o.Logf = t.Logf
	w, err := feedwatch.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestResumesAfterACutoffOnTheSameNode(t *testing.T) {
	t.Parallel()
	h := history(10)
	a := startFake(t, &fakeNode{history: h, serve: func(int) (int, error) {
		return 3, status.Error(codes.ResourceExhausted, "watch cut off")
	}})
	b := startFake(t, &fakeNode{history: h})
	w := newWatcher(t, feedwatch.Options{Addrs: []string{a.addr, b.addr}, Request: &v1.WatchRequest{AfterIndex: 9}})
	got, err := collect(t, w, 10)
	if err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, got, h)
	if st := w.Stats(); st.Cutoffs != 3 || st.Failovers != 0 || len(b.requests()) != 0 {
		t.Fatalf("stats %+v, %d streams on the other node", st, len(b.requests()))
	}
}

// A node that keeps cutting the watch off before a single event is not a slow consumer's
// problem: after a few, Run reports it.
func TestFruitlessCutoffsAreReported(t *testing.T) {
	t.Parallel()
	a := startFake(t, &fakeNode{history: history(4), serve: func(int) (int, error) {
		return 0, status.Error(codes.ResourceExhausted, "grpc: received message larger than max")
	}})
	w := newWatcher(t, feedwatch.Options{Addrs: []string{a.addr}, Request: &v1.WatchRequest{AfterIndex: 9}})
	if _, err := collect(t, w, 4); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("Run: %v", err)
	}
}

// A node that dies mid-stream: the next node resumes after the last event delivered, and a
// duplicate it sends is dropped.
func TestFailsOverAfterTheLastEventDelivered(t *testing.T) {
	t.Parallel()
	h := history(9)
	a := startFake(t, &fakeNode{history: h, serve: func(int) (int, error) { return 4, status.Error(codes.Unavailable, "gone") }})
	b := startFake(t, &fakeNode{history: h, dup: true})
	w := newWatcher(t, feedwatch.Options{Addrs: []string{a.addr, b.addr}, Request: &v1.WatchRequest{AfterIndex: 9}})
	got, err := collect(t, w, 9)
	if err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, got, h)
	if r := b.requests(); len(r) != 1 || r[0].GetAfterIndex() != h[3].GetIndex() || r[0].GetAfterN() != h[3].GetN() {
		t.Fatalf("the second node was asked %v, want after %d/%d", r, h[3].GetIndex(), h[3].GetN())
	}
	if st := w.Stats(); st.Failovers != 1 || st.Duplicates != 1 || w.Addr() != b.addr {
		t.Fatalf("stats %+v on %s", st, w.Addr())
	}
}

// "Only new events" is fixed as a position on the first node, so that a failover resumes there.
func TestOnlyNewIsAnchoredToAPosition(t *testing.T) {
	t.Parallel()
	h := history(10) // indexes 10..14
	a := startFake(t, &fakeNode{history: h, applied: 12, serve: func(int) (int, error) { return 1, status.Error(codes.Unavailable, "gone") }})
	b := startFake(t, &fakeNode{history: h})
	w := newWatcher(t, feedwatch.Options{Addrs: []string{a.addr, b.addr}})
	got, err := collect(t, w, 4)
	if err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, got, h[6:])
	if r := a.requests(); r[0].GetAfterIndex() != 12 || r[0].GetAfterN() != math.MaxUint32 {
		t.Fatalf("first request %v, want after 12/max", r[0])
	}
}

// Members learned from a node are failed over to.
func TestLearnsTheMembers(t *testing.T) {
	t.Parallel()
	h := history(6)
	b := startFake(t, &fakeNode{history: h})
	a := startFake(t, &fakeNode{history: h, members: []string{"", b.addr}, serve: func(int) (int, error) {
		return 2, status.Error(codes.Unavailable, "gone")
	}})
	a.mu.Lock()
	a.members = append(a.members, a.addr)
	a.mu.Unlock()
	w := newWatcher(t, feedwatch.Options{Addrs: []string{a.addr}, Request: &v1.WatchRequest{AfterIndex: 9}})
	got, err := collect(t, w, 6)
	if err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, got, h)
	if addrs := w.Addrs(); len(addrs) != 2 || addrs[0] != a.addr || addrs[1] != b.addr || w.Addr() != b.addr {
		t.Fatalf("addresses %v, on %s", addrs, w.Addr())
	}
}

// A position older than one node's history is tried on the others; older than all, reported.
func TestOutOfRangeTriesTheOtherNodes(t *testing.T) {
	t.Parallel()
	h := history(4)
	tooOld := func(int) (int, error) { return 0, status.Error(codes.OutOfRange, "the oldest index kept is 12") }
	a := startFake(t, &fakeNode{history: h, serve: tooOld})
	b := startFake(t, &fakeNode{history: h})
	w := newWatcher(t, feedwatch.Options{Addrs: []string{a.addr, b.addr}, Request: &v1.WatchRequest{AfterIndex: 9}})
	got, err := collect(t, w, 4)
	if err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, got, h)

	c := startFake(t, &fakeNode{history: h, serve: tooOld})
	w = newWatcher(t, feedwatch.Options{Addrs: []string{a.addr, c.addr}, Request: &v1.WatchRequest{AfterIndex: 9}})
	if _, err := collect(t, w, 4); status.Code(err) != codes.OutOfRange {
		t.Fatalf("every node too new: %v", err)
	}
}

func TestRefusalsAreFinal(t *testing.T) {
	t.Parallel()
	a := startFake(t, &fakeNode{serve: func(int) (int, error) { return 0, status.Error(codes.InvalidArgument, "unknown topic") }})
	b := startFake(t, &fakeNode{})
	w := newWatcher(t, feedwatch.Options{Addrs: []string{a.addr, b.addr}, Request: &v1.WatchRequest{AfterIndex: 9}})
	if _, err := collect(t, w, 1); status.Code(err) != codes.InvalidArgument || len(b.requests()) != 0 {
		t.Fatalf("Run: %v; %d streams on the other node", err, len(b.requests()))
	}
}

// A node that accepts the stream and then says nothing, not even heartbeats, is left.
func TestASilentNodeIsLeft(t *testing.T) {
	t.Parallel()
	h := history(4)
	a := startFake(t, &fakeNode{history: nil})
	b := startFake(t, &fakeNode{history: h})
	w := newWatcher(t, feedwatch.Options{Addrs: []string{a.addr, b.addr}, Request: &v1.WatchRequest{AfterIndex: 9}, Idle: 300 * time.Millisecond})
	got, err := collect(t, w, 4)
	if err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, got, h)
}

// No node answers: Run gives up after Grace with the last error.
func TestGivesUpAfterGrace(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	w := newWatcher(t, feedwatch.Options{Addrs: []string{dead}, Request: &v1.WatchRequest{AfterIndex: 9}, Grace: 500 * time.Millisecond})
	start := time.Now()
	if _, err := collect(t, w, 1); status.Code(err) != codes.Unavailable || time.Since(start) < 500*time.Millisecond {
		t.Fatalf("Run: %v after %s", err, time.Since(start))
	}
}

// The consumer's error ends Run, and the event it failed is not counted as delivered.
func TestConsumerErrorEndsRun(t *testing.T) {
	t.Parallel()
	h := history(4)
	a := startFake(t, &fakeNode{history: h})
	w := newWatcher(t, feedwatch.Options{Addrs: []string{a.addr}, Request: &v1.WatchRequest{AfterIndex: 9}})
	boom := errors.New("boom")
	n := 0
	err := w.Run(context.Background(), func(*v1.Event) error {
		if n++; n == 2 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || w.Position() != (feedwatch.Position{Index: h[0].GetIndex(), N: h[0].GetN()}) {
		t.Fatalf("Run: %v at %s", err, w.Position())
	}
}

// A consumer slower than Idle is not the node's silence: no failover.
func TestASlowConsumerIsNotASilentNode(t *testing.T) {
	t.Parallel()
	h := history(3)
	a := startFake(t, &fakeNode{history: h})
	w := newWatcher(t, feedwatch.Options{Addrs: []string{a.addr}, Request: &v1.WatchRequest{AfterIndex: 9}, Idle: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n := 0
	err := w.Run(ctx, func(*v1.Event) error {
		time.Sleep(250 * time.Millisecond)
		if n++; n == len(h) {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || w.Stats().Failovers != 0 || len(a.requests()) != 1 {
		t.Fatalf("Run: %v; stats %+v; %d streams", err, w.Stats(), len(a.requests()))
	}
}

// A Watcher asks for batches unless told not to, and delivers a batch's events one at a time;
// a consumer failing in the middle of a batch leaves the position at the event before.
func TestAsksForBatches(t *testing.T) {
	t.Parallel()
	h := history(7)
	for _, noBatch := range []bool{false, true} {
		a := startFake(t, &fakeNode{history: h})
		w := newWatcher(t, feedwatch.Options{Addrs: []string{a.addr}, Request: &v1.WatchRequest{AfterIndex: 9}, NoBatch: noBatch})
		got, err := collect(t, w, len(h))
		if err != nil {
			t.Fatal(err)
		}
		checkExactlyOnce(t, got, h)
		if r := a.requests(); len(r) != 1 || r[0].GetBatch() == noBatch {
			t.Fatalf("NoBatch %v: asked %v", noBatch, r)
		}
	}
	a := startFake(t, &fakeNode{history: h})
	w := newWatcher(t, feedwatch.Options{Addrs: []string{a.addr}, Request: &v1.WatchRequest{AfterIndex: 9}})
	boom := errors.New("boom")
	n := 0
	err := w.Run(context.Background(), func(*v1.Event) error {
		if n++; n == 5 { // the second of the second batch
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || w.Position() != (feedwatch.Position{Index: h[3].GetIndex(), N: h[3].GetN()}) || w.Stats().Events != 4 {
		t.Fatalf("Run: %v at %s, %+v", err, w.Position(), w.Stats())
	}
}

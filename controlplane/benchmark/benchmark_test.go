package benchmark

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// The benches are commands (devfleet bench apply|scale); these tests run them small so that
// the code behind the published figures keeps working. They assert no speed.

func TestRunApplySmall(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	rep, err := RunApply(context.Background(), ApplyOptions{Dir: t.TempDir(), Clients: []int{1, 8}, Duration: 300 * time.Millisecond}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if rep.FsyncPerSec <= 0 || len(rep.Devfleet) != 2 || len(rep.Bare) != 2 {
		t.Fatalf("report: %+v", rep)
	}
	for _, r := range append(rep.Devfleet, rep.Bare...) {
		if r.Writes == 0 || r.Errors != 0 || r.P50 <= 0 || r.P99 < r.P50 {
			t.Fatalf("run %+v", r)
		}
	}
	for _, want := range []string{"fsync/s", "devfleet   clients    8", "bare-raft  clients    1", "devfleet / bare raft"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunScaleSmall(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	rep, err := RunScale(ScaleOptions{Dir: t.TempDir(), Hosts: 200, Devservers: 2000}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if rep.SnapshotBytes == 0 || rep.RestoreTime <= 0 || rep.RSSRestored <= 0 {
		t.Fatalf("report: %+v", rep)
	}
}

func TestRunCapacityAndPlaceSmall(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	rep, err := RunCapacity(ScaleOptions{Hosts: 100, Devservers: 1000}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Placements == 0 || rep.PlaceP99 <= 0 || rep.N1All <= 0 || rep.RegionLossOK != 5 {
		t.Fatalf("report %+v\n%s", rep, out.String())
	}
	res, err := RunPlace(context.Background(), PlaceOptions{Dir: t.TempDir(), Clients: []int{4}, Duration: 300 * time.Millisecond, Hosts: 100, Devservers: 1000}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Writes == 0 || res[0].Errors != 0 {
		t.Fatalf("placements %+v\n%s", res, out.String())
	}
}

// TestRunClaimSmall runs the claim benchmark small, so that it keeps working; its figures come
// from `devfleet bench claim`.
func TestRunClaimSmall(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	rep, err := RunClaim(context.Background(), ClaimOptions{Dir: t.TempDir(), Claims: 40, Clients: 4, Hosts: 2}, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	if rep.Errors != 0 || rep.Hits != 40 {
		t.Fatalf("claims: %d hits, %d errors of %d", rep.Hits, rep.Errors, rep.Claims)
	}
}

// TestRunMigrateSmall runs the migration benchmark small, so that it keeps working; its figures
// come from `devfleet bench migrate`.
func TestRunMigrateSmall(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	rep, err := RunMigrate(context.Background(), MigrateOptions{Dir: t.TempDir(), Migrations: 6}, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	if rep.OverheadP50 <= 0 || rep.DispatchP50 <= 0 {
		t.Fatalf("report: %+v", rep)
	}
}

// TestRunEventsSmall runs the fan-out benchmark small, so that it keeps working; its figures
// come from `devfleet bench events`.
func TestRunEventsSmall(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	rep, err := RunEvents(context.Background(), EventsOptions{Dir: t.TempDir(), Rate: 200, Clients: 8, Watchers: 6, Duration: 500 * time.Millisecond}, &out)
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Without.Writes == 0 || rep.With.Writes == 0 || rep.Without.Errors != 0 || rep.With.Errors != 0 {
		t.Fatalf("writes: %+v %+v", rep.Without, rep.With)
	}
	if !rep.Complete || rep.Duplicates != 0 || rep.PerWatcher < int64(rep.With.Writes) || rep.Delay.Events != 6*rep.PerWatcher || !rep.Batch || rep.PerResponse <= 1 ||
		rep.Leader.Events != 2*rep.PerWatcher || rep.Followers.Events != 4*rep.PerWatcher {
		t.Fatalf("report %+v", rep)
	}
	for _, want := range []string{"no watchers", "6 watchers", "on leader", "write throughput", "result: "} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q", want)
		}
	}
	// Filtered watchers (only the devservers' events) that decode them whole.
	out.Reset()
	rep, err = RunEvents(context.Background(), EventsOptions{Dir: t.TempDir(), Rate: 0, Clients: 4, Watchers: 3, Topics: []string{"devserver"}, Duration: 300 * time.Millisecond, FullDecode: true}, &out)
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Complete || rep.PerWatcher != int64(rep.With.Writes) {
		t.Fatalf("report %+v", rep)
	}
	// Watchers that ask for one event per response.
	out.Reset()
	rep, err = RunEvents(context.Background(), EventsOptions{Dir: t.TempDir(), Rate: 200, Clients: 4, Watchers: 3, Duration: 300 * time.Millisecond, NoBatch: true}, &out)
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Complete || rep.Batch || rep.PerResponse > 1 || rep.Delay.Events != 3*rep.PerWatcher || !strings.Contains(out.String(), "no batches") {
		t.Fatalf("report %+v", rep)
	}
}

// TestPositionCodec: the bench's watchers decode an event's position, topic, key and deletion as
// the proto codec does, heartbeats whole, other messages through the proto codec, and refuse a
// malformed message.
func TestPositionCodec(t *testing.T) {
	t.Parallel()
	c := newPositionCodec()
	ev := &v1.Event{Index: 1 << 40, N: 3, Time: timestamppb.Now(), Topic: "devserver", Key: "d-17", Deleted: true,
		Object: &anypb.Any{TypeUrl: "type.googleapis.com/devfleet.v1.Devserver", Value: make([]byte, 500)}}
	b, err := c.Marshal(&v1.WatchResponse{Kind: &v1.WatchResponse_Event{Event: ev}})
	if err != nil {
		t.Fatal(err)
	}
	var r v1.WatchResponse
	if err := c.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	want := &v1.Event{Index: ev.Index, N: ev.N, Topic: ev.Topic, Key: ev.Key, Deleted: true}
	if !proto.Equal(r.GetEvent(), want) {
		t.Fatalf("decoded %v, want %v", r.GetEvent(), want)
	}
	hb := &v1.WatchResponse{Kind: &v1.WatchResponse_Heartbeat{Heartbeat: &v1.Heartbeat{Time: timestamppb.Now()}}}
	if b, err = c.Marshal(hb); err != nil {
		t.Fatal(err)
	}
	if err := c.Unmarshal(b, &r); err != nil || !proto.Equal(&r, hb) {
		t.Fatalf("heartbeat: %v %v", &r, err)
	}
	st := &v1.ClusterStatus{AppliedIndex: 42}
	if b, err = c.Marshal(st); err != nil {
		t.Fatal(err)
	}
	var back v1.ClusterStatus
	if err := c.Unmarshal(b, &back); err != nil || !proto.Equal(&back, st) {
		t.Fatalf("status: %v %v", &back, err)
	}
	whole, _ := proto.Marshal(&v1.WatchResponse{Kind: &v1.WatchResponse_Event{Event: ev}})
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(whole[:len(whole)-10])}, &r); err == nil {
		t.Fatal("a truncated message decoded")
	}
	// A batch: each event as above, in order.
	ev2 := &v1.Event{Index: 1<<40 + 1, Topic: "weather", Key: "k", Object: &anypb.Any{Value: make([]byte, 200)}}
	batch := &v1.WatchResponse{Kind: &v1.WatchResponse_Batch{Batch: &v1.WatchEventBatch{Events: []*v1.Event{ev, ev2, ev}}}}
	if b, err = c.Marshal(batch); err != nil {
		t.Fatal(err)
	}
	if err := c.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	want2 := &v1.Event{Index: ev2.Index, Topic: "weather", Key: "k"}
	if evs := r.GetBatch().GetEvents(); len(evs) != 3 || !proto.Equal(evs[0], want) || !proto.Equal(evs[1], want2) || !proto.Equal(evs[2], want) {
		t.Fatalf("batch decoded %v", evs)
	}
	whole, _ = proto.Marshal(batch)
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(whole[:len(whole)-10])}, &r); err == nil {
		t.Fatal("a truncated batch decoded")
	}
	// A truncated event inside a well-formed batch.
	inner, _ := proto.Marshal(ev)
	bad := protowire.AppendTag(nil, 3, protowire.BytesType)
	item := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), inner[:len(inner)-3])
	bad = protowire.AppendBytes(bad, item)
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(bad)}, &r); err == nil {
		t.Fatal("a batch of a truncated event decoded")
	}
}

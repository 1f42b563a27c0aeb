package controlplane_test

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/api"
	"github.com/devfleet/devfleet/controlplane/clustertest"
	"github.com/devfleet/devfleet/controlplane/eventlog"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// TestFeedRecordsEveryChangeOnEveryNode: each node's event history holds an event per object a
// command changed, with the object's new state, in commit order; a node restarted (raft
// re-applies its log) keeps it with no duplicate.
func TestFeedRecordsEveryChangeOnEveryNode(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, 3, clustertest.Options{})
	ctx := ctxT(t, 30*time.Second)
	fleet := c.Leader().Fleet()
	if _, err := fleet.CreateRegion(ctx, &v1.CreateRegionRequest{Region: &v1.Region{Name: "eu"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := fleet.CreateSite(ctx, &v1.CreateSiteRequest{Site: &v1.Site{Name: "eu-1", Region: "eu"}}); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"h1", "h2"} {
		if _, err := fleet.CreateHost(ctx, &v1.CreateHostRequest{Host: &v1.Host{Name: h, Site: "eu-1", Capacity: &v1.Resources{Vcpus: 8, MemoryMib: 8192}}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := fleet.CordonHost(ctx, &v1.CordonHostRequest{Name: "h1", Reason: "psu"}); err != nil {
		t.Fatal(err)
	}
	hostEvents := func(n *clustertest.Node) []*v1.Event {
		evs, err := n.Server.Events().Read(eventlog.Position{}, eventlog.Filter{Topics: []string{"host"}}, 1000)
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	check := func(n *clustertest.Node) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			evs := hostEvents(n)
			if len(evs) == 3 {
				var last eventlog.Position
				for i, e := range evs {
					p := eventlog.Position{Index: e.GetIndex(), N: e.GetN()}
					if i > 0 && !last.Less(p) {
						t.Fatalf("%s: events out of order: %v then %v", n.ID, last, p)
					}
					last = p
				}
				var h v1.Host
				if err := evs[2].GetObject().UnmarshalTo(&h); err != nil || h.GetName() != "h1" || h.GetState() != v1.HostState_HOST_STATE_CORDONED || evs[2].GetKey() != "h1" {
					t.Fatalf("%s: the cordon's event: %v (%v)", n.ID, evs[2], err)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d host events, want 3: %v", n.ID, len(evs), evs)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, n := range c.Nodes {
		check(n)
	}
	f := c.Followers()[0]
	idx := 0
	for i, n := range c.Nodes {
		if n == f {
			idx = i
		}
	}
	c.Kill(idx)
	c.Restart(idx)
	time.Sleep(500 * time.Millisecond) // raft re-applies the log
	check(c.Nodes[idx])
}

// TestWatch streams the feed over gRPC and REST: replay then live, resumption after the last
// event seen without a duplicate, heartbeats, and the refusals.
func TestWatch(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, 1, clustertest.Options{})
	ctx := ctxT(t, 30*time.Second)
	n := c.Nodes[0]
	fleet, events := n.Fleet(), v1.NewEventServiceClient(n.Conn())
	region := func(name string) {
		t.Helper()
		if _, err := fleet.CreateRegion(ctx, &v1.CreateRegionRequest{Region: &v1.Region{Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	region("eu")
	region("us")
	next := func(s grpc.ServerStreamingClient[v1.WatchResponse]) *v1.Event {
		t.Helper()
		for {
			r, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if e := r.GetEvent(); e != nil {
				return e
			}
		}
	}
	keyOf := func(e *v1.Event) string { return e.GetTopic() + "/" + e.GetKey() }
	s, err := events.Watch(ctx, &v1.WatchRequest{Since: timestamppb.New(time.Unix(0, 0)), Topics: []string{"region"}, Heartbeat: durationpb.New(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	first, second := next(s), next(s)
	if keyOf(first) != "region/eu" || keyOf(second) != "region/us" {
		t.Fatalf("replay: %s, %s", keyOf(first), keyOf(second))
	}
	region("ap")
	if e := next(s); keyOf(e) != "region/ap" {
		t.Fatalf("live: %s", keyOf(e))
	}
	// Resume after the first: the second comes next, not the first again.
	r, err := events.Watch(ctx, &v1.WatchRequest{AfterIndex: first.GetIndex(), AfterN: first.GetN(), Topics: []string{"region"}})
	if err != nil {
		t.Fatal(err)
	}
	if e := next(r); keyOf(e) != "region/us" {
		t.Fatalf("resumed after %s: %s", keyOf(first), keyOf(e))
	}
	// A heartbeat comes when nothing else does.
	hb, err := events.Watch(ctx, &v1.WatchRequest{Topics: []string{"drain"}, Heartbeat: durationpb.New(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := hb.Recv(); err != nil || resp.GetHeartbeat() == nil {
		t.Fatalf("heartbeat: %v %v", resp, err)
	}
	bad, err := events.Watch(ctx, &v1.WatchRequest{Topics: []string{"weather"}})
	if err == nil {
		_, err = bad.Recv()
	}
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "topics[0]") {
		t.Fatalf("an unknown topic: %v", err)
	}
	// REST: newline-delimited JSON through the gateway; batched, a line may hold several events.
	for _, q := range []string{"", "&batch=true"} {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+n.Server.HTTPAddr()+"/v1/events:watch?since=1970-01-01T00:00:00Z&topics=region"+q, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || !strings.Contains(line, `"topic":"region"`) || !strings.Contains(line, `"key":"eu"`) {
			t.Fatalf("REST watch%s: %d %q %v", q, resp.StatusCode, line, err)
		}
		if q == "" && strings.Contains(line, `"batch"`) {
			t.Fatalf("REST watch: a batch, not asked for: %q", line)
		}
	}
}

// TestHistory answers point-in-time questions from the history: a host's state at an index and
// at a time, its events over a window, and where a devserver ran.
func TestHistory(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, 1, clustertest.Options{})
	ctx := ctxT(t, 60*time.Second)
	n := c.Nodes[0]
	fleet, events := n.Fleet(), v1.NewEventServiceClient(n.Conn())
	migrations := v1.NewMigrationServiceClient(n.Conn())
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	seedRegion(t, ctx, fleet, "eu", "eu-1")
	seedFakeHosts(t, ctx, fleet, "eu-1", "m1", "m2")
	before, err := fleet.GetHost(ctx, &v1.GetHostRequest{Name: "m1"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	mid := time.Now()
	time.Sleep(20 * time.Millisecond)
	must(fleet.CordonHost(ctx, &v1.CordonHostRequest{Name: "m2", Reason: "psu"}))
	must(fleet.UncordonHost(ctx, &v1.UncordonHostRequest{Name: "m2"}))

	state := func(req *v1.GetAtRequest) v1.HostState {
		t.Helper()
		resp, err := events.GetAt(ctx, req)
		if err != nil || resp.GetEvent() == nil {
			t.Fatalf("GetAt %v: %v %v", req, resp, err)
		}
		var h v1.Host
		if err := resp.GetEvent().GetObject().UnmarshalTo(&h); err != nil {
			t.Fatal(err)
		}
		return h.GetState()
	}
	if s := state(&v1.GetAtRequest{Topic: "host", Key: "m2", Time: timestamppb.New(mid)}); s != v1.HostState_HOST_STATE_ACTIVE {
		t.Fatalf("m2 before the cordon: %s", s)
	}
	// Since the middle: the cordon and the uncordon (and health reports, which also change m2).
	list, err := events.ListKeyEvents(ctx, &v1.ListKeyEventsRequest{Topic: "host", Key: "m2", Since: timestamppb.New(mid)})
	if err != nil {
		t.Fatal(err)
	}
	var cordoned *v1.Event
	for _, e := range list.GetEvents() {
		var h v1.Host
		if err := e.GetObject().UnmarshalTo(&h); err != nil {
			t.Fatal(err)
		}
		if e.GetTime().AsTime().Before(mid) {
			t.Fatalf("an event from before the window: %v", e)
		}
		if cordoned == nil && h.GetState() == v1.HostState_HOST_STATE_CORDONED {
			cordoned = e
		}
	}
	if cordoned == nil {
		t.Fatalf("no cordon among m2's events since the middle: %v", list)
	}
	if s := state(&v1.GetAtRequest{Topic: "host", Key: "m2", Index: cordoned.GetIndex()}); s != v1.HostState_HOST_STATE_CORDONED {
		t.Fatalf("m2 at the cordon's index: %s", s)
	}
	if resp, err := events.GetAt(ctx, &v1.GetAtRequest{Topic: "host", Key: "m1", Index: before.GetCreateIndex() - 1}); err != nil || resp.GetEvent() != nil {
		t.Fatalf("m1 before it existed: %v %v", resp, err)
	}
	if _, err := events.GetAt(ctx, &v1.GetAtRequest{Topic: "weather", Key: "x", Index: 1}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an unknown topic: %v", err)
	}

	// A devserver created on m1 and moved to m2: two stays, the second saying why.
	must(fleet.CreateFlavor(ctx, &v1.CreateFlavorRequest{Flavor: &v1.Flavor{Name: "small", Resources: &v1.Resources{Vcpus: 2, MemoryMib: 4096}}}))
	must(fleet.CreateDevserver(ctx, &v1.CreateDevserverRequest{Devserver: &v1.Devserver{Name: "d1", Owner: "alice", Flavor: "small", Region: "eu", Host: "m1",
		Lifespan: v1.Lifespan_LIFESPAN_PERMANENT}}))
	waitUntil(t, "d1 running", func() bool {
		d, err := fleet.GetDevserver(ctx, &v1.GetDevserverRequest{Name: "d1"})
		return err == nil && d.GetState() == v1.DevserverState_DEVSERVER_STATE_RUNNING
	})
	must(migrations.MigrateDevserver(metadata.AppendToOutgoingContext(ctx, api.AsHeader, "alice"), &v1.MigrateDevserverRequest{Name: "d1", ToHost: "m2"}))
	waitUntil(t, "d1 on m2", func() bool {
		d, err := fleet.GetDevserver(ctx, &v1.GetDevserverRequest{Name: "d1"})
		return err == nil && d.GetHost() == "m2" && d.GetState() == v1.DevserverState_DEVSERVER_STATE_RUNNING
	})
	var h *v1.PlacementHistory
	waitUntil(t, "d1's history", func() bool {
		h, err = events.GetPlacementHistory(ctx, &v1.GetPlacementHistoryRequest{Name: "d1"})
		return err == nil && len(h.GetStays()) == 2
	})
	if s := h.GetStays(); s[0].GetHost() != "m1" || s[0].GetEndTime() == nil || s[1].GetHost() != "m2" || s[1].GetEndTime() != nil ||
		!strings.Contains(s[1].GetReason(), "moved from m1") {
		t.Fatalf("d1's stays: %v", s)
	}
}

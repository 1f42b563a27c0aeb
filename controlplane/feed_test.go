package controlplane_test

import (
	"testing"
	"time"

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

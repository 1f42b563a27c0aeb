package feedwatch_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/devfleet/devfleet/controlplane/clustertest"
	"github.com/devfleet/devfleet/controlplane/eventlog"
	"github.com/devfleet/devfleet/controlplane/feedwatch"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// TestFollowsAnotherNodeWhenTheLeaderDies: a watcher given only the leader's address learns
// the other members from it; the leader crashes while regions are being created through a
// follower, a new leader is elected, and the watcher, resumed on a surviving node, has seen
// every region's creation once, in commit order.
func TestFollowsAnotherNodeWhenTheLeaderDies(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, 3, clustertest.Options{})
	l := c.WaitLeader()
	victim := indexOf(c, l)
	followWhileNodeGoes(t, c, victim, feedwatch.Options{Addrs: []string{l.Server.GRPCAddr()}}, func() { c.Kill(victim) })
}

// TestFollowsAnotherNodeWhenItsNodeStops: a watcher given the three addresses (as with
// `devfleet events watch --addr a,b,c`) and no discovery follows a follower that is stopped
// gracefully (its streams end when the server's drain gives up on them).
func TestFollowsAnotherNodeWhenItsNodeStops(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, 3, clustertest.Options{})
	victim := indexOf(c, c.Followers()[0])
	addrs := []string{c.Nodes[victim].Server.GRPCAddr()}
	for i, n := range c.Nodes {
		if i != victim {
			addrs = append(addrs, n.Server.GRPCAddr())
		}
	}
	followWhileNodeGoes(t, c, victim, feedwatch.Options{Addrs: addrs, NoDiscover: true}, func() { c.Stop(victim) })
}

// followWhileNodeGoes watches region events on node victim, creates regions through another
// node, takes the victim away (stop) after the watcher saw some, keeps creating, and checks that
// the watcher saw each creation exactly once, in the order of a surviving node's history.
func followWhileNodeGoes(t *testing.T, c *clustertest.Cluster, victim int, o feedwatch.Options, stop func()) {
	t.Helper()
	const total, before = 60, 15
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	victimAddr := c.Nodes[victim].Server.GRPCAddr()
	writer := c.Nodes[(victim+1)%len(c.Nodes)]
	o.Request = &v1.WatchRequest{Topics: []string{"region"}, Heartbeat: durationpb.New(time.Second)}
	o.Logf = t.Logf
	w, err := feedwatch.New(o)
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu  sync.Mutex
		got []*v1.Event
	)
	seen := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }
	wctx, stopWatch := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() {
		runErr <- w.Run(wctx, func(e *v1.Event) error {
			mu.Lock()
			got = append(got, e)
			mu.Unlock()
			return nil
		})
	}()
	defer func() {
		stopWatch()
		<-runErr
	}()
	// "Only new events": wait until the watcher fixed where that starts.
	clustertest.WaitFor(t, 20*time.Second, "the watcher to anchor", func() error {
		if w.Position().Index == 0 {
			return errors.New("no position yet")
		}
		return nil
	})
	start := w.Position()
	if w.Addr() != victimAddr {
		t.Fatalf("the watch started on %s, want %s", w.Addr(), victimAddr)
	}

	wrote := make(chan error, 1)
	go func() {
		fleet := writer.Fleet()
		for i := range total {
			name := fmt.Sprintf("r%03d", i)
			for {
				_, err := fleet.CreateRegion(ctx, &v1.CreateRegionRequest{Region: &v1.Region{Name: name}})
				if err == nil || status.Code(err) == codes.AlreadyExists { // a retry of one that committed
					break
				}
				if ctx.Err() != nil {
					wrote <- fmt.Errorf("create %s: %w", name, err)
					return
				}
				time.Sleep(50 * time.Millisecond) // an election: the writer's node waits for it too
			}
		}
		wrote <- nil
	}()
	clustertest.WaitFor(t, 30*time.Second, fmt.Sprintf("%d events on %s", before, victimAddr), func() error {
		if n := seen(); n < before {
			return fmt.Errorf("%d events", n)
		}
		return nil
	})
	stop()
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	clustertest.WaitFor(t, 40*time.Second, fmt.Sprintf("%d events", total), func() error {
		if n := seen(); n < total {
			return fmt.Errorf("%d events (watching %s)", n, w.Addr())
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond) // room for a duplicate to show up
	stopWatch()
	if err := <-runErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v, want context.Canceled", err)
	}
	runErr <- nil

	mu.Lock()
	defer mu.Unlock()
	st := w.Stats()
	if st.Failovers == 0 || w.Addr() == victimAddr || st.Duplicates != 0 {
		t.Fatalf("the watch did not move off %s: now on %s, stats %+v", victimAddr, w.Addr(), st)
	}
	if o.NoDiscover == false && len(w.Addrs()) != 3 {
		t.Fatalf("learned addresses %v, want the 3 members'", w.Addrs())
	}
	// Exactly once, in order: the watcher's events are the surviving node's history after the
	// start, event for event.
	survivor := c.Nodes[(victim+1)%len(c.Nodes)]
	want, err := survivor.Server.Events().Read(eventlog.Position{Index: start.Index, N: start.N}, eventlog.Filter{Topics: []string{"region"}}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || len(got) != total {
		t.Fatalf("the watcher saw %d events, the history has %d after %s, %d regions were created", len(got), len(want), start, total)
	}
	for i, e := range got {
		if e.GetIndex() != want[i].GetIndex() || e.GetN() != want[i].GetN() || e.GetKey() != want[i].GetKey() {
			t.Fatalf("event %d: the watcher saw %d/%d %s, the history has %d/%d %s", i, e.GetIndex(), e.GetN(), e.GetKey(),
				want[i].GetIndex(), want[i].GetN(), want[i].GetKey())
		}
		if name := fmt.Sprintf("r%03d", i); e.GetKey() != name { // created one after the other
			t.Fatalf("event %d is %s, want %s", i, e.GetKey(), name)
		}
	}
	t.Logf("%d events, failovers %d, resumed on %s", len(got), st.Failovers, w.Addr())
}

func indexOf(c *clustertest.Cluster, n *clustertest.Node) int {
	for i, m := range c.Nodes {
		if m == n {
			return i
		}
	}
	panic("not a node of the cluster")
}

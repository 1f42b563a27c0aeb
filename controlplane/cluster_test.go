package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/devfleet/devfleet/controlplane/clustertest"
	"github.com/devfleet/devfleet/controlplane/leader"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestWriteOnFollowerReadOnAnother(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, 3, clustertest.Options{})
	f := c.Followers()
	ctx := ctxT(t, 30*time.Second)
	if _, err := f[0].Fleet().CreateRegion(ctx, &v1.CreateRegionRequest{Region: &v1.Region{Name: "eu"}}); err != nil {
		t.Fatalf("write on follower: %v", err)
	}
	// A consistent read on the other follower sees it at once: it is served by the leader.
	r, err := f[1].Fleet().GetRegion(ctx, &v1.GetRegionRequest{Name: "eu"})
	if err != nil || r.GetName() != "eu" {
		t.Fatalf("consistent read on another follower: %v %v", r, err)
	}
	// A stale read is served locally and catches up shortly.
	clustertest.WaitFor(t, 10*time.Second, "stale read to catch up", func() error {
		_, err := f[1].Fleet().GetRegion(ctx, &v1.GetRegionRequest{Name: "eu", Stale: true})
		return err
	})
	// Refusals pass through forwarding with their code.
	_, err = f[1].Fleet().CreateRegion(ctx, &v1.CreateRegionRequest{Region: &v1.Region{Name: "eu"}})
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("duplicate through follower: %v", err)
	}
	_, err = f[1].Fleet().CreateSite(ctx, &v1.CreateSiteRequest{Site: &v1.Site{Name: "eu-1", Region: "mars"}})
	if status.Code(err) != codes.NotFound || status.Convert(err).Message() != `region "mars" not found` {
		t.Fatalf("site of missing region through follower: %v", err)
	}
	// An Unavailable answer of the leader (a host's libvirt it cannot reach) is the leader's,
	// not a failure of the forwarding, and comes back as it was given.
	if _, err := f[1].Fleet().CreateSite(ctx, &v1.CreateSiteRequest{Site: &v1.Site{Name: "eu-1", Region: "eu"}}); err != nil {
		t.Fatal(err)
	}
	uri := "qemu+unix:///system?socket=" + t.TempDir() + "/none/libvirt-sock"
	_, err = f[1].Fleet().CreateHost(ctx, &v1.CreateHostRequest{Host: &v1.Host{Name: "h1", Site: "eu-1", LibvirtUri: uri,
		Capacity: &v1.Resources{Vcpus: 1, MemoryMib: 512}}})
	if msg := status.Convert(err).Message(); status.Code(err) != codes.Unavailable || !strings.HasPrefix(msg, "host.libvirt_uri: cannot reach libvirt at "+uri+": ") {
		t.Fatalf("host with unreachable libvirt through follower: %v", err)
	}
}

// TestLeaderKillKeepsAcknowledgedWrites writes from several clients through every node, kills
// the leader in the middle, and checks that every acknowledged write is on the new leader.
func TestLeaderKillKeepsAcknowledgedWrites(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, 3, clustertest.Options{})
	ctx := ctxT(t, 60*time.Second)
	l := c.WaitLeader()
	if _, err := l.Fleet().CreateRegion(ctx, &v1.CreateRegionRequest{Region: &v1.Region{Name: "eu"}}); err != nil {
		t.Fatal(err)
	}

	var (
		mu    sync.Mutex
		acked []string
		seq   atomic.Int64
		stop  atomic.Bool
		wg    sync.WaitGroup
	)
	clients := make([]v1.FleetServiceClient, len(c.Nodes))
	for i, n := range c.Nodes {
		clients[i] = n.Fleet()
	}
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each writer talks to one node; when that node dies, it moves to the next.
			target := w
			for !stop.Load() {
				name := fmt.Sprintf("site-%d", seq.Add(1))
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := clients[target%len(clients)].CreateSite(wctx, &v1.CreateSiteRequest{Site: &v1.Site{Name: name, Region: "eu"}})
				cancel()
				if err != nil {
					target++
					continue
				}
				mu.Lock()
				acked = append(acked, name)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	old := -1
	for i, n := range c.Nodes {
		if n == l {
			old = i
		}
	}
	killed := time.Now()
	c.Kill(old)
	newLeader := c.WaitLeader()
	t.Logf("new leader %s ready %s after the kill", newLeader.ID, time.Since(killed))
	time.Sleep(500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(acked) < 10 {
		t.Fatalf("only %d writes acknowledged; the test did not exercise anything", len(acked))
	}
	for _, name := range acked {
		if _, err := newLeader.Fleet().GetSite(ctx, &v1.GetSiteRequest{Name: name}); err != nil {
			t.Fatalf("acknowledged write %s lost after leader kill: %v", name, err)
		}
	}
	t.Logf("%d acknowledged writes, all present after the leader was killed", len(acked))

	// The killed leader comes back from its data dir and catches up.
	c.Restart(old)
	clustertest.WaitFor(t, 20*time.Second, "restarted node to catch up", func() error {
		want := newLeader.Server.Node().FSM().AppliedIndex()
		got := c.Nodes[old].Server.Node().FSM().AppliedIndex()
		if got < want {
			return fmt.Errorf("applied %d of %d", got, want)
		}
		return nil
	})
	for _, name := range acked {
		if _, err := c.Nodes[old].Fleet().GetSite(ctx, &v1.GetSiteRequest{Name: name, Stale: true}); err != nil {
			t.Fatalf("restarted node misses %s: %v", name, err)
		}
	}
}

func TestRestartedFollowerCatchesUp(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, 3, clustertest.Options{})
	ctx := ctxT(t, 30*time.Second)
	f := c.Followers()[0]
	idx := -1
	for i, n := range c.Nodes {
		if n == f {
			idx = i
		}
	}
	c.Kill(idx)
	l := c.WaitLeader()
	for i := 0; i < 20; i++ {
		if _, err := l.Fleet().CreateRegion(ctx, &v1.CreateRegionRequest{Region: &v1.Region{Name: fmt.Sprintf("r%d", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	c.Restart(idx)
	clustertest.WaitFor(t, 20*time.Second, "follower to catch up", func() error {
		resp, err := c.Nodes[idx].Fleet().ListRegions(ctx, &v1.ListRegionsRequest{Stale: true})
		if err != nil {
			return err
		}
		if len(resp.GetRegions()) != 20 {
			return fmt.Errorf("%d regions", len(resp.GetRegions()))
		}
		return nil
	})
}

func TestJoinRemoveTransfer(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, 3, clustertest.Options{})
	ctx := ctxT(t, 30*time.Second)
	i := c.AddNode()
	c.WaitMembers(4)
	joined := c.Nodes[i]

	members, err := joined.Cluster().ListMembers(ctx, &v1.ListMembersRequest{})
	if err != nil || len(members.GetMembers()) != 4 {
		t.Fatalf("members after join: %v %v", members, err)
	}
	for _, m := range members.GetMembers() {
		if m.GetGrpcAddress() == "" || m.GetSuffrage() != v1.Suffrage_SUFFRAGE_VOTER {
			t.Fatalf("member without address or vote: %v", m)
		}
	}

	l := c.WaitLeader()
	_, err = joined.Cluster().RemoveMember(ctx, &v1.RemoveMemberRequest{NodeId: l.ID})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("removing the leader: %v, want FailedPrecondition", err)
	}
	_, err = l.Cluster().RemoveMember(ctx, &v1.RemoveMemberRequest{NodeId: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("removing an unknown member: %v", err)
	}
	if _, err := l.Cluster().RemoveMember(ctx, &v1.RemoveMemberRequest{NodeId: joined.ID}); err != nil {
		t.Fatal(err)
	}
	c.Kill(i)
	c.WaitMembers(3)

	// Transfer leadership to a named follower, through a follower.
	target := c.Followers()[0]
	resp, err := c.Followers()[1].Cluster().TransferLeadership(ctx, &v1.TransferLeadershipRequest{NodeId: target.ID})
	if err != nil || resp.GetNewLeaderId() != target.ID {
		t.Fatalf("transfer: %v %v", resp, err)
	}
	if got := c.WaitLeader(); got != target {
		t.Fatalf("leader is %s, want %s", got.ID, target.ID)
	}
}

func TestFollowerWithoutQuorumAnswersUnavailable(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, 3, clustertest.Options{})
	f := c.Followers()
	for i, n := range c.Nodes {
		if n != f[0] {
			c.Kill(i)
		}
	}
	ctx := ctxT(t, 30*time.Second)
	start := time.Now()
	_, err := f[0].Fleet().CreateRegion(ctx, &v1.CreateRegionRequest{Region: &v1.Region{Name: "eu"}})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("write without quorum: %v, want Unavailable", err)
	}
	_, err = f[0].Fleet().ListRegions(ctx, &v1.ListRegionsRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("consistent read without quorum: %v, want Unavailable", err)
	}
	if _, err := f[0].Fleet().ListRegions(ctx, &v1.ListRegionsRequest{Stale: true}); err != nil {
		t.Fatalf("stale read without quorum: %v", err)
	}
	t.Logf("refused after %s", time.Since(start))
}

// countingController counts how many nodes run it at once.
type countingController struct {
	running *atomic.Int32
	starts  *atomic.Int32
}

func (c countingController) Name() string { return "counting" }

func (c countingController) Run(ctx context.Context) error {
	c.starts.Add(1)
	c.running.Add(1)
	defer c.running.Add(-1)
	<-ctx.Done()
	return nil
}

func TestControllersRunOnlyOnTheLeader(t *testing.T) {
	t.Parallel()
	var running, starts atomic.Int32
	c := clustertest.New(t, 3, clustertest.Options{Controllers: func(int) []leader.Controller {
		return []leader.Controller{countingController{running: &running, starts: &starts}}
	}})
	l := c.WaitLeader()
	clustertest.WaitFor(t, 5*time.Second, "controller on the leader", func() error {
		if running.Load() != 1 {
			return fmt.Errorf("%d running", running.Load())
		}
		return nil
	})
	for i, n := range c.Nodes {
		if n == l {
			c.Kill(i)
		}
	}
	c.WaitLeader()
	clustertest.WaitFor(t, 10*time.Second, "controller on the new leader", func() error {
		if running.Load() != 1 || starts.Load() != 2 {
			return fmt.Errorf("%d running, %d starts", running.Load(), starts.Load())
		}
		return nil
	})
}

func TestSnapshotSaveRestoreThroughFollower(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, 3, clustertest.Options{})
	ctx := ctxT(t, 30*time.Second)
	f := c.Followers()[0]
	for _, r := range []string{"eu", "us"} {
		if _, err := f.Fleet().CreateRegion(ctx, &v1.CreateRegionRequest{Region: &v1.Region{Name: r}}); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := f.Cluster().SaveSnapshot(ctx, &v1.SaveSnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var archive []byte
	for {
		chunk, err := stream.Recv()
		if err != nil {
			if !errors.Is(err, context.Canceled) && status.Code(err) != codes.OK && err.Error() != "EOF" {
				t.Fatal(err)
			}
			break
		}
		archive = append(archive, chunk.GetData()...)
	}
	if len(archive) == 0 {
		t.Fatal("empty archive")
	}
	if _, err := f.Fleet().CreateRegion(ctx, &v1.CreateRegionRequest{Region: &v1.Region{Name: "ap"}}); err != nil {
		t.Fatal(err)
	}

	restore := func(data []byte) error {
		up, err := f.Cluster().RestoreSnapshot(ctx)
		if err != nil {
			return err
		}
		for len(data) > 0 {
			n := min(len(data), 1000)
			if err := up.Send(&v1.SnapshotChunk{Data: data[:n]}); err != nil {
				break
			}
			data = data[n:]
		}
		_, err = up.CloseAndRecv()
		return err
	}
	// A corrupt archive is refused and changes nothing.
	bad := append([]byte{}, archive...)
	bad[len(bad)/2] ^= 0xff
	if err := restore(bad); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("corrupt archive: %v, want InvalidArgument", err)
	}
	if _, err := f.Fleet().GetRegion(ctx, &v1.GetRegionRequest{Name: "ap"}); err != nil {
		t.Fatalf("a refused restore changed the state: %v", err)
	}
	if err := restore(archive); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		clustertest.WaitFor(t, 10*time.Second, "restore on "+n.ID, func() error {
			resp, err := n.Fleet().ListRegions(ctx, &v1.ListRegionsRequest{Stale: true})
			if err != nil {
				return err
			}
			if len(resp.GetRegions()) != 2 {
				return fmt.Errorf("%d regions", len(resp.GetRegions()))
			}
			return nil
		})
	}
}

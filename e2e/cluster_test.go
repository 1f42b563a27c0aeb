package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

type member struct {
	NodeID      string `json:"node_id"`
	GrpcAddress string `json:"grpc_address"`
	Suffrage    string `json:"suffrage"`
	Leader      bool   `json:"leader"`
}

type host struct {
	Name   string `json:"name"`
	Region string `json:"region"`
	State  string `json:"state"`
}

// leaderOf asks the given nodes who leads and returns that node, once it is ready.
func leaderOf(t *testing.T, nodes []*node) *node {
	t.Helper()
	var leader *node
	waitFor(t, 20*time.Second, "a ready leader", func() error {
		for _, n := range nodes {
			if !n.running() {
				continue
			}
			var st status
			out, _, code := cli(t, n.grpc, "cluster", "status", "-o", "json")
			if code != 0 || jsonInto(out, &st) != nil {
				continue
			}
			if st.State == "RAFT_STATE_LEADER" && st.LeaderReady {
				leader = n
				return nil
			}
		}
		return fmt.Errorf("no node reports itself as a ready leader")
	})
	return leader
}

// TestThreeProcessClusterSurvivesLeaderKill9 forms a cluster of three devfleetd processes,
// writes through the CLI on every node, kills the leader with SIGKILL in the middle, and
// checks that every acknowledged write survives and that the killed node catches up.
func TestThreeProcessClusterSurvivesLeaderKill9(t *testing.T) {
	t.Parallel()
	nodes := []*node{newNode(t, "n1"), newNode(t, "n2"), newNode(t, "n3")}
	nodes[0].start(t, "--bootstrap")
	nodes[1].start(t, "--join", nodes[0].grpc)
	nodes[2].start(t, "--join", nodes[0].grpc)
	waitFor(t, 30*time.Second, "three members", func() error {
		var ms []member
		out, errOut, code := cli(t, nodes[2].grpc, "cluster", "members", "-o", "json")
		if code != 0 {
			return fmt.Errorf("%s", errOut)
		}
		if err := jsonInto(out, &ms); err != nil {
			return err
		}
		if len(ms) != 3 {
			return fmt.Errorf("%d members", len(ms))
		}
		for _, m := range ms {
			if m.GrpcAddress == "" {
				return fmt.Errorf("member %s without address", m.NodeID)
			}
		}
		return nil
	})

	// Seed through a follower: writes are forwarded to the leader.
	leader := leaderOf(t, nodes)
	follower := nodes[0]
	if follower == leader {
		follower = nodes[1]
	}
	mustCLI(t, follower.grpc, "region", "add", "eu-west")
	mustCLI(t, follower.grpc, "site", "add", "fra1", "--region", "eu-west")
	mustCLI(t, follower.grpc, "flavor", "add", "small", "--cpus", "4", "--memory-mib", "16384", "--disk-gib", "100")

	// Bad input is refused with a readable line and a non-zero exit, wherever it lands.
	_, errOut, code := cli(t, follower.grpc, "host", "add", "bad", "--site", "fra1", "--cpus", "-1", "--memory-mib", "1024", "--disk-gib", "10")
	if code == 0 || !strings.Contains(errOut, "host.capacity.vcpus") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Fatalf("negative cpus: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = cli(t, follower.grpc, "host", "add", "h0", "--site", "nowhere", "--cpus", "8", "--memory-mib", "1024", "--disk-gib", "10")
	if code == 0 || !strings.Contains(errOut, `site "nowhere" not found`) {
		t.Fatalf("missing site: exit %d, stderr %q", code, errOut)
	}

	var acked []string
	write := func(i int, via *node) {
		name := fmt.Sprintf("h%03d", i)
		_, _, code := cli(t, via.grpc, "host", "add", name, "--site", "fra1", "--cpus", "64", "--memory-mib", "262144", "--disk-gib", "4000")
		if code == 0 {
			acked = append(acked, name)
		}
	}
	for i := 0; i < 15; i++ {
		write(i, nodes[i%3])
	}

	leader = leaderOf(t, nodes)
	leader.kill9(t)
	t.Logf("killed leader %s with SIGKILL after %d acknowledged writes", leader.id, len(acked))
	var survivors []*node
	for _, n := range nodes {
		if n != leader {
			survivors = append(survivors, n)
		}
	}
	// Keep writing through the survivors while they elect a new leader; count only successes.
	for i := 15; i < 30; i++ {
		write(i, survivors[i%2])
	}
	newLeader := leaderOf(t, survivors)
	if newLeader == leader {
		t.Fatal("the killed node is still the leader")
	}

	var hosts []host
	cliJSON(t, survivors[0].grpc, &hosts, "host", "list")
	have := map[string]bool{}
	for _, h := range hosts {
		have[h.Name] = true
	}
	for _, name := range acked {
		if !have[name] {
			t.Fatalf("acknowledged write %s is missing after the leader was killed", name)
		}
	}
	if len(acked) < 20 {
		t.Fatalf("only %d of 30 writes acknowledged; the survivors should take writes after the election", len(acked))
	}
	t.Logf("%d acknowledged writes, all present on the new leader %s", len(acked), newLeader.id)

	// The killed node restarts from its data dir (no --bootstrap, no --join) and catches up.
	leader.start(t)
	waitFor(t, 30*time.Second, "the restarted node to catch up", func() error {
		var hs []host
		out, errOut, code := cli(t, leader.grpc, "host", "list", "--stale", "-o", "json")
		if code != 0 {
			return fmt.Errorf("%s", errOut)
		}
		if err := jsonInto(out, &hs); err != nil {
			return err
		}
		if len(hs) < len(acked) {
			return fmt.Errorf("%d of %d hosts", len(hs), len(acked))
		}
		return nil
	})
}

// TestSIGTERMStopsGracefully checks that devfleetd exits cleanly and promptly on SIGTERM, and
// that its data survives a restart.
func TestSIGTERMStopsGracefully(t *testing.T) {
	t.Parallel()
	n := newNode(t, "solo")
	n.start(t, "--bootstrap")
	leaderOf(t, []*node{n})
	mustCLI(t, n.grpc, "region", "add", "us-east")
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-n.exited:
		if err != nil {
			t.Fatalf("devfleetd exited with %v on SIGTERM", err)
		}
		n.exited <- err
	case <-time.After(15 * time.Second):
		t.Fatal("devfleetd did not exit within 15s of SIGTERM")
	}
	n.start(t)
	leaderOf(t, []*node{n})
	mustCLI(t, n.grpc, "region", "show", "us-east")
}

// TestDevMode checks what `make run` shows: a dev node with the demo fleet.
func TestDevMode(t *testing.T) {
	t.Parallel()
	n := newNode(t, "dev")
	n.cmd = nil
	n.start(t, "--dev")
	waitFor(t, 30*time.Second, "the demo fleet", func() error {
		var hs []host
		out, errOut, code := cli(t, n.grpc, "host", "list", "-o", "json")
		if code != 0 {
			return fmt.Errorf("%s", errOut)
		}
		if err := jsonInto(out, &hs); err != nil {
			return err
		}
		if len(hs) != 18 {
			return fmt.Errorf("%d hosts", len(hs))
		}
		return nil
	})
	regions := mustCLI(t, n.grpc, "region", "list")
	for _, r := range []string{"us-east", "eu-west", "ap-south"} {
		if !strings.Contains(regions, r) {
			t.Fatalf("region list misses %s:\n%s", r, regions)
		}
	}
	if !strings.Contains(n.log.String(), "devfleet dev cluster is up") {
		t.Fatalf("no banner in the output:\n%s", n.log.String())
	}
}

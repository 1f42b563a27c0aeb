// Package clustertest starts in-process devfleet clusters for tests: real raft over loopback
// TCP, real bbolt logs in t.TempDir(), real gRPC and HTTP servers, with short raft timeouts.
package clustertest

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/devfleet/devfleet/controlplane"
	"github.com/devfleet/devfleet/controlplane/leader"
	"github.com/devfleet/devfleet/controlplane/raftnode"
	"github.com/devfleet/devfleet/notify"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Timing is the raft timing tests use: fast elections on loopback, slack enough for -race on
// two cores.
var Timing = raftnode.Config{
	HeartbeatTimeout:   300 * time.Millisecond,
	ElectionTimeout:    300 * time.Millisecond,
	LeaderLeaseTimeout: 150 * time.Millisecond,
	CommitTimeout:      5 * time.Millisecond,
}

// Options tune a test cluster.
type Options struct {
	// Controllers returns the leader controllers of node i.
	Controllers func(i int) []leader.Controller
	// Operators may drain, decommission and move any devserver.
	Operators []string
	// NotifySinks receive the leader's notifications.
	NotifySinks []notify.Sink
	// Alerts turns the leader's alerts on with these settings (nil: off, so that they do not
	// add commands to tests that do not look at them).
	Alerts *controlplane.AlertOptions
}

// Node is one member of a test cluster.
type Node struct {
	ID       string
	DataDir  string
	RaftAddr string
	Server   *controlplane.Server
	conn     *grpc.ClientConn
}

// Fleet is a client of this node's FleetService.
func (n *Node) Fleet() v1.FleetServiceClient { return v1.NewFleetServiceClient(n.conn) }

// Conn is the node's client connection, for any service.
func (n *Node) Conn() *grpc.ClientConn { return n.conn }

// Cluster is a client of this node's ClusterService.
func (n *Node) Cluster() v1.ClusterServiceClient { return v1.NewClusterServiceClient(n.conn) }

// Cluster is an in-process test cluster.
type Cluster struct {
	t       testing.TB
	opts    Options
	Nodes   []*Node
	logsOff atomic.Bool
}

// New starts an n-node cluster: node 0 bootstraps, the others join through it. It returns
// once every node is a voter and the leader is ready.
func New(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, opts: opts}
	t.Cleanup(c.stopAll)
	for i := 0; i < n; i++ {
		node := &Node{ID: fmt.Sprintf("n%d", i+1), DataDir: t.TempDir(), RaftAddr: raftAddr(t)}
		c.Nodes = append(c.Nodes, node)
		var join []string
		if i > 0 {
			join = []string{c.Nodes[0].Server.GRPCAddr()}
		}
		c.start(i, i == 0, join)
		if i == 0 {
			c.WaitLeader()
		}
	}
	c.WaitMembers(n)
	return c
}

func (c *Cluster) start(i int, bootstrap bool, join []string) {
	c.t.Helper()
	node := c.Nodes[i]
	var ctrls []leader.Controller
	if c.opts.Controllers != nil {
		ctrls = c.opts.Controllers(i)
	}
	level := slog.LevelWarn
	if os.Getenv("DEVFLEET_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	srv, err := controlplane.Start(controlplane.Config{
		NodeID:      node.ID,
		DataDir:     node.DataDir,
		RaftAddr:    node.RaftAddr,
		GRPCAddr:    "127.0.0.1:0",
		HTTPAddr:    "127.0.0.1:0",
		Bootstrap:   bootstrap,
		Join:        join,
		Raft:        Timing,
		Controllers: ctrls,
		Logger:      slog.New(slog.NewTextHandler(testWriter{c.t, &c.logsOff}, &slog.HandlerOptions{Level: level})),
		// Tests register in-memory hosts (fake://); the provisioner drives them as it would
		// libvirt.
		AllowFakeHypervisors: true,
		Operators:            c.opts.Operators,
		NotifySinks:          c.opts.NotifySinks,
		Alerts:               alertOptions(c.opts.Alerts),
	})
	if err != nil {
		c.t.Fatalf("start %s: %v", node.ID, err)
	}
	node.Server = srv
	node.RaftAddr = srv.Self().RaftAddr // keep the port across restarts: peers know it
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	node.conn = conn
}

func (c *Cluster) stopAll() {
	for _, n := range c.Nodes {
		if n.Server != nil {
			n.conn.Close()
			n.Server.Kill()
			n.Server = nil
		}
	}
	c.logsOff.Store(true)
}

// Leader returns the node that leads and has established leadership, or nil.
func (c *Cluster) Leader() *Node {
	for _, n := range c.Nodes {
		if n.Server != nil && n.Server.Node().IsLeader() && n.Server.Ready() {
			return n
		}
	}
	return nil
}

// Followers returns the running nodes that do not lead.
func (c *Cluster) Followers() []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if n.Server != nil && !n.Server.Node().IsLeader() {
			out = append(out, n)
		}
	}
	return out
}

// WaitLeader waits for a ready leader and returns it.
func (c *Cluster) WaitLeader() *Node {
	c.t.Helper()
	var l *Node
	WaitFor(c.t, 15*time.Second, "a ready leader", func() error {
		if l = c.Leader(); l == nil {
			return fmt.Errorf("no ready leader")
		}
		return nil
	})
	return l
}

// WaitMembers waits until the leader's configuration has n voters and every member's API
// address is recorded.
func (c *Cluster) WaitMembers(n int) {
	c.t.Helper()
	WaitFor(c.t, 20*time.Second, fmt.Sprintf("%d members", n), func() error {
		l := c.Leader()
		if l == nil {
			return fmt.Errorf("no leader")
		}
		members, err := l.Server.Node().Members(context.Background())
		if err != nil {
			return err
		}
		if len(members) != n {
			return fmt.Errorf("%d members", len(members))
		}
		for _, m := range members {
			if l.Server.Node().FSM().Store().View().GetNode(m.ID) == nil {
				return fmt.Errorf("member %s has not announced its addresses", m.ID)
			}
		}
		return nil
	})
}

// Kill stops node i abruptly (no leadership hand-over); its data dir stays.
func (c *Cluster) Kill(i int) {
	n := c.Nodes[i]
	n.conn.Close()
	n.Server.Kill()
	n.Server = nil
}

// Stop stops node i gracefully, as an operator would (a leader hands leadership over first);
// its data dir stays.
func (c *Cluster) Stop(i int) {
	n := c.Nodes[i]
	n.conn.Close()
	n.Server.Stop()
	n.Server = nil
}

func alertOptions(o *controlplane.AlertOptions) controlplane.AlertOptions {
	if o == nil {
		return controlplane.AlertOptions{Interval: -1}
	}
	return *o
}

// Restart starts node i again from its data dir, on the same raft address.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.start(i, false, nil)
}

// AddNode starts a new node that joins through the leader and returns its index.
func (c *Cluster) AddNode() int {
	c.t.Helper()
	l := c.WaitLeader()
	i := len(c.Nodes)
	c.Nodes = append(c.Nodes, &Node{ID: fmt.Sprintf("n%d", i+1), DataDir: c.t.TempDir(), RaftAddr: raftAddr(c.t)})
	c.start(i, false, []string{l.Server.GRPCAddr()})
	return i
}

// WaitFor polls cond until it returns nil or the timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testWriter logs through t until the cluster is stopped: a straggling goroutine must not log
// into a finished test.
type testWriter struct {
	t   testing.TB
	off *atomic.Bool
}

func (w testWriter) Write(p []byte) (int, error) {
	if !w.off.Load() {
		w.t.Log(string(p))
	}
	return len(p), nil
}

// raftAddr picks a free loopback port below Linux's ephemeral range (32768 and up). A node keeps
// its raft port across restarts, and a port from the ephemeral range may be taken, while the
// node is down, as the local port of any outgoing connection on the machine (other test
// packages run at the same time); ports below it are only ever taken by explicit binds.
func raftAddr(t testing.TB) string {
	t.Helper()
	for range 100 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		return addr
	}
	t.Fatal("clustertest: no free loopback port in 20000-31999")
	return ""
}

// Package raftnode runs one member of devfleet's raft cluster: hashicorp/raft with its log and
// stable store in bbolt (raft-boltdb/v2), file snapshots and a TCP transport. It proposes
// commands with group commit (proposer.go), answers consistent-read barriers, and changes the
// membership.
package raftnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/fsm"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
)

// Config is one node's raft setup. Zero durations take the LAN defaults below.
type Config struct {
	NodeID string
	// DataDir holds raft.db (log and stable store) and snapshots/.
	DataDir string
	// BindAddr is the raft TCP address to listen on; AdvertiseAddr what peers dial (default BindAddr).
	BindAddr      string
	AdvertiseAddr string

	// Raft timing; see docs/raft-timeouts.md for the defaults and why.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotInterval   time.Duration
	SnapshotThreshold  uint64
	TrailingLogs       uint64

	// InMemory keeps the log, stable store and snapshots in memory and uses an in-process
	// transport: for unit tests that need real raft semantics without disks or sockets.
	InMemory bool

	// MaxBatch bounds the commands in one log entry; MaxInflight the entries proposed and not yet
	// committed. Zero takes the defaults.
	MaxBatch    int
	MaxInflight int
	// CommitDelay bounds how long the leader holds a new log entry open for writers it expects
	// back (group commit); zero takes the default, negative disables it.
	CommitDelay time.Duration

	Logger  *slog.Logger
	Metrics *Metrics
}

// LAN defaults: a loopback or same-datacenter RTT is well under a millisecond, so a leader is
// declared dead after half a second without heartbeats rather than hashicorp/raft's one second
// tuned for wider networks.
const (
	DefaultHeartbeatTimeout   = 500 * time.Millisecond
	DefaultElectionTimeout    = 500 * time.Millisecond
	DefaultLeaderLeaseTimeout = 250 * time.Millisecond
	DefaultCommitTimeout      = 20 * time.Millisecond
	DefaultSnapshotInterval   = 2 * time.Minute
	DefaultSnapshotThreshold  = 8192
	DefaultTrailingLogs       = 10240
	DefaultMaxBatch           = 1024
	DefaultMaxInflight        = 1
	DefaultCommitDelay        = 2 * time.Millisecond
)

func (c *Config) withDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.HeartbeatTimeout, DefaultHeartbeatTimeout)
	def(&c.ElectionTimeout, DefaultElectionTimeout)
	def(&c.LeaderLeaseTimeout, DefaultLeaderLeaseTimeout)
	def(&c.CommitTimeout, DefaultCommitTimeout)
	def(&c.SnapshotInterval, DefaultSnapshotInterval)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = DefaultSnapshotThreshold
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = DefaultTrailingLogs
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.CommitDelay == 0 {
		c.CommitDelay = DefaultCommitDelay
	}
	if c.AdvertiseAddr == "" {
		c.AdvertiseAddr = c.BindAddr
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// ErrNotLeader means this node is not the leader and the command was not appended: retrying it
// on the leader is safe.
var ErrNotLeader = errors.New("not the raft leader")

// Node is one raft member.
type Node struct {
	cfg       Config
	raft      *raft.Raft
	fsm       *fsm.FSM
	boltStore *raftboltdb.BoltStore
	transport raft.Transport
	closer    func() error
	notify    chan bool
	proposer  *proposer
	log       *slog.Logger
}

// Open starts a raft node over f. A node whose data dir already holds raft state resumes from
// it; otherwise it waits to be bootstrapped or joined.
func Open(cfg Config, f *fsm.FSM) (*Node, error) {
	cfg.withDefaults()
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.BatchApplyCh = true
	rc.Logger = newHclog(cfg.Logger)
	notify := make(chan bool, 1)
	rc.NotifyCh = notify
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("raft config: %w", err)
	}

	n := &Node{cfg: cfg, fsm: f, notify: notify, log: cfg.Logger}
	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
	)
	if cfg.InMemory {
		store := raft.NewInmemStore()
		logs, stable, snaps = store, store, raft.NewInmemSnapshotStore()
		addr, tr := raft.NewInmemTransport(raft.ServerAddress(cfg.BindAddr))
		if cfg.BindAddr == "" {
			n.cfg.AdvertiseAddr = string(addr)
		}
		n.transport, n.closer = tr, tr.Close
	} else {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		bolt, err := raftboltdb.New(raftboltdb.Options{
			Path:        filepath.Join(cfg.DataDir, "raft.db"),
			BoltOptions: &bbolt.Options{Timeout: 2 * time.Second, FreelistType: bbolt.FreelistMapType, NoFreelistSync: true, InitialMmapSize: 1 << 30},
		})
		if err != nil {
			return nil, fmt.Errorf("open raft log %s (is another devfleetd using this data dir?): %w", filepath.Join(cfg.DataDir, "raft.db"), err)
		}
		n.boltStore = bolt
		cached, err := raft.NewLogCache(1024, bolt)
		if err != nil {
			bolt.Close()
			return nil, err
		}
		logs, stable = cached, bolt
		fss, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, rc.Logger)
		if err != nil {
			bolt.Close()
			return nil, fmt.Errorf("snapshot store: %w", err)
		}
		snaps = fss
		advertise, err := net.ResolveTCPAddr("tcp", cfg.AdvertiseAddr)
		if err != nil {
			bolt.Close()
			return nil, fmt.Errorf("raft advertise address %q: %w", cfg.AdvertiseAddr, err)
		}
		var adv net.Addr = advertise
		if advertise.Port == 0 {
			adv = nil // a port picked at bind time: advertise the listener's address
		}
		tr, err := raft.NewTCPTransportWithLogger(cfg.BindAddr, adv, 5, 10*time.Second, rc.Logger)
		if err != nil {
			bolt.Close()
			return nil, fmt.Errorf("raft transport on %s: %w", cfg.BindAddr, err)
		}
		n.cfg.AdvertiseAddr = string(tr.LocalAddr())
		n.transport, n.closer = tr, tr.Close
	}

	r, err := raft.NewRaft(rc, f, logs, stable, snaps, n.transport)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	n.raft = r
	n.proposer = newProposer(r, f, cfg.MaxBatch, cfg.MaxInflight, cfg.CommitDelay, cfg.Metrics, cfg.Logger)
	cfg.Metrics.watch(r)
	return n, nil
}

func (n *Node) closeStores() {
	if n.closer != nil {
		_ = n.closer()
	}
	if n.boltStore != nil {
		_ = n.boltStore.Close()
	}
}

// HasState reports whether this node's data dir already holds a raft log: a restarted node
// ignores --bootstrap and --join.
func HasState(cfg Config) (bool, error) {
	if cfg.InMemory {
		return false, nil
	}
	path := filepath.Join(cfg.DataDir, "raft.db")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bbolt.Options{Timeout: 2 * time.Second, ReadOnly: true}})
	if err != nil {
		return false, err
	}
	defer bolt.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, newHclog(slog.New(slog.DiscardHandler)))
	if err != nil {
		return false, err
	}
	return raft.HasExistingState(bolt, bolt, snaps)
}

// Bootstrap makes this node the first member of a new cluster. It fails if the node has state.
func (n *Node) Bootstrap() error {
	cfg := raft.Configuration{Servers: []raft.Server{{
		ID: raft.ServerID(n.cfg.NodeID), Address: raft.ServerAddress(n.cfg.AdvertiseAddr), Suffrage: raft.Voter,
	}}}
	return n.raft.BootstrapCluster(cfg).Error()
}

// Shutdown stops raft and closes the stores. The proposer fails what is still queued.
func (n *Node) Shutdown() error {
	n.proposer.stop()
	err := n.raft.Shutdown().Error()
	n.closeStores()
	return err
}

// ID is this node's raft server ID.
func (n *Node) ID() string { return n.cfg.NodeID }

// Address is the raft address peers dial.
func (n *Node) Address() string { return n.cfg.AdvertiseAddr }

// Raft exposes the underlying raft for status and tests.
func (n *Node) Raft() *raft.Raft { return n.raft }

// FSM is the state machine this node applies to.
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// LeadershipChanges delivers true when this node becomes leader and false when it stops being
// leader. Exactly one consumer must read it.
func (n *Node) LeadershipChanges() <-chan bool { return n.notify }

// Term is the current raft term: a controller records the term it leads in and stamps its side
// effects with it, so that a deposed leader's late work can be told apart and refused.
func (n *Node) Term() uint64 { return n.raft.CurrentTerm() }

// IsLeader reports whether this node is the raft leader now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's ID and raft address, empty if none is known.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// Barrier waits until every entry committed before it has been applied to the local FSM.
// Leader only.
func (n *Node) Barrier(ctx context.Context) error {
	return n.wait(ctx, n.raft.Barrier(timeoutOf(ctx)))
}

// VerifyLeader confirms with a quorum that this node is still the leader, so that a read
// served from the local state right after is not stale.
func (n *Node) VerifyLeader(ctx context.Context) error {
	return n.wait(ctx, n.raft.VerifyLeader())
}

// Propose replicates cmd and returns its result once applied on this (leader) node. Concurrent
// proposals share log entries. Returns ErrNotLeader when the command was not appended.
func (n *Node) Propose(ctx context.Context, cmd *fsmv1.Command) (fsm.Result, error) {
	return n.proposer.propose(ctx, cmd)
}

// wait waits for a raft future, bounded by ctx, and maps raft's errors to typed ones.
func (n *Node) wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return mapRaftError(err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func mapRaftError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return ErrNotLeader
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return apierror.NoLeader("leadership changed while the request was in flight; it may or may not have been applied: %v", err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return apierror.NoLeader("this node is shutting down")
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return apierror.NoLeader("raft is overloaded: %v", err)
	}
	return err
}

func timeoutOf(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d > 0 {
			return d
		}
		return time.Millisecond
	}
	return 0
}

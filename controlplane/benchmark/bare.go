package benchmark

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// BareStack is three hashicorp/raft nodes on loopback TCP with raft-boltdb/v2 logs and a no-op
// FSM: one raft entry per write, no gRPC, no state. It is the reference devfleet's own figures
// are printed beside.
type BareStack struct {
	nodes  []*raft.Raft
	stores []*raftboltdb.BoltStore
	trans  []*raft.NetworkTransport
}

type noopFSM struct{}

func (noopFSM) Apply(*raft.Log) any                 { return nil }
func (noopFSM) Snapshot() (raft.FSMSnapshot, error) { return noopSnap{}, nil }
func (noopFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

type noopSnap struct{}

func (noopSnap) Persist(s raft.SnapshotSink) error { return s.Close() }
func (noopSnap) Release()                          {}

// StartBareStack starts the three nodes in dir and waits for a leader.
func StartBareStack(dir string) (*BareStack, error) {
	b := &BareStack{}
	var servers []raft.Server
	logger := hclog.New(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Off})
	for i := 0; i < 3; i++ {
		d, err := mkdir(dir, fmt.Sprintf("bare%d", i))
		if err != nil {
			return nil, err
		}
		store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(d, "raft.db")})
		if err != nil {
			return nil, err
		}
		b.stores = append(b.stores, store)
		tr, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 5, 10*time.Second, logger)
		if err != nil {
			return nil, err
		}
		b.trans = append(b.trans, tr)
		servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprint(i)), Address: tr.LocalAddr(), Suffrage: raft.Voter})
	}
	for i := 0; i < 3; i++ {
		c := raft.DefaultConfig()
		c.LocalID = servers[i].ID
		c.Logger = logger
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
		snaps := raft.NewInmemSnapshotStore()
		r, err := raft.NewRaft(c, noopFSM{}, b.stores[i], b.stores[i], snaps, b.trans[i])
		if err != nil {
			return nil, err
		}
		b.nodes = append(b.nodes, r)
	}
	if err := b.nodes[0].BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for b.leader() == nil {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("bare stack: no leader")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return b, nil
}

func (b *BareStack) leader() *raft.Raft {
	for _, n := range b.nodes {
		if n.State() == raft.Leader {
			return n
		}
	}
	return nil
}

// Run applies 256-byte entries from clients goroutines for d.
func (b *BareStack) Run(ctx context.Context, clients int, d time.Duration) Result {
	leader := b.leader()
	entry := make([]byte, 256)
	return closedLoop(ctx, "bare-raft", clients, d, func(context.Context, int, int) error {
		return leader.Apply(entry, 0).Error()
	})
}

// Close stops the nodes.
func (b *BareStack) Close() {
	for _, n := range b.nodes {
		_ = n.Shutdown().Error()
	}
	for _, t := range b.trans {
		_ = t.Close()
	}
	for _, s := range b.stores {
		_ = s.Close()
	}
}

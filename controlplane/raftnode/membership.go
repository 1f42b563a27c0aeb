package raftnode

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/raft"

	"github.com/devfleet/devfleet/controlplane/apierror"
)

// Member is a server in the raft configuration.
type Member struct {
	ID      string
	Address string
	Voter   bool
	Leader  bool
}

// Members returns the latest raft configuration as this node knows it.
func (n *Node) Members(ctx context.Context) ([]Member, error) {
	f := n.raft.GetConfiguration()
	if err := n.wait(ctx, f); err != nil {
		return nil, err
	}
	leaderID, _ := n.Leader()
	var out []Member
	for _, s := range f.Configuration().Servers {
		out = append(out, Member{
			ID:      string(s.ID),
			Address: string(s.Address),
			Voter:   s.Suffrage == raft.Voter,
			Leader:  string(s.ID) == leaderID,
		})
	}
	return out, nil
}

// AddMember adds a server, as Consul does: a member already present with the same ID and
// address is left alone; a stale entry with the same ID or the same address is removed first.
// Leader only.
func (n *Node) AddMember(ctx context.Context, id, addr string, voter bool) error {
	members, err := n.Members(ctx)
	if err != nil {
		return err
	}
	for _, m := range members {
		switch {
		case m.ID == id && m.Address == addr && m.Voter == voter:
			return nil
		case m.ID == id || m.Address == addr:
			if m.ID == n.cfg.NodeID {
				return apierror.Invalid("raft_address", "%s is this leader's own address (node %s)", addr, m.ID)
			}
			if err := n.wait(ctx, n.raft.RemoveServer(raft.ServerID(m.ID), 0, timeoutOf(ctx))); err != nil {
				return fmt.Errorf("remove stale member %s (%s): %w", m.ID, m.Address, err)
			}
		}
	}
	var f raft.IndexFuture
	if voter {
		f = n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeoutOf(ctx))
	} else {
		f = n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeoutOf(ctx))
	}
	return n.wait(ctx, f)
}

// RemoveMember removes a server from the configuration. Leader only.
func (n *Node) RemoveMember(ctx context.Context, id string) (uint64, error) {
	members, err := n.Members(ctx)
	if err != nil {
		return 0, err
	}
	found := false
	for _, m := range members {
		found = found || m.ID == id
	}
	if !found {
		return 0, apierror.Missing("member", id)
	}
	f := n.raft.RemoveServer(raft.ServerID(id), 0, timeoutOf(ctx))
	if err := n.wait(ctx, f); err != nil {
		return 0, err
	}
	return f.Index(), nil
}

// TransferLeadership hands leadership to id, or to the most up-to-date voter when id is empty,
// and waits until a new leader is known. Leader only.
func (n *Node) TransferLeadership(ctx context.Context, id string) (string, error) {
	members, err := n.Members(ctx)
	if err != nil {
		return "", err
	}
	others := 0
	for _, m := range members {
		if m.Voter && m.ID != n.cfg.NodeID {
			others++
		}
	}
	if others == 0 {
		return "", apierror.Blocked("no other voter to hand leadership to: the cluster has one voting member")
	}
	var f raft.Future
	if id == "" {
		f = n.raft.LeadershipTransfer()
	} else {
		var target *Member
		for i := range members {
			if members[i].ID == id {
				target = &members[i]
			}
		}
		switch {
		case target == nil:
			return "", apierror.Missing("member", id)
		case !target.Voter:
			return "", apierror.Blocked("member %s is a non-voter and cannot lead", id)
		case target.ID == n.cfg.NodeID:
			return id, nil
		}
		f = n.raft.LeadershipTransferToServer(raft.ServerID(target.ID), raft.ServerAddress(target.Address))
	}
	if err := n.wait(ctx, f); err != nil {
		return "", fmt.Errorf("leadership transfer: %w", err)
	}
	for {
		if leader, _ := n.Leader(); leader != "" && leader != n.cfg.NodeID {
			return leader, nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Stats is raft's own view of this node (state, term, indexes, last contact).
func (n *Node) Stats() map[string]string { return n.raft.Stats() }

// Restore replaces the whole cluster's state with a snapshot stream of size bytes (a
// state.Persist stream) and replicates it to every follower. Leader only; blocks until done.
func (n *Node) Restore(ctx context.Context, r io.Reader, size int64) error {
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: size}
	done := make(chan error, 1)
	go func() { done <- n.raft.Restore(meta, r, timeoutOf(ctx)) }()
	select {
	case err := <-done:
		return mapRaftError(err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

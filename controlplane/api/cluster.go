package api

import (
	"context"
	"errors"
	"io"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/backup"
	"github.com/devfleet/devfleet/controlplane/validate"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

const snapshotChunk = 1 << 20

var raftStates = map[string]v1.RaftState{
	"Follower": v1.RaftState_RAFT_STATE_FOLLOWER, "Candidate": v1.RaftState_RAFT_STATE_CANDIDATE,
	"Leader": v1.RaftState_RAFT_STATE_LEADER, "Shutdown": v1.RaftState_RAFT_STATE_SHUTDOWN,
}

// GetStatus answers from this node, whatever its role: it is how an operator sees one node.
func (s *Server) GetStatus(ctx context.Context, _ *v1.GetStatusRequest) (*v1.ClusterStatus, error) {
	stats := s.raft.Stats()
	u := func(k string) uint64 { v, _ := strconv.ParseUint(stats[k], 10, 64); return v }
	st := &v1.ClusterStatus{
		NodeId:            s.raft.ID(),
		State:             raftStates[stats["state"]],
		Term:              u("term"),
		LastLogIndex:      u("last_log_index"),
		CommitIndex:       u("commit_index"),
		AppliedIndex:      s.raft.FSM().AppliedIndex(),
		LastSnapshotIndex: u("last_snapshot_index"),
		Version:           s.cfg.Version,
		LeaderReady:       s.raft.IsLeader() && s.cfg.Ready(),
	}
	leaderID, _ := s.raft.Leader()
	st.LeaderId = leaderID
	if n := s.store.View().GetNode(leaderID); n != nil {
		st.LeaderGrpcAddress = n.GetGrpcAddress()
	}
	if d, err := time.ParseDuration(stats["last_contact"]); err == nil && d > 0 {
		st.LastContactTime = timestamppb.New(time.Now().Add(-d))
	}
	if members, err := s.raft.Members(ctx); err == nil {
		for _, m := range members {
			if m.Voter {
				st.Voters++
			}
		}
	}
	return st, nil
}

// ListMembers joins the raft configuration with the API addresses members announced.
func (s *Server) ListMembers(ctx context.Context, _ *v1.ListMembersRequest) (*v1.ListMembersResponse, error) {
	members, err := s.raft.Members(ctx)
	if err != nil {
		return nil, err
	}
	v := s.store.View()
	out := &v1.ListMembersResponse{}
	for _, m := range members {
		mem := &v1.Member{NodeId: m.ID, RaftAddress: m.Address, Leader: m.Leader, Suffrage: v1.Suffrage_SUFFRAGE_NONVOTER}
		if m.Voter {
			mem.Suffrage = v1.Suffrage_SUFFRAGE_VOTER
		}
		if n := v.GetNode(m.ID); n != nil {
			mem.GrpcAddress, mem.HttpAddress = n.GetGrpcAddress(), n.GetHttpAddress()
		}
		out.Members = append(out.Members, mem)
	}
	return out, nil
}

// JoinMember records the node's API addresses, then adds it to the raft configuration.
// Both steps are idempotent, so a joiner simply retries until it succeeds.
func (s *Server) JoinMember(ctx context.Context, req *v1.JoinMemberRequest) (*v1.Member, error) {
	if err := validate.NodeID("node_id", req.GetNodeId()); err != nil {
		return nil, err
	}
	if err := validate.Address("raft_address", req.GetRaftAddress()); err != nil {
		return nil, err
	}
	if err := validate.Address("grpc_address", req.GetGrpcAddress()); err != nil {
		return nil, err
	}
	if req.GetHttpAddress() != "" {
		if err := validate.Address("http_address", req.GetHttpAddress()); err != nil {
			return nil, err
		}
	}
	if _, err := proposeAs[*fsmv1.Node](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_RegisterNode{RegisterNode: &fsmv1.RegisterNode{Node: &fsmv1.Node{
		Id: req.GetNodeId(), RaftAddress: req.GetRaftAddress(), GrpcAddress: req.GetGrpcAddress(), HttpAddress: req.GetHttpAddress(),
	}}}}); err != nil {
		return nil, err
	}
	if err := s.raft.AddMember(ctx, req.GetNodeId(), req.GetRaftAddress(), !req.GetNonvoter()); err != nil {
		return nil, err
	}
	s.log.Info("member joined", "member", req.GetNodeId(), "raft_address", req.GetRaftAddress(), "voter", !req.GetNonvoter())
	suffrage := v1.Suffrage_SUFFRAGE_VOTER
	if req.GetNonvoter() {
		suffrage = v1.Suffrage_SUFFRAGE_NONVOTER
	}
	return &v1.Member{
		NodeId: req.GetNodeId(), RaftAddress: req.GetRaftAddress(), GrpcAddress: req.GetGrpcAddress(),
		HttpAddress: req.GetHttpAddress(), Suffrage: suffrage,
	}, nil
}

// RemoveMember takes a node out of the raft configuration and forgets its addresses. The
// leader itself is refused: transfer leadership first, so the cluster is never headless.
func (s *Server) RemoveMember(ctx context.Context, req *v1.RemoveMemberRequest) (*v1.RemoveMemberResponse, error) {
	if err := validate.NodeID("node_id", req.GetNodeId()); err != nil {
		return nil, err
	}
	if req.GetNodeId() == s.raft.ID() {
		return nil, apierror.Blocked("node %s is the leader; run transfer-leadership first, then remove it", req.GetNodeId())
	}
	index, err := s.raft.RemoveMember(ctx, req.GetNodeId())
	if err != nil {
		return nil, err
	}
	if _, _, err := s.propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_DeregisterNode{DeregisterNode: &fsmv1.DeregisterNode{Id: req.GetNodeId()}}}); err != nil {
		return nil, err
	}
	s.log.Info("member removed", "member", req.GetNodeId())
	return &v1.RemoveMemberResponse{Index: index}, nil
}

// TransferLeadership hands leadership over, for maintenance of the leader's machine.
func (s *Server) TransferLeadership(ctx context.Context, req *v1.TransferLeadershipRequest) (*v1.TransferLeadershipResponse, error) {
	if req.GetNodeId() != "" {
		if err := validate.NodeID("node_id", req.GetNodeId()); err != nil {
			return nil, err
		}
	}
	id, err := s.raft.TransferLeadership(ctx, req.GetNodeId())
	if err != nil {
		return nil, err
	}
	return &v1.TransferLeadershipResponse{NewLeaderId: id}, nil
}

// SaveSnapshot streams an archive of the leader's state after a consistent-read check.
func (s *Server) SaveSnapshot(req *v1.SaveSnapshotRequest, stream grpc.ServerStreamingServer[v1.SnapshotChunk]) error {
	ctx := stream.Context()
	if !s.raft.IsLeader() {
		if err := s.forwardSave(ctx, req, stream); !errors.Is(err, errBecameLeader) {
			return err
		}
	}
	if err := s.consistent(ctx); err != nil {
		return err
	}
	view := s.store.View()
	w := &chunkWriter{send: func(b []byte) error { return stream.Send(&v1.SnapshotChunk{Data: b}) }}
	if err := backup.Write(w, view, backup.Header{Index: view.LatestIndex(), NodeID: s.raft.ID(), Created: time.Now().UTC()}); err != nil {
		return err
	}
	return w.flush()
}

func (s *Server) forwardSave(ctx context.Context, req *v1.SaveSnapshotRequest, stream grpc.ServerStreamingServer[v1.SnapshotChunk]) error {
	conn, err := s.leaderConn(ctx)
	if err != nil {
		return err
	}
	up, err := v1.NewClusterServiceClient(conn).SaveSnapshot(outgoing(ctx, s.raft.ID()), req)
	if err != nil {
		return err
	}
	for {
		c, err := up.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(c); err != nil {
			return err
		}
	}
}

// RestoreSnapshot replaces the cluster's state with an uploaded archive, once the whole archive
// has arrived and verified: a bad upload changes nothing.
func (s *Server) RestoreSnapshot(stream grpc.ClientStreamingServer[v1.SnapshotChunk, v1.RestoreSnapshotResponse]) error {
	ctx := stream.Context()
	if !s.raft.IsLeader() {
		if err := s.forwardRestore(ctx, stream); !errors.Is(err, errBecameLeader) {
			return err
		}
	}
	archive, err := backup.Read(&chunkReader{recv: func() ([]byte, error) {
		c, err := stream.Recv()
		return c.GetData(), err
	}})
	if err != nil {
		return err
	}
	defer archive.Close()
	if err := s.raft.Restore(ctx, archive.Stream(), archive.Size()); err != nil {
		return err
	}
	s.log.Warn("cluster state restored from snapshot archive", "archive_index", archive.Header.Index, "archive_node", archive.Header.NodeID)
	return stream.SendAndClose(&v1.RestoreSnapshotResponse{Index: s.raft.FSM().AppliedIndex()})
}

func (s *Server) forwardRestore(ctx context.Context, stream grpc.ClientStreamingServer[v1.SnapshotChunk, v1.RestoreSnapshotResponse]) error {
	conn, err := s.leaderConn(ctx)
	if err != nil {
		return err
	}
	up, err := v1.NewClusterServiceClient(conn).RestoreSnapshot(outgoing(ctx, s.raft.ID()))
	if err != nil {
		return err
	}
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if err := up.Send(c); err != nil {
			break // the leader ended the stream; CloseAndRecv returns its error
		}
	}
	resp, err := up.CloseAndRecv()
	if err != nil {
		return err
	}
	return stream.SendAndClose(resp)
}

// chunkWriter cuts a byte stream into snapshot chunks.
type chunkWriter struct {
	buf  []byte
	send func([]byte) error
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		take := min(snapshotChunk-len(w.buf), len(p))
		w.buf = append(w.buf, p[:take]...)
		p = p[take:]
		if len(w.buf) == snapshotChunk {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.send(w.buf)
	w.buf = nil
	return err
}

// chunkReader joins received snapshot chunks into a byte stream.
type chunkReader struct {
	buf  []byte
	recv func() ([]byte, error)
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		b, err := r.recv()
		if err != nil {
			return 0, err
		}
		r.buf = b
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

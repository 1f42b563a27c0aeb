package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// snapshotChunkSize is how much of an archive one RestoreSnapshot message carries.
const snapshotChunkSize = 1 << 20

func newClusterCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "cluster",
		Short: "Manage the raft cluster: status, membership, snapshots",
	})
	snapshot := group(&cobra.Command{
		Use:   "snapshot",
		Short: "Save the cluster's state to a file, or restore it from one",
	})
	snapshot.AddCommand(snapshotSaveCmd(a), snapshotRestoreCmd(a))
	cmd.AddCommand(
		clusterStatusCmd(a),
		clusterMembersCmd(a),
		clusterJoinCmd(a),
		clusterRemoveCmd(a),
		clusterTransferCmd(a),
		snapshot,
	)
	return cmd
}

func clusterStatusCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the contacted node's view of the cluster",
		Args:  exactArgs(),
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			st, err := c.cluster.GetStatus(ctx, &v1.GetStatusRequest{})
			if err != nil {
				return err
			}
			return printObject(a, st, []field{
				{"node_id", st.GetNodeId()},
				{"state", short(st.GetState())},
				{"leader_id", st.GetLeaderId()},
				{"leader_grpc_address", st.GetLeaderGrpcAddress()},
				{"leader_ready", yesNo(st.GetLeaderReady())},
				{"voters", strconv.Itoa(int(st.GetVoters()))},
				{"term", u64(st.GetTerm())},
				{"last_log_index", u64(st.GetLastLogIndex())},
				{"commit_index", u64(st.GetCommitIndex())},
				{"applied_index", u64(st.GetAppliedIndex())},
				{"last_snapshot_index", u64(st.GetLastSnapshotIndex())},
				{"last_contact_time", ts(st.GetLastContactTime())},
				{"version", st.GetVersion()},
			})
		}),
	}
}

func clusterMembersCmd(a *app) *cobra.Command {
	var rf readFlags
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the members of the raft configuration",
		Args:  exactArgs(),
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			resp, err := c.cluster.ListMembers(ctx, &v1.ListMembersRequest{Stale: rf.stale})
			if err != nil {
				return err
			}
			header := []string{"NODE_ID", "SUFFRAGE", "LEADER", "RAFT_ADDRESS", "GRPC_ADDRESS", "HTTP_ADDRESS"}
			return printList(a, resp.GetMembers(), header, func(m *v1.Member) []string {
				return []string{m.GetNodeId(), short(m.GetSuffrage()), yesNo(m.GetLeader()), m.GetRaftAddress(), m.GetGrpcAddress(), m.GetHttpAddress()}
			})
		}),
	}
	addReadFlags(cmd, &rf, false)
	return cmd
}

func clusterJoinCmd(a *app) *cobra.Command {
	var req v1.JoinMemberRequest
	cmd := &cobra.Command{
		Use:   "join NODE_ID --raft-addr ADDR --grpc-addr ADDR",
		Short: "Add a node to the raft configuration (a voter unless --nonvoter)",
		Long: `Add a node to the raft configuration, recording the API addresses it serves on. Joining again
with the same ID and addresses changes nothing. A node started with devfleetd --join does this
itself; use this command for nodes started without it.`,
		Args: exactArgs("NODE_ID"),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			req.NodeId = args[0]
			m, err := c.cluster.JoinMember(ctx, &req)
			if err != nil {
				return err
			}
			return a.done(m, "member %s joined as %s (raft %s, grpc %s)", m.GetNodeId(), short(m.GetSuffrage()), m.GetRaftAddress(), m.GetGrpcAddress())
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.RaftAddress, "raft-addr", "", "raft address the node listens on (required)")
	f.StringVar(&req.GrpcAddress, "grpc-addr", "", "gRPC API address of the node (required)")
	f.StringVar(&req.HttpAddress, "http-addr", "", "REST and metrics address of the node")
	f.BoolVar(&req.Nonvoter, "nonvoter", false, "join as a non-voter (a read replica)")
	_ = cmd.MarkFlagRequired("raft-addr")
	_ = cmd.MarkFlagRequired("grpc-addr")
	return cmd
}

func clusterRemoveCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:               "remove NODE_ID",
		Short:             "Remove a node from the raft configuration (not the leader: transfer leadership first)",
		Args:              exactArgs("NODE_ID"),
		ValidArgsFunction: firstArg(a.completeNames(memberIDs)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			resp, err := c.cluster.RemoveMember(ctx, &v1.RemoveMemberRequest{NodeId: args[0]})
			if err != nil {
				return err
			}
			return a.done(resp, "member %s removed", args[0])
		}),
	}
}

func clusterTransferCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:               "transfer-leadership [NODE_ID]",
		Short:             "Hand leadership to NODE_ID, or to the most up-to-date voter",
		Args:              optionalArg("NODE_ID"),
		ValidArgsFunction: firstArg(a.completeNames(memberIDs)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			req := &v1.TransferLeadershipRequest{}
			if len(args) == 1 {
				req.NodeId = args[0]
			}
			resp, err := c.cluster.TransferLeadership(ctx, req)
			if err != nil {
				return err
			}
			return a.done(resp, "leadership transferred to %s", resp.GetNewLeaderId())
		}),
	}
}

// memberIDs lists member node IDs for shell completion.
func memberIDs(ctx context.Context, c client) ([]string, error) {
	resp, err := c.cluster.ListMembers(ctx, &v1.ListMembersRequest{Stale: true})
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, m := range resp.GetMembers() {
		ids = append(ids, m.GetNodeId())
	}
	return ids, nil
}

func snapshotSaveCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "save FILE",
		Short: "Save an archive of the leader's state to FILE",
		Long: `Save an archive of the leader's state to FILE. The archive is written to FILE.tmp, synced, then
renamed to FILE, so FILE is either the old file or a complete archive.`,
		Args: exactArgs("FILE"),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			n, err := saveSnapshot(ctx, c, args[0])
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return writeJSONValue(a.stdout, struct {
					File  string `json:"file"`
					Bytes int64  `json:"bytes"`
				}{args[0], n})
			}
			_, err = fmt.Fprintf(a.stdout, "wrote %d bytes to %s\n", n, args[0])
			return err
		}),
	}
}

// saveSnapshot streams the archive into path atomically and returns its size.
func saveSnapshot(ctx context.Context, c client, path string) (int64, error) {
	stream, err := c.cluster.SaveSnapshot(ctx, &v1.SaveSnapshotRequest{})
	if err != nil {
		return 0, err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := receiveInto(f, stream.Recv)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n == 0 {
		err = errors.New("the server sent an empty snapshot")
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return 0, err
	}
	syncDir(filepath.Dir(path))
	return n, nil
}

// receiveInto writes received chunks to w until the stream ends.
func receiveInto(w io.Writer, recv func() (*v1.SnapshotChunk, error)) (int64, error) {
	var n int64
	for {
		chunk, err := recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		k, err := w.Write(chunk.GetData())
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
}

// syncDir makes a rename durable. It is best effort: some filesystems cannot sync a directory,
// and the archive itself is already synced.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

func snapshotRestoreCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the whole cluster's state with an archive made by snapshot save",
		Long: `Replace the whole cluster's state with an archive made by snapshot save. The leader checks the
whole archive before it changes anything; a bad file leaves the cluster as it was.`,
		Args: exactArgs("FILE"),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			resp, err := restoreSnapshot(ctx, c, args[0])
			if err != nil {
				return err
			}
			return a.done(resp, "restored %s: cluster state is at index %d", args[0], resp.GetIndex())
		}),
	}
}

// restoreSnapshot streams the file at path to the leader in 1 MiB chunks.
func restoreSnapshot(ctx context.Context, c client, path string) (*v1.RestoreSnapshotResponse, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	stream, err := c.cluster.RestoreSnapshot(ctx)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, snapshotChunkSize)
	for {
		n, rerr := io.ReadFull(f, buf)
		if n > 0 {
			// Send copies the message out before it returns, so buf can be reused. io.EOF means
			// the server ended the stream; CloseAndRecv returns its reason.
			if err := stream.Send(&v1.SnapshotChunk{Data: buf[:n]}); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return nil, err
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return nil, rerr // returning cancels the call: the server sees an aborted upload
		}
	}
	return stream.CloseAndRecv()
}

// writeJSONValue writes a value that is not an API object (such as snapshot save's result) as
// JSON.
func writeJSONValue(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeIndented(w, b)
}

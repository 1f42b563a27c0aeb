package state

import (
	"google.golang.org/protobuf/proto"

	"github.com/devfleet/devfleet/controlplane/validate"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
)

// GetNode returns the API addresses a cluster member announced, or nil.
func (v *View) GetNode(id string) *fsmv1.Node {
	if raw := v.first(TableNodes, "id", id); raw != nil {
		return raw.(*fsmv1.Node)
	}
	return nil
}

// Nodes returns every announced member, by ID.
func (v *View) Nodes() []*fsmv1.Node { return rows[*fsmv1.Node](v, TableNodes, "id") }

// RegisterNode records (or refreshes) a member's addresses. Registering the same addresses
// again changes nothing.
func (w *WriteTxn) RegisterNode(in *fsmv1.Node) (*fsmv1.Node, error) {
	if err := validate.NodeID("node.id", in.GetId()); err != nil {
		return nil, err
	}
	for _, a := range []struct{ field, v string }{
		{"node.raft_address", in.GetRaftAddress()},
		{"node.grpc_address", in.GetGrpcAddress()},
	} {
		if err := validate.Address(a.field, a.v); err != nil {
			return nil, err
		}
	}
	n := &fsmv1.Node{Id: in.GetId(), RaftAddress: in.GetRaftAddress(), GrpcAddress: in.GetGrpcAddress(), HttpAddress: in.GetHttpAddress()}
	cur := w.GetNode(n.Id)
	if cur != nil {
		same := proto.Clone(cur).(*fsmv1.Node)
		same.CreateIndex, same.ModifyIndex = 0, 0
		if proto.Equal(same, n) {
			return cur, nil
		}
		n.CreateIndex = cur.GetCreateIndex()
	} else {
		n.CreateIndex = w.index
	}
	n.ModifyIndex = w.index
	return n, w.insert(TableNodes, n)
}

// DeregisterNode forgets a member's addresses; forgetting an unknown member is a no-op, so
// that a retried removal succeeds.
func (w *WriteTxn) DeregisterNode(id string) error {
	if cur := w.GetNode(id); cur != nil {
		return w.remove(TableNodes, cur)
	}
	return nil
}

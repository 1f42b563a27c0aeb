package fsm

import (
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
)

func registerCluster(r *registry) {
	r.register("noop", func(*state.WriteTxn, *fsmv1.Command) (any, error) { return nil, nil })
	r.register("register_node", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return w.RegisterNode(c.GetRegisterNode().GetNode())
	})
	r.register("deregister_node", func(w *state.WriteTxn, c *fsmv1.Command) (any, error) {
		return nil, w.DeregisterNode(c.GetDeregisterNode().GetId())
	})
}

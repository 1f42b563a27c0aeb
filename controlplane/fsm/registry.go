package fsm

import (
	"fmt"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
)

// Handler applies one command inside its write transaction and returns the object it produced
// (or nil). An error aborts the transaction: a rejected command changes nothing.
type Handler func(w *state.WriteTxn, cmd *fsmv1.Command) (any, error)

type registration struct {
	name    string
	handler Handler
}

// registry maps command type numbers (the field numbers of Command.op) to handlers.
type registry struct {
	byNumber map[protoreflect.FieldNumber]registration
}

var commandOps = (&fsmv1.Command{}).ProtoReflect().Descriptor().Oneofs().ByName("op")

// register adds the handler of the command whose field in Command.op is called name. A name
// that is not a command, or one registered twice, is a programming error and panics at start.
func (r *registry) register(name string, h Handler) {
	fd := commandOps.Fields().ByName(protoreflect.Name(name))
	if fd == nil {
		panic(fmt.Sprintf("fsm: %q is not a command in Command.op", name))
	}
	if _, dup := r.byNumber[fd.Number()]; dup {
		panic(fmt.Sprintf("fsm: command %q registered twice", name))
	}
	r.byNumber[fd.Number()] = registration{name: name, handler: h}
}

// lookup returns the registration for the command's type. ok is false when the command's type
// is unknown to this build (set by a newer leader) or the command is empty.
func (r *registry) lookup(cmd *fsmv1.Command) (registration, bool) {
	fd := cmd.ProtoReflect().WhichOneof(commandOps)
	if fd == nil {
		return registration{}, false
	}
	reg, ok := r.byNumber[fd.Number()]
	return reg, ok
}

// TypeName returns the command's type name ("create_host"), or "unknown".
func TypeName(cmd *fsmv1.Command) string {
	if fd := cmd.ProtoReflect().WhichOneof(commandOps); fd != nil {
		return string(fd.Name())
	}
	return "unknown"
}

func newRegistry() *registry {
	r := &registry{byNumber: map[protoreflect.FieldNumber]registration{}}
	registerCluster(r)
	registerFleet(r)
	registerContainers(r)
	registerMigrations(r)
	registerDrains(r)
	registerDecoms(r)
	return r
}

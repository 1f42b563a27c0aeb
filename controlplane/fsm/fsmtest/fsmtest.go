// Package fsmtest applies commands straight to an FSM, without raft: controllers' unit tests
// use it as their proposer so that they run in milliseconds. Integration and e2e tests use the
// real raft node.
package fsmtest

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/devfleet/devfleet/controlplane/fsm"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
)

// Applier is a Propose that applies each command as its own raft entry, in call order.
type Applier struct {
	mu    sync.Mutex
	fsm   *fsm.FSM
	index uint64
	term  uint64
	now   func() time.Time
}

// New returns an Applier over a fresh store; now stamps the commands (nil: time.Now).
func New(now func() time.Time) (*Applier, *state.Store) {
	if now == nil {
		now = time.Now
	}
	st := state.New()
	return &Applier{fsm: fsm.New(st, slog.New(slog.DiscardHandler), nil), now: now}, st
}

// Propose applies cmd and returns its result, as the raft node does on the leader.
func (a *Applier) Propose(_ context.Context, cmd *fsmv1.Command) (fsm.Result, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.index++
	cmd.TimeUnixNano = a.now().UnixNano()
	data, err := fsm.EncodeBatch([]*fsmv1.Command{cmd})
	if err != nil {
		return fsm.Result{}, err
	}
	return a.fsm.Apply(&raft.Log{Index: a.index, Type: raft.LogCommand, Data: data}).([]fsm.Result)[0], nil
}

// VerifyLeader always succeeds: an Applier is the only writer.
func (a *Applier) VerifyLeader(context.Context) error { return nil }

// Term is the leader's term: 1 until a test says that leadership changed (SetTerm), so that a
// controller started under the old term finds itself deposed.
func (a *Applier) Term() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return max(a.term, 1)
}

// SetTerm makes a new term, as an election would.
func (a *Applier) SetTerm(t uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.term = t
}

// Must applies cmd and fails the test on any error; it returns the command's value.
func (a *Applier) Must(t testing.TB, cmd *fsmv1.Command) any {
	t.Helper()
	res, err := a.Propose(context.Background(), cmd)
	if err == nil {
		err = res.Err
	}
	if err != nil {
		t.Fatalf("%s: %v", fsm.TypeName(cmd), err)
	}
	return res.Value
}

package raftnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/fsm"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// newLeader starts a single-node in-memory raft and waits for it to lead.
func newLeader(t *testing.T) (*Node, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	log := slog.New(slog.DiscardHandler)
	n, err := Open(Config{
		NodeID: "n1", InMemory: true, Logger: log, Metrics: NewMetrics(reg),
		HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
	}, fsm.New(state.New(), log, nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Shutdown() })
	if err := n.Bootstrap(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !n.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("no leadership")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return n, reg
}

func region(name string) *fsmv1.Command {
	return &fsmv1.Command{Op: &fsmv1.Command_CreateRegion{CreateRegion: &fsmv1.CreateRegion{Region: &v1.Region{Name: name}}}}
}

func histogram(t *testing.T, reg *prometheus.Registry, name string) *dto.Histogram {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram()
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

// TestGroupCommitGivesEachWriterItsOwnResult proposes from many writers at once: they share
// log entries, yet each gets its own result, and a rejected command fails only its writer.
func TestGroupCommitGivesEachWriterItsOwnResult(t *testing.T) {
	t.Parallel()
	n, reg := newLeader(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const writers = 64
	var wg sync.WaitGroup
	errs := make([]error, writers)
	results := make([]fsm.Result, writers)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("r%d", i)
			if i%8 == 7 {
				name = "Bad Name" // rejected by validation in the FSM
			}
			results[i], errs[i] = n.Propose(ctx, region(name))
		}()
	}
	wg.Wait()
	for i := 0; i < writers; i++ {
		if i%8 == 7 {
			if apierror.KindOf(errs[i]) != apierror.InvalidArgument {
				t.Fatalf("writer %d: %v, want its own InvalidArgument", i, errs[i])
			}
			continue
		}
		if errs[i] != nil {
			t.Fatalf("writer %d: %v", i, errs[i])
		}
		if got := results[i].Value.(*v1.Region).GetName(); got != fmt.Sprintf("r%d", i) {
			t.Fatalf("writer %d got another writer's result: %s", i, got)
		}
	}
	h := histogram(t, reg, "devfleet_raft_proposal_batch_commands")
	if h.GetSampleSum() != writers || h.GetSampleCount() >= writers {
		t.Fatalf("%v commands in %d entries: the writers were not grouped", h.GetSampleSum(), h.GetSampleCount())
	}
	v := n.FSM().Store().View()
	regions, _ := v.ListRegions(state.Page{Size: 1000})
	if len(regions) != writers-writers/8 {
		t.Fatalf("%d regions stored", len(regions))
	}
}

func TestProposeOnANonLeaderIsRefusedUnapplied(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	n, err := Open(Config{NodeID: "lonely", InMemory: true, Logger: log}, fsm.New(state.New(), log, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	_, err = n.Propose(context.Background(), region("eu"))
	if !errors.Is(err, ErrNotLeader) {
		t.Fatalf("propose without leadership: %v, want ErrNotLeader", err)
	}
}

func TestTransferWithoutAnotherVoterIsRefused(t *testing.T) {
	t.Parallel()
	n, _ := newLeader(t)
	_, err := n.TransferLeadership(context.Background(), "")
	if apierror.KindOf(err) != apierror.FailedPrecondition {
		t.Fatalf("transfer on a single node: %v", err)
	}
}

package migrate

import (
	"cmp"
	"context"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/hypervisor"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// guest is the devserver being moved, as seen on its two hosts.
type guest struct {
	name, id string
	src, dst hypervisor.Hypervisor
}

// whereabouts says where a migrating guest is.
type whereabouts int

const (
	onSource  whereabouts = iota // runs on the source, no migration job: (re)start one
	migrating                    // the source runs a migration job
	onDest                       // runs on the destination only: the move happened
	nowhere                      // runs on neither
)

func (g guest) ours(d hypervisor.Domain) bool {
	return d.Metadata.Kind == hypervisor.InstanceDevserver && d.Metadata.ID == g.id
}

// locate asks both hosts. Errors other than "no such domain" leave the answer open.
func (g guest) locate(ctx context.Context) (whereabouts, error) {
	srcRuns, err := g.runsOn(ctx, g.src)
	if err != nil {
		return 0, err
	}
	if srcRuns {
		st, err := g.src.JobStats(ctx, g.name)
		if err == nil && st.Type.Active() && st.Operation == hypervisor.JobMigrationOut {
			return migrating, nil
		}
		return onSource, nil
	}
	dstRuns, err := g.runsOn(ctx, g.dst)
	if err != nil {
		return 0, err
	}
	if dstRuns {
		return onDest, nil
	}
	return nowhere, nil
}

// runsOn reports whether this devserver's guest runs (not paused mid-migration) on hv.
func (g guest) runsOn(ctx context.Context, hv hypervisor.Hypervisor) (bool, error) {
	d, err := hv.Lookup(ctx, g.name)
	switch {
	case hypervisor.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, err
	}
	return g.ours(d) && d.State == hypervisor.StateRunning, nil
}

// completedStats reads the finished migration's figures on the destination (downtime), if it
// kept them.
func (g guest) completedStats(ctx context.Context) *v1.MigrationProgress {
	st, err := g.dst.JobStats(ctx, g.name)
	if err != nil || st.Type != hypervisor.JobCompleted {
		return nil
	}
	return progressOf(st)
}

func progressOf(st hypervisor.JobStats) *v1.MigrationProgress {
	return &v1.MigrationProgress{
		MemoryTotalBytes: st.MemoryTotal, MemoryProcessedBytes: st.MemoryProcessed, MemoryRemainingBytes: st.MemoryRemaining,
		DataRateBytesPerSecond: st.DataRate, DirtyRatePagesPerSecond: st.DirtyRate / 4096, Iteration: st.Iteration,
		ExpectedDowntimeMs: uint64(st.ExpectedDowntime / time.Millisecond), DowntimeMs: uint64(st.Downtime / time.Millisecond),
		SampleTime: timestamppb.Now(),
	}
}

// withDefaults fills a migration's policy with devfleet's defaults.
func withDefaults(p *v1.MigrationPolicy) *v1.MigrationPolicy {
	out := &v1.MigrationPolicy{}
	if p != nil {
		out = proto.Clone(p).(*v1.MigrationPolicy)
	}
	out.MaxAttempts = cmp.Or(out.GetMaxAttempts(), DefaultMaxAttempts)
	out.MaxDowntimeMs = cmp.Or(out.GetMaxDowntimeMs(), uint32(DefaultMaxDowntime/time.Millisecond))
	if out.GetProgressTimeout().AsDuration() <= 0 {
		out.ProgressTimeout = durationpb.New(DefaultProgressTimeout)
	}
	if out.GetCompletionTimeoutPerGib().AsDuration() <= 0 {
		out.CompletionTimeoutPerGib = durationpb.New(DefaultCompletionPerGiB)
	}
	return out
}

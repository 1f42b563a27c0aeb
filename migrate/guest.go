package migrate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
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
	// disk: the devserver's flavor gives it a disk (or its flavor is gone, so it may have one).
	// Its volumes then move with it: prepared on the destination, copied by the migration, and
	// removed from the source once the guest runs on the destination only.
	disk bool
	// memory is the guest's memory by its flavor, in bytes (0 when unknown): the completion
	// timeout's measure while libvirt copies the disk and reports no memory yet.
	memory uint64

	owner            string
	srcHost, dstHost string
	// to is the flavor the devserver has once moved (its own, or a resize's); inPlace: a
	// resize on its own host (src and dst are the same).
	to      *v1.Flavor
	inPlace bool
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

// prepareVolumes gives the destination empty volumes of the names, sizes and formats the guest's
// disks have on the source (as the hypervisor layer names them), before an attempt, and returns
// them: what the migration copies. None for a diskless guest.
func (g guest) prepareVolumes(ctx context.Context) ([]hypervisor.Volume, error) {
	if !g.disk {
		return nil, nil
	}
	vols, err := g.src.DomainVolumes(ctx, g.name)
	if err != nil {
		return nil, fmt.Errorf("reading the guest's volumes on the source: %w", err)
	}
	for _, v := range vols {
		if err := g.dst.PrepareVolume(ctx, v); err != nil {
			return nil, err // names the host, the operation and the volume
		}
	}
	return vols, nil
}

// removeSourceVolumes deletes what a move that copied storage left on the source: the volumes
// the guest's domain uses on the destination, where it now runs. It is called only once the
// guest was found running on the destination only, and the source refuses to delete a volume
// that a domain of its own still uses, so it never deletes the guest's only copy. It returns
// the volumes that are gone (removed, or already absent).
func (g guest) removeSourceVolumes(ctx context.Context) ([]string, error) {
	vols, err := g.dst.DomainVolumes(ctx, g.name)
	if err != nil {
		return nil, fmt.Errorf("reading the guest's volumes on the destination: %w", err)
	}
	var removed []string
	var errs []error
	for _, v := range vols {
		if err := g.src.RemoveVolume(ctx, v.Name); err != nil {
			errs = append(errs, fmt.Errorf("removing volume %s from the source: %w", v.Name, err))
			continue
		}
		removed = append(removed, v.Name)
	}
	return removed, errors.Join(errs...)
}

// removeDestVolumes deletes the volumes that attempts prepared (or libvirt made) on the
// destination, once the migration ended with the guest on the source (failed or aborted). A
// volume that a domain of the destination uses is kept (RemoveVolume refuses it), which is the
// only case where it could be more than an empty or half-copied leftover. It returns the volumes
// that are gone (removed, or already absent).
func (g guest) removeDestVolumes(ctx context.Context) ([]string, error) {
	vols, err := g.src.DomainVolumes(ctx, g.name)
	if err != nil {
		return nil, fmt.Errorf("reading the guest's volumes on the source: %w", err)
	}
	var removed []string
	var errs []error
	for _, v := range vols {
		err := g.dst.RemoveVolume(ctx, v.Name)
		switch {
		case err == nil:
			removed = append(removed, v.Name)
		case hypervisor.KindOf(err) == hypervisor.KindFailedPrecondition: // in use there: not ours to remove
		default:
			errs = append(errs, fmt.Errorf("removing volume %s from the destination: %w", v.Name, err))
		}
	}
	return removed, errors.Join(errs...)
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
		DiskTotalBytes: st.DiskTotal, DiskProcessedBytes: st.DiskProcessed, DiskRemainingBytes: st.DiskRemaining,
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

package hypervisor

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
)

// migrateFlags are the flags of every migration: live, the source daemon talking to the
// destination's itself, the domain defined on the destination and undefined here once it runs
// there.
const migrateFlags = libvirt.MigrateLive | libvirt.MigratePeer2peer | libvirt.MigratePersistDest |
	libvirt.MigrateUndefineSource

// Migrate implements Hypervisor. The migration runs on a connection of its own, dialed for the
// call and closed when libvirt answers, so that JobStats, AbortJob and SetMaxSpeed on c are
// never queued behind it. When c is closed (or the Connector drops it) that connection is cut
// too, and Migrate returns KindUnavailable while the host's daemon may carry on with the
// migration.
func (c *Conn) Migrate(ctx context.Context, name string, dest MigrationTarget, p MigrationParams) error {
	const op = OpMigrate
	if err := checkMigration(dest, p, false); err != nil {
		return errorf(c.host, op, name, KindInvalidArgument, "%v", err)
	}
	return c.dedicated(ctx, op, name, dedicatedCall{
		what:      "the migration",
		onTimeout: "the migration goes on; AbortJob stops it",
		// Our connection went, not necessarily the migration.
		onLost: "the host may carry on with the migration: see JobStats",
	}, func(mc *Conn) error { return mc.migrate(name, dest, p) })
}

// checkMigration checks a migration request before anything is done. fake says whether the
// source is an in-memory host, whose destinations are fake:// URIs, where a daemon's are libvirt
// URIs that the source daemon dials (any transport it knows, so not only those we dial).
func checkMigration(dest MigrationTarget, p MigrationParams, fake bool) error {
	if err := p.validate(); err != nil {
		return err
	}
	u, err := url.Parse(dest.URI)
	switch {
	case dest.URI == "":
		return errors.New("no destination URI")
	case err != nil:
		return err
	case fake && u.Scheme != FakeScheme:
		return errors.New("destination " + dest.URI + " is not an in-memory host (fake://NAME): an in-memory host migrates only to one")
	case !fake && u.Scheme == FakeScheme:
		return errors.New("destination " + dest.URI + " is an in-memory host: a libvirt host cannot migrate to it")
	case !fake && !strings.HasPrefix(u.Scheme, "qemu"):
		return errors.New("destination " + dest.URI + " is not a qemu URI (qemu+tcp://HOST/system)")
	}
	return nil
}

// migrate runs a migration on c, a dedicated connection, to its end: set up, then one
// DomainMigratePerform3Params that returns when libvirt is done.
func (c *Conn) migrate(name string, dest MigrationTarget, p MigrationParams) error {
	l := c.l
	dom, err := l.DomainLookupByName(name)
	if err != nil {
		return err
	}
	// libvirt would make a second migration wait 30 s for the job lock and then fail it as a
	// timeout, which reads as an unreachable host; a job already running is a precondition.
	typ, _, err := l.DomainGetJobStats(dom, 0)
	if err != nil {
		return err // a domain that is not running: KindFailedPrecondition
	}
	if t := jobType(typ); t.Active() {
		return errorf(c.host, OpMigrate, name, KindFailedPrecondition, "the domain has a job running already (%s)", t)
	}
	if p.MaxDowntime > 0 {
		if err := l.DomainMigrateSetMaxDowntime(dom, uint64(p.MaxDowntime/time.Millisecond), 0); err != nil {
			return err
		}
	}
	flags := migrateFlags
	var params []libvirt.TypedParam
	if p.BandwidthMiBps > 0 {
		params = append(params, libvirt.TypedParam{Field: libvirt.MigrateParamBandwidth,
			Value: *libvirt.NewTypedParamValueUllong(p.BandwidthMiBps)})
	}
	if p.ParallelConnections > 1 {
		flags |= libvirt.MigrateParallel
		params = append(params, libvirt.TypedParam{Field: libvirt.MigrateParamParallelConnections,
			Value: *libvirt.NewTypedParamValueInt(int32(p.ParallelConnections))})
	}
	if p.AutoConverge {
		flags |= libvirt.MigrateAutoConverge
	}
	if p.PostCopy {
		flags |= libvirt.MigratePostcopy
	}
	if p.CopyStorage {
		flags |= libvirt.MigrateNonSharedDisk
	}
	_, err = l.DomainMigratePerform3Params(dom, libvirt.OptString{dest.URI}, params, nil, flags)
	return err
}

// JobStats implements Hypervisor: the current job's statistics, else those of the last
// completed job libvirt kept (read with VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED, so that reading
// them twice gives the same), else JobNone; "domain is not running" is KindNotFound.
func (c *Conn) JobStats(ctx context.Context, name string) (JobStats, error) {
	const op = OpJobStats
	dom, err := c.lookup(ctx, op, name)
	if err != nil {
		return JobStats{}, err
	}
	return call(ctx, c, op, name, func(l *libvirt.Libvirt) (JobStats, error) {
		typ, params, err := l.DomainGetJobStats(dom, 0)
		var notRunning error
		switch libvirtCode(err) {
		case libvirt.ErrOperationInvalid: // "domain is not running"
			notRunning = err
		case libvirt.ErrOperationUnsupported: // the destination of a migration under way
			return JobStats{}, &Error{Host: c.host, Op: op, Domain: name, Kind: KindFailedPrecondition,
				Code: int(libvirt.ErrOperationUnsupported), Message: err.Error(), Err: err}
		}
		if err != nil && notRunning == nil {
			return JobStats{}, err
		}
		if notRunning == nil && jobType(typ) != JobNone {
			return jobStatsFrom(typ, params), nil
		}
		typ, params, err = l.DomainGetJobStats(dom, libvirt.DomainJobStatsCompleted|libvirt.DomainJobStatsKeepCompleted)
		if err != nil {
			return JobStats{}, err
		}
		if jobType(typ) != JobNone {
			return jobStatsFrom(typ, params), nil
		}
		if notRunning != nil {
			return JobStats{}, &Error{Host: c.host, Op: op, Domain: name, Kind: KindNotFound,
				Code: int(libvirt.ErrOperationInvalid), Message: notRunning.Error() + " (no job)", Err: notRunning}
		}
		return JobStats{Type: JobNone}, nil
	})
}

// AbortJob implements Hypervisor. On the destination of a migration libvirt 9.0 makes the abort
// wait until the incoming migration ended (and then fails it: no job), so an incoming migration,
// which job statistics tell at once, is refused first.
func (c *Conn) AbortJob(ctx context.Context, name string) error {
	const op = OpAbortJob
	dom, err := c.lookup(ctx, op, name)
	if err != nil {
		return err
	}
	return call0(ctx, c, op, name, func(l *libvirt.Libvirt) error {
		if _, _, err := l.DomainGetJobStats(dom, 0); libvirtCode(err) == libvirt.ErrOperationUnsupported {
			return &Error{Host: c.host, Op: op, Domain: name, Kind: KindFailedPrecondition, Code: int(libvirt.ErrOperationUnsupported), Err: err,
				Message: "cannot abort an incoming migration (" + err.Error() + "); abort it on the source, or destroy the domain here"}
		}
		return l.DomainAbortJob(dom)
	})
}

// StartPostCopy implements Hypervisor (DomainMigrateStartPostCopy, on the shared connection:
// the migration's own is busy in its perform call).
func (c *Conn) StartPostCopy(ctx context.Context, name string) error {
	const op = OpStartPostCopy
	dom, err := c.lookup(ctx, op, name)
	if err != nil {
		return err
	}
	return call0(ctx, c, op, name, func(l *libvirt.Libvirt) error { return l.DomainMigrateStartPostCopy(dom, 0) })
}

// SetMaxSpeed implements Hypervisor.
func (c *Conn) SetMaxSpeed(ctx context.Context, name string, mibps uint64) error {
	const op = OpSetMaxSpeed
	if mibps > maxMigrationMiBps {
		return errorf(c.host, op, name, KindInvalidArgument, "bandwidth %d MiB/s is over libvirt's maximum %d", mibps, uint64(maxMigrationMiBps))
	}
	if mibps == 0 {
		mibps = maxMigrationMiBps // libvirt's "unlimited"
	}
	dom, err := c.lookup(ctx, op, name)
	if err != nil {
		return err
	}
	return call0(ctx, c, op, name, func(l *libvirt.Libvirt) error { return l.DomainMigrateSetMaxSpeed(dom, mibps, 0) })
}

// jobType names libvirt's virDomainJobType.
func jobType(t int32) JobType {
	switch libvirt.DomainJobType(t) {
	case libvirt.DomainJobNone:
		return JobNone
	case libvirt.DomainJobBounded:
		return JobBounded
	case libvirt.DomainJobUnbounded:
		return JobUnbounded
	case libvirt.DomainJobCompleted:
		return JobCompleted
	case libvirt.DomainJobFailed:
		return JobFailed
	case libvirt.DomainJobCancelled:
		return JobCancelled
	}
	return JobType("type " + strconv.Itoa(int(t)))
}

// jobStatsFrom reads libvirt's job statistics.
func jobStatsFrom(typ int32, params []libvirt.TypedParam) JobStats {
	s := JobStats{Type: jobType(typ), Operation: JobOperationUnknown}
	ms := func(v uint64) time.Duration { return time.Duration(v) * time.Millisecond }
	var downtime, dirtyPages, pageSize uint64
	for _, p := range params {
		v := paramUint(p.Value)
		switch p.Field {
		case libvirt.DomainJobOperationStr:
			if v < uint64(len(jobOperations)) {
				s.Operation = jobOperations[v]
			} else {
				s.Operation = JobOperation("operation " + strconv.FormatUint(v, 10))
			}
		case libvirt.DomainJobTimeElapsed:
			s.Elapsed = ms(v)
		case libvirt.DomainJobTimeRemaining:
			s.Remaining = ms(v)
		case libvirt.DomainJobDataTotal:
			s.DataTotal = v
		case libvirt.DomainJobDataProcessed:
			s.DataProcessed = v
		case libvirt.DomainJobDataRemaining:
			s.DataRemaining = v
		case libvirt.DomainJobMemoryTotal:
			s.MemoryTotal = v
		case libvirt.DomainJobMemoryProcessed:
			s.MemoryProcessed = v
		case libvirt.DomainJobMemoryRemaining:
			s.MemoryRemaining = v
		case libvirt.DomainJobDiskTotal:
			s.DiskTotal = v
		case libvirt.DomainJobDiskProcessed:
			s.DiskProcessed = v
		case libvirt.DomainJobDiskRemaining:
			s.DiskRemaining = v
		case libvirt.DomainJobMemoryBps:
			s.DataRate = v
		case libvirt.DomainJobMemoryDirtyRate:
			dirtyPages = v
		case libvirt.DomainJobMemoryPageSize:
			pageSize = v
		case libvirt.DomainJobMemoryIteration:
			s.Iteration = v
		case libvirt.DomainJobDowntime:
			downtime = v
		case libvirt.DomainJobSetupTime:
			s.SetupTime = ms(v)
		case libvirt.DomainJobAutoConvergeThrottle:
			s.AutoConvergeThrottle = int(v)
		case libvirt.DomainJobErrmsg:
			s.Error, _ = p.Value.I.(string)
		}
	}
	if pageSize == 0 {
		pageSize = 4096
	}
	s.DirtyRate = dirtyPages * pageSize
	if s.Type.Active() {
		s.ExpectedDowntime = ms(downtime)
	} else {
		s.Downtime = ms(downtime)
	}
	return s
}

// paramUint reads a numeric typed parameter; negative and non-numeric values are 0.
func paramUint(v libvirt.TypedParamValue) uint64 {
	switch x := v.I.(type) {
	case int32:
		return uint64(max(x, 0))
	case uint32:
		return uint64(x)
	case int64:
		return uint64(max(x, 0))
	case uint64:
		return x
	case float64:
		if x > 0 {
			return uint64(x)
		}
	}
	return 0
}

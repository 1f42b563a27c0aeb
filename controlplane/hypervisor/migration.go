package hypervisor

import (
	"fmt"
	"time"
)

// MigrationTarget is where Migrate sends a domain.
type MigrationTarget struct {
	// Host names the destination in errors and logs.
	Host string
	// URI is the destination's libvirt as the source host's daemon reaches it, since the
	// migration is peer to peer: qemu+tcp://ADDR/system on the hosts' private network (a
	// libvirthost Host's TCPURI), not the URI the control plane dials. For an in-memory source it
	// is the destination's fake:// URI (see Memory.Migrate).
	URI string
}

// MigrationParams tune a migration. The zero value migrates at full speed with libvirt's
// defaults.
type MigrationParams struct {
	// BandwidthMiBps caps the transfer in MiB/s; 0 keeps the domain's cap (SetMaxSpeed, unlimited
	// unless set). SetMaxSpeed changes it while the migration runs.
	BandwidthMiBps uint64
	// MaxDowntime is the longest the guest may be paused for the switch-over: the migration
	// copies memory until what is left can be sent within it (libvirt's default is 300 ms). It
	// is set on the domain before the migration starts (DomainMigrateSetMaxDowntime) and stays.
	// 0 keeps the domain's. Whole milliseconds.
	MaxDowntime time.Duration
	// AutoConverge lets the hypervisor slow the guest's vCPUs down when it dirties memory
	// faster than the migration sends it (VIR_MIGRATE_AUTO_CONVERGE).
	AutoConverge bool
	// PostCopy allows the migration to be switched to post-copy (VIR_MIGRATE_POSTCOPY). Nothing
	// here switches it; it only keeps the option open.
	PostCopy bool
	// ParallelConnections > 1 sends memory over that many connections (VIR_MIGRATE_PARALLEL,
	// QEMU's multifd; libvirt 9.0 has it). 0 or 1: one connection.
	ParallelConnections int
	// CopyStorage copies the domain's local disks with it (VIR_MIGRATE_NON_SHARED_DISK,
	// virsh's --copy-storage-all): QEMU mirrors each disk to the destination over NBD, then
	// copies memory, and keeps the two in step until the switch-over. The destination's
	// devfleet pool must hold the volumes first (PrepareVolume with what DomainVolumes returns
	// here): without the pool libvirt refuses (KindNotFound), and without the volume it makes
	// one itself, fully allocated. The bandwidth cap applies to the disk too, counting the
	// volume's whole capacity, holes included. The source's volumes stay: RemoveVolume them once
	// the guest runs on the destination. Without CopyStorage a domain with a disk is refused
	// (KindFailedPrecondition); with it a diskless domain migrates as usual.
	CopyStorage bool
}

// maxMigrationMiBps is libvirt's largest migration bandwidth (QEMU_DOMAIN_MIG_BANDWIDTH_MAX on
// 64-bit hosts), which it also uses for "unlimited".
const maxMigrationMiBps = (1<<63 - 1) / (1 << 20)

// validate checks the parameters that libvirt would refuse late or not at all.
func (p MigrationParams) validate() error {
	switch {
	case p.BandwidthMiBps > maxMigrationMiBps:
		return fmt.Errorf("bandwidth %d MiB/s is over libvirt's maximum %d", p.BandwidthMiBps, uint64(maxMigrationMiBps))
	case p.MaxDowntime < 0:
		return fmt.Errorf("max downtime %v is negative", p.MaxDowntime)
	case p.MaxDowntime > 0 && p.MaxDowntime < time.Millisecond:
		return fmt.Errorf("max downtime %v is under libvirt's resolution of 1ms", p.MaxDowntime)
	case p.ParallelConnections < 0 || p.ParallelConnections > 255:
		return fmt.Errorf("parallel connections %d out of range 0..255", p.ParallelConnections)
	}
	return nil
}

// JobType is the state of a domain's job, as libvirt reports it (virDomainJobType).
type JobType string

// Job types.
const (
	// JobNone: no job runs, and none completed that the host kept.
	JobNone JobType = "none"
	// JobBounded: a job whose end libvirt can estimate (JobStats.Remaining).
	JobBounded JobType = "bounded"
	// JobUnbounded: a job running with no estimate of its end; a migration is one.
	JobUnbounded JobType = "unbounded"
	// JobCompleted: the statistics of a job that completed (on the destination of a finished
	// migration).
	JobCompleted JobType = "completed"
	// JobFailed and JobCancelled: statistics of a job that failed or was aborted. libvirt 9.0
	// keeps none for a failed or aborted migration (JobStats gives JobNone then).
	JobFailed    JobType = "failed"
	JobCancelled JobType = "cancelled"
)

// Active reports whether the job is running.
func (t JobType) Active() bool { return t == JobBounded || t == JobUnbounded }

// JobOperation is what a job does (virDomainJobOperation).
type JobOperation string

// Job operations devfleet meets; libvirt has more (save, dump, ...), which JobStats reports by
// libvirt's name.
const (
	JobOperationUnknown JobOperation = "unknown"
	// JobMigrationOut is a migration seen from its source.
	JobMigrationOut JobOperation = "migration out"
	// JobMigrationIn is a migration seen from its destination.
	JobMigrationIn JobOperation = "migration in"
)

// jobOperations names libvirt's virDomainJobOperation values.
var jobOperations = [...]JobOperation{
	JobOperationUnknown, "start", "save", "restore", JobMigrationIn, JobMigrationOut, "snapshot",
	"snapshot revert", "dump", "backup", "snapshot delete",
}

// JobStats is a sample of a domain's job (libvirt's DomainGetJobStats). Byte counts are
// cumulative since the job started; a field libvirt did not report is zero.
type JobStats struct {
	Type      JobType
	Operation JobOperation
	// Elapsed is how long the job has run (or ran).
	Elapsed time.Duration
	// Remaining is libvirt's estimate of the time left (bounded jobs only).
	Remaining time.Duration
	// DataTotal, DataProcessed and DataRemaining count everything the job moves (memory and,
	// when copied, disks), in bytes. A migration's processed bytes can exceed its total when
	// the guest dirties memory that was already sent.
	DataTotal, DataProcessed, DataRemaining uint64
	// MemoryTotal, MemoryProcessed and MemoryRemaining count guest memory only, in bytes.
	MemoryTotal, MemoryProcessed, MemoryRemaining uint64
	// DiskTotal, DiskProcessed and DiskRemaining count the disks a migration copies
	// (MigrationParams.CopyStorage), in bytes: their whole capacity, holes included. The disks
	// are copied before memory, so while they are the memory counts stay zero.
	DiskTotal, DiskProcessed, DiskRemaining uint64
	// DataRate is the transfer rate in bytes/s (libvirt's memory_bps): memory's, so 0 while
	// disks are copied (libvirt 9.0 reports no disk rate).
	DataRate uint64
	// DirtyRate is how fast the guest dirties memory, in bytes/s (libvirt's memory_dirty_rate
	// in pages/s times memory_page_size).
	DirtyRate uint64
	// Iteration counts the passes over the guest's memory (libvirt's memory_iteration).
	Iteration uint64
	// ExpectedDowntime is, while the job runs, how long the switch-over would pause the guest
	// if it came now.
	ExpectedDowntime time.Duration
	// Downtime is how long the switch-over paused the guest (completed jobs).
	Downtime time.Duration
	// SetupTime is how long the migration took to set up (completed jobs).
	SetupTime time.Duration
	// AutoConvergeThrottle is the percentage by which auto-converge slows the guest's vCPUs.
	AutoConvergeThrottle int
	// Error is why the job failed (JobFailed).
	Error string
}

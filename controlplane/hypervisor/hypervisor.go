package hypervisor

import (
	"context"
	"io"
	"time"
)

// Hypervisor is one host's libvirt, as the controllers need it. Every method takes a context
// that bounds the call; when it ends first the call returns a KindTimeout error, and the
// operation may still complete on the host (libvirt calls cannot be withdrawn), so callers
// reconcile with Lookup or List. Failures are *Error values (see Kind). Implementations are safe
// for concurrent use.
type Hypervisor interface {
	// NodeInfo describes the host, so that registration can check the declared capacity.
	NodeInfo(ctx context.Context) (NodeInfo, error)
	// DefineAndStart defines a persistent domain from spec (creating its volume first when
	// spec.DiskGiB > 0, or using the one already in the pool with spec.ExistingVolume) and
	// starts it. It is all or nothing as far as the host lets it be: when a step fails, what was
	// made is removed again (never an existing volume). A domain of that name already existing is
	// a KindAlreadyExists error.
	DefineAndStart(ctx context.Context, spec DomainSpec) (Domain, error)
	// Start starts a defined domain that is shut off (a devserver its owner stopped). A domain
	// already running is not an error.
	Start(ctx context.Context, name string) error
	// Shutdown asks the guest to power off (ACPI) and waits until the domain is shut off or ctx
	// ends; a guest that ignores the request makes it return KindTimeout, and the caller may then
	// Destroy. A domain already shut off is not an error.
	Shutdown(ctx context.Context, name string) error
	// Destroy stops the domain at once (power cut). A domain already shut off is not an error.
	Destroy(ctx context.Context, name string) error
	// Redefine replaces the definition of the shut-off domain spec.Name by spec's size and
	// metadata (a resize: spec.UUID must be the domain's, or empty to keep it), growing its
	// volume to spec.DiskGiB when that is bigger; its data stays. A volume is never shrunk
	// (a spec.DiskGiB under its size keeps it as it is), a running domain is
	// KindFailedPrecondition, and no such domain is KindNotFound. The domain stays shut off.
	Redefine(ctx context.Context, spec DomainSpec) error
	// Undefine removes a shut-off domain's definition and its volume. A running domain is a
	// KindFailedPrecondition error. A volume left behind by a failed DefineAndStart is removed
	// even when the domain is gone; only when neither exists is it KindNotFound.
	Undefine(ctx context.Context, name string) error
	// Lookup returns one domain with its state and devfleet metadata.
	Lookup(ctx context.Context, name string) (Domain, error)
	// List returns every domain of the host, running or not. Domains that devfleet did not make
	// are listed too, with zero Metadata, so that callers can tell them apart (Domain.Managed).
	List(ctx context.Context) ([]Domain, error)
	// Events streams the host's domain lifecycle events until ctx ends or the connection is
	// lost; then the channel is closed. Events of one host arrive in the order libvirt sent them.
	// The Connector's hosts keep the stream open across reconnections (see EventResync).
	Events(ctx context.Context) (<-chan Event, error)
	// Ping checks that the host answers.
	Ping(ctx context.Context) error

	// Migrate live-migrates the running domain name to dest, peer to peer: this host's daemon
	// connects to dest.URI itself, copies the guest's memory while it runs, pauses it for the
	// switch-over, and leaves it running and persistently defined on dest and undefined here.
	// It blocks until the migration ended (its progress is read with JobStats, meanwhile, on
	// the host's usual connection; the migration runs on a connection of its own). When ctx
	// ends first it returns KindTimeout and the migration goes on (AbortJob stops it). On
	// KindAborted the migration was aborted (AbortJob) and the guest still runs here. A domain
	// that is not running or already has a job is KindFailedPrecondition, as is one with a local
	// disk unless p.CopyStorage is set; with it the disk is copied too, into the volume of the
	// same name that dest's devfleet pool must hold first (PrepareVolume; without the pool it is
	// KindNotFound), and the source's volume stays here for RemoveVolume. After any other error,
	// find the guest with Lookup on both hosts (see DESIGN.md, Migration).
	Migrate(ctx context.Context, name string, dest MigrationTarget, p MigrationParams) error
	// JobStats samples the domain's current job (a migration out, while Migrate runs). With no
	// job running it returns the last completed job's statistics when the host kept them (on
	// the destination of a finished migration: Type JobCompleted, Operation JobMigrationIn,
	// with the downtime; they stay until the next job), else Type JobNone for a running domain
	// and KindNotFound for one that does not run on this host (gone, migrated away, shut off):
	// what the source of a migration that just ended returns, so "not found" there means
	// "finished: look at the destination". On the destination of a migration under way it is
	// KindFailedPrecondition (libvirt gives statistics only on the source).
	JobStats(ctx context.Context, name string) (JobStats, error)
	// AbortJob aborts the domain's current job (a migration out: Migrate then returns
	// KindAborted and the guest keeps running here). It returns once the abort was requested,
	// not when Migrate returned. No job running is KindFailedPrecondition, as is an incoming
	// migration (abort it at its source, or destroy the domain on the destination), and a
	// migration that is switching over (in-memory hosts only; libvirt may still abort it).
	AbortJob(ctx context.Context, name string) error
	// StartPostCopy switches the domain's migration out, started with MigrationParams.PostCopy,
	// to post-copy: the guest runs on the destination from now on, and the memory still to copy
	// is fetched from here as the guest touches it (and in the background). A migration that is
	// not converging ends this way. It can no longer be aborted (AbortJob is
	// KindFailedPrecondition), and losing either host now loses the guest. A migration started
	// without PostCopy, or none, is KindFailedPrecondition.
	StartPostCopy(ctx context.Context, name string) error
	// SetMaxSpeed caps the domain's migration bandwidth in MiB/s (0: unlimited): the running
	// migration's at once, else the next one's (unless its MigrationParams give a cap).
	SetMaxSpeed(ctx context.Context, name string, mibps uint64) error

	// DomainVolumes returns the volumes of the host's devfleet pool that the domain's disks use,
	// with their size and format: DefineAndStart's <name>.<format> for a domain with a disk,
	// none for a diskless one. A migration that copies storage needs them on its destination
	// first (PrepareVolume). A domain that does not exist here is KindNotFound.
	DomainVolumes(ctx context.Context, name string) ([]Volume, error)
	// PrepareVolume makes sure the host's devfleet pool holds an empty volume v for a migration
	// that copies storage to this host: it creates the pool (as DefineAndStart does) and the
	// volume (sparse) when missing. It is idempotent: a volume of that name, size and format
	// that no domain uses is kept as it is (the copy overwrites all of it, holes included), one
	// of another size or format that no domain uses is replaced, and one that a domain of this
	// host uses (defined, running, or arriving by migration) is KindFailedPrecondition.
	PrepareVolume(ctx context.Context, v Volume) error
	// PoolVolumes lists the volumes of the host's devfleet pool (none when it has no pool): what a
	// decommission's wipe deletes.
	PoolVolumes(ctx context.Context) ([]Volume, error)
	// RemoveVolume deletes the volume name of the host's devfleet pool: what a migration that
	// copied storage leaves on its source, or a destination's prepared volume after a failed
	// attempt. A volume that a domain of this host uses (defined, running, or arriving by
	// migration) is KindFailedPrecondition: libvirt itself would delete it under a running
	// guest. No such volume, or no pool, is not an error.
	RemoveVolume(ctx context.Context, name string) error
	// DownloadVolume writes the whole content of the raw volume name of the host's devfleet
	// pool, Capacity bytes, holes as zeros, to w: the source's half of a cold move (CopyVolume).
	// The stream runs on a connection of its own, so a slow w never holds up the host's other
	// calls. No pool or no volume is KindNotFound; a volume that a running domain uses (or one
	// arriving by migration) is KindFailedPrecondition, since its content would be torn (a
	// shut-off domain's is fine), as is a qcow2 volume (its bytes on the host are the image
	// file, not the disk the guest sees). When ctx ends it returns KindTimeout and the stream
	// is cut; a Write of w under way then is not waited for, and none follows. A failed Write
	// ends the download with that error.
	DownloadVolume(ctx context.Context, name string, w io.Writer) error
	// UploadVolume writes exactly length bytes read from r into the raw volume name at offset,
	// leaving the rest of the volume as it is: the destination's half of a cold move
	// (CopyVolume). The stream runs on a connection of its own. The volume must exist
	// (KindNotFound) and hold [offset, offset+length) (KindInvalidArgument); a volume that any
	// domain of the host uses, running or not, is KindFailedPrecondition (the guest would see
	// its disk change under it), as is a qcow2 volume. r ending before length bytes fails the
	// upload (io.ErrUnexpectedEOF). When ctx ends it returns KindTimeout and the stream is cut.
	// After a failure the range may be partly written. r is not read after UploadVolume
	// returned, but for a Read under way.
	UploadVolume(ctx context.Context, name string, offset, length uint64, r io.Reader) error

	// Close releases the connection; calls made after it fail as KindUnavailable.
	Close() error
}

// Op names a Hypervisor operation in errors, logs and fault injection.
type Op string

// The operations.
const (
	OpConnect        Op = "connect"
	OpNodeInfo       Op = "node-info"
	OpDefineAndStart Op = "define-and-start"
	OpStart          Op = "start"
	OpShutdown       Op = "shutdown"
	OpDestroy        Op = "destroy"
	OpUndefine       Op = "undefine"
	OpRedefine       Op = "redefine"
	OpLookup         Op = "lookup"
	OpList           Op = "list"
	OpEvents         Op = "events"
	OpPing           Op = "ping"
	OpMigrate        Op = "migrate"
	OpJobStats       Op = "job-stats"
	OpAbortJob       Op = "abort-job"
	OpStartPostCopy  Op = "start-post-copy"
	OpSetMaxSpeed    Op = "set-max-speed"
	OpDomainVolumes  Op = "domain-volumes"
	OpPrepareVolume  Op = "prepare-volume"
	OpRemoveVolume   Op = "remove-volume"
	OpPoolVolumes    Op = "pool-volumes"
	OpDownloadVolume Op = "download-volume"
	OpUploadVolume   Op = "upload-volume"
	// OpMigrateIncoming is the destination's side of an in-memory migration: faults injected
	// for it on the destination Memory (FailNext, HangNext) make it refuse the next incoming
	// migration. Real hosts never report it.
	OpMigrateIncoming Op = "migrate-incoming"
)

// NodeInfo is what a host says about itself.
type NodeInfo struct {
	// Hostname is the daemon's host name.
	Hostname string
	// UUID is the host's UUID (libvirt's host_uuid): two hosts must never share it, since libvirt
	// refuses to migrate between equal UUIDs.
	UUID string
	// CPUs is the number of logical CPUs.
	CPUs int64
	// MemoryMiB is the host's physical memory.
	MemoryMiB int64
	// CPUModel is the CPU model libvirt reports (e.g. "x86_64").
	CPUModel string
}

// State is a domain's run state, reduced to what the controllers act on.
type State string

// Domain states.
const (
	// StateRunning: the guest runs (also while it is shutting down or blocked on I/O).
	StateRunning State = "running"
	// StatePaused: the guest is paused (by an operator, a migration, or suspended to RAM).
	StatePaused State = "paused"
	// StateShutOff: the guest is not running; its definition remains.
	StateShutOff State = "shut off"
	// StateCrashed: the guest crashed and libvirt kept it for inspection.
	StateCrashed State = "crashed"
	// StateUnknown: libvirt reports no state.
	StateUnknown State = "unknown"
)

// Domain is one domain of a host as Lookup and List see it.
type Domain struct {
	Name      string
	UUID      string
	State     State
	VCPUs     int64
	MemoryMiB int64
	// Metadata is devfleet's record in the domain; zero for domains devfleet did not make.
	Metadata Metadata
}

// Managed reports whether the domain carries devfleet metadata, i.e. devfleet made it.
func (d Domain) Managed() bool { return !d.Metadata.IsZero() }

// EventType is what happened to a domain.
type EventType string

// Lifecycle event types. Detail in Event says more (e.g. "destroyed" for a stop).
const (
	EventDefined   EventType = "defined"
	EventUndefined EventType = "undefined"
	EventStarted   EventType = "started"
	EventSuspended EventType = "suspended"
	EventResumed   EventType = "resumed"
	// EventStopped: the domain stopped (shut down, destroyed, migrated away, saved).
	EventStopped EventType = "stopped"
	// EventShutdown: the guest finished shutting itself down; EventStopped follows.
	EventShutdown EventType = "shutdown"
	// EventCrashed: the guest or its qemu process died (libvirt's crashed event, or a stop with
	// detail "crashed" or "failed").
	EventCrashed EventType = "crashed"
	// EventPMSuspended: the guest suspended itself (S3/S4).
	EventPMSuspended EventType = "pmsuspended"
	// EventResync is not a libvirt event: the Connector sends it when it subscribed again after
	// the connection was lost, so events may have been missed; re-read the host with List.
	EventResync EventType = "resync"
)

// Event is a domain lifecycle event of one host.
type Event struct {
	// Host is the host's name.
	Host string
	// Domain and UUID name the domain; both are empty for EventResync.
	Domain string
	UUID   string
	Type   EventType
	// Detail is libvirt's reason (e.g. "booted", "destroyed", "shutdown", "migrated",
	// "failed"); empty when libvirt gives none.
	Detail string
	// Time is when the event was received (libvirt's lifecycle events carry no time).
	Time time.Time
}

package hypervisor

import (
	"context"
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
	// spec.DiskGiB > 0) and starts it. It is all or nothing as far as the host lets it be: when
	// a step fails, what was made is removed again. A domain of that name already existing is a
	// KindAlreadyExists error.
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
	OpLookup         Op = "lookup"
	OpList           Op = "list"
	OpEvents         Op = "events"
	OpPing           Op = "ping"
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

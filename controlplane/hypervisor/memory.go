package hypervisor

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Defaults of a Memory host.
const (
	defaultMemoryCPUs      = 64
	defaultMemoryMemoryMiB = 256 << 10
	// defaultMemoryMigrationMiBps is the simulated network of in-memory migrations: 4 GiB of
	// guest memory move in 4 s.
	defaultMemoryMigrationMiBps = 1024
)

// MemoryOptions configure an in-memory host.
type MemoryOptions struct {
	// Host names the host in errors and events.
	Host string
	// Hostname is what NodeInfo reports; default Host.
	Hostname string
	// UUID is the host UUID NodeInfo reports; default a random one.
	UUID string
	// CPUs and MemoryMiB are the host's capacity (default 64 and 256 GiB). Starting a domain that
	// does not fit beside the running ones fails with KindFailedPrecondition.
	CPUs      int64
	MemoryMiB int64
	// Now stamps events; default Clock.Now.
	Now func() time.Time
	// Clock times simulated migrations (default the wall clock); a test gives a ManualClock to
	// run them at once.
	Clock Clock
	// MigrationMiBps is the speed of the simulated network that migrations out of this host
	// use, in MiB/s (default 1024); a migration's bandwidth cap (MigrationParams, SetMaxSpeed)
	// slows it further.
	MigrationMiBps int64
	// Resolve finds the destination of a migration out of this host by its fake:// URI; a
	// Connector sets it to find its own fake hosts. Without it Memory.Migrate fails.
	Resolve func(uri string) (*Memory, error)
}

// Memory is an in-memory host: the same Hypervisor without libvirt, for unit tests and the
// no-libvirt dev mode. It keeps domains and volumes (with their content, sparsely), enforces
// its capacity, emits the lifecycle events libvirt would, and lets a test inject faults (see
// FailNext, HangNext, DropConnection, Vanish, Crash, PowerOff) and read and write volumes
// (WriteVolumeAt, ReadVolumeAt). It is safe for concurrent use; calls take one short lock.
type Memory struct {
	host    string
	info    NodeInfo
	now     func() time.Time
	clock   Clock
	linkBps float64 // MigrationMiBps in bytes/s
	resolve func(uri string) (*Memory, error)

	mu      sync.Mutex
	domains map[string]*memDomain
	volumes map[string]*memVolume       // the devfleet pool's, by name
	pool    bool                        // the devfleet pool exists (made with the first volume)
	subs    map[*eventQueue]*memSession // stream -> owning session (nil: Memory's own)
	usedCPU int64                       // vCPUs and memory of running domains
	usedMiB int64
	faults  map[Op][]fault
	calls   map[Op]int
	dropped bool
	// down is closed when the connection drops (DropConnection or Close): hung calls and the
	// Connector's sessions watch it. A new one is made when the connection is restored.
	down   chan struct{}
	closed bool
}

type memDomain struct {
	dom    Domain
	volume string // the volume its disk uses; "" when diskless

	// job is the migration out of this host under way; incoming is the migration that makes
	// this domain here (it is a paused placeholder until the migration completes, and goes away
	// if it fails). lastJob is the statistics of the last completed job (migration in).
	job      *memJob
	incoming *memJob
	lastJob  *JobStats
	// maxSpeed (MiB/s, 0 unlimited) and maxDowntime (0: the default) are the domain's
	// migration settings; dirtyRate (bytes/s) is how fast the simulated guest dirties memory.
	maxSpeed    uint64
	maxDowntime time.Duration
	dirtyRate   uint64
}

// NewMemory returns an in-memory host.
func NewMemory(o MemoryOptions) *Memory {
	if o.Hostname == "" {
		o.Hostname = o.Host
	}
	if o.UUID == "" {
		o.UUID = uuid.NewString()
	}
	if o.CPUs == 0 {
		o.CPUs = defaultMemoryCPUs
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = defaultMemoryMemoryMiB
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	if o.Now == nil {
		o.Now = o.Clock.Now
	}
	if o.MigrationMiBps <= 0 {
		o.MigrationMiBps = defaultMemoryMigrationMiBps
	}
	return &Memory{
		host:    o.Host,
		info:    NodeInfo{Hostname: o.Hostname, UUID: o.UUID, CPUs: o.CPUs, MemoryMiB: o.MemoryMiB, CPUModel: "memory"},
		now:     o.Now,
		clock:   o.Clock,
		linkBps: float64(o.MigrationMiBps) * (1 << 20),
		resolve: o.Resolve,
		down:    make(chan struct{}),
	}
}

// Host returns the host's name.
func (m *Memory) Host() string { return m.host }

// begin is the entry of every call: it counts the call, fails it when the connection is down
// and applies an injected fault. It returns with m.mu held when err is nil.
func (m *Memory) begin(ctx context.Context, op Op, domain string) error {
	if err := ctx.Err(); err != nil {
		return newError(m.host, op, domain, err)
	}
	m.mu.Lock()
	if m.calls == nil {
		m.calls = make(map[Op]int)
	}
	m.calls[op]++
	if err := m.connErrLocked(op, domain); err != nil {
		m.mu.Unlock()
		return err
	}
	f, ok := m.popFaultLocked(op)
	if !ok {
		return nil
	}
	down := m.down
	m.mu.Unlock()
	if !f.hang {
		return f.errorFor(m.host, op, domain)
	}
	select {
	case <-ctx.Done():
		return newError(m.host, op, domain, ctx.Err())
	case <-down:
		return newError(m.host, op, domain, errClosed)
	case <-sessionEnd(ctx):
		return newError(m.host, op, domain, errClosed)
	}
}

// connErrLocked is the error of a call while the connection is closed or dropped.
func (m *Memory) connErrLocked(op Op, domain string) error {
	switch {
	case m.closed:
		return newError(m.host, op, domain, errClosed)
	case m.dropped:
		return newError(m.host, op, domain, errNotConnected)
	}
	return nil
}

// NodeInfo implements Hypervisor.
func (m *Memory) NodeInfo(ctx context.Context) (NodeInfo, error) {
	if err := m.begin(ctx, OpNodeInfo, ""); err != nil {
		return NodeInfo{}, err
	}
	defer m.mu.Unlock()
	return m.info, nil
}

// Ping implements Hypervisor.
func (m *Memory) Ping(ctx context.Context) error {
	if err := m.begin(ctx, OpPing, ""); err != nil {
		return err
	}
	m.mu.Unlock()
	return nil
}

// DefineAndStart implements Hypervisor.
func (m *Memory) DefineAndStart(ctx context.Context, spec DomainSpec) (Domain, error) {
	const op = OpDefineAndStart
	if err := spec.Validate(); err != nil {
		return Domain{}, errorf(m.host, op, spec.Name, KindInvalidArgument, "invalid spec: %v", err)
	}
	if err := m.begin(ctx, op, spec.Name); err != nil {
		return Domain{}, err
	}
	defer m.mu.Unlock()
	if _, ok := m.domains[spec.Name]; ok {
		return Domain{}, errorf(m.host, op, spec.Name, KindAlreadyExists, "domain %q already exists", spec.Name)
	}
	if spec.UUID != "" {
		for _, d := range m.domains {
			if d.dom.UUID == spec.UUID {
				return Domain{}, errorf(m.host, op, spec.Name, KindAlreadyExists,
					"domain %q already exists with uuid %s", d.dom.Name, spec.UUID)
			}
		}
	}
	if err := m.fitsLocked(op, spec.Name, spec.VCPUs, spec.MemoryMiB); err != nil {
		return Domain{}, err
	}
	d := &memDomain{dom: Domain{
		Name: spec.Name, UUID: spec.UUID, State: StateRunning,
		VCPUs: spec.VCPUs, MemoryMiB: spec.MemoryMiB, Metadata: spec.Metadata,
	}}
	if d.dom.UUID == "" {
		d.dom.UUID = uuid.NewString()
	}
	if spec.DiskGiB > 0 {
		vol := memVolumeName(spec.Name)
		if spec.ExistingVolume {
			if err := m.checkExistingLocked(op, spec.Name, vol, spec.DiskGiB); err != nil {
				return Domain{}, err
			}
		} else {
			if _, ok := m.volumes[vol]; ok {
				return Domain{}, errorf(m.host, op, spec.Name, KindAlreadyExists, "volume %q already exists", vol)
			}
			m.putVolumeLocked(Volume{Name: vol, Capacity: uint64(spec.DiskGiB) << 30, Format: memVolumeFormat})
		}
		d.volume = vol
	}
	if m.domains == nil {
		m.domains = make(map[string]*memDomain)
	}
	m.domains[spec.Name] = d
	m.usedCPU += spec.VCPUs
	m.usedMiB += spec.MemoryMiB
	m.emitLocked(d.dom, EventDefined, "added")
	m.emitLocked(d.dom, EventStarted, "booted")
	return d.dom, nil
}

// Redefine implements Hypervisor.
func (m *Memory) Redefine(ctx context.Context, spec DomainSpec) error {
	const op = OpRedefine
	if err := m.begin(ctx, op, spec.Name); err != nil {
		return err
	}
	defer m.mu.Unlock()
	d, err := m.domainLocked(op, spec.Name)
	if err != nil {
		return err
	}
	if spec.UUID == "" {
		spec.UUID = d.dom.UUID
	}
	if err := spec.Validate(); err != nil {
		return errorf(m.host, op, spec.Name, KindInvalidArgument, "invalid spec: %v", err)
	}
	switch {
	case spec.UUID != d.dom.UUID:
		return errorf(m.host, op, spec.Name, KindInvalidArgument, "uuid %s is not the domain's %s", spec.UUID, d.dom.UUID)
	case d.dom.State != StateShutOff:
		return errorf(m.host, op, spec.Name, KindFailedPrecondition, "domain %s is %s: only a shut-off domain is redefined", spec.Name, d.dom.State)
	}
	if spec.DiskGiB > 0 {
		if d.volume == "" {
			d.volume = memVolumeName(spec.Name)
		}
		v, ok := m.volumes[d.volume]
		if !ok {
			return errorf(m.host, op, spec.Name, KindNotFound, "volume %s: Storage volume not found", d.volume)
		}
		v.grow(uint64(spec.DiskGiB) << 30)
	}
	d.dom.VCPUs, d.dom.MemoryMiB, d.dom.Metadata = spec.VCPUs, spec.MemoryMiB, spec.Metadata
	m.emitLocked(d.dom, EventDefined, "updated")
	return nil
}

// fitsLocked refuses a start that the host's capacity cannot hold beside the running domains.
func (m *Memory) fitsLocked(op Op, name string, cpus, mib int64) error {
	if m.usedCPU+cpus > m.info.CPUs {
		return errorf(m.host, op, name, KindFailedPrecondition,
			"not enough CPUs: %d of %d in use, %d more asked", m.usedCPU, m.info.CPUs, cpus)
	}
	if m.usedMiB+mib > m.info.MemoryMiB {
		return errorf(m.host, op, name, KindFailedPrecondition,
			"not enough memory: %d of %d MiB in use, %d more asked", m.usedMiB, m.info.MemoryMiB, mib)
	}
	return nil
}

// Start implements Hypervisor.
func (m *Memory) Start(ctx context.Context, name string) error {
	const op = OpStart
	if err := m.begin(ctx, op, name); err != nil {
		return err
	}
	defer m.mu.Unlock()
	d, err := m.domainLocked(op, name)
	if err != nil || d.dom.State != StateShutOff {
		return err
	}
	if err := m.fitsLocked(op, name, d.dom.VCPUs, d.dom.MemoryMiB); err != nil {
		return err
	}
	m.usedCPU += d.dom.VCPUs
	m.usedMiB += d.dom.MemoryMiB
	d.dom.State = StateRunning
	m.emitLocked(d.dom, EventStarted, "booted")
	return nil
}

// Shutdown implements Hypervisor: the in-memory guest always complies at once (use HangNext to
// play one that does not).
func (m *Memory) Shutdown(ctx context.Context, name string) error {
	if err := m.begin(ctx, OpShutdown, name); err != nil {
		return err
	}
	defer m.mu.Unlock()
	d, err := m.domainLocked(OpShutdown, name)
	if err != nil {
		return err
	}
	if d.dom.State != StateShutOff {
		m.emitLocked(d.dom, EventShutdown, "finished")
		m.stopLocked(d, EventStopped, "shutdown")
	}
	return nil
}

// Destroy implements Hypervisor.
func (m *Memory) Destroy(ctx context.Context, name string) error {
	if err := m.begin(ctx, OpDestroy, name); err != nil {
		return err
	}
	defer m.mu.Unlock()
	d, err := m.domainLocked(OpDestroy, name)
	if err != nil {
		return err
	}
	if d.dom.State != StateShutOff {
		m.stopLocked(d, EventStopped, "destroyed")
	}
	return nil
}

// Undefine implements Hypervisor.
func (m *Memory) Undefine(ctx context.Context, name string) error {
	const op = OpUndefine
	if err := m.begin(ctx, op, name); err != nil {
		return err
	}
	defer m.mu.Unlock()
	d, ok := m.domains[name]
	if !ok {
		// A volume left by a failed DefineAndStart goes too.
		vol := memVolumeName(name)
		if _, ok := m.volumes[vol]; ok {
			delete(m.volumes, vol)
			return nil
		}
		return errorf(m.host, op, name, KindNotFound, "domain not found: no domain with matching name '%s'", name)
	}
	if d.dom.State != StateShutOff {
		return errorf(m.host, op, name, KindFailedPrecondition, "domain is %s; destroy or shut it down first", d.dom.State)
	}
	delete(m.domains, name)
	if d.volume != "" {
		delete(m.volumes, d.volume)
	}
	m.emitLocked(d.dom, EventUndefined, "removed")
	return nil
}

// Lookup implements Hypervisor.
func (m *Memory) Lookup(ctx context.Context, name string) (Domain, error) {
	if err := m.begin(ctx, OpLookup, name); err != nil {
		return Domain{}, err
	}
	defer m.mu.Unlock()
	d, err := m.domainLocked(OpLookup, name)
	if err != nil {
		return Domain{}, err
	}
	return d.dom, nil
}

// List implements Hypervisor; domains come sorted by name.
func (m *Memory) List(ctx context.Context) ([]Domain, error) {
	if err := m.begin(ctx, OpList, ""); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	doms := make([]Domain, 0, len(m.domains))
	for _, d := range m.domains {
		doms = append(doms, d.dom)
	}
	slices.SortFunc(doms, func(a, b Domain) int { return cmp.Compare(a.Name, b.Name) })
	return doms, nil
}

// Events implements Hypervisor. The stream ends when ctx ends, or when the connection is dropped
// or closed.
func (m *Memory) Events(ctx context.Context) (<-chan Event, error) {
	return m.subscribe(ctx, nil)
}

// subscribe opens an event stream owned by owner (a Connector session, or nil). The owner is
// checked under the lock that closing it takes, so a stream never outlives its session.
func (m *Memory) subscribe(ctx context.Context, owner *memSession) (<-chan Event, error) {
	if err := m.begin(ctx, OpEvents, ""); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	if owner != nil {
		if err := owner.deadLocked(OpEvents, ""); err != nil {
			return nil, err
		}
	}
	var q *eventQueue
	q = newEventQueue(ctx, func() {
		m.mu.Lock()
		delete(m.subs, q)
		m.mu.Unlock()
	})
	if m.subs == nil {
		m.subs = make(map[*eventQueue]*memSession)
	}
	m.subs[q] = owner
	return q.out, nil
}

// Close implements Hypervisor: it ends the event streams, and later calls fail as
// KindUnavailable. The host's domains stay (as a real host's do when a client goes).
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	if !m.dropped {
		close(m.down)
	}
	m.closeSubsLocked(nil, true)
	return nil
}

// closeSubsLocked ends the event streams of owner (all of them when all is set).
func (m *Memory) closeSubsLocked(owner *memSession, all bool) {
	for q, o := range m.subs {
		if all || o == owner {
			q.close()
			delete(m.subs, q)
		}
	}
}

// domainLocked returns the named domain or a KindNotFound error worded as libvirt's.
func (m *Memory) domainLocked(op Op, name string) (*memDomain, error) {
	d, ok := m.domains[name]
	if !ok {
		return nil, errorf(m.host, op, name, KindNotFound, "domain not found: no domain with matching name '%s'", name)
	}
	return d, nil
}

// stopLocked shuts d off, frees its capacity and emits typ/detail. A migration out of d fails;
// a domain that was arriving by migration fails it and goes away (it was transient).
func (m *Memory) stopLocked(d *memDomain, typ EventType, detail string) {
	if d.dom.State == StateRunning || d.dom.State == StatePaused {
		m.usedCPU -= d.dom.VCPUs
		m.usedMiB -= d.dom.MemoryMiB
	}
	d.dom.State = StateShutOff
	m.emitLocked(d.dom, typ, detail)
	if j := d.job; j != nil {
		d.job = nil
		j.fail(errorf(m.host, OpMigrate, d.dom.Name, KindFailedPrecondition,
			"domain is not running: it stopped (%s) during the migration", detail))
	}
	if j := d.incoming; j != nil {
		d.incoming = nil
		if m.domains[d.dom.Name] == d {
			delete(m.domains, d.dom.Name)
		}
		j.fail(errorf(j.src.host, OpMigrate, d.dom.Name, KindInternal,
			"the domain stopped (%s) on the destination %s during the migration", detail, m.host))
	}
}

// emitLocked sends an event about d to every stream.
func (m *Memory) emitLocked(d Domain, typ EventType, detail string) {
	if len(m.subs) == 0 {
		return
	}
	ev := Event{Host: m.host, Domain: d.Name, UUID: d.UUID, Type: typ, Detail: detail, Time: m.now()}
	for q := range m.subs {
		q.push(ev)
	}
}

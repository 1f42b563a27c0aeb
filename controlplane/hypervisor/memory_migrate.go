package hypervisor

import (
	"cmp"
	"context"
	"maps"
	"math"
	"strings"
	"sync"
	"time"
)

// defaultMaxDowntime is libvirt's (QEMU's) default switch-over pause.
const defaultMaxDowntime = 300 * time.Millisecond

// Migrate implements Hypervisor between in-memory hosts. The destination is the Memory that
// MemoryOptions.Resolve finds for dest.URI (a Connector's fake hosts find each other by URI, or
// by the NAME of fake://NAME). The migration is simulated as QEMU's pre-copy: the guest's memory
// is sent at the bandwidth (the cap, else MigrationMiBps of the source) while the guest dirties
// it at its dirty rate (SetDirtyRate; 0 by default), until what is left can be sent within the
// max downtime; then the guest moves. It takes that long by the source's Clock, and runs on its
// own: Migrate returning early (ctx, a dropped connection) does not stop it, AbortJob does.
//
// As with libvirt, the destination holds a paused placeholder of the domain while it runs
// (Lookup and List show it; it takes its capacity, which must fit, and the name must be free),
// emitting started/migrated; on success the source emits suspended/migrated and
// stopped/migrated and forgets the domain, and the destination emits defined/added and
// resumed/migrated and keeps the completed job's statistics (JobStats). On failure the
// placeholder stops (stopped/failed, which Events reports as EventCrashed, as libvirt's) and the
// guest runs on at the source. The migration fails when the destination's connection drops
// (DropConnection), the guest stops at either end, an OpMigrateIncoming fault was injected on
// the destination, or it is aborted.
//
// A domain with a disk is refused without p.CopyStorage, as libvirt refuses to migrate local
// storage without copying it. With it, the destination must have its devfleet pool (it has one
// once it made a volume: DefineAndStart with a disk, PrepareVolume), else KindNotFound
// ("Storage pool not found", as libvirt); a volume of the same name there must have the same
// capacity (else the migration fails, KindInternal, as QEMU's "Source and target image have
// different sizes"), and a missing one is made, as libvirt does. The disk is copied first, its
// whole capacity at the bandwidth (as libvirt under a cap; uncapped libvirt skips holes faster),
// then memory; on success the destination's domain uses the volume and the source's volume
// stays (RemoveVolume); on failure the destination's volume stays too, as libvirt leaves it.
func (m *Memory) Migrate(ctx context.Context, name string, dest MigrationTarget, p MigrationParams) error {
	const op = OpMigrate
	if err := checkMigration(dest, p, true); err != nil {
		return errorf(m.host, op, name, KindInvalidArgument, "%v", err)
	}
	if m.resolve == nil {
		return errorf(m.host, op, name, KindInvalidArgument,
			"this in-memory host cannot find %s (no MemoryOptions.Resolve; a Connector's fake hosts have one)", dest.URI)
	}
	dst, err := m.resolve(dest.URI)
	if err != nil {
		return errorf(m.host, op, name, KindInvalidArgument, "destination %s: %s", dest.URI, messageOf(err))
	}
	if dst == m {
		return errorf(m.host, op, name, KindInvalidArgument, "destination %s is the source host", dest.URI)
	}
	if err := m.begin(ctx, op, name); err != nil {
		return err
	}
	d, err := m.domainLocked(op, name)
	switch {
	case err != nil:
	case d.incoming != nil:
		err = errorf(m.host, op, name, KindFailedPrecondition, "the domain is arriving here by migration")
	case d.dom.State != StateRunning && d.dom.State != StatePaused:
		err = errorf(m.host, op, name, KindFailedPrecondition, "domain is not running")
	case d.job != nil:
		err = errorf(m.host, op, name, KindFailedPrecondition, "the domain has a job running already (%s)", JobUnbounded)
	case d.volume != "" && !p.CopyStorage:
		err = errorf(m.host, op, name, KindFailedPrecondition,
			"Unsafe migration: Migration without shared storage is unsafe (the domain has the local disk %s: set CopyStorage)", d.volume)
	}
	var vol Volume
	if err == nil && p.CopyStorage && d.volume != "" {
		if v, ok := m.volumes[d.volume]; ok {
			vol = v.Volume
		} else { // cannot happen: RemoveVolume refuses a volume in use
			err = errorf(m.host, op, name, KindInternal, "the domain's volume %s is missing", d.volume)
		}
	}
	if err != nil {
		m.mu.Unlock()
		return err
	}
	if p.MaxDowntime > 0 {
		d.maxDowntime = p.MaxDowntime
	}
	speed := d.maxSpeed
	if p.BandwidthMiBps > 0 {
		speed = p.BandwidthMiBps
	}
	now := m.clock.Now()
	total := float64(d.dom.MemoryMiB) * (1 << 20)
	j := &memJob{
		src: m, dst: dst, dstName: dest.Host, name: name, dom: d.dom, params: p, start: now,
		total: total, volume: vol, diskTotal: float64(vol.Capacity), linkBps: m.linkBps,
		segAt: now, remaining: total, capMiBps: speed, dirty: float64(d.dirtyRate),
		maxDowntime: cmp.Or(d.maxDowntime, defaultMaxDowntime),
		wake:        make(chan struct{}, 1), done: make(chan struct{}),
	}
	if j.dstName == "" {
		j.dstName = dest.URI
	}
	d.job, d.lastJob = j, nil
	down := m.down
	m.mu.Unlock()
	go j.run()
	select {
	case <-j.done:
		return j.result
	case <-ctx.Done():
		return &Error{Host: m.host, Op: op, Domain: name, Kind: KindTimeout, Err: ctx.Err(),
			Message: ctx.Err().Error() + " (the migration goes on; AbortJob stops it)"}
	case <-down:
		return newError(m.host, op, name, errNotConnected)
	case <-sessionEnd(ctx):
		return newError(m.host, op, name, errClosed)
	}
}

// JobStats implements Hypervisor.
func (m *Memory) JobStats(ctx context.Context, name string) (JobStats, error) {
	const op = OpJobStats
	if err := m.begin(ctx, op, name); err != nil {
		return JobStats{}, err
	}
	defer m.mu.Unlock()
	d, err := m.domainLocked(op, name)
	switch {
	case err != nil:
		return JobStats{}, err
	case d.incoming != nil:
		return JobStats{}, errorf(m.host, op, name, KindFailedPrecondition,
			"Operation not supported: migration statistics are available only on the source host")
	case d.job != nil:
		return d.job.stats(m.clock.Now()), nil
	case d.lastJob != nil:
		return *d.lastJob, nil
	case d.dom.State == StateShutOff || d.dom.State == StateCrashed:
		return JobStats{}, errorf(m.host, op, name, KindNotFound, "Requested operation is not valid: domain is not running (no job)")
	}
	return JobStats{Type: JobNone}, nil
}

// AbortJob implements Hypervisor.
func (m *Memory) AbortJob(ctx context.Context, name string) error {
	const op = OpAbortJob
	if err := m.begin(ctx, op, name); err != nil {
		return err
	}
	defer m.mu.Unlock()
	d, err := m.domainLocked(op, name)
	switch {
	case err != nil:
		return err
	case d.incoming != nil:
		return errorf(m.host, op, name, KindFailedPrecondition, "Requested operation is not valid: cannot abort incoming migration; use virDomainDestroy instead")
	case d.job == nil:
		return errorf(m.host, op, name, KindFailedPrecondition, "Requested operation is not valid: no job is active on the domain")
	case !d.job.abort():
		return errorf(m.host, op, name, KindFailedPrecondition, "Requested operation is not valid: the migration is switching over")
	}
	return nil
}

// StartPostCopy implements Hypervisor: the switch-over comes at once and pauses the guest only
// for its device state (1 ms in the model); the rest of memory follows at the link's speed.
func (m *Memory) StartPostCopy(ctx context.Context, name string) error {
	const op = OpStartPostCopy
	if err := m.begin(ctx, op, name); err != nil {
		return err
	}
	defer m.mu.Unlock()
	d, err := m.domainLocked(op, name)
	switch {
	case err != nil:
		return err
	case d.job == nil:
		return errorf(m.host, op, name, KindFailedPrecondition, "Requested operation is not valid: no job is active on the domain")
	case !d.job.params.PostCopy:
		return errorf(m.host, op, name, KindFailedPrecondition, "Requested operation is not valid: switching to post-copy requires migration to be started with the post-copy flag")
	}
	now := m.clock.Now()
	var refused error
	d.job.change(now, func(j *memJob) {
		if j.copyingDisk(j.diskDone) {
			refused = errorf(m.host, op, name, KindFailedPrecondition, "Requested operation is not valid: the disks are still being copied")
			return
		}
		j.postCopy = true
	})
	return refused
}

// SetMaxSpeed implements Hypervisor.
func (m *Memory) SetMaxSpeed(ctx context.Context, name string, mibps uint64) error {
	const op = OpSetMaxSpeed
	if mibps > maxMigrationMiBps {
		return errorf(m.host, op, name, KindInvalidArgument, "bandwidth %d MiB/s is over libvirt's maximum %d", mibps, uint64(maxMigrationMiBps))
	}
	if err := m.begin(ctx, op, name); err != nil {
		return err
	}
	defer m.mu.Unlock()
	d, err := m.domainLocked(op, name)
	if err != nil {
		return err
	}
	d.maxSpeed = mibps
	if d.job != nil {
		d.job.change(m.clock.Now(), func(j *memJob) { j.capMiBps = mibps })
	}
	return nil
}

// SetDirtyRate sets how fast the simulated guest dirties its memory, in bytes/s (0 by default),
// also during a migration: a rate at or above the bandwidth keeps the migration from
// converging, unless AutoConverge (which throttles the guest to half the bandwidth) or a larger
// max downtime lets it. The rate follows the domain to its destination.
func (m *Memory) SetDirtyRate(name string, bytesPerSec uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.domainLocked("set-dirty-rate", name)
	if err != nil {
		return err
	}
	d.dirtyRate = bytesPerSec
	if d.job != nil {
		d.job.change(m.clock.Now(), func(j *memJob) { j.dirty = float64(bytesPerSec) })
	}
	return nil
}

// memJob is a migration between in-memory hosts. Its progress is linear between changes (of
// speed or dirty rate), so a sample at any time is computed from the last change: the job
// needs no ticker, and a ManualClock makes it exact. mu is taken after the hosts' locks, never
// before.
type memJob struct {
	src, dst *Memory
	dstName  string
	name     string
	dom      Domain // as it was when the migration began
	params   MigrationParams
	start    time.Time
	total    float64 // guest memory, bytes
	// volume is the disk copied with the guest (CopyStorage), zero when none; diskTotal is its
	// capacity in bytes, copied before memory.
	volume    Volume
	diskTotal float64
	linkBps   float64

	mu sync.Mutex
	// At segAt, diskDone bytes of the disk were copied, processed bytes of memory were sent and
	// remaining were left to send; since then the rate (capMiBps, else the link) and the dirty
	// rate have not changed.
	segAt                time.Time
	diskDone             float64
	processed, remaining float64
	// memStart is when the disk copy ended and memory began to move (zero: not yet, or no disk).
	memStart    time.Time
	capMiBps    uint64
	dirty       float64
	maxDowntime time.Duration
	// postCopy: switched to post-copy (StartPostCopy); the switch-over comes at once.
	postCopy bool
	// switching: the switch-over began, it can no longer be aborted. err: why the job ends
	// early (abort, failure).
	switching bool
	err       error
	wake      chan struct{} // capacity 1: err or the rates changed

	done   chan struct{} // closed when the job ended, result set
	result error
}

// bps is the transfer rate in bytes/s.
func (j *memJob) bps() float64 {
	if j.capMiBps > 0 {
		return min(j.linkBps, float64(j.capMiBps)*(1<<20))
	}
	return j.linkBps
}

// dirtyBps is the rate at which the guest dirties memory, throttled by auto-converge.
func (j *memJob) dirtyBps() float64 {
	if j.params.AutoConverge {
		return min(j.dirty, j.bps()/2)
	}
	return j.dirty
}

// threshold is how much may be left for the switch-over: what the max downtime sends.
func (j *memJob) threshold() float64 { return j.bps() * j.maxDowntime.Seconds() }

// switchSlack is how close to the switch-over a job may wake and still switch: the float
// arithmetic of the model must not leave a job waiting for a nanosecond that a ManualClock
// never brings.
const switchSlack = time.Microsecond

// diskSeconds is how long the rest of the disk copy takes from segAt.
func (j *memJob) diskSeconds() float64 {
	return max(j.diskTotal-j.diskDone, 0) / j.bps()
}

// untilSwitch is the time from segAt until the switch-over can come (the rest of the disk,
// then memory until what is left fits in the max downtime); negative when it never comes at
// the current rates.
func (j *memJob) untilSwitch() time.Duration {
	if j.postCopy {
		return 0
	}
	secs := j.diskSeconds()
	if left := j.remaining - j.threshold(); left > 0 {
		net := j.bps() - j.dirtyBps()
		if net <= 0 {
			return -1
		}
		secs += left / net
	}
	d := time.Duration(math.Round(secs * 1e9))
	if d <= switchSlack {
		return 0
	}
	return d
}

// at returns the disk bytes copied and the memory bytes processed and remaining at now (no
// later than the switch-over). Memory moves once the disk is copied.
func (j *memJob) at(now time.Time) (disk, processed, remaining float64) {
	dt := max(now.Sub(j.segAt), 0)
	if u := j.untilSwitch(); u >= 0 {
		dt = min(dt, u)
	}
	s := dt.Seconds()
	disk = j.diskDone
	if j.diskTotal > disk {
		ds := min(s, j.diskSeconds())
		disk, s = disk+j.bps()*ds, s-ds
		if s > 0 || disk > j.diskTotal {
			disk = j.diskTotal
		}
	}
	return disk, j.processed + j.bps()*s, max(j.remaining-(j.bps()-j.dirtyBps())*s, 0)
}

// copyingDisk reports whether the disk copy is under way at disk bytes copied.
func (j *memJob) copyingDisk(disk float64) bool { return disk < j.diskTotal }

// advanceLocked moves the segment to now.
func (j *memJob) advanceLocked(now time.Time) {
	copying := j.copyingDisk(j.diskDone)
	diskEnd := j.segAt.Add(time.Duration(math.Round(j.diskSeconds() * 1e9)))
	j.diskDone, j.processed, j.remaining = j.at(now)
	j.segAt = now
	if copying && !j.copyingDisk(j.diskDone) {
		j.memStart = diskEnd
	}
}

// change applies f (new rates) from now on.
func (j *memJob) change(now time.Time, f func(*memJob)) {
	j.mu.Lock()
	j.advanceLocked(now)
	f(j)
	j.mu.Unlock()
	j.signal()
}

func (j *memJob) signal() {
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

// abort ends the job as aborted, unless the switch-over began; it reports whether it did.
func (j *memJob) abort() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.switching {
		return false
	}
	if j.err == nil {
		j.err = errorf(j.src.host, OpMigrate, j.name, KindAborted, "operation aborted: job 'migration out' canceled by client")
	}
	j.signal()
	return true
}

// fail ends the job with err (the first reason wins).
func (j *memJob) fail(err error) {
	j.mu.Lock()
	if j.err == nil {
		j.err = err
	}
	j.mu.Unlock()
	j.signal()
}

// stats samples the job at now. As libvirt's: while the disk is copied, the data counts are
// the disk's and memory's are zero (as is the rate: libvirt reports none for disks); then the
// data counts are the disk's and memory's together.
func (j *memJob) stats(now time.Time) JobStats {
	j.mu.Lock()
	defer j.mu.Unlock()
	disk, processed, remaining := j.at(now)
	s := JobStats{Type: JobUnbounded, Operation: JobMigrationOut, Elapsed: now.Sub(j.start)}
	if j.diskTotal > 0 {
		s.DiskTotal, s.DiskProcessed, s.DiskRemaining = byteCount(j.diskTotal), byteCount(disk), byteCount(j.diskTotal-disk)
	}
	if !j.copyingDisk(disk) {
		s.MemoryTotal, s.MemoryProcessed, s.MemoryRemaining = byteCount(j.total), byteCount(processed), byteCount(remaining)
		s.DataRate, s.DirtyRate = byteCount(j.bps()), byteCount(j.dirtyBps())
		s.Iteration = 1 + uint64(max(processed-1, 0)/j.total)
		s.ExpectedDowntime = time.Duration(math.Round(remaining / j.bps() * 1e9))
		if j.params.AutoConverge && j.dirty > j.dirtyBps() {
			s.AutoConvergeThrottle = int(100 * (1 - j.dirtyBps()/j.dirty))
		}
	}
	s.DataTotal = s.DiskTotal + s.MemoryTotal
	s.DataProcessed = s.DiskProcessed + s.MemoryProcessed
	s.DataRemaining = s.DiskRemaining + s.MemoryRemaining
	return s
}

// run is the migration, from the destination's preparation to the switch-over or the undoing.
func (j *memJob) run() {
	defer close(j.done)
	down, err := j.prepare()
	if err == nil {
		err = j.transfer(down)
	}
	if err == nil {
		err = j.commit()
	}
	if err != nil {
		j.undo()
	}
	j.result = err
}

// prepare makes the paused placeholder on the destination and returns the channel that closes
// when the destination's connection drops.
func (j *memJob) prepare() (<-chan struct{}, error) {
	m, name := j.dst, j.name
	m.mu.Lock()
	if m.calls == nil {
		m.calls = make(map[Op]int)
	}
	m.calls[OpMigrateIncoming]++
	down := m.down
	if err := m.connErrLocked(OpMigrateIncoming, name); err != nil {
		m.mu.Unlock()
		return nil, errorf(j.src.host, OpMigrate, name, KindUnavailable, "cannot reach the destination %s: %s", j.dstName, messageOf(err))
	}
	if f, ok := m.popFaultLocked(OpMigrateIncoming); ok {
		m.mu.Unlock()
		if !f.hang {
			return nil, f.errorFor(m.host, OpMigrateIncoming, name)
		}
		// A destination that does not answer: until the job is aborted or its connection drops.
		for {
			select {
			case <-j.wake:
				j.mu.Lock()
				err := j.err
				j.mu.Unlock()
				if err != nil {
					return nil, err
				}
			case <-down:
				return nil, errorf(j.src.host, OpMigrate, name, KindUnavailable, "lost the destination %s", j.dstName)
			}
		}
	}
	defer m.mu.Unlock()
	if _, ok := m.domains[name]; ok {
		return nil, errorf(j.src.host, OpMigrate, name, KindAlreadyExists, "domain %q already exists on the destination %s", name, j.dstName)
	}
	for _, d := range m.domains {
		if d.dom.UUID == j.dom.UUID {
			return nil, errorf(j.src.host, OpMigrate, name, KindAlreadyExists,
				"domain %q already exists with uuid %s on the destination %s", d.dom.Name, j.dom.UUID, j.dstName)
		}
	}
	if err := m.fitsLocked(OpMigrate, name, j.dom.VCPUs, j.dom.MemoryMiB); err != nil {
		return nil, errorf(j.src.host, OpMigrate, name, KindFailedPrecondition, "destination %s: %s", j.dstName, messageOf(err))
	}
	copyErr, err := j.prepareVolumeLocked()
	if err != nil {
		return nil, err
	}
	d := &memDomain{incoming: j, volume: j.volume.Name}
	d.dom = j.dom
	d.dom.State = StatePaused
	if m.domains == nil {
		m.domains = make(map[string]*memDomain)
	}
	m.domains[name] = d
	m.usedCPU += d.dom.VCPUs
	m.usedMiB += d.dom.MemoryMiB
	m.emitLocked(d.dom, EventStarted, "migrated")
	return down, copyErr // a copy that fails at once fails with the placeholder started (run undoes it)
}

// prepareVolumeLocked checks the destination's storage for the disk the job copies, if any, as
// libvirt does: the pool must exist (else err: the migration is refused before it starts), a
// volume of that name must have the disk's capacity (else copyErr: QEMU fails the copy once the
// destination's domain started), and a missing one is made (libvirt's "precreation"). Called
// with the destination's lock held.
func (j *memJob) prepareVolumeLocked() (copyErr, err error) {
	m, v := j.dst, j.volume
	if v.Name == "" {
		return nil, nil
	}
	if !m.pool {
		return nil, errorf(j.src.host, OpMigrate, j.name, KindNotFound,
			"Storage pool not found: no storage pool with matching name '%s' (on the destination %s: PrepareVolume first)", DefaultPool, j.dstName)
	}
	if have, ok := m.volumes[v.Name]; ok {
		if users := m.usersLocked(v.Name, false); len(users) > 0 {
			return nil, errorf(j.src.host, OpMigrate, j.name, KindFailedPrecondition,
				"the volume %s on the destination %s is in use by domain %s", v.Name, j.dstName, strings.Join(users, ", "))
		}
		if have.Capacity != v.Capacity {
			return errorf(j.src.host, OpMigrate, j.name, KindInternal,
				"operation failed: migration of disk vda failed: Source and target image have different sizes (%s: %d bytes on the destination %s, %d here)",
				v.Name, have.Capacity, j.dstName, v.Capacity), nil
		}
		return nil, nil
	}
	m.putVolumeLocked(v)
	return nil, nil
}

// transfer waits, by the source's clock, until the switch-over can come, following changes of
// rate, and fails when the job is aborted or failed or the destination drops.
func (j *memJob) transfer(dstDown <-chan struct{}) error {
	clock := j.src.clock
	for {
		j.mu.Lock()
		if j.err != nil {
			err := j.err
			j.mu.Unlock()
			return err
		}
		j.advanceLocked(clock.Now())
		wait := j.untilSwitch()
		if wait == 0 {
			j.switching = true
			j.mu.Unlock()
			return nil
		}
		j.mu.Unlock()
		var timer <-chan time.Time
		if wait > 0 {
			timer = clock.After(wait)
		}
		select {
		case <-timer:
		case <-j.wake:
		case <-dstDown:
			j.fail(errorf(j.src.host, OpMigrate, j.name, KindUnavailable,
				"lost the connection to the destination %s: migration failed", j.dstName))
		}
	}
}

// commit switches over: the source stops and forgets the domain, the destination runs it.
func (j *memJob) commit() error {
	now := j.src.clock.Now()
	src, dst, name := j.src, j.dst, j.name
	src.mu.Lock()
	j.mu.Lock()
	err := j.err
	j.advanceLocked(now)
	processed, remaining, memStart := j.processed, j.remaining, cmp.Or(j.memStart, j.start)
	bps, dirty, postCopy := j.bps(), j.dirty, j.postCopy
	j.mu.Unlock()
	d := src.domains[name]
	if err == nil && (d == nil || d.job != j) {
		err = errorf(src.host, OpMigrate, name, KindInternal, "the domain left the source during the migration")
	}
	if err != nil {
		src.mu.Unlock()
		return err
	}
	// The disk's content as it is now (in-memory guests do not write): blocks are shared, never
	// changed in place.
	var disk map[uint64][]byte
	if v := src.volumes[j.volume.Name]; j.volume.Name != "" && v != nil {
		disk = maps.Clone(v.blocks)
	}
	d.job = nil
	d.dom.State = StatePaused
	src.emitLocked(d.dom, EventSuspended, "migrated")
	src.stopLocked(d, EventStopped, "migrated")
	delete(src.domains, name) // undefined at the source, without an event (as libvirt does)
	maxSpeed, maxDowntime := d.maxSpeed, d.maxDowntime
	src.mu.Unlock()

	// The switch-over sends what is left with the guest paused; libvirt reports whole ms. As
	// libvirt's, the destination's statistics count memory only, also when a disk was copied;
	// the rate is memory's, from when the disk copy ended.
	downtime := time.Duration(remaining / bps * 1e9).Round(time.Millisecond)
	elapsed := now.Sub(j.start) + downtime
	if postCopy { // only the device state pauses the guest; the rest follows at the link's speed
		elapsed = now.Sub(j.start) + time.Duration(remaining/j.linkBps*1e9)
		downtime = time.Millisecond
	}
	sent := processed + remaining
	stats := JobStats{
		Type: JobCompleted, Operation: JobMigrationIn, Elapsed: elapsed,
		DataTotal: byteCount(j.total), DataProcessed: byteCount(sent),
		MemoryTotal: byteCount(j.total), MemoryProcessed: byteCount(sent),
		Iteration: 1 + uint64(max(sent-1, 0)/j.total), Downtime: downtime,
	}
	if memElapsed := now.Sub(memStart) + downtime; memElapsed > 0 {
		stats.DataRate = byteCount(sent / memElapsed.Seconds())
	}
	dst.mu.Lock()
	defer dst.mu.Unlock()
	p := dst.domains[name]
	if p == nil || p.incoming != j {
		return errorf(src.host, OpMigrate, name, KindInternal,
			"the domain was lost: it left the source, and its placeholder on the destination %s was gone at the switch-over", j.dstName)
	}
	if v := dst.volumes[j.volume.Name]; j.volume.Name != "" && v != nil {
		v.blocks = disk // the copy overwrites the whole volume, holes included
	}
	p.incoming = nil
	p.dom.State = StateRunning
	p.lastJob = &stats
	p.maxSpeed, p.maxDowntime, p.dirtyRate = maxSpeed, maxDowntime, uint64(dirty)
	dst.emitLocked(p.dom, EventDefined, "added")
	dst.emitLocked(p.dom, EventResumed, "migrated")
	return nil
}

// undo removes the destination's placeholder and frees the source's domain of the job; the
// guest runs on at the source.
func (j *memJob) undo() {
	dst, src, name := j.dst, j.src, j.name
	dst.mu.Lock()
	if p := dst.domains[name]; p != nil && p.incoming == j {
		dst.stopLocked(p, EventCrashed, "failed") // libvirt's stopped/failed, which Events reports so
	}
	dst.mu.Unlock()
	src.mu.Lock()
	if d := src.domains[name]; d != nil && d.job == j {
		d.job = nil
	}
	src.mu.Unlock()
}

// byteCount rounds a byte count of the model.
func byteCount(f float64) uint64 { return uint64(math.Round(max(f, 0))) }

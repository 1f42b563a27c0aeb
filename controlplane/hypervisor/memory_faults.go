package hypervisor

import (
	"context"
	"errors"
)

// fault is one injected misbehaviour of the next call of an operation.
type fault struct {
	err  error
	hang bool
}

// errorFor is the fault's error as the call returns it: an *Error gets the call's host,
// operation and domain where it left them empty; anything else is classified like a libvirt
// failure.
func (f fault) errorFor(host string, op Op, domain string) error {
	var e *Error
	if errors.As(f.err, &e) {
		c := *e
		if c.Host == "" {
			c.Host = host
		}
		if c.Op == "" {
			c.Op = op
		}
		if c.Domain == "" {
			c.Domain = domain
		}
		return &c
	}
	return newError(host, op, domain, f.err)
}

// popFaultLocked takes the next fault injected for op.
func (m *Memory) popFaultLocked(op Op) (fault, bool) {
	q := m.faults[op]
	if len(q) == 0 {
		return fault{}, false
	}
	f := q[0]
	if len(q) == 1 {
		delete(m.faults, op)
	} else {
		m.faults[op] = q[1:]
	}
	return f, true
}

func (m *Memory) pushFault(op Op, f fault) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.faults == nil {
		m.faults = make(map[Op][]fault)
	}
	m.faults[op] = append(m.faults[op], f)
}

// FailNext makes the next call of op fail with err, without doing anything. An *Error is returned
// as given (host, operation and domain filled in where empty), so a test picks the Kind; any
// other error is classified as libvirt's would be; nil means a KindInternal failure. Faults queue
// up: n calls of FailNext fail the next n calls.
func (m *Memory) FailNext(op Op, err error) {
	if err == nil {
		err = &Error{Kind: KindInternal, Message: "injected failure"}
	}
	m.pushFault(op, fault{err: err})
}

// HangNext makes the next call of op block, doing nothing, until its context ends (it then
// returns KindTimeout) or the connection drops (KindUnavailable), as a call to a stuck daemon
// does.
func (m *Memory) HangNext(op Op) { m.pushFault(op, fault{hang: true}) }

// DropConnection cuts the connection: event streams end, hung calls return, and every call fails
// as KindUnavailable until RestoreConnection. The domains live on, as on a real host whose
// daemon is unreachable.
func (m *Memory) DropConnection() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dropped || m.closed {
		return
	}
	m.dropped = true
	close(m.down)
	m.closeSubsLocked(nil, true)
}

// RestoreConnection ends a DropConnection: calls work again. Event streams that ended stay ended
// (subscribe again), as with a real reconnection.
func (m *Memory) RestoreConnection() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.dropped || m.closed {
		return
	}
	m.dropped = false
	m.down = make(chan struct{})
}

// Vanish makes a domain disappear behind the caller's back (as `virsh destroy; virsh undefine`
// would), emitting the events libvirt would: stopped (destroyed) if it ran, then undefined. Its
// volume stays, as it would on a real host.
func (m *Memory) Vanish(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.domainLocked("vanish", name)
	if err != nil {
		return err
	}
	if d.dom.State != StateShutOff {
		m.stopLocked(d, EventStopped, "destroyed")
	}
	delete(m.domains, name)
	m.emitLocked(d.dom, EventUndefined, "removed")
	return nil
}

// Crash makes a running domain's qemu die behind the caller's back: the domain is shut off
// (on_crash is destroy) and a crashed event is emitted.
func (m *Memory) Crash(name string) error {
	return m.stopBehind("crash", name, EventCrashed, "crashed")
}

// PowerOff makes a running guest shut itself down behind the caller's back, emitting shutdown
// then stopped, as libvirt does.
func (m *Memory) PowerOff(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.runningLocked("power-off", name)
	if err != nil {
		return err
	}
	m.emitLocked(d.dom, EventShutdown, "finished")
	m.stopLocked(d, EventStopped, "shutdown")
	return nil
}

func (m *Memory) stopBehind(op Op, name string, typ EventType, detail string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.runningLocked(op, name)
	if err != nil {
		return err
	}
	m.stopLocked(d, typ, detail)
	return nil
}

func (m *Memory) runningLocked(op Op, name string) (*memDomain, error) {
	d, err := m.domainLocked(op, name)
	if err != nil {
		return nil, err
	}
	if d.dom.State == StateShutOff {
		return nil, errorf(m.host, op, name, KindFailedPrecondition, "domain is not running")
	}
	return d, nil
}

// Calls returns how many calls of op were made (including failed ones), so that a test can check
// retries.
func (m *Memory) Calls(op Op) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[op]
}

// Used returns the vCPUs and memory that the running domains take.
func (m *Memory) Used() (cpus, memoryMiB int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.usedCPU, m.usedMiB
}

// Volumes returns the names of the host's volumes and their sizes in GiB (rounded up).
func (m *Memory) Volumes() map[string]int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]int64, len(m.volumes))
	for name, v := range m.volumes {
		out[name] = int64((v.Capacity + 1<<30 - 1) >> 30)
	}
	return out
}

// connection returns the channel that closes when the current connection drops, or an error if
// it is down now; the Connector's sessions use it. It counts as a call of OpConnect, and faults
// injected for OpConnect apply to it.
func (m *Memory) connection(ctx context.Context) (<-chan struct{}, error) {
	if err := m.begin(ctx, OpConnect, ""); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	return m.down, nil
}

package hypervisor

import (
	"context"
	"io"
	"time"
)

// handle is a Connector's host as a Hypervisor: each call goes to the current connection.
type handle struct{ h *hostConn }

var _ Hypervisor = (*handle)(nil)

// Host returns the host's name, as the Connector knows it (CopyVolume names it in errors).
func (x *handle) Host() string { return x.h.name }

// session returns the connection to use: the current one, or the outcome of the attempt that
// is running (waited for within ctx). While the host is unreachable it fails at once.
func (h *hostConn) session(ctx context.Context, op Op, domain string) (session, error) {
	for {
		h.mu.Lock()
		st, s, lastErr, changed := h.state, h.sess, h.lastErr, h.changed
		h.mu.Unlock()
		switch st {
		case stateConnected:
			return s, nil
		case stateStopped:
			return nil, &Error{Host: h.name, Op: op, Domain: domain, Kind: KindUnavailable, Err: errClosed,
				Message: "host forgotten or connector closed"}
		case stateBackoff:
			msg := "not connected"
			if lastErr != nil {
				msg += " (" + lastErr.Error() + ")"
			}
			return nil, &Error{Host: h.name, Op: op, Domain: domain, Kind: KindUnavailable, Err: errNotConnected, Message: msg}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, newError(h.name, op, domain, ctx.Err())
		}
	}
}

// observe learns from a call's outcome: any answer means the host is alive; a lost connection
// makes the loop check at once rather than at the next ping.
func (h *hostConn) observe(err error) {
	switch KindOf(err) {
	case KindUnavailable:
		h.poke()
	case KindTimeout:
	default:
		h.touch()
	}
}

// use runs f on the current connection.
func use[T any](ctx context.Context, h *hostConn, op Op, domain string, f func(session) (T, error)) (T, error) {
	s, err := h.session(ctx, op, domain)
	if err != nil {
		var zero T
		return zero, err
	}
	v, err := f(s)
	h.observe(err)
	return v, err
}

func (x *handle) NodeInfo(ctx context.Context) (NodeInfo, error) {
	return use(ctx, x.h, OpNodeInfo, "", func(s session) (NodeInfo, error) { return s.NodeInfo(ctx) })
}

func (x *handle) DefineAndStart(ctx context.Context, spec DomainSpec) (Domain, error) {
	return use(ctx, x.h, OpDefineAndStart, spec.Name, func(s session) (Domain, error) { return s.DefineAndStart(ctx, spec) })
}

func (x *handle) Redefine(ctx context.Context, spec DomainSpec) error {
	_, err := use(ctx, x.h, OpRedefine, spec.Name, func(s session) (struct{}, error) { return struct{}{}, s.Redefine(ctx, spec) })
	return err
}

func (x *handle) Start(ctx context.Context, name string) error {
	_, err := use(ctx, x.h, OpStart, name, func(s session) (struct{}, error) { return struct{}{}, s.Start(ctx, name) })
	return err
}

func (x *handle) Shutdown(ctx context.Context, name string) error {
	_, err := use(ctx, x.h, OpShutdown, name, func(s session) (struct{}, error) { return struct{}{}, s.Shutdown(ctx, name) })
	return err
}

func (x *handle) Destroy(ctx context.Context, name string) error {
	_, err := use(ctx, x.h, OpDestroy, name, func(s session) (struct{}, error) { return struct{}{}, s.Destroy(ctx, name) })
	return err
}

func (x *handle) Undefine(ctx context.Context, name string) error {
	_, err := use(ctx, x.h, OpUndefine, name, func(s session) (struct{}, error) { return struct{}{}, s.Undefine(ctx, name) })
	return err
}

func (x *handle) Lookup(ctx context.Context, name string) (Domain, error) {
	return use(ctx, x.h, OpLookup, name, func(s session) (Domain, error) { return s.Lookup(ctx, name) })
}

func (x *handle) List(ctx context.Context) ([]Domain, error) {
	return use(ctx, x.h, OpList, "", func(s session) ([]Domain, error) { return s.List(ctx) })
}

func (x *handle) Ping(ctx context.Context) error {
	_, err := use(ctx, x.h, OpPing, "", func(s session) (struct{}, error) { return struct{}{}, s.Ping(ctx) })
	return err
}

// Migrate implements Hypervisor. On a libvirt host the session (a Conn) dials a connection of
// its own for the migration and closes it afterwards, so that JobStats, AbortJob and
// SetMaxSpeed on the host's shared connection are not queued behind the call; when the
// Connector drops the host's connection, that one is cut with it (KindUnavailable; the daemon
// may carry on with the migration).
func (x *handle) Migrate(ctx context.Context, name string, dest MigrationTarget, p MigrationParams) error {
	_, err := use(ctx, x.h, OpMigrate, name, func(s session) (struct{}, error) {
		return struct{}{}, s.Migrate(ctx, name, dest, p)
	})
	return err
}

func (x *handle) JobStats(ctx context.Context, name string) (JobStats, error) {
	return use(ctx, x.h, OpJobStats, name, func(s session) (JobStats, error) { return s.JobStats(ctx, name) })
}

func (x *handle) StartPostCopy(ctx context.Context, name string) error {
	_, err := use(ctx, x.h, OpStartPostCopy, name, func(s session) (struct{}, error) { return struct{}{}, s.StartPostCopy(ctx, name) })
	return err
}

func (x *handle) AbortJob(ctx context.Context, name string) error {
	_, err := use(ctx, x.h, OpAbortJob, name, func(s session) (struct{}, error) { return struct{}{}, s.AbortJob(ctx, name) })
	return err
}

func (x *handle) SetMaxSpeed(ctx context.Context, name string, mibps uint64) error {
	_, err := use(ctx, x.h, OpSetMaxSpeed, name, func(s session) (struct{}, error) {
		return struct{}{}, s.SetMaxSpeed(ctx, name, mibps)
	})
	return err
}

func (x *handle) DomainVolumes(ctx context.Context, name string) ([]Volume, error) {
	return use(ctx, x.h, OpDomainVolumes, name, func(s session) ([]Volume, error) { return s.DomainVolumes(ctx, name) })
}

func (x *handle) PrepareVolume(ctx context.Context, v Volume) error {
	_, err := use(ctx, x.h, OpPrepareVolume, v.Name, func(s session) (struct{}, error) { return struct{}{}, s.PrepareVolume(ctx, v) })
	return err
}

func (x *handle) PoolVolumes(ctx context.Context) ([]Volume, error) {
	return use(ctx, x.h, OpPoolVolumes, "", func(s session) ([]Volume, error) { return s.PoolVolumes(ctx) })
}

func (x *handle) RemoveVolume(ctx context.Context, name string) error {
	_, err := use(ctx, x.h, OpRemoveVolume, name, func(s session) (struct{}, error) { return struct{}{}, s.RemoveVolume(ctx, name) })
	return err
}

// DownloadVolume implements Hypervisor. On a libvirt host the stream runs on a connection of
// its own (as Migrate), cut with the host's connection when the Connector drops it.
func (x *handle) DownloadVolume(ctx context.Context, name string, w io.Writer) error {
	_, err := use(ctx, x.h, OpDownloadVolume, name, func(s session) (struct{}, error) {
		return struct{}{}, s.DownloadVolume(ctx, name, w)
	})
	return err
}

// UploadVolume implements Hypervisor, on a connection of its own as DownloadVolume.
func (x *handle) UploadVolume(ctx context.Context, name string, offset, length uint64, r io.Reader) error {
	_, err := use(ctx, x.h, OpUploadVolume, name, func(s session) (struct{}, error) {
		return struct{}{}, s.UploadVolume(ctx, name, offset, length, r)
	})
	return err
}

// Close does nothing: the Connector owns the connection (see Connector.Forget and Close).
func (x *handle) Close() error { return nil }

// Events implements Hypervisor across reconnections: the stream subscribes on each new
// connection and then sends EventResync (first thing, and again after every reconnection),
// after which no event is lost until the next EventResync; the consumer re-reads the host with
// List when it gets one. The stream ends when ctx ends or the host is forgotten.
func (x *handle) Events(ctx context.Context) (<-chan Event, error) {
	h := x.h
	if h.ctx.Err() != nil {
		return nil, &Error{Host: h.name, Op: OpEvents, Kind: KindUnavailable, Err: errClosed, Message: "host forgotten or connector closed"}
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(h.ctx, cancel)
	out := make(chan Event)
	go func() {
		defer close(out)
		defer cancel()
		defer stop()
		h.follow(ctx, out)
	}()
	return out, nil
}

// follow subscribes on each connection in turn and forwards its events to out until ctx ends.
func (h *hostConn) follow(ctx context.Context, out chan<- Event) {
	var prev session
	for {
		s, err := h.nextSession(ctx, prev)
		if err != nil {
			return
		}
		prev = s
		in, err := s.Events(ctx)
		if err != nil {
			// The connection is dying (a new one will come), or the daemon refused: try again
			// shortly, on whatever connection is current then.
			h.observe(err)
			if !sleep(ctx, jitter(h.c.opts.BackoffMin, 0.2)) {
				return
			}
			prev = nil
			continue
		}
		if !send(ctx, out, Event{Host: h.name, Type: EventResync, Time: time.Now()}) {
			return
		}
		for ev := range in {
			if !send(ctx, out, ev) {
				return
			}
		}
	}
}

// nextSession waits until the host is connected through a session other than prev.
func (h *hostConn) nextSession(ctx context.Context, prev session) (session, error) {
	for {
		h.mu.Lock()
		st, s, changed := h.state, h.sess, h.changed
		h.mu.Unlock()
		if st == stateStopped {
			return nil, errClosed
		}
		if st == stateConnected && s != prev {
			return s, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func send(ctx context.Context, out chan<- Event, ev Event) bool {
	select {
	case out <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

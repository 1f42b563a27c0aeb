package hypervisor

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strconv"
)

// fake returns the in-memory host of a fake URI, making it on first use. It lives as long as the
// Connector, so that a reconnection finds the same domains, as with a real host.
func (c *Connector) fake(uri string, t target) (*Memory, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m, ok := c.fakes[uri]; ok {
		return m, nil
	}
	o, err := fakeOptions(uri, t.query)
	if err != nil {
		return nil, errorf(uri, OpConnect, "", KindInvalidArgument, "%v", err)
	}
	o.Resolve, o.Clock = c.resolveFake, c.opts.FakeClock
	m := NewMemory(o)
	c.fakes[uri] = m
	return m, nil
}

// resolveFake finds the destination of an in-memory migration among the Connector's fake hosts:
// the one made from exactly that URI, else the only one of that NAME (fake://NAME, whatever the
// parameters). It makes none: a destination must have been opened (or made by Fake) first.
func (c *Connector) resolveFake(uri string) (*Memory, error) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != FakeScheme {
		return nil, fmt.Errorf("%s is not an in-memory host (fake://NAME)", uri)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if m, ok := c.fakes[uri]; ok {
		return m, nil
	}
	var found *Memory
	for _, m := range c.fakes {
		if m.host != u.Host {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("several in-memory hosts are named %q: give the destination's whole URI", u.Host)
		}
		found = m
	}
	if found == nil {
		return nil, fmt.Errorf("no in-memory host %s in this connector (open it first)", uri)
	}
	return found, nil
}

// fakeOptions reads an in-memory host's options from its URI:
// fake://NAME?cpus=N&memory_mib=M&migration_mibps=B&hostname=H&uuid=U (all parameters
// optional; migration_mibps is MemoryOptions.MigrationMiBps).
func fakeOptions(uri string, q url.Values) (MemoryOptions, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return MemoryOptions{}, err
	}
	o := MemoryOptions{Host: u.Host, Hostname: q.Get("hostname"), UUID: q.Get("uuid")}
	if o.Host == "" {
		o.Host = uri
	}
	for _, p := range []struct {
		key string
		dst *int64
	}{{"cpus", &o.CPUs}, {"memory_mib", &o.MemoryMiB}, {"migration_mibps", &o.MigrationMiBps}} {
		s := q.Get(p.key)
		if s == "" {
			continue
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v <= 0 {
			return MemoryOptions{}, fmt.Errorf("fake URI %q: %s=%q: want a positive integer", uri, p.key, s)
		}
		*p.dst = v
	}
	return o, nil
}

// memSession is one Connector connection to an in-memory host: it dies when the host's
// connection is dropped (DropConnection) or when it is closed, like a libvirt connection, while
// the host and its domains live on. As with go-libvirt, closing it releases the calls still
// waiting on it (a HangNext) with KindUnavailable.
type memSession struct {
	m    *Memory
	down <-chan struct{}
	// life ends when the session is closed; calls made through it end with it.
	life context.Context
	end  context.CancelFunc
	// closed is guarded by m.mu.
	closed bool
}

var _ session = (*memSession)(nil)

// session opens a connection to m, which fails while m's connection is dropped.
func (m *Memory) session(ctx context.Context) (*memSession, error) {
	down, err := m.connection(ctx)
	if err != nil {
		return nil, err
	}
	life, end := context.WithCancel(context.Background())
	return &memSession{m: m, down: down, life: life, end: end}, nil
}

// check fails calls on a dead session even after the host's connection was restored: that is a
// new connection, not this one.
func (s *memSession) check(op Op, domain string) error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return s.deadLocked(op, domain)
}

// deadLocked is check with s.m.mu held.
func (s *memSession) deadLocked(op Op, domain string) error {
	if s.closed {
		return newError(s.m.host, op, domain, errClosed)
	}
	select {
	case <-s.down:
		return newError(s.m.host, op, domain, errNotConnected)
	default:
		return nil
	}
}

// sessionCall runs f on the host. Its context carries the session's end, so that a call hung
// by HangNext is released (as KindUnavailable) when the session is closed, as go-libvirt's calls
// are when their socket is cut.
func sessionCall[T any](ctx context.Context, s *memSession, op Op, domain string, f func(context.Context) (T, error)) (T, error) {
	if err := s.check(op, domain); err != nil {
		var zero T
		return zero, err
	}
	return f(context.WithValue(ctx, sessionEndKey{}, s.life.Done()))
}

// sessionEndKey keys the channel that closes when the session a call came through ends.
type sessionEndKey struct{}

// sessionEnd returns the end of the session ctx's call came through; nil (never) for a call
// made on the Memory itself.
func sessionEnd(ctx context.Context) <-chan struct{} {
	end, _ := ctx.Value(sessionEndKey{}).(<-chan struct{})
	return end
}

func (s *memSession) Disconnected() <-chan struct{} { return s.down }

func (s *memSession) NodeInfo(ctx context.Context) (NodeInfo, error) {
	return sessionCall(ctx, s, OpNodeInfo, "", s.m.NodeInfo)
}

func (s *memSession) DefineAndStart(ctx context.Context, spec DomainSpec) (Domain, error) {
	return sessionCall(ctx, s, OpDefineAndStart, spec.Name, func(ctx context.Context) (Domain, error) {
		return s.m.DefineAndStart(ctx, spec)
	})
}

func (s *memSession) Redefine(ctx context.Context, spec DomainSpec) error {
	return sessionCall0(ctx, s, OpRedefine, spec.Name, func(ctx context.Context) error { return s.m.Redefine(ctx, spec) })
}

func (s *memSession) Start(ctx context.Context, name string) error {
	return sessionCall0(ctx, s, OpStart, name, func(ctx context.Context) error { return s.m.Start(ctx, name) })
}

func (s *memSession) Shutdown(ctx context.Context, name string) error {
	return sessionCall0(ctx, s, OpShutdown, name, func(ctx context.Context) error { return s.m.Shutdown(ctx, name) })
}

func (s *memSession) Destroy(ctx context.Context, name string) error {
	return sessionCall0(ctx, s, OpDestroy, name, func(ctx context.Context) error { return s.m.Destroy(ctx, name) })
}

func (s *memSession) Undefine(ctx context.Context, name string) error {
	return sessionCall0(ctx, s, OpUndefine, name, func(ctx context.Context) error { return s.m.Undefine(ctx, name) })
}

func (s *memSession) Lookup(ctx context.Context, name string) (Domain, error) {
	return sessionCall(ctx, s, OpLookup, name, func(ctx context.Context) (Domain, error) { return s.m.Lookup(ctx, name) })
}

func (s *memSession) List(ctx context.Context) ([]Domain, error) {
	return sessionCall(ctx, s, OpList, "", s.m.List)
}

func (s *memSession) Ping(ctx context.Context) error {
	return sessionCall0(ctx, s, OpPing, "", s.m.Ping)
}

// Events subscribes for the session: the stream ends when the session does (Close, or the host's
// connection dropping), not only with ctx.
func (s *memSession) Events(ctx context.Context) (<-chan Event, error) {
	if err := s.check(OpEvents, ""); err != nil {
		return nil, err
	}
	return s.m.subscribe(ctx, s)
}

func (s *memSession) Migrate(ctx context.Context, name string, dest MigrationTarget, p MigrationParams) error {
	return sessionCall0(ctx, s, OpMigrate, name, func(ctx context.Context) error { return s.m.Migrate(ctx, name, dest, p) })
}

func (s *memSession) JobStats(ctx context.Context, name string) (JobStats, error) {
	return sessionCall(ctx, s, OpJobStats, name, func(ctx context.Context) (JobStats, error) { return s.m.JobStats(ctx, name) })
}

func (s *memSession) StartPostCopy(ctx context.Context, name string) error {
	return sessionCall0(ctx, s, OpStartPostCopy, name, func(ctx context.Context) error { return s.m.StartPostCopy(ctx, name) })
}

func (s *memSession) PoolVolumes(ctx context.Context) ([]Volume, error) {
	var out []Volume
	err := sessionCall0(ctx, s, OpPoolVolumes, "", func(ctx context.Context) error {
		var err error
		out, err = s.m.PoolVolumes(ctx)
		return err
	})
	return out, err
}

func (s *memSession) AbortJob(ctx context.Context, name string) error {
	return sessionCall0(ctx, s, OpAbortJob, name, func(ctx context.Context) error { return s.m.AbortJob(ctx, name) })
}

func (s *memSession) SetMaxSpeed(ctx context.Context, name string, mibps uint64) error {
	return sessionCall0(ctx, s, OpSetMaxSpeed, name, func(ctx context.Context) error { return s.m.SetMaxSpeed(ctx, name, mibps) })
}

func (s *memSession) DomainVolumes(ctx context.Context, name string) ([]Volume, error) {
	return sessionCall(ctx, s, OpDomainVolumes, name, func(ctx context.Context) ([]Volume, error) { return s.m.DomainVolumes(ctx, name) })
}

func (s *memSession) PrepareVolume(ctx context.Context, v Volume) error {
	return sessionCall0(ctx, s, OpPrepareVolume, v.Name, func(ctx context.Context) error { return s.m.PrepareVolume(ctx, v) })
}

func (s *memSession) RemoveVolume(ctx context.Context, name string) error {
	return sessionCall0(ctx, s, OpRemoveVolume, name, func(ctx context.Context) error { return s.m.RemoveVolume(ctx, name) })
}

func (s *memSession) DownloadVolume(ctx context.Context, name string, w io.Writer) error {
	return sessionCall0(ctx, s, OpDownloadVolume, name, func(ctx context.Context) error { return s.m.DownloadVolume(ctx, name, w) })
}

func (s *memSession) UploadVolume(ctx context.Context, name string, offset, length uint64, r io.Reader) error {
	return sessionCall0(ctx, s, OpUploadVolume, name, func(ctx context.Context) error {
		return s.m.UploadVolume(ctx, name, offset, length, r)
	})
}

func (s *memSession) abort() { _ = s.Close() }

// Close ends this session's event streams and calls; the host stays.
func (s *memSession) Close() error {
	s.m.mu.Lock()
	s.closed = true
	s.m.closeSubsLocked(s, false)
	s.m.mu.Unlock()
	s.end()
	return nil
}

// sessionCall0 is sessionCall for calls that return only an error.
func sessionCall0(ctx context.Context, s *memSession, op Op, domain string, f func(context.Context) error) error {
	_, err := sessionCall(ctx, s, op, domain, func(ctx context.Context) (struct{}, error) { return struct{}{}, f(ctx) })
	return err
}

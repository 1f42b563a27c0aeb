package hypervisor

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Defaults of Options.
const (
	DefaultPingInterval   = 5 * time.Second
	DefaultMaxMissedPings = 2
	DefaultBackoffMin     = 500 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
)

// Options configure a Connector. The zero value works (and refuses fake hosts).
type Options struct {
	// PingInterval is the pause between health checks of a connected host (default 5s; each is
	// jittered by up to ±10% so that many hosts do not ping in step).
	PingInterval time.Duration
	// PingTimeout bounds one check (default PingInterval).
	PingTimeout time.Duration
	// MaxMissedPings is how many checks in a row may fail (time out) before the connection is
	// dropped and made again (default 2). A connection that is known to be gone is made again at
	// once.
	MaxMissedPings int
	// BackoffMin and BackoffMax bound the pause between failed connection attempts: it starts at
	// BackoffMin (default 500ms) and doubles up to BackoffMax (default 30s), with ±20% jitter.
	BackoffMin, BackoffMax time.Duration
	// AllowFake lets fake:// URIs be served by in-memory hosts (tests and the no-libvirt dev
	// mode). Without it they are refused, so a production fleet never ends up "running" guests
	// in memory because of a mistyped URI.
	AllowFake bool
	// FakeClock is the Clock of the in-memory hosts (default the wall clock): their simulated
	// migrations take time by it, so a test with a ManualClock runs them at once.
	FakeClock Clock
	// Conn configures libvirt connections; its Host is set to each host's name.
	Conn ConnOptions
	// OnHealth, if set, is called when a host's reachability is first known and whenever it
	// changes. Calls for one host are serialized; calls for different hosts may run
	// concurrently. It must return quickly and must not call Forget or Close.
	OnHealth func(Health)
	// Logger gets reachability changes (info when reachable, warn when not) and, at debug, each
	// failed attempt; default slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.PingInterval <= 0 {
		o.PingInterval = DefaultPingInterval
	}
	if o.PingTimeout <= 0 {
		o.PingTimeout = o.PingInterval
	}
	if o.MaxMissedPings <= 0 {
		o.MaxMissedPings = DefaultMaxMissedPings
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = DefaultBackoffMin
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = DefaultBackoffMax
	}
	o.BackoffMax = max(o.BackoffMax, o.BackoffMin)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Conn.Logger == nil {
		o.Conn.Logger = o.Logger
	}
	return o
}

// Health is what the Connector knows of a host's reachability.
type Health struct {
	Host string
	URI  string
	// Reachable is true while a connection is up and answering.
	Reachable bool
	// LastSeen is when the host last answered (a ping or any call); zero if never.
	LastSeen time.Time
	// Since is when Reachable took its current value; zero while the first attempt runs.
	Since time.Time
	// Err is why the host is unreachable (the last failure); nil when reachable.
	Err error
	// Failures counts failed connection attempts in a row.
	Failures int
}

// Connector keeps one connection per host (keyed by name and URI), makes it again when it is
// lost (capped exponential backoff), checks it periodically, and reports each host's
// reachability. Its hosts are Hypervisors that outlive connections: a call made while a
// connection attempt runs waits for it (bounded by the call's context), a call made while the
// host is unreachable fails at once as KindUnavailable, and an event stream resubscribes after
// each reconnection. It is safe for concurrent use.
type Connector struct {
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	hosts  map[hostKey]*hostConn
	fakes  map[string]*Memory // in-memory hosts by URI, kept across reconnections
	closed bool
}

type hostKey struct{ name, uri string }

// NewConnector returns a Connector with no hosts.
func NewConnector(o Options) *Connector {
	o = o.withDefaults()
	return &Connector{opts: o, log: o.Logger, hosts: make(map[hostKey]*hostConn), fakes: make(map[string]*Memory)}
}

// Open returns the host name at uri, starting its connection in the background if it is not
// open yet (Open does not wait for it; the first call does). The same name and URI give the same
// host. A URI that cannot work (bad syntax, an unsupported transport, fake:// without AllowFake)
// is a KindInvalidArgument error.
func (c *Connector) Open(name, uri string) (Hypervisor, error) {
	if name == "" {
		return nil, errorf(uri, OpConnect, "", KindInvalidArgument, "a host needs a name")
	}
	t, err := parseURI(uri)
	if err != nil {
		return nil, errorf(name, OpConnect, "", KindInvalidArgument, "%v", err)
	}
	if t.transport == transportFake && !c.opts.AllowFake {
		return nil, errorf(name, OpConnect, "", KindInvalidArgument,
			"%s is an in-memory host, and this connector does not allow them (AllowFake is for tests and dev mode)", uri)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, newError(name, OpConnect, "", errClosed)
	}
	key := hostKey{name, uri}
	h, ok := c.hosts[key]
	if !ok {
		h = newHostConn(c, name, uri, t)
		c.hosts[key] = h
		go h.run()
	}
	return &handle{h: h}, nil
}

// Forget closes the host's connection and forgets it; its Hypervisors then fail as
// KindUnavailable and their event streams end. Forgetting an unknown host does nothing.
func (c *Connector) Forget(name, uri string) {
	c.mu.Lock()
	h, ok := c.hosts[hostKey{name, uri}]
	delete(c.hosts, hostKey{name, uri})
	c.mu.Unlock()
	if ok {
		h.stop()
	}
}

// Health returns what is known of a host's reachability.
func (c *Connector) Health(name, uri string) (Health, bool) {
	c.mu.Lock()
	h, ok := c.hosts[hostKey{name, uri}]
	c.mu.Unlock()
	if !ok {
		return Health{}, false
	}
	return h.health(), true
}

// Healths returns the reachability of every host, sorted by name then URI.
func (c *Connector) Healths() []Health {
	c.mu.Lock()
	hosts := make([]*hostConn, 0, len(c.hosts))
	for _, h := range c.hosts {
		hosts = append(hosts, h)
	}
	c.mu.Unlock()
	out := make([]Health, len(hosts))
	for i, h := range hosts {
		out[i] = h.health()
	}
	slices.SortFunc(out, func(a, b Health) int {
		return cmp.Or(cmp.Compare(a.Host, b.Host), cmp.Compare(a.URI, b.URI))
	})
	return out
}

// Fake returns the in-memory host behind a fake:// URI, making it if needed (with the capacity
// the URI's cpus and memory_mib parameters give), so that a test can inject faults or a dev
// setup can look inside. It needs AllowFake.
func (c *Connector) Fake(uri string) (*Memory, error) {
	t, err := parseURI(uri)
	if err != nil {
		return nil, errorf(uri, OpConnect, "", KindInvalidArgument, "%v", err)
	}
	if t.transport != transportFake || !c.opts.AllowFake {
		return nil, errorf(uri, OpConnect, "", KindInvalidArgument, "%s is not an in-memory host of this connector", uri)
	}
	return c.fake(uri, t)
}

// Close forgets every host and waits until their connections are closed. The Connector cannot
// be used afterwards.
func (c *Connector) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	hosts := c.hosts
	c.hosts = nil
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Go(h.stop)
	}
	wg.Wait()
	return nil
}

// dial connects to a host: a libvirt daemon, or an in-memory host for fake URIs.
func (c *Connector) dial(ctx context.Context, name, uri string, t target) (session, error) {
	if t.transport == transportFake {
		m, err := c.fake(uri, t)
		if err != nil {
			return nil, err
		}
		s, err := m.session(ctx)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return s, nil
	}
	o := c.opts.Conn
	o.Host = name
	conn, err := Dial(ctx, uri, o)
	if err != nil {
		return nil, err
	}
	return conn, nil
}

// session is one connection to a host, as the Connector drives it.
type session interface {
	Hypervisor
	// Disconnected is closed when the connection is lost or closed.
	Disconnected() <-chan struct{}
	// abort closes the connection at once, without waiting for a daemon that stopped answering.
	abort()
}

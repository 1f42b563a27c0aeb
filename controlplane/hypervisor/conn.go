package hypervisor

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"libvirt.org/go/libvirtxml"
)

// Defaults of ConnOptions.
const (
	DefaultPool         = "devfleet"
	DefaultPoolDir      = "/var/lib/libvirt/devfleet"
	DefaultVolumeFormat = "raw"
	DefaultSerialDir    = "/var/log/libvirt/qemu"
	defaultDialTimeout  = 10 * time.Second
	defaultShutdownPoll = 200 * time.Millisecond
	// closeGrace is how long Close waits for the daemon to acknowledge before it cuts the socket.
	closeGrace = 2 * time.Second
	// rollbackTimeout bounds the undo of a failed DefineAndStart, which runs even when the
	// caller's context has ended.
	rollbackTimeout = 30 * time.Second
)

// ConnOptions configure a connection to a libvirt daemon. The zero value works.
type ConnOptions struct {
	// Host names the host in errors, events and logs; default the URI.
	Host string
	// Pool is the storage pool of devfleet's volumes on the host (default "devfleet"), made as a
	// directory pool at PoolDir (default /var/lib/libvirt/devfleet) the first time a domain needs
	// a disk.
	Pool    string
	PoolDir string
	// VolumeFormat is "raw" (default; sparse files, needs nothing but libvirt) or "qcow2" (needs
	// qemu-img on the host).
	VolumeFormat string
	// SerialDir is where guests' serial output goes (<name>.serial.log), as the daemon sees it;
	// default /var/log/libvirt/qemu; "-" gives guests no serial port.
	SerialDir string
	// DialTimeout bounds connecting and the protocol handshake (default 10s).
	DialTimeout time.Duration
	// ShutdownPoll is how often Shutdown checks whether the guest is off (default 200ms).
	ShutdownPoll time.Duration
	// Logger gets warnings (a failed rollback); default slog.Default().
	Logger *slog.Logger
}

func (o ConnOptions) withDefaults(uri string) ConnOptions {
	if o.Host == "" {
		o.Host = uri
	}
	if o.Pool == "" {
		o.Pool = DefaultPool
	}
	if o.PoolDir == "" {
		o.PoolDir = DefaultPoolDir
	}
	if o.VolumeFormat == "" {
		o.VolumeFormat = DefaultVolumeFormat
	}
	switch o.SerialDir {
	case "":
		o.SerialDir = DefaultSerialDir
	case "-":
		o.SerialDir = ""
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = defaultDialTimeout
	}
	if o.ShutdownPoll <= 0 {
		o.ShutdownPoll = defaultShutdownPoll
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Conn is a Hypervisor over one connection to a libvirt daemon (libvirt's RPC protocol through
// go-libvirt). go-libvirt's calls take no context: each call runs in its own goroutine and Conn
// returns when ctx ends, leaving the call to finish in the background. A call in flight when the
// connection drops returns KindUnavailable. Conn does not reconnect; the Connector does.
type Conn struct {
	host   string
	uri    string
	opts   ConnOptions
	layout layout
	log    *slog.Logger

	l      *libvirt.Libvirt
	dialer *trackingDialer
	// lost is closed when the connection is lost or closed.
	lost   <-chan struct{}
	closed atomic.Bool
	close  sync.Once

	// poolMu serializes making the storage pool.
	poolMu sync.Mutex

	// dedMu guards dedConns, the dedicated connections of the calls under way that have one
	// (Migrate, DownloadVolume, UploadVolume), which are cut when this connection closes.
	dedMu    sync.Mutex
	dedConns map[*Conn]struct{}
}

var _ Hypervisor = (*Conn)(nil)

// Dial connects to the libvirt daemon at uri: qemu+unix:///system?socket=PATH (or
// qemu:///system for the default socket) or qemu+tcp://HOST[:PORT]/system. The connection is
// checked with one call before Dial returns.
func Dial(ctx context.Context, uri string, o ConnOptions) (*Conn, error) {
	o = o.withDefaults(uri)
	t, err := parseURI(uri)
	if err != nil {
		return nil, errorf(o.Host, OpConnect, "", KindInvalidArgument, "%v", err)
	}
	var inner socket.Dialer
	switch t.transport {
	case transportUnix:
		inner = dialers.NewLocal(dialers.WithSocket(t.socket), dialers.WithLocalTimeout(o.DialTimeout))
	case transportTCP:
		host, port, _ := net.SplitHostPort(t.addr)
		inner = dialers.NewRemote(host, dialers.UsePort(port), dialers.WithRemoteTimeout(o.DialTimeout))
	default:
		return nil, errorf(o.Host, OpConnect, "", KindInvalidArgument,
			"%s is an in-memory host: only a Connector with AllowFake serves it", uri)
	}
	d := &trackingDialer{inner: inner}
	l := libvirt.NewWithDialer(d)

	ctx, cancel := context.WithTimeout(ctx, o.DialTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		err := l.ConnectToURI(libvirt.ConnectURI(t.driver))
		if err == nil {
			// One call checks the connection, and orders go-libvirt's connection state before
			// anything that reads it.
			_, err = l.ConnectGetLibVersion()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			d.cut()
			return nil, newError(o.Host, OpConnect, "", err)
		}
	case <-ctx.Done():
		// Cutting the socket makes the handshake fail; a dial still in progress is bounded by
		// DialTimeout, and whatever it opens is closed when it returns.
		d.cut()
		go func() {
			if <-done == nil {
				d.cut()
			}
		}()
		return nil, newError(o.Host, OpConnect, "", fmt.Errorf("connect: %w", ctx.Err()))
	}
	return &Conn{
		host: o.Host, uri: uri, opts: o, log: o.Logger,
		layout: layout{pool: o.Pool, volumeFormat: o.VolumeFormat, serialDir: o.SerialDir},
		l:      l, dialer: d, lost: l.Disconnected(),
	}, nil
}

// Host returns the host's name.
func (c *Conn) Host() string { return c.host }

// Disconnected returns a channel that is closed when the connection is lost or closed.
func (c *Conn) Disconnected() <-chan struct{} { return c.lost }

// Close implements Hypervisor. It says goodbye to the daemon, and cuts the socket if the daemon
// does not answer within a short grace (a hung daemon must not hang Close); calls in flight
// then return KindUnavailable. The connection is gone when Close returns, so it returns nil.
func (c *Conn) Close() error {
	c.shut(closeGrace)
	return nil
}

// abort cuts the socket without a goodbye: for a daemon that stopped answering.
func (c *Conn) abort() { c.shut(0) }

// shut closes the connection, waiting up to grace for the daemon to acknowledge, and cuts the
// dedicated connections of the calls under way (see dedicated).
func (c *Conn) shut(grace time.Duration) {
	c.close.Do(func() {
		c.closed.Store(true)
		c.cutDedicated()
		if grace > 0 {
			done := make(chan error, 1)
			go func() { done <- c.l.Disconnect() }()
			select {
			case err := <-done:
				if err != nil && !isConnectionError(err) {
					c.log.Debug("libvirt disconnect", "host", c.host, "error", err)
				}
			case <-time.After(grace):
				c.log.Debug("libvirt daemon did not acknowledge the disconnect; cutting the socket", "host", c.host)
			}
		}
		c.dialer.cut()
	})
}

// call runs f, one or more go-libvirt calls, bounded by ctx. f keeps running in the background
// when ctx ends first.
func call[T any](ctx context.Context, c *Conn, op Op, domain string, f func(*libvirt.Libvirt) (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, newError(c.host, op, domain, err)
	}
	if c.closed.Load() {
		return zero, newError(c.host, op, domain, errClosed)
	}
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f(c.l)
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return zero, newError(c.host, op, domain, r.err)
		}
		return r.v, nil
	case <-ctx.Done():
		return zero, newError(c.host, op, domain, ctx.Err())
	}
}

// call0 is call for calls that return only an error.
func call0(ctx context.Context, c *Conn, op Op, domain string, f func(*libvirt.Libvirt) error) error {
	_, err := call(ctx, c, op, domain, func(l *libvirt.Libvirt) (struct{}, error) { return struct{}{}, f(l) })
	return err
}

// Ping implements Hypervisor with the cheapest call there is.
func (c *Conn) Ping(ctx context.Context) error {
	return call0(ctx, c, OpPing, "", func(l *libvirt.Libvirt) error {
		_, err := l.ConnectGetLibVersion()
		return err
	})
}

// NodeInfo implements Hypervisor: node info for CPUs and memory, the capabilities for the host
// UUID (libvirt's sysinfo needs SMBIOS, which hosts without it lack).
func (c *Conn) NodeInfo(ctx context.Context) (NodeInfo, error) {
	return call(ctx, c, OpNodeInfo, "", func(l *libvirt.Libvirt) (NodeInfo, error) {
		model, memKiB, cpus, _, _, _, _, _, err := l.NodeGetInfo()
		if err != nil {
			return NodeInfo{}, err
		}
		hostname, err := l.ConnectGetHostname()
		if err != nil {
			return NodeInfo{}, err
		}
		capsXML, err := l.ConnectGetCapabilities()
		if err != nil {
			return NodeInfo{}, err
		}
		var caps libvirtxml.Caps
		if err := caps.Unmarshal(capsXML); err != nil {
			return NodeInfo{}, fmt.Errorf("parse capabilities: %w", err)
		}
		return NodeInfo{
			Hostname: hostname, UUID: caps.Host.UUID, CPUs: int64(cpus),
			MemoryMiB: int64(memKiB / 1024), CPUModel: cString(model[:]),
		}, nil
	})
}

// cString converts a NUL-terminated C char array.
func cString(b []int8) string {
	s := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

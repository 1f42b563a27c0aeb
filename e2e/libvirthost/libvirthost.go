// Package libvirthost runs a fleet of independent libvirtd "hosts" on one machine, so that tests
// and `make run` can drive real libvirt (define, start, live-migrate guests) without real hosts.
//
// Each host is a libvirtd in its own network namespace and its own mount namespace: its
// /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt are bind
// mounts of directories under Options.Dir, and it has its own hostname and host UUID. The hosts'
// namespaces are joined by veth pairs to a bridge in a "switch" namespace of the fleet, so the
// daemons reach each other over TCP (peer-to-peer migration) while nothing is added to the
// machine's root network namespace. Clients in the root namespace reach each daemon through its
// unix socket (Host.URI).
//
// Each libvirtd runs in the foreground under a small reaper (a Perl one-screen script; perl-base
// is Essential in Debian) that is the child subreaper of everything the daemon starts, so that
// killed qemu processes are reaped at once rather than whenever the machine's init gets to it.
//
// Guests are QEMU TCG (`<domain type='qemu'>`): no KVM is needed. Everything runs as root.
//
// What a fleet starts is recorded in Options.Dir, so that Fleet.Stop, Load(dir).Stop (as in
// `hostsctl down`) and a later Start with the same Dir after a crash clean it up. Stop only ends
// processes that live in the fleet's own network namespaces; it leaves the hosts' directories,
// with their logs, in Dir.
package libvirthost

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

const (
	// maxHosts keeps host addresses inside one /24 (hostOctetBase+N <= 254).
	maxHosts = 200
	// maxSocketPath is the longest unix socket path the kernel accepts (sun_path is 108 bytes,
	// NUL included).
	maxSocketPath = 107
	// longestSocketName is the longest socket name libvirtd creates in its run dir; clients may
	// dial any of them (virsh, virt-admin), so it bounds how long Dir may be.
	longestSocketName = "libvirt-admin-sock"
	// stopTimeout bounds the cleanup of a failed Start.
	stopTimeout = 60 * time.Second
)

// Options for a fleet of local libvirt hosts.
type Options struct {
	// N is the number of hosts, >= 1.
	N int
	// Dir is the base directory for the hosts' files and the fleet's record; required. Start
	// replaces Dir/h1..Dir/hN.
	Dir string
	// Prefix names the fleet's network namespaces (default: "dfh" + a short random id); must be
	// unique among running fleets.
	Prefix string
}

// Host is one running libvirtd.
type Host struct {
	// Name is "h1", "h2", ...
	Name string
	// URI is what the control plane dials: qemu+unix:///system?socket=<Dir>/<Name>/run/libvirt-sock.
	URI string
	// Socket is the unix socket path in URI, for clients that dial the socket directly.
	Socket string
	// Addr is the host's private address inside its network namespace (e.g. 10.210.0.11).
	Addr string
	// TCPURI is qemu+tcp://<Addr>/system, reachable only from other hosts' namespaces: the
	// destination URI of a peer-to-peer migration.
	TCPURI string
	// Netns is the host's network namespace; it is also the daemon's hostname.
	Netns string
	// Dir holds the host's etc, run, lib, cache and log directories.
	Dir string
	// UUID is the daemon's host_uuid (libvirt refuses to migrate between equal UUIDs).
	UUID string
	// Pid is the libvirtd process id.
	Pid int
}

// Fleet is a set of running hosts started by Start or found by Load.
type Fleet struct {
	dir string

	mu      sync.Mutex
	rec     record
	stopped bool
}

// Start starts o.N hosts. It is everything or nothing: on error it tears down what it made. A
// fleet recorded in o.Dir by an earlier run that was not stopped is stopped first.
func Start(ctx context.Context, o Options) (*Fleet, error) {
	o, err := o.normalize()
	if err != nil {
		return nil, err
	}
	if err := stopRecorded(ctx, o.Dir); err != nil {
		return nil, fmt.Errorf("libvirthost: stop the fleet left in %s: %w", o.Dir, err)
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("libvirthost: start: %w", err)
	}
	f := &Fleet{dir: o.Dir, rec: plan(o)}
	if err := f.start(ctx); err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
		defer cancel()
		if serr := f.Stop(cctx); serr != nil {
			err = errors.Join(err, fmt.Errorf("libvirthost: tear down after a failed start: %w", serr))
		}
		return nil, err
	}
	return f, nil
}

// Load returns the fleet recorded in dir, so that another process (hostsctl down) can list or
// stop it. The error wraps fs.ErrNotExist when dir records no fleet.
func Load(dir string) (*Fleet, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("libvirthost: load %s: %w", dir, err)
	}
	rec, err := readRecord(abs)
	if err != nil {
		return nil, fmt.Errorf("libvirthost: load %s: %w", dir, err)
	}
	return &Fleet{dir: abs, rec: rec}, nil
}

// Hosts returns the fleet's hosts in order h1..hN.
func (f *Fleet) Hosts() []Host {
	f.mu.Lock()
	defer f.mu.Unlock()
	hosts := make([]Host, len(f.rec.Hosts))
	for i, h := range f.rec.Hosts {
		hosts[i] = h.host()
	}
	return hosts
}

// Prefix returns the prefix of the fleet's network namespace names.
func (f *Fleet) Prefix() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rec.Prefix
}

// Stop destroys running guests, ends the daemons and any qemu they left, and deletes the
// namespaces. It is idempotent; once it succeeds the record in Dir is gone.
func (f *Fleet) Stop(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return nil
	}
	if err := f.rec.stop(ctx); err != nil {
		return fmt.Errorf("libvirthost: stop %s: %w", f.rec.Prefix, err)
	}
	if err := removeRecord(f.dir); err != nil {
		return fmt.Errorf("libvirthost: stop %s: %w", f.rec.Prefix, err)
	}
	f.stopped = true
	return nil
}

// start records the plan, then builds the network and starts the daemons.
func (f *Fleet) start(ctx context.Context) error {
	if err := writeRecord(f.dir, f.rec); err != nil {
		return fmt.Errorf("libvirthost: start: %w", err)
	}
	for _, h := range f.rec.Hosts {
		if err := prepareHostDir(h); err != nil {
			return fmt.Errorf("libvirthost: start %s: %w", h.Name, err)
		}
	}
	if err := f.setupNetwork(ctx); err != nil {
		return fmt.Errorf("libvirthost: start: %w", err)
	}
	procs, err := startDaemons(ctx, f.rec.Hosts)
	for i, p := range procs {
		f.rec.Hosts[i].Pid, f.rec.Hosts[i].Reaper = p.daemon, p.reaper
	}
	if werr := writeRecord(f.dir, f.rec); werr != nil {
		err = errors.Join(err, fmt.Errorf("libvirthost: start: %w", werr))
	}
	return err
}

// startDaemons launches every host's libvirtd in parallel and waits until each answers; it
// returns the processes started (0 where unknown) and every failure.
func startDaemons(ctx context.Context, hosts []hostRecord) ([]daemonProcs, error) {
	procs := make([]daemonProcs, len(hosts))
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() {
			procs[i], errs[i] = startDaemon(ctx, h)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("libvirthost: start %s: %w", h.Name, errs[i])
			}
		})
	}
	wg.Wait()
	return procs, errors.Join(errs...)
}

// normalize checks o and fills in the defaults.
func (o Options) normalize() (Options, error) {
	if o.N < 1 || o.N > maxHosts {
		return o, fmt.Errorf("libvirthost: options: N is %d, want 1..%d", o.N, maxHosts)
	}
	if o.Dir == "" {
		return o, errors.New("libvirthost: options: Dir is required")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return o, fmt.Errorf("libvirthost: options: Dir: %w", err)
	}
	o.Dir = dir
	if err := checkDir(dir, o.N); err != nil {
		return o, fmt.Errorf("libvirthost: options: %w", err)
	}
	if o.Prefix == "" {
		o.Prefix = "dfh" + randomHex(3)
	}
	if err := checkPrefix(o.Prefix); err != nil {
		return o, fmt.Errorf("libvirthost: options: %w", err)
	}
	return o, nil
}

// checkDir rejects directories that would need quoting in a URI or make a socket path too long.
func checkDir(dir string, n int) error {
	for _, r := range dir {
		if !isSafePathRune(r) {
			return fmt.Errorf("Dir %q: only letters, digits and /._+- are allowed (it goes into a libvirt URI)", dir)
		}
	}
	longest := filepath.Join(dir, hostName(n), "run", longestSocketName)
	if len(longest) > maxSocketPath {
		return fmt.Errorf("Dir %q is too long: %s is %d bytes, unix sockets allow %d", dir, longest, len(longest), maxSocketPath)
	}
	return nil
}

func isSafePathRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		r == '/' || r == '.' || r == '_' || r == '+' || r == '-'
}

// checkPrefix keeps namespace names and hostnames short and plain.
func checkPrefix(p string) error {
	if len(p) > 20 {
		return fmt.Errorf("Prefix %q is longer than 20 bytes", p)
	}
	for i, r := range p {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' && i > 0
		if !ok {
			return fmt.Errorf("Prefix %q: want lower-case letters, digits and inner dashes", p)
		}
	}
	return nil
}

// plan names and addresses the fleet's namespaces and hosts.
func plan(o Options) record {
	rec := record{Prefix: o.Prefix, Switch: o.Prefix + "-sw"}
	for i := 1; i <= o.N; i++ {
		name := hostName(i)
		rec.Hosts = append(rec.Hosts, hostRecord{
			Name:  name,
			Netns: o.Prefix + "-" + name,
			Dir:   filepath.Join(o.Dir, name),
			Addr:  hostAddr(i),
			UUID:  randomUUID(),
			Port:  switchPort(i),
		})
	}
	return rec
}

func hostName(i int) string { return "h" + strconv.Itoa(i) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

// randomUUID returns a version 4 UUID.
func randomUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

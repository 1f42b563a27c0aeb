package libvirthost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

const (
	// subnetPrefix and hostOctetBase give host i the address 10.210.0.(10+i). The subnet only
	// exists inside a fleet's namespaces, so every fleet uses the same one.
	subnetPrefix  = "10.210.0."
	hostOctetBase = 10
	subnetBits    = "/24"
	// bridgeName is the bridge in the switch namespace; hostIface the host's end of its veth.
	bridgeName = "br0"
	hostIface  = "eth0"
	// netnsDir is where `ip netns` keeps named network namespaces.
	netnsDir = "/run/netns"
	// netnsLock serialises namespace creation across processes: the first `ip netns add` on a
	// machine mounts netnsDir, and two doing it at once can stack mounts and hide a namespace.
	netnsLock = "/run/lock/devfleet-libvirthost.lock"
	// ipTimeout bounds one `ip` command.
	ipTimeout = 10 * time.Second
)

func hostAddr(i int) string { return subnetPrefix + strconv.Itoa(hostOctetBase+i) }

// switchPort names host i's end of the veth in the switch namespace.
func switchPort(i int) string { return "p" + hostName(i) }

// setupNetwork creates the switch namespace with its bridge and one namespace per host joined to
// the bridge, recording each namespace as soon as it exists.
func (f *Fleet) setupNetwork(ctx context.Context) error {
	unlock, err := lockFile(ctx, netnsLock)
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	defer unlock()
	sw := f.rec.Switch
	if err := f.addNetns(ctx, sw); err != nil {
		return err
	}
	if err := ipSteps(ctx,
		[]string{"-n", sw, "link", "add", bridgeName, "type", "bridge"},
		[]string{"-n", sw, "link", "set", bridgeName, "up"},
	); err != nil {
		return fmt.Errorf("network: switch: %w", err)
	}
	for _, h := range f.rec.Hosts {
		if err := f.addNetns(ctx, h.Netns); err != nil {
			return err
		}
		if err := ipSteps(ctx,
			[]string{"link", "add", hostIface, "netns", h.Netns, "type", "veth", "peer", "name", h.Port, "netns", sw},
			[]string{"-n", sw, "link", "set", h.Port, "master", bridgeName, "up"},
			[]string{"-n", h.Netns, "addr", "add", h.Addr + subnetBits, "dev", hostIface},
			[]string{"-n", h.Netns, "link", "set", hostIface, "up"},
		); err != nil {
			return fmt.Errorf("network: %s: %w", h.Name, err)
		}
	}
	return nil
}

// addNetns creates the network namespace name with its loopback up, and records it. It fails
// when name exists: that is another fleet's.
func (f *Fleet) addNetns(ctx context.Context, name string) error {
	if _, err := run(ctx, ipTimeout, "ip", "netns", "add", name); err != nil {
		if _, serr := os.Stat(filepath.Join(netnsDir, name)); serr == nil {
			return fmt.Errorf("network: namespace %s exists: is the prefix %q used by a running fleet? %w", name, f.rec.Prefix, err)
		}
		return fmt.Errorf("network: %w", err)
	}
	f.rec.Made = append(f.rec.Made, name)
	if err := writeRecord(f.dir, f.rec); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	if _, err := run(ctx, ipTimeout, "ip", "-n", name, "link", "set", "lo", "up"); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	return nil
}

// ipSteps runs `ip` once per argument list, stopping at the first failure.
func ipSteps(ctx context.Context, steps ...[]string) error {
	for _, args := range steps {
		if _, err := run(ctx, ipTimeout, "ip", args...); err != nil {
			return err
		}
	}
	return nil
}

// deleteNetns removes the network namespace name if it exists.
func deleteNetns(ctx context.Context, name string) error {
	if _, err := os.Stat(filepath.Join(netnsDir, name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	_, err := run(ctx, ipTimeout, "ip", "netns", "del", name)
	return err
}

// lockFile takes an exclusive flock on path, waiting as long as ctx allows; the returned
// function releases it.
func lockFile(ctx context.Context, path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	for {
		err := syscall.Flock(int(fh.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { fh.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			fh.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			fh.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
	}
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

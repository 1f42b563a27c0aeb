package libvirthost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// readyTimeout bounds how long a daemon may take to answer after launch.
	readyTimeout = 30 * time.Second
	// virshTimeout bounds one virsh call made while starting or stopping.
	virshTimeout = 15 * time.Second
	// daemonGrace is how long a daemon gets to exit on SIGTERM before it is killed.
	daemonGrace = 3 * time.Second
	// sweepTimeout bounds the wait for killed processes to go.
	sweepTimeout = 10 * time.Second
	// logTailLines is how much of a daemon's logs an error quotes.
	logTailLines = 25
	// pidFile is the daemon's pid file, relative to the host's run directory.
	pidFile = "libvirtd.pid"
)

// launchScript runs in the host's fresh mount and UTS namespaces: $1 hostname, $2 host dir,
// $3 perl, $4 the reaper script, $5 the prctl syscall number, $6 libvirtd, then pairs of
// (subdirectory, mount point). It ends as the reaper, whose child is libvirtd in the foreground.
const launchScript = `hostname "$1"
dir=$2 perl=$3 reaper=$4 prctl=$5 libvirtd=$6
shift 6
while [ $# -gt 0 ]; do mount --bind "$dir/$1" "$2"; shift 2; done
exec "$perl" -e "$reaper" "$prctl" "$libvirtd" --listen --pid-file /run/libvirt/` + pidFile + `
`

// reaperScript makes itself the child subreaper of the command it runs (libvirtd), so that the
// processes libvirtd daemonizes (qemu, and the qemu it probes for capabilities) are reaped the
// moment they exit. Otherwise they become zombies of the machine's init, and libvirt, which
// waits for a killed qemu to vanish, waits as long as init takes to reap: 2 s per qemu where
// init reaps lazily (a capabilities probe then takes 8 s), and forever in a container whose
// init never reaps. It is Perl because perl-base is Essential in Debian and a reaper must
// outlive the Go process that started the host. ARGV: prctl syscall number, command...
const reaperScript = `use strict;
my $nr = shift @ARGV;
syscall($nr, 36, 1, 0, 0, 0) == 0 or die "libvirthost reaper: prctl(PR_SET_CHILD_SUBREAPER): $!\n";
my $child = fork() // die "libvirthost reaper: fork: $!\n";
if ($child == 0) { exec { $ARGV[0] } @ARGV or die "libvirthost reaper: exec $ARGV[0]: $!\n" }
$SIG{TERM} = $SIG{INT} = sub { kill 'TERM', $child };
my $status = 0;
while (1) {
  my $pid = wait();
  if ($pid == -1) { next if $!{EINTR}; last }
  $status = $? if $pid == $child;
}
exit($status & 127 ? 128 + ($status & 127) : $status >> 8);
`

// libvirtdConf is the daemon's configuration: TCP without auth on the private address (for
// peer-to-peer migration), unix socket for root only, its own host UUID, warnings to a file.
const libvirtdConf = `listen_tls = 0
listen_tcp = 1
listen_addr = "%[1]s"
auth_tcp = "none"
auth_unix_rw = "none"
auth_unix_ro = "none"
unix_sock_group = "root"
unix_sock_rw_perms = "0770"
host_uuid = "%[2]s"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
`

// qemuConf keeps the daemons out of the machine's cgroup tree (cgroupfs is not per namespace:
// two hosts would share machine/qemu-1-<name>), writes guest output to files (no virtlogd),
// uses no security driver, and migrates over the private address.
const qemuConf = `cgroup_controllers = [ ]
stdio_handler = "file"
security_driver = "none"
user = "root"
group = "root"
dynamic_ownership = 0
migration_address = "%[1]s"
migration_host = "%[1]s"
`

// mounts returns what is bind-mounted in each host's mount namespace: (subdirectory of the
// host's Dir, system directory libvirt uses).
func mounts() [][2]string {
	return [][2]string{
		{"etc", "/etc/libvirt"},
		{"run", "/run/libvirt"},
		{"lib", "/var/lib/libvirt"},
		{"cache", "/var/cache/libvirt"},
		{"log", "/var/log/libvirt"},
	}
}

// prepareHostDir makes a fresh host directory with the daemon's configuration, and the mount
// points in the root filesystem.
func prepareHostDir(h hostRecord) error {
	if err := os.RemoveAll(h.Dir); err != nil {
		return fmt.Errorf("prepare %s: %w", h.Dir, err)
	}
	for _, m := range mounts() {
		for _, d := range []string{filepath.Join(h.Dir, m[0]), m[1]} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("prepare: %w", err)
			}
		}
	}
	// Only what libvirtd needs: no networks (so no dnsmasq), no autostart of anything.
	for _, d := range []string{"etc/qemu", "log/qemu"} {
		if err := os.MkdirAll(filepath.Join(h.Dir, d), 0o755); err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
	}
	files := map[string]string{
		"etc/libvirtd.conf": fmt.Sprintf(libvirtdConf, h.Addr, h.UUID),
		"etc/qemu.conf":     fmt.Sprintf(qemuConf, h.Addr),
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(h.Dir, name), []byte(text), 0o644); err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
	}
	return nil
}

// daemonProcs are the processes of one host's daemon.
type daemonProcs struct{ daemon, reaper int }

// startDaemon launches h's libvirtd in its namespaces and waits until it answers.
func startDaemon(ctx context.Context, h hostRecord) (daemonProcs, error) {
	reaper, exited, err := launch(h)
	if err != nil {
		return daemonProcs{}, fmt.Errorf("launch libvirtd: %w%s", err, logTail(h))
	}
	procs := daemonProcs{reaper: reaper}
	err = waitReady(ctx, h, exited)
	procs.daemon = readPidFile(h.pidFile())
	if err != nil {
		return procs, fmt.Errorf("libvirtd did not answer on %s: %w%s", h.socket(), err, logTail(h))
	}
	if procs.daemon == 0 {
		return procs, fmt.Errorf("libvirtd answers but wrote no pid to %s", h.pidFile())
	}
	return procs, nil
}

// launch starts, in h's network namespace and in new mount and UTS namespaces with h's
// directories mounted, the reaper running libvirtd. The reaper outlives the call (and the
// caller: it has its own session, so a Ctrl-C meant for the caller does not reach it); launch
// returns its pid and a channel that reports its end.
func launch(h hostRecord) (int, <-chan error, error) {
	out, err := os.OpenFile(h.startLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, nil, err
	}
	defer out.Close() // the child has its own descriptors
	args := []string{"netns", "exec", h.Netns,
		tool("unshare"), "--mount", "--uts", "--propagation", "private",
		"/bin/sh", "-ec", launchScript, "sh",
		h.Netns, h.Dir, tool("perl"), reaperScript, strconv.Itoa(syscall.SYS_PRCTL), tool("libvirtd")}
	for _, m := range mounts() {
		args = append(args, m[0], m[1])
	}
	// No context: cancelling one would kill the daemon, which must run until Stop.
	cmd := exec.Command(tool("ip"), args...)
	cmd.Env = commandEnv()
	cmd.Stdout, cmd.Stderr = out, out // files, so Wait does not wait for copies
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, nil, fmt.Errorf("ip netns exec %s ... libvirtd: %w", h.Netns, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	return cmd.Process.Pid, exited, nil
}

// waitReady polls until `virsh hostname` through h's socket returns h's hostname, the daemon
// exits, or readyTimeout passes.
func waitReady(ctx context.Context, h hostRecord, exited <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var last error
	for {
		if _, err := os.Stat(h.socket()); err == nil {
			name, err := run(ctx, virshTimeout, "virsh", "-c", h.uri(), "hostname")
			if err == nil && strings.TrimSpace(name) == h.Netns {
				return nil
			}
			if err == nil {
				return fmt.Errorf("socket %s answers as %q, want %q", h.socket(), strings.TrimSpace(name), h.Netns)
			}
			last = err
		}
		select {
		case err := <-exited:
			return fmt.Errorf("libvirtd exited: %v", err)
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("no answer within %v: %w", readyTimeout, ctx.Err()), last)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// stopHost ends everything in h's network namespace, guests first, then deletes it.
func stopHost(ctx context.Context, h hostRecord) error {
	ns, ok, err := netnsByName(h.Netns)
	if err != nil || !ok {
		return err // no namespace: nothing of the host can be running
	}
	destroyGuests(ctx, h)
	pid := readPidFile(h.pidFile())
	if pid == 0 {
		pid = h.Pid
	}
	terminate(ctx, pid, ns, daemonGrace)
	killQemus(h, ns)
	// The reaper goes last, so that it reaps what is killed before it.
	if err := sweep(ctx, ns, h.Reaper, sweepTimeout); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	if err := sweep(ctx, ns, 0, sweepTimeout); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	if err := deleteNetns(ctx, h.Netns); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	return nil
}

// destroyGuests asks h's daemon, if it answers, to destroy its running guests, so that libvirt
// ends their qemu cleanly. Failures are left to the sweep that follows.
func destroyGuests(ctx context.Context, h hostRecord) {
	if _, err := os.Stat(h.socket()); err != nil {
		return
	}
	out, err := run(ctx, virshTimeout, "virsh", "-c", h.uri(), "list", "--name")
	if err != nil {
		return
	}
	for _, name := range strings.Fields(out) {
		_, _ = run(ctx, virshTimeout, "virsh", "-c", h.uri(), "destroy", name)
	}
}

// killQemus kills the qemu processes whose pid files are in h's run directory: libvirtd leaves
// them running when it is killed.
func killQemus(h hostRecord, ns nsID) {
	files, _ := filepath.Glob(filepath.Join(h.Dir, "run", "qemu", "*.pid"))
	for _, f := range files {
		if pid := readPidFile(f); pid > 0 && inNetns(pid, ns) {
			_ = killPid(pid)
		}
	}
}

// stop ends all hosts in parallel, then deletes the switch namespace; it only touches namespaces
// the fleet made.
func (r record) stop(ctx context.Context) error {
	errs := make([]error, len(r.Hosts))
	var wg sync.WaitGroup
	for i, h := range r.Hosts {
		if r.made(h.Netns) {
			wg.Go(func() { errs[i] = stopHost(ctx, h) })
		}
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if !r.made(r.Switch) {
		return nil
	}
	ns, ok, err := netnsByName(r.Switch)
	if err != nil || !ok {
		return err
	}
	if err := sweep(ctx, ns, 0, sweepTimeout); err != nil {
		return fmt.Errorf("switch: %w", err)
	}
	return deleteNetns(ctx, r.Switch)
}

// stopRecorded stops the fleet recorded in dir, if any.
func stopRecorded(ctx context.Context, dir string) error {
	rec, err := readRecord(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := rec.stop(ctx); err != nil {
		return err
	}
	return removeRecord(dir)
}

// logTail quotes the end of h's logs, for errors.
func logTail(h hostRecord) string {
	var b strings.Builder
	for _, p := range []string{h.startLog(), filepath.Join(h.Dir, "log", "libvirtd.log")} {
		data, err := os.ReadFile(p)
		if err != nil || len(strings.TrimSpace(string(data))) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		lines = lines[max(0, len(lines)-logTailLines):]
		fmt.Fprintf(&b, "\n--- last lines of %s ---\n%s", p, strings.Join(lines, "\n"))
	}
	if b.Len() == 0 {
		return "\n(the daemon's logs are empty)"
	}
	return b.String()
}

func (h hostRecord) pidFile() string  { return filepath.Join(h.Dir, "run", pidFile) }
func (h hostRecord) startLog() string { return filepath.Join(h.Dir, "log", "start.log") }

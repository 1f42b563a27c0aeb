package libvirthost

import (
	"context"
	"encoding/xml"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestMigrateBetweenHosts is the whole life of a 2-host fleet: both daemons answer as distinct
// hosts, a guest started on h1 live-migrates peer-to-peer to h2, and Stop leaves nothing behind.
func TestMigrateBetweenHosts(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := startFleet(t, 2)
	hosts := f.Hosts()
	h1, h2 := hosts[0], hosts[1]

	for _, h := range hosts {
		if got := virsh(t, h, "hostname"); got != h.Netns {
			t.Errorf("%s: virsh hostname = %q, want %q", h.Name, got, h.Netns)
		}
		begin := time.Now()
		got := capabilitiesUUID(t, h)
		t.Logf("%s: first capabilities (libvirt probes qemu): %v", h.Name, time.Since(begin).Round(time.Millisecond))
		if got != h.UUID {
			t.Errorf("%s: capabilities host uuid = %q, want the configured %q", h.Name, got, h.UUID)
		}
	}
	if h1.UUID == h2.UUID {
		t.Fatalf("h1 and h2 share host UUID %s: libvirt would refuse to migrate", h1.UUID)
	}

	const guest = "tiny-migrate"
	xmlPath := filepath.Join(t.TempDir(), guest+".xml")
	if err := os.WriteFile(xmlPath, []byte(TinyDomainXML(guest, 128)), 0o644); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	virsh(t, h1, "define", xmlPath)
	virsh(t, h1, "start", guest)
	t.Logf("define+start: %v", time.Since(begin).Round(time.Millisecond))
	wantState(t, h1, guest, "running")
	srcQemu := readPidFile(filepath.Join(h1.Dir, "run", "qemu", guest+".pid"))
	if srcQemu == 0 || !alive(srcQemu) {
		t.Fatalf("no running qemu recorded for %s on h1 (pid %d)", guest, srcQemu)
	}

	begin = time.Now()
	virsh(t, h1, "migrate", "--live", "--p2p", "--persistent", "--undefinesource", guest, h2.TCPURI)
	t.Logf("live migration h1 -> h2: %v", time.Since(begin).Round(time.Millisecond))
	wantState(t, h2, guest, "running")
	if names := strings.Fields(virsh(t, h1, "list", "--all", "--name")); slices.Contains(names, guest) {
		t.Errorf("h1 still has %s after --undefinesource: %v", guest, names)
	}
	waitGone(t, map[int]string{srcQemu: procStart(srcQemu)}, 10*time.Second)

	procs := fleetProcs(t, f)
	dstQemu := readPidFile(filepath.Join(h2.Dir, "run", "qemu", guest+".pid"))
	for _, pid := range []int{h1.Pid, h2.Pid, dstQemu} {
		if _, ok := procs[pid]; !ok {
			t.Errorf("pid %d (daemon or h2's qemu) not found in the fleet's namespaces %v", pid, procs)
		}
	}

	begin = time.Now()
	if err := f.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("2 hosts down (one guest running) in %v", time.Since(begin).Round(time.Millisecond))
	assertGone(t, f, procs)
	if err := f.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := Load(f.dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load after Stop: err = %v, want fs.ErrNotExist", err)
	}
}

// TestStopAfterDaemonCrash: a libvirtd killed with a guest running leaves its qemu behind, and
// Stop still ends it.
func TestStopAfterDaemonCrash(t *testing.T) {
	t.Parallel()
	f := startFleet(t, 1)
	h := f.Hosts()[0]
	const guest = "tiny-orphan"
	xmlPath := filepath.Join(t.TempDir(), guest+".xml")
	if err := os.WriteFile(xmlPath, []byte(TinyDomainXML(guest, 64)), 0o644); err != nil {
		t.Fatal(err)
	}
	virsh(t, h, "define", xmlPath)
	virsh(t, h, "start", guest)
	qemu := readPidFile(filepath.Join(h.Dir, "run", "qemu", guest+".pid"))
	if qemu == 0 || !alive(qemu) {
		t.Fatalf("no running qemu recorded for %s (pid %d)", guest, qemu)
	}
	procs := fleetProcs(t, f)
	if err := syscall.Kill(h.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill libvirtd: %v", err)
	}
	waitGone(t, map[int]string{h.Pid: procStart(h.Pid)}, 5*time.Second)
	if !alive(qemu) {
		t.Fatalf("qemu %d died with libvirtd: the test no longer covers orphaned guests", qemu)
	}
	if err := f.Stop(t.Context()); err != nil {
		t.Fatalf("Stop after libvirtd was killed: %v", err)
	}
	assertGone(t, f, procs)
}

// TestTwoFleetsAtOnce starts two fleets concurrently: same addresses, separate namespaces, and
// each fleet's hosts reach their own peers over TCP.
func TestTwoFleetsAtOnce(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dirs := []string{testDir(t, 2), testDir(t, 2)}
	fleets := make([]*Fleet, len(dirs))
	errs := make([]error, len(dirs))
	begin := time.Now()
	var wg sync.WaitGroup
	for i, dir := range dirs {
		wg.Go(func() { fleets[i], errs[i] = Start(ctx, Options{N: 2, Dir: dir}) })
	}
	wg.Wait()
	for _, f := range fleets {
		if f != nil {
			t.Cleanup(func() { _ = f.Stop(context.Background()) })
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("starting two fleets at once: %v", err)
	}
	t.Logf("two 2-host fleets up concurrently in %v", time.Since(begin).Round(time.Millisecond))

	a, b := fleets[0], fleets[1]
	if a.Prefix() == b.Prefix() {
		t.Fatalf("both fleets have prefix %s", a.Prefix())
	}
	procs := map[*Fleet]map[int]string{}
	for _, f := range fleets {
		hosts := f.Hosts()
		if hosts[0].Addr != a.Hosts()[0].Addr {
			t.Errorf("h1 addresses differ between fleets (%s, %s): each fleet should use the same private subnet", hosts[0].Addr, a.Hosts()[0].Addr)
		}
		// From h2's namespace, h1's address must be this fleet's h1, not the other fleet's.
		got := inNetnsVirsh(t, hosts[1], hosts[0].TCPURI, "hostname")
		if got != hosts[0].Netns {
			t.Errorf("fleet %s: h2 reached %s, want its own h1 %s", f.Prefix(), got, hosts[0].Netns)
		}
		procs[f] = fleetProcs(t, f)
	}

	begin = time.Now()
	for i, f := range fleets {
		wg.Go(func() { errs[i] = f.Stop(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("stopping two fleets at once: %v", err)
	}
	t.Logf("two fleets down in %v", time.Since(begin).Round(time.Millisecond))
	for _, f := range fleets {
		assertGone(t, f, procs[f])
	}
}

// TestStartT is the helper other packages use.
func TestStartT(t *testing.T) {
	t.Parallel()
	hosts := StartT(t, 1)
	if len(hosts) != 1 || hosts[0].Name != "h1" {
		t.Fatalf("StartT(t, 1) = %+v", hosts)
	}
	if got := virsh(t, hosts[0], "hostname"); got != hosts[0].Netns {
		t.Errorf("virsh hostname = %q, want %q", got, hosts[0].Netns)
	}
	if _, err := os.Stat(hosts[0].Socket); err != nil {
		t.Errorf("socket: %v", err)
	}
}

// TestStartCleansUpCrashedRun: a fleet whose process died without Stop is stopped by the next
// Start in the same Dir, and Load(dir).Stop (hostsctl down) stops a fleet from another process.
func TestStartCleansUpCrashedRun(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := testDir(t, 1)
	crashed, err := Start(ctx, Options{N: 1, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = crashed.Stop(context.Background()) })
	crashedProcs := fleetProcs(t, crashed)

	loaded, err := Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := loaded.Hosts(), crashed.Hosts(); !slices.Equal(got, want) {
		t.Errorf("Load(dir).Hosts() = %+v, want %+v", got, want)
	}

	next, err := Start(ctx, Options{N: 1, Dir: dir})
	if err != nil {
		t.Fatalf("Start over a crashed fleet: %v", err)
	}
	t.Cleanup(func() { _ = next.Stop(context.Background()) })
	assertGone(t, crashed, crashedProcs)
	if got := virsh(t, next.Hosts()[0], "hostname"); got != next.Hosts()[0].Netns {
		t.Errorf("new fleet answers as %q, want %q", got, next.Hosts()[0].Netns)
	}

	nextProcs := fleetProcs(t, next)
	other, err := Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if err := other.Stop(ctx); err != nil {
		t.Fatalf("Load(dir).Stop: %v", err)
	}
	assertGone(t, next, nextProcs)
	if err := next.Stop(ctx); err != nil {
		t.Errorf("Stop after another process stopped the fleet: %v", err)
	}
}

// TestPrefixInUse: a second fleet with a running fleet's prefix fails and leaves the running
// fleet alone.
func TestPrefixInUse(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	first := startFleet(t, 1)
	_, err := Start(ctx, Options{N: 1, Dir: testDir(t, 1), Prefix: first.Prefix()})
	if err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("Start with a prefix in use: err = %v, want a namespace-exists error", err)
	}
	h := first.Hosts()[0]
	if got := virsh(t, h, "hostname"); got != h.Netns {
		t.Errorf("first fleet after the clash answers as %q, want %q", got, h.Netns)
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	t.Parallel()
	long := "/tmp/" + strings.Repeat("d", 90)
	for _, o := range []Options{
		{N: 0, Dir: "/tmp/x"},
		{N: maxHosts + 1, Dir: "/tmp/x"},
		{N: 1},
		{N: 1, Dir: "/tmp/with space"},
		{N: 1, Dir: long},
		{N: 1, Dir: "/tmp/x", Prefix: "Upper"},
		{N: 1, Dir: "/tmp/x", Prefix: strings.Repeat("p", 21)},
	} {
		if f, err := Start(t.Context(), o); err == nil {
			_ = f.Stop(context.Background())
			t.Errorf("Start(%+v) succeeded, want an error", o)
		}
	}
	if _, err := os.Stat(long); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a rejected Start created %s", long)
	}
}

func TestTinyDomainXML(t *testing.T) {
	t.Parallel()
	var dom struct {
		Type   string `xml:"type,attr"`
		Name   string `xml:"name"`
		Memory struct {
			Unit  string `xml:"unit,attr"`
			Value int    `xml:",chardata"`
		} `xml:"memory"`
	}
	if err := xml.Unmarshal([]byte(TinyDomainXML("a<b&c", 0)), &dom); err != nil {
		t.Fatalf("TinyDomainXML is not XML: %v", err)
	}
	if dom.Type != "qemu" || dom.Name != "a<b&c" || dom.Memory.Unit != "MiB" || dom.Memory.Value != defaultGuestMiB {
		t.Errorf("TinyDomainXML(\"a<b&c\", 0) = %+v", dom)
	}
}

// startFleet starts an n-host fleet directly (so the test can inspect and stop it) with a
// cleanup that stops it if the test does not.
func startFleet(t *testing.T, n int) *Fleet {
	t.Helper()
	begin := time.Now()
	f, err := Start(t.Context(), Options{N: n, Dir: testDir(t, n)})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("%d hosts up in %v", n, time.Since(begin).Round(time.Millisecond))
	t.Cleanup(func() { _ = f.Stop(context.Background()) })
	return f
}

// virsh runs virsh against h's unix socket and returns its trimmed output.
func virsh(t *testing.T, h Host, args ...string) string {
	t.Helper()
	out, err := run(t.Context(), time.Minute, "virsh", append([]string{"-c", h.URI}, args...)...)
	if err != nil {
		t.Fatalf("%s: %v", h.Name, err)
	}
	return strings.TrimSpace(out)
}

// inNetnsVirsh runs virsh against uri from inside from's network namespace.
func inNetnsVirsh(t *testing.T, from Host, uri string, args ...string) string {
	t.Helper()
	out, err := run(t.Context(), time.Minute, "ip", append([]string{"netns", "exec", from.Netns, tool("virsh"), "-c", uri}, args...)...)
	if err != nil {
		t.Fatalf("from %s: %v", from.Netns, err)
	}
	return strings.TrimSpace(out)
}

func capabilitiesUUID(t *testing.T, h Host) string {
	t.Helper()
	var caps struct {
		Host struct {
			UUID string `xml:"uuid"`
		} `xml:"host"`
	}
	if err := xml.Unmarshal([]byte(virsh(t, h, "capabilities")), &caps); err != nil {
		t.Fatalf("%s: capabilities: %v", h.Name, err)
	}
	return caps.Host.UUID
}

func wantState(t *testing.T, h Host, dom, want string) {
	t.Helper()
	if got := virsh(t, h, "domstate", dom); got != want {
		t.Fatalf("%s: %s is %q, want %q", h.Name, dom, got, want)
	}
}

// fleetProcs returns every live process in f's namespaces, with its start time.
func fleetProcs(t *testing.T, f *Fleet) map[int]string {
	t.Helper()
	procs := map[int]string{}
	for _, name := range f.rec.Made {
		ns, ok, err := netnsByName(name)
		if err != nil || !ok {
			t.Fatalf("namespace %s: ok=%v err=%v", name, ok, err)
		}
		pids, err := pidsIn(ns)
		if err != nil {
			t.Fatal(err)
		}
		for _, pid := range pids {
			procs[pid] = procStart(pid)
		}
	}
	return procs
}

// assertGone checks that none of f's namespaces and none of procs is left.
func assertGone(t *testing.T, f *Fleet, procs map[int]string) {
	t.Helper()
	for _, name := range f.rec.Made {
		if _, err := os.Stat(filepath.Join(netnsDir, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("namespace %s left behind (stat: %v)", name, err)
		}
	}
	waitGone(t, procs, 0)
}

// waitGone waits up to limit for procs to end (a zombie waiting for init counts as ended).
func waitGone(t *testing.T, procs map[int]string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		var left []string
		for pid, start := range procs {
			if alive(pid) && procStart(pid) == start {
				left = append(left, strconv.Itoa(pid)+" "+procComm(pid))
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("processes left behind: %v", left)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// procStart returns pid's start time (field 22 of /proc/PID/stat): with the pid, it tells a
// process from a later one that reuses the pid.
func procStart(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 20 {
		return ""
	}
	return fields[19] // fields[0] is field 3 (state)
}

func procComm(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return strings.TrimSpace(string(b))
}

// alive reports whether pid is a running, not zombie, process.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

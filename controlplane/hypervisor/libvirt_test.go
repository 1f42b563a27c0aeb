package hypervisor

// Tests against real libvirt daemons (QEMU TCG guests), started by e2e/libvirthost. They never
// skip: if libvirt cannot start, libvirthost.StartT fails the test loudly.

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devfleet/devfleet/e2e/libvirthost"
)

func TestLibvirtNodeInfo(t *testing.T) {
	ctx := testCtx(t)
	h := libvirthost.StartT(t, 1)[0]
	c := dialHost(t, h)
	info, err := c.NodeInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("node info: %+v", info)
	if info.UUID != h.UUID {
		t.Errorf("UUID = %q, want the daemon's host_uuid %q", info.UUID, h.UUID)
	}
	if info.Hostname != h.Netns {
		t.Errorf("Hostname = %q, want %q", info.Hostname, h.Netns)
	}
	if info.CPUs < 1 || info.MemoryMiB < 256 {
		t.Errorf("capacity = %d CPUs, %d MiB", info.CPUs, info.MemoryMiB)
	}
	if err := c.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func TestLibvirtDomainLifecycle(t *testing.T) {
	ctx := testCtx(t)
	h := libvirthost.StartT(t, 1)[0]
	c := dialHost(t, h)
	events, err := c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	spec := DomainSpec{
		Name: "ds-alice-1", UUID: "6f1c8e2a-7d4b-4c3e-9a1f-0e2d3c4b5a69", VCPUs: 1, MemoryMiB: 128,
		Metadata: Metadata{Kind: InstanceDevserver, ID: "ds-1", Owner: "alice", Flavor: "tiny"},
	}
	begin := time.Now()
	d, err := c.DefineAndStart(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("define+start of a %d MiB diskless guest: %v", spec.MemoryMiB, time.Since(begin).Round(time.Millisecond))
	if d.State != StateRunning || d.UUID != spec.UUID {
		t.Errorf("DefineAndStart = %+v", d)
	}
	expectDomainEvents(t, events, spec.Name, "defined/added", "started/booted")
	if names := virsh(t, h, "list", "--name"); !slices.Contains(strings.Fields(names), spec.Name) {
		t.Errorf("virsh list does not show %s:\n%s", spec.Name, names)
	}
	_, err = c.DefineAndStart(ctx, spec)
	wantKind(t, err, KindAlreadyExists)

	// A domain devfleet did not make is listed with zero metadata.
	virsh(t, h, "define", writeFile(t, "foreign.xml", libvirthost.TinyDomainXML("foreign", 64)))
	begin = time.Now()
	list, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("list of %d domains: %v", len(list), time.Since(begin).Round(time.Microsecond))
	if len(list) != 2 || list[0].Name != spec.Name || list[1].Name != "foreign" {
		t.Fatalf("List = %+v", list)
	}
	if got := list[0]; got.Metadata != spec.Metadata || got.State != StateRunning || got.VCPUs != 1 || got.MemoryMiB != 128 {
		t.Errorf("listed %+v, want metadata %+v, running, 1 vCPU, 128 MiB", got, spec.Metadata)
	}
	if list[1].Managed() || list[1].State != StateShutOff {
		t.Errorf("foreign domain listed as %+v", list[1])
	}
	got, err := c.Lookup(ctx, spec.Name)
	if err != nil || got != list[0] {
		t.Errorf("Lookup = %+v, %v; want %+v", got, err, list[0])
	}
	_, err = c.Lookup(ctx, "nope")
	wantKind(t, err, KindNotFound)

	// Destroyed behind our back: the event says so.
	virsh(t, h, "destroy", spec.Name)
	expectDomainEvents(t, events, spec.Name, "stopped/destroyed")
	if got, _ := c.Lookup(ctx, spec.Name); got.State != StateShutOff {
		t.Errorf("state after virsh destroy = %s", got.State)
	}

	// Its qemu dies behind our back: a crash.
	virsh(t, h, "start", spec.Name)
	expectDomainEvents(t, events, spec.Name, "started/booted")
	killQemu(t, h, spec.Name)
	expectDomainEvents(t, events, spec.Name, "crashed/failed")

	// Start again, then the graceful path: the guest has no OS, so it ignores the power button
	// and Shutdown gives up at its deadline, leaving it running.
	begin = time.Now()
	if err := c.Start(ctx, spec.Name); err != nil {
		t.Fatal(err)
	}
	t.Logf("start of the defined guest: %v", time.Since(begin).Round(time.Millisecond))
	expectDomainEvents(t, events, spec.Name, "started/booted")
	if err := c.Start(ctx, spec.Name); err != nil {
		t.Errorf("Start of a running domain: %v", err)
	}
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	err = c.Shutdown(sctx, spec.Name)
	cancel()
	wantKind(t, err, KindTimeout)
	wantKind(t, c.Undefine(ctx, spec.Name), KindFailedPrecondition)
	if err := c.Destroy(ctx, spec.Name); err != nil {
		t.Fatal(err)
	}
	expectDomainEvents(t, events, spec.Name, "stopped/destroyed")
	if err := c.Destroy(ctx, spec.Name); err != nil {
		t.Errorf("Destroy of a shut-off domain: %v", err)
	}
	if err := c.Shutdown(ctx, spec.Name); err != nil {
		t.Errorf("Shutdown of a shut-off domain: %v", err)
	}
	if err := c.Undefine(ctx, spec.Name); err != nil {
		t.Fatal(err)
	}
	expectDomainEvents(t, events, spec.Name, "undefined/removed")
	_, err = c.Lookup(ctx, spec.Name)
	wantKind(t, err, KindNotFound)
	wantKind(t, c.Undefine(ctx, spec.Name), KindNotFound)
	wantKind(t, c.Destroy(ctx, spec.Name), KindNotFound)
	if names := virsh(t, h, "list", "--all", "--name"); slices.Contains(strings.Fields(names), spec.Name) {
		t.Errorf("virsh list --all still shows %s", spec.Name)
	}
}

func TestLibvirtVolume(t *testing.T) {
	ctx := testCtx(t)
	h := libvirthost.StartT(t, 1)[0]
	c := dialHost(t, h)
	spec := DomainSpec{Name: "ds-disk", VCPUs: 1, MemoryMiB: 128, DiskGiB: 2,
		Metadata: Metadata{Kind: InstanceDevserver, ID: "ds-2", Owner: "bob", Flavor: "disk"}}
	begin := time.Now()
	if _, err := c.DefineAndStart(ctx, spec); err != nil {
		t.Fatal(err)
	}
	t.Logf("define+start with a new pool and a %d GiB volume: %v", spec.DiskGiB, time.Since(begin).Round(time.Millisecond))
	// The pool is a directory under the host's /var/lib/libvirt, which is Dir/lib outside.
	file := filepath.Join(h.Dir, "lib", "devfleet", "ds-disk.raw")
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatalf("volume file: %v", err)
	}
	if fi.Size() != 2<<30 {
		t.Errorf("volume size = %d, want 2 GiB", fi.Size())
	}
	if vols := virsh(t, h, "vol-list", DefaultPool); !strings.Contains(vols, "ds-disk.raw") {
		t.Errorf("virsh vol-list:\n%s", vols)
	}
	if xml := virsh(t, h, "dumpxml", spec.Name); !strings.Contains(xml, "volume='ds-disk.raw'") {
		t.Errorf("the domain does not use its volume:\n%s", xml)
	}

	// A second disk domain reuses the pool.
	spec2 := spec
	spec2.Name, spec2.Metadata.ID = "ds-disk2", "ds-3"
	begin = time.Now()
	if _, err := c.DefineAndStart(ctx, spec2); err != nil {
		t.Fatal(err)
	}
	t.Logf("define+start with an existing pool: %v", time.Since(begin).Round(time.Millisecond))

	for _, name := range []string{spec.Name, spec2.Name} {
		if err := c.Destroy(ctx, name); err != nil {
			t.Fatal(err)
		}
		if err := c.Undefine(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("volume file after Undefine: %v", err)
	}
	if vols := virsh(t, h, "vol-list", DefaultPool); strings.Contains(vols, "ds-disk") {
		t.Errorf("volumes left:\n%s", vols)
	}

	// A volume left behind (a DefineAndStart that failed half way) blocks the name until
	// Undefine removes it.
	virsh(t, h, "vol-create-as", DefaultPool, "ds-disk.raw", "1M")
	_, err = c.DefineAndStart(ctx, spec)
	wantKind(t, err, KindAlreadyExists)
	if err := c.Undefine(ctx, spec.Name); err != nil {
		t.Errorf("Undefine of a leftover volume: %v", err)
	}
	if _, err := c.DefineAndStart(ctx, spec); err != nil {
		t.Errorf("DefineAndStart after the leftover was removed: %v", err)
	}

	// A start that fails (qemu cannot allocate 8 TiB of guest memory) undoes the definition
	// and the volume. With vm.overcommit_memory=1 the kernel would let qemu start, so the check
	// needs the default heuristic (or strict) overcommit.
	if b, _ := os.ReadFile("/proc/sys/vm/overcommit_memory"); strings.TrimSpace(string(b)) == "1" {
		t.Log("vm.overcommit_memory=1: cannot make a start fail; rollback not checked")
		return
	}
	huge := DomainSpec{Name: "ds-huge", VCPUs: 1, MemoryMiB: 8 << 20, DiskGiB: 1,
		Metadata: Metadata{Kind: InstanceDevserver, ID: "ds-4", Owner: "bob"}}
	_, err = c.DefineAndStart(ctx, huge)
	if err == nil || !strings.Contains(err.Error(), "start") {
		t.Fatalf("DefineAndStart of an 8 TiB guest = %v, want a failed start", err)
	}
	if names := virsh(t, h, "list", "--all", "--name"); slices.Contains(strings.Fields(names), huge.Name) {
		t.Errorf("the failed domain was left defined")
	}
	if vols := virsh(t, h, "vol-list", DefaultPool); strings.Contains(vols, huge.Name) {
		t.Errorf("the failed domain's volume was left:\n%s", vols)
	}
}

func TestLibvirtTCP(t *testing.T) {
	ctx := testCtx(t)
	h := libvirthost.StartT(t, 1)[0]
	local := forwardTCP(t, h.Netns, h.Addr+":16509")
	c, err := Dial(ctx, "qemu+tcp://"+local+"/system", ConnOptions{Host: h.Name, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	info, err := c.NodeInfo(ctx)
	if err != nil || info.UUID != h.UUID {
		t.Errorf("NodeInfo over TCP = %+v, %v; want host UUID %s", info, err, h.UUID)
	}
}

// expectDomainEvents reads events, skipping those of other domains and libvirt's "resumed"
// that accompanies a start, and checks the types and details of name's.
func expectDomainEvents(t *testing.T, ch <-chan Event, name string, want ...string) {
	t.Helper()
	for _, w := range want {
		for {
			ev := next(t, ch)
			if ev.Domain != name || ev.Type == EventResumed || ev.Type == EventShutdown {
				continue
			}
			if got := string(ev.Type) + "/" + ev.Detail; got != w {
				t.Fatalf("event of %s: %s, want %s", name, got, w)
			}
			break
		}
	}
}

// killQemu kills a guest's qemu process with SIGKILL, as the OOM killer would.
func killQemu(t *testing.T, h libvirthost.Host, domain string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.Dir, "run", "qemu", domain+".pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill qemu %d: %v", pid, err)
	}
}

func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

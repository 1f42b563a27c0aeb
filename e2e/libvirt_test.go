package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devfleet/devfleet/e2e/libvirthost"
)

const (
	// metadataNS is the namespace of devfleet's element in a domain's <metadata>.
	metadataNS = "urn:devfleet:domain:1"
	// pool is the storage pool devfleet makes its guests' volumes in (<name>.raw).
	pool = "devfleet"
)

// TestLibvirtFleet drives three devfleetd processes and two real libvirt hosts through the
// devfleet CLI: hosts are checked against libvirt at registration, devservers become running
// QEMU guests on the host the state names, guests destroyed or undefined behind devfleet's back
// are noticed, reported to the owner and recreated, stop/start/delete reach libvirt, and a
// leader killed with SIGKILL in the middle of creates leaves neither orphans nor duplicates.
// Every check of libvirt is made with virsh, not through devfleet's own hypervisor layer.
func TestLibvirtFleet(t *testing.T) {
	t.Parallel()
	began := time.Now()
	// h3 joins the fleet only for a move that goes elsewhere, h4 (in another region) for the
	// last step, a move across regions.
	all := libvirthost.StartT(t, 4)
	lv, spare, far := all[:2], all[2], all[3]
	// Test guests have no OS to answer the ACPI power button: a stop waits out the grace.
	nodes := startCluster(t, 3, "--guest-shutdown-grace", "2s")
	f := &lvFleet{t: t, nodes: nodes, hosts: map[string]libvirthost.Host{}, diskless: map[string]bool{"mini": true, "wide": true}}
	for _, h := range lv {
		f.hosts[h.Name] = h
	}
	// Talk to a follower throughout: writes are forwarded, and the leader can be killed
	// without losing the CLI's entry point.
	leader := leaderOf(t, nodes)
	for _, n := range nodes {
		if n != leader {
			f.via = n
			break
		}
	}
	t.Logf("libvirt hosts and a 3-node cluster up in %v (leader %s, CLI via %s)", time.Since(began).Round(time.Millisecond), leader.id, f.via.id)

	f.registerHosts(lv)
	f.must("flavor", "add", "tiny", "--cpus", "1", "--memory-mib", "128", "--disk-gib", "1", "--repair", "recreate")

	// Four devservers: each runs as a QEMU guest on the host the state names, and nowhere else.
	step := time.Now()
	for _, name := range []string{"ds1", "ds2", "ds3", "ds4"} {
		f.must("devserver", "create", name, "--owner", "alice", "--flavor", "tiny", "--region", "lab", "--permanent")
	}
	f.waitAgree(60*time.Second, "ds1..ds4 running, one guest each")
	t.Logf("4 devservers running as guests in %v", time.Since(step).Round(time.Millisecond))

	// Stop a devserver. Its guest has no OS to act on the ACPI power button, so the
	// provisioner cuts it after the shutdown grace (2s here): the stop runs while the repairs below
	// are checked, and ds4 is left out of their checks.
	f.must("devserver", "stop", "ds4")
	stopAsked := time.Now()

	// A guest destroyed behind devfleet's back while its host is cordoned: ds1 is lost, its
	// owner told, and it is recreated on the other host.
	d1, err := f.devserver("ds1")
	if err != nil {
		f.fatalf("%v", err)
	}
	f.must("host", "cordon", d1.Host, "--reason", "e2e: make the repair move")
	f.loseAndRecover("ds1", false, "ds4")
	f.must("host", "uncordon", d1.Host)
	// A guest destroyed and undefined (its volume stays in the pool): the same, wherever
	// placement puts it (on its old host, the leftover volume is replaced).
	f.loseAndRecover("ds2", true, "ds4")

	// The stop reaches libvirt: the state says stopped once the guest is shut off.
	step = time.Now()
	f.waitFor(45*time.Second, "ds4 stopped, its guest shut off", func() error {
		d, err := f.devserver("ds4")
		if err != nil {
			return err
		}
		if d.State != "DEVSERVER_STATE_STOPPED" {
			return fmt.Errorf("ds4 is %s (%s)", d.State, d.StateReason)
		}
		return f.wantDomState(d.Host, "ds4", "shut off")
	})
	t.Logf("ds4 stopped %v after it was asked (shutdown grace included)", time.Since(stopAsked).Round(time.Millisecond))
	if err := f.agree("ds4"); err != nil {
		f.fatalf("while ds4 is stopped: %v", err)
	}
	f.must("devserver", "start", "ds4")
	f.waitAgree(30*time.Second, "ds4 started again")
	d4, _ := f.devserver("ds4")
	if err := f.wantDomState(d4.Host, "ds4", "running"); err != nil {
		f.fatalf("after devserver start: %v", err)
	}
	t.Logf("ds4 stopped and started in %v", time.Since(step).Round(time.Millisecond))

	// Delete: the record goes once the guest is gone from its host.
	d3, err := f.devserver("ds3")
	if err != nil {
		f.fatalf("%v", err)
	}
	f.must("devserver", "delete", "ds3")
	f.waitFor(30*time.Second, "ds3 deleted, its guest gone", func() error {
		out, errOut, code := cli(t, f.via.grpc, "devserver", "show", "ds3")
		if code == 0 {
			return fmt.Errorf("ds3 still exists:\n%s", out)
		}
		if !strings.Contains(errOut, "NotFound") {
			return fmt.Errorf("devserver show ds3: exit %d: %s", code, errOut)
		}
		names, err := f.allNames(d3.Host)
		if err != nil {
			return err
		}
		if slices.Contains(names, "ds3") {
			return fmt.Errorf("%s still has a domain ds3: %v", d3.Host, names)
		}
		vols, err := f.volumes(d3.Host)
		if err != nil {
			return err
		}
		if slices.Contains(vols, "ds3.raw") {
			return fmt.Errorf("%s still has the volume ds3.raw: %v", d3.Host, vols)
		}
		return nil
	})
	f.waitAgree(10*time.Second, "ds1, ds2, ds4 after ds3 was deleted")

	f.leaderCrashDuringCreates()
	f.containers()
	f.liveMigration()
	f.diskMigration()
	f.coldMoves(far)
	f.slowMigrations(spare) // last: it kills h2's libvirtd
	t.Logf("whole test: %v", time.Since(began).Round(time.Millisecond))
}

// liveMigration moves a running diskless devserver to the other host through the CLI, as its
// owner: libvirt then runs it on the destination only, and the state says so. A stranger may
// not move it.
func (f *lvFleet) liveMigration() {
	t := f.t
	step := time.Now()
	// Make room: the crash test's devservers go.
	for _, name := range []string{"ds5", "ds6", "ds7", "ds8"} {
		f.must("devserver", "delete", name)
	}
	f.waitFor(30*time.Second, "ds5..ds8 deleted", func() error {
		var ds []devserverJSON
		if err := f.list(&ds); err != nil {
			return err
		}
		if len(ds) != 3 {
			return fmt.Errorf("%d devservers", len(ds))
		}
		return f.agree()
	})
	f.must("flavor", "add", "mini", "--cpus", "1", "--memory-mib", "128", "--disk-gib", "0")
	f.must("devserver", "create", "mv1", "--owner", "dave", "--flavor", "mini", "--region", "lab", "--permanent")
	f.waitAgree(30*time.Second, "mv1 running")
	d, err := f.devserver("mv1")
	if err != nil {
		f.fatalf("%v", err)
	}
	to := "h1"
	if d.Host == "h1" {
		to = "h2"
	}
	_, errOut, code := cli(t, f.via.grpc, "--as", "mallory", "devserver", "migrate", "mv1", "--to-host", to)
	if code != 1 || !strings.Contains(errOut, "PermissionDenied") {
		f.fatalf("a stranger's move: exit %d, %s", code, errOut)
	}
	out := f.must("--as", "dave", "devserver", "migrate", "mv1", "--to-host", to, "--wait")
	t.Logf("devserver migrate --wait: %s", strings.TrimSpace(out))
	f.waitFor(30*time.Second, "mv1 on "+to+" only", func() error {
		d, err := f.devserver("mv1")
		if err != nil {
			return err
		}
		if d.Host != to {
			return fmt.Errorf("mv1 is recorded on %s", d.Host)
		}
		return f.agree()
	})
	t.Logf("live migration %s -> %s through devfleet in %v", d.Host, to, time.Since(step).Round(time.Millisecond))
}

type migrationJSON struct {
	ID         string `json:"id"`
	Phase      string `json:"phase"`
	SourceHost string `json:"source_host"`
	DestHost   string `json:"dest_host"`
	Attempts   int    `json:"attempts"`
	Failure    string `json:"failure_reason"`
	Progress   struct {
		Processed string `json:"memory_processed_bytes"`
	} `json:"progress"`
}

func (f *lvFleet) migration(id string) (migrationJSON, error) {
	var m migrationJSON
	out, errOut, code, err := runCLI(f.via.grpc, "migration", "show", id, "-o", "json")
	if err != nil || code != 0 {
		return m, fmt.Errorf("migration show %s: exit %d: %s %v", id, code, errOut, err)
	}
	return m, json.Unmarshal([]byte(out), &m)
}

// waitRunning waits until a migration copies memory (progress recorded).
func (f *lvFleet) waitRunning(id string) {
	f.t.Helper()
	f.waitFor(30*time.Second, "migration "+id+" copying", func() error {
		m, err := f.migration(id)
		if err != nil {
			return err
		}
		if m.Phase != "MIGRATION_PHASE_RUNNING" || m.Progress.Processed == "" || m.Progress.Processed == "0" {
			return fmt.Errorf("migration %s is %s (%s), processed %q", id, m.Phase, m.Failure, m.Progress.Processed)
		}
		return nil
	})
}

// diskMigration moves a devserver with a local disk: its volume is copied to the destination
// and removed from the source (agree checks every volume belongs to a devserver of its host).
func (f *lvFleet) diskMigration() {
	t := f.t
	step := time.Now()
	d, err := f.devserver("ds4")
	if err != nil {
		f.fatalf("%v", err)
	}
	to := "h1"
	if d.Host == "h1" {
		to = "h2"
	}
	f.must("--as", "alice", "devserver", "migrate", "ds4", "--to-host", to, "--wait")
	f.waitFor(30*time.Second, "ds4 and its volume on "+to+" only", func() error {
		d, err := f.devserver("ds4")
		if err != nil {
			return err
		}
		if d.Host != to {
			return fmt.Errorf("ds4 is recorded on %s", d.Host)
		}
		vols, err := f.volumes(to)
		if err != nil {
			return err
		}
		if !slices.Contains(vols, "ds4.raw") {
			return fmt.Errorf("%s has no ds4.raw: %v", to, vols)
		}
		return f.agree()
	})
	t.Logf("disk migration %s -> %s (1 GiB sparse volume) in %v", d.Host, to, time.Since(step).Round(time.Millisecond))
}

// slowMigrations moves a 1.5 GiB guest under a bandwidth cap (a mostly-zero guest still sends
// a few bytes per page: ~9 MiB, some seconds at 1-2 MiB/s), to abort one move mid-way (the guest
// stays on its source) and to kill the leader during another (the new leader finds where the
// guest runs and records it: exactly one running copy).
func (f *lvFleet) slowMigrations(spare libvirthost.Host) {
	t := f.t
	step := time.Now()
	f.must("flavor", "add", "wide", "--cpus", "1", "--memory-mib", "1536", "--disk-gib", "0")
	f.must("devserver", "create", "mv2", "--owner", "dave", "--flavor", "wide", "--region", "lab", "--permanent", "--host", "h2")
	f.waitAgree(30*time.Second, "mv2 running")
	start := func(bandwidth string) string {
		out := f.must("--as", "dave", "devserver", "migrate", "mv2", "--to-host", "h1", "--bandwidth-mibps", bandwidth, "-o", "json")
		var m migrationJSON
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			f.fatalf("migrate: %v: %s", err, out)
		}
		return m.ID
	}

	// Abort mid-way.
	id := start("1")
	f.waitRunning(id)
	f.must("--as", "dave", "migration", "abort", id)
	f.waitFor(30*time.Second, "the abort recorded", func() error {
		m, err := f.migration(id)
		if err != nil {
			return err
		}
		if m.Phase != "MIGRATION_PHASE_ABORTED" {
			return fmt.Errorf("migration %s is %s", id, m.Phase)
		}
		return nil
	})
	if d, _ := f.devserver("mv2"); d.Host != "h2" {
		f.fatalf("after the abort mv2 is recorded on %s, want h2", d.Host)
	}
	f.waitAgree(30*time.Second, "mv2 on h2 only after the abort")
	t.Logf("abort mid-way: the guest stayed on h2 (%v)", time.Since(step).Round(time.Millisecond))

	// Kill the leader mid-way.
	step = time.Now()
	leader := leaderOf(t, f.nodes)
	if leader == f.via {
		for _, n := range f.nodes {
			if n != leader {
				f.via = n
				break
			}
		}
	}
	id = start("2")
	f.waitRunning(id)
	leader.kill9(t)
	leader.start(t)
	newLeader := leaderOf(t, f.nodes)
	var m migrationJSON
	f.waitFor(90*time.Second, "the migration's outcome recorded by the new leader", func() error {
		var err error
		if m, err = f.migration(id); err != nil {
			return err
		}
		if m.Phase != "MIGRATION_PHASE_SUCCEEDED" && m.Phase != "MIGRATION_PHASE_FAILED" {
			return fmt.Errorf("migration %s is %s", id, m.Phase)
		}
		return f.agree()
	})
	d, _ := f.devserver("mv2")
	t.Logf("leader %s killed mid-move; new leader %s recorded %s after %d attempts, mv2 on %s, one copy (%v)",
		leader.id, newLeader.id, m.Phase, m.Attempts, d.Host, time.Since(step).Round(time.Millisecond))
	if m.Phase == "MIGRATION_PHASE_SUCCEEDED" && d.Host != "h1" || m.Phase == "MIGRATION_PHASE_FAILED" && d.Host != "h2" {
		f.fatalf("migration %s %s but mv2 is recorded on %s", id, m.Phase, d.Host)
	}

	// The destination's libvirtd dies mid-move (last: it stays down): the source keeps the
	// guest, and the next attempt goes to another host, which capacity picks: the spare.
	step = time.Now()
	src, dst := d.Host, "h1"
	if src == "h1" {
		dst = "h2"
	}
	f.must("host", "add", spare.Name, "--site", "lab1", "--libvirt", spare.URI, "--migration-uri", spare.TCPURI, "--disk-gib", "20", "--cpu-overcommit", "4")
	f.hosts[spare.Name] = spare
	out := f.must("--as", "dave", "devserver", "migrate", "mv2", "--to-host", dst, "--bandwidth-mibps", "1", "-o", "json")
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		f.fatalf("migrate: %v: %s", err, out)
	}
	f.waitRunning(m.ID)
	if err := syscall.Kill(f.hosts[dst].Pid, syscall.SIGKILL); err != nil {
		f.fatalf("kill %s's libvirtd: %v", dst, err)
	}
	f.waitFor(60*time.Second, "the migration done elsewhere", func() error {
		var err error
		if m, err = f.migration(m.ID); err != nil {
			return err
		}
		if m.Phase != "MIGRATION_PHASE_SUCCEEDED" {
			return fmt.Errorf("migration is %s (%s)", m.Phase, m.Failure)
		}
		return nil
	})
	if m.DestHost != spare.Name || m.Attempts < 2 {
		f.fatalf("migration went to %s after %d attempts, want %s after at least 2", m.DestHost, m.Attempts, spare.Name)
	}
	if err := f.wantDomState(spare.Name, "mv2", "running"); err != nil {
		f.fatalf("after the move elsewhere: %v", err)
	}
	if names, err := f.allNames(src); err != nil || slices.Contains(names, "mv2") {
		f.fatalf("mv2 is still on %s: %v %v", src, names, err)
	}
	if d, _ := f.devserver("mv2"); d.Host != spare.Name || d.State != "DEVSERVER_STATE_RUNNING" {
		f.fatalf("after the move elsewhere mv2 is %s on %s, want running on %s", d.State, d.Host, spare.Name)
	}
	t.Logf("destination %s's libvirtd killed mid-move: mv2 went to %s after %d attempts (%v)",
		dst, spare.Name, m.Attempts, time.Since(step).Round(time.Millisecond))
}

type containerJSON struct {
	Name      string `json:"name"`
	ID        string `json:"id"`
	Host      string `json:"host"`
	State     string `json:"state"`
	ClaimedBy string `json:"claimed_by"`
}

type poolJSON struct {
	Warm    int `json:"warm"`
	Claimed int `json:"claimed"`
}

func (f *lvFleet) containerList() ([]containerJSON, error) {
	var cs []containerJSON
	out, errOut, code, err := runCLI(f.via.grpc, "container", "list", "-o", "json")
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, fmt.Errorf("container list: exit %d: %s", code, strings.TrimSpace(errOut))
	}
	return cs, json.Unmarshal([]byte(out), &cs)
}

// containers: a warm pool of 2 fills with real guests; a claim is a pool hit and the pool
// refills; a release removes the guest; a claim with the pool emptied of warm ones is a miss
// that runs shortly after.
func (f *lvFleet) containers() {
	t := f.t
	step := time.Now()
	f.must("profile", "add", "www", "--cpus", "1", "--memory-mib", "128", "--ttl", "1h")
	f.must("pool", "set", "--region", "lab", "--profile", "www", "--target", "2")
	pool := func(warm, claimed int) func() error {
		return func() error {
			var ps []poolJSON
			out, errOut, code, err := runCLI(f.via.grpc, "pool", "list", "-o", "json")
			if err != nil || code != 0 {
				return fmt.Errorf("pool list: exit %d: %s %v", code, errOut, err)
			}
			if err := json.Unmarshal([]byte(out), &ps); err != nil {
				return err
			}
			if len(ps) != 1 || ps[0].Warm != warm || ps[0].Claimed != claimed {
				return fmt.Errorf("pool holds %+v, want %d warm and %d claimed", ps, warm, claimed)
			}
			return f.agree()
		}
	}
	f.waitFor(60*time.Second, "the pool warm with 2 guests", pool(2, 0))
	t.Logf("pool of 2 warm in %v", time.Since(step).Round(time.Millisecond))

	out := f.must("container", "claim", "--profile", "www", "--region", "lab", "--owner", "carol", "-o", "json")
	var claim struct {
		Container containerJSON `json:"container"`
		PoolHit   bool          `json:"pool_hit"`
	}
	if err := json.Unmarshal([]byte(out), &claim); err != nil || !claim.PoolHit || claim.Container.ClaimedBy != "carol" {
		f.fatalf("claim from a warm pool: %v %s", err, out)
	}
	if err := f.wantDomState(claim.Container.Host, claim.Container.Name, "running"); err != nil {
		f.fatalf("the claimed container: %v", err)
	}
	f.waitFor(60*time.Second, "the pool refilled after a claim", pool(2, 1))

	f.must("container", "release", claim.Container.Name)
	f.waitFor(30*time.Second, "the released container's guest gone", func() error {
		names, err := f.allNames(claim.Container.Host)
		if err != nil {
			return err
		}
		if slices.Contains(names, claim.Container.Name) {
			return fmt.Errorf("%s still has %s: %v", claim.Container.Host, claim.Container.Name, names)
		}
		return pool(2, 0)()
	})

	// Empty the pool of warm containers: the next claim is a miss, made for the caller.
	f.must("pool", "set", "--region", "lab", "--profile", "www", "--target", "0")
	f.waitFor(30*time.Second, "the pool emptied", func() error {
		cs, err := f.containerList()
		if err != nil {
			return err
		}
		if len(cs) != 0 {
			return fmt.Errorf("containers left: %+v", cs)
		}
		return f.agree()
	})
	out = f.must("container", "claim", "--profile", "www", "--region", "lab", "--owner", "carol", "-o", "json")
	claim.PoolHit = false
	if err := json.Unmarshal([]byte(out), &claim); err != nil || claim.PoolHit {
		f.fatalf("claim from an empty pool: %v %s", err, out)
	}
	f.waitFor(30*time.Second, "the missed claim's container running", func() error {
		if err := f.wantDomState(claim.Container.Host, claim.Container.Name, "running"); err != nil {
			return err
		}
		return f.agree()
	})
	t.Logf("containers: pool hit, refill, release, miss in %v", time.Since(step).Round(time.Millisecond))
}

// lvFleet is the cluster, its libvirt hosts and the CLI's entry point.
type lvFleet struct {
	t     *testing.T
	nodes []*node
	via   *node
	// hosts maps devfleet host names (the same as the libvirt hosts' names) to the hosts.
	hosts map[string]libvirthost.Host
	// diskless flavors: their devservers have no volume.
	diskless map[string]bool
}

func (f *lvFleet) must(args ...string) string {
	f.t.Helper()
	out, errOut, code := cli(f.t, f.via.grpc, args...)
	if code != 0 {
		f.fatalf("devfleet %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// registerHosts adds the region, the site and both libvirt hosts, after checking that a host
// whose libvirt cannot be reached, or that declares more than libvirt reports, is refused and
// not recorded.
func (f *lvFleet) registerHosts(lv []libvirthost.Host) {
	t := f.t
	f.must("region", "add", "lab")
	f.must("site", "add", "lab1", "--region", "lab")

	missing := filepath.Join(t.TempDir(), "no-such-dir", "libvirt-sock")
	badURI := "qemu+unix:///system?socket=" + missing
	_, errOut, code := cli(t, f.via.grpc, "host", "add", "ghost", "--site", "lab1", "--libvirt", badURI, "--cpus", "1", "--memory-mib", "512", "--disk-gib", "10")
	// The leader's refusal, passed on by the follower as it was given.
	want := "devfleet: host.libvirt_uri: cannot reach libvirt at " + badURI + ": "
	if code != 1 || !strings.HasPrefix(errOut, want) || !strings.HasSuffix(errOut, " (Unavailable)\n") || strings.Count(errOut, "\n") != 1 {
		f.fatalf("host add with an unreachable libvirt: exit %d, stderr %q; want exit 1 and one line %q... (Unavailable)", code, errOut, want)
	}
	t.Logf("unreachable libvirt refused: %s", strings.TrimSpace(errOut))
	_, errOut, code = cli(t, f.via.grpc, "host", "add", "greedy", "--site", "lab1", "--libvirt", lv[0].URI, "--cpus", "64", "--memory-mib", "512", "--disk-gib", "10")
	if code != 1 || !strings.Contains(errOut, "host.capacity.vcpus") || !strings.Contains(errOut, "(InvalidArgument)") {
		f.fatalf("host add declaring 64 CPUs on a 2-CPU libvirt host: exit %d, stderr %q", code, errOut)
	}
	var hosts []host
	cliJSON(t, f.via.grpc, &hosts, "host", "list")
	if len(hosts) != 0 {
		f.fatalf("refused hosts were recorded: %+v", hosts)
	}

	// h1 declares its capacity (within what libvirt reports); h2 leaves it to libvirt. Both
	// overcommit CPU so that several 1-vCPU guests fit on a 2-CPU host: 4 on h1, 8 on h2.
	f.must("host", "add", lv[0].Name, "--site", "lab1", "--libvirt", lv[0].URI, "--migration-uri", lv[0].TCPURI,
		"--cpus", "2", "--memory-mib", "2048", "--disk-gib", "20", "--cpu-overcommit", "2")
	f.must("host", "add", lv[1].Name, "--site", "lab1", "--libvirt", lv[1].URI, "--migration-uri", lv[1].TCPURI,
		"--disk-gib", "20", "--cpu-overcommit", "4")
	var h2 struct {
		Capacity struct {
			Vcpus     int64 `json:"vcpus,string"`
			MemoryMib int64 `json:"memory_mib,string"`
		} `json:"capacity"`
		LibvirtURI string `json:"libvirt_uri"`
	}
	cliJSON(t, f.via.grpc, &h2, "host", "show", lv[1].Name)
	cpus, mem := f.nodeInfo(lv[1].Name)
	if h2.Capacity.Vcpus != cpus || h2.Capacity.MemoryMib != mem || h2.LibvirtURI != lv[1].URI {
		f.fatalf("%s registered without capacity: got %+v, want what virsh nodeinfo reports: %d CPUs, %d MiB", lv[1].Name, h2, cpus, mem)
	}
	cliJSON(t, f.via.grpc, &hosts, "host", "list")
	if len(hosts) != 2 {
		f.fatalf("host list after registering two hosts: %+v", hosts)
	}
}

// loseAndRecover removes a devserver's guest behind devfleet's back (destroy, and with undefine
// its definition too) and waits until devfleet has marked it lost, told its owner, and
// recreated it.
func (f *lvFleet) loseAndRecover(name string, undefine bool, skip ...string) {
	t := f.t
	before, err := f.devserver(name)
	if err != nil {
		f.fatalf("%v", err)
	}
	step := time.Now()
	f.virsh(before.Host, "destroy", name)
	how := "destroyed"
	if undefine {
		f.virsh(before.Host, "undefine", name)
		how = "destroyed and undefined"
	}
	var after devserverJSON
	f.waitFor(60*time.Second, fmt.Sprintf("%s (guest %s on %s) to be recreated", name, how, before.Host), func() error {
		d, err := f.devserver(name)
		if err != nil {
			return err
		}
		if d.ID != before.ID {
			return fmt.Errorf("%s has id %s, was %s: recreated under a new identity", name, d.ID, before.ID)
		}
		if d.Repairs != before.Repairs+1 || d.State != "DEVSERVER_STATE_RUNNING" {
			return fmt.Errorf("%s is %s after %d repairs (%s)", name, d.State, d.Repairs, d.StateReason)
		}
		after = d
		// Its guest runs on its new host, and nowhere else.
		doms, err := f.domains()
		if err != nil {
			return err
		}
		var running []domain
		for _, dom := range doms {
			if dom.name == name && dom.state == "running" {
				running = append(running, dom)
			}
		}
		if len(running) != 1 || running[0].host != d.Host || running[0].id != d.ID {
			return fmt.Errorf("%s (%s) is running on %s in the state; running guests of that name: %v", name, d.ID, d.Host, running)
		}
		return nil
	})
	t.Logf("%s: guest %s on %s; recreated on %s in %v (repairs %d)", name, how, before.Host, after.Host, time.Since(step).Round(time.Millisecond), after.Repairs)

	// The owner was told both that it was lost and that it is being recreated.
	var notices struct {
		Notices []struct {
			Kind    string `json:"kind"`
			Subject string `json:"subject"`
			Message string `json:"message"`
		} `json:"notices"`
	}
	cliJSON(t, f.via.grpc, &notices, "notice", "list", "--owner", "alice")
	var lost, recreated int
	for _, n := range notices.Notices {
		if n.Subject != name {
			continue
		}
		switch n.Kind {
		case "NOTICE_KIND_LOST":
			lost++
		case "NOTICE_KIND_RECREATED":
			recreated++
		}
	}
	if lost != before.Repairs+1 || recreated != before.Repairs+1 {
		f.fatalf("notices for %s: %d lost and %d recreated, want %d of each: %+v", name, lost, recreated, before.Repairs+1, notices.Notices)
	}

	// Recreated elsewhere, the old guest (destroyed, not undefined) stays on its old host,
	// shut off: devfleet reports such a domain as an orphan and leaves it alone, since its disk
	// may hold its owner's work. Check that, then remove it as an operator would, so that the
	// later checks can demand that no orphan exists at all.
	cordoned := f.hostState(before.Host) == "HOST_STATE_CORDONED"
	if cordoned && after.Host == before.Host {
		f.fatalf("%s was recreated on %s, which is cordoned", name, after.Host)
	}
	if after.Host != before.Host && !undefine {
		if err := f.wantDomState(before.Host, name, "shut off"); err != nil {
			f.fatalf("the old guest of %s, recreated on %s: %v", name, after.Host, err)
		}
		f.virsh(before.Host, "undefine", name, "--remove-all-storage")
		t.Logf("%s: removed the shut-off guest devfleet left on %s", name, before.Host)
	}
	// Undefined and recreated elsewhere, its volume stays in the old host's pool (undefine
	// leaves it there, and devfleet leaves it alone): remove it too.
	if after.Host != before.Host && undefine {
		f.virsh(before.Host, "vol-delete", name+".raw", "--pool", pool)
		t.Logf("%s: removed the volume left on %s", name, before.Host)
	}
	f.waitFor(10*time.Second, "state and libvirt to agree after "+name+" was recreated", func() error { return f.agree(skip...) })
}

// leaderCrashDuringCreates creates four more devservers concurrently, kills the leader with
// SIGKILL while they are made, restarts it, and checks that state and libvirt agree: every
// devserver that exists runs as exactly one guest, and no guest exists without its devserver.
func (f *lvFleet) leaderCrashDuringCreates() {
	t := f.t
	leader := leaderOf(t, f.nodes)
	if leader == f.via { // leadership moved meanwhile: talk to a node that survives the kill
		for _, n := range f.nodes {
			if n != leader {
				f.via = n
				break
			}
		}
	}
	names := []string{"ds5", "ds6", "ds7", "ds8"}
	type outcome struct {
		code   int
		errOut string
	}
	results := make([]outcome, len(names))
	ends := make([]time.Duration, len(names))
	var wg sync.WaitGroup
	step := time.Now()
	for i, name := range names {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * 50 * time.Millisecond)
			_, errOut, code, err := runCLI(f.via.grpc, "devserver", "create", name, "--owner", "bob", "--flavor", "tiny", "--region", "lab", "--permanent")
			if err != nil {
				errOut, code = err.Error(), -1
			}
			results[i] = outcome{code, strings.TrimSpace(errOut)}
			ends[i] = time.Since(step)
		})
	}
	// The first creates are being made on the hosts by then (define and start take a few
	// hundred ms); the last ones reach the cluster while it elects a new leader.
	time.Sleep(75 * time.Millisecond)
	leader.kill9(t)
	killed := time.Since(step)
	// For the log: what a follower had applied when the leader died (it may lag the writes
	// acknowledged last by a heartbeat), and what the hosts ran by then.
	var atKill []string
	if out, _, code, err := runCLI(f.via.grpc, "devserver", "list", "--stale", "-o", "json"); err == nil && code == 0 {
		var ds []devserverJSON
		if json.Unmarshal([]byte(out), &ds) == nil {
			for _, d := range ds {
				if slices.Contains(names, d.Name) {
					atKill = append(atKill, d.Name+":"+strings.ToLower(strings.TrimPrefix(d.State, "DEVSERVER_STATE_")))
				}
			}
		}
	}
	for _, hn := range f.hostNames() {
		out, _ := virsh(f.hosts[hn], "list", "--name")
		atKill = append(atKill, hn+"="+strings.Join(strings.Fields(out), ","))
	}
	wg.Wait()
	for i, r := range results {
		if r.code == -1 {
			f.fatalf("devfleet devserver create %s did not run: %s", names[i], r.errOut)
		}
		t.Logf("create %s: exit %d after %v %s", names[i], r.code, ends[i].Round(time.Millisecond), r.errOut)
	}
	t.Logf("killed leader %s with SIGKILL %v after the creates began; then: %s", leader.id, killed.Round(time.Millisecond), strings.Join(atKill, " "))

	leader.start(t)
	newLeader := leaderOf(t, f.nodes)
	f.waitAgree(90*time.Second, "state and libvirt to agree after the leader was killed during creates")

	var ds []devserverJSON
	if err := f.list(&ds); err != nil {
		f.fatalf("%v", err)
	}
	var have []string
	for _, d := range ds {
		have = append(have, d.Name+"@"+d.Host)
	}
	for i, r := range results {
		exists := slices.ContainsFunc(ds, func(d devserverJSON) bool { return d.Name == names[i] })
		if r.code == 0 && !exists {
			f.fatalf("create %s was acknowledged but the devserver is gone after the leader was killed", names[i])
		}
	}
	t.Logf("after the crash (new leader %s): %s, all running, one guest each, no orphan; %v", newLeader.id, strings.Join(have, " "), time.Since(step).Round(time.Millisecond))
}

// hostState is a host's state (HOST_STATE_ACTIVE, HOST_STATE_CORDONED, ...).
func (f *lvFleet) hostState(name string) string {
	f.t.Helper()
	var h struct {
		State string `json:"state"`
	}
	cliJSON(f.t, f.via.grpc, &h, "host", "show", name)
	return h.State
}

// devserverJSON is what the checks read of `devserver show/list -o json`.
type devserverJSON struct {
	Name        string `json:"name"`
	Flavor      string `json:"flavor"`
	Region      string `json:"region"`
	ID          string `json:"id"`
	Owner       string `json:"owner"`
	Host        string `json:"host"`
	State       string `json:"state"`
	StateReason string `json:"state_reason"`
	Power       string `json:"power"`
	Domain      string `json:"domain"`
	Repairs     int    `json:"repairs"`
	DeleteTime  string `json:"delete_time"`
}

func (f *lvFleet) devserver(name string) (devserverJSON, error) {
	var d devserverJSON
	out, errOut, code, err := runCLI(f.via.grpc, "devserver", "show", name, "-o", "json")
	if err != nil {
		return d, err
	}
	if code != 0 {
		return d, fmt.Errorf("devserver show %s: exit %d: %s", name, code, strings.TrimSpace(errOut))
	}
	return d, json.Unmarshal([]byte(out), &d)
}

func (f *lvFleet) list(v *[]devserverJSON) error {
	out, errOut, code, err := runCLI(f.via.grpc, "devserver", "list", "-o", "json")
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("devserver list: exit %d: %s", code, strings.TrimSpace(errOut))
	}
	return json.Unmarshal([]byte(out), v)
}

// domain is one libvirt domain as virsh shows it.
type domain struct {
	host, name, state string
	// kind and id are from devfleet's metadata; empty when the domain has none.
	kind, id string
}

func (d domain) String() string {
	return fmt.Sprintf("%s/%s(%s, %s %s)", d.host, d.name, d.state, d.kind, d.id)
}

// domains lists every domain of every host, with its devfleet metadata.
func (f *lvFleet) domains() ([]domain, error) {
	var out []domain
	for _, hn := range f.hostNames() {
		list, err := virsh(f.hosts[hn], "list", "--all")
		if err != nil {
			return nil, err
		}
		for _, line := range parseList(list) {
			d := domain{host: hn, name: line[0], state: line[1]}
			meta, err := virsh(f.hosts[hn], "metadata", d.name, metadataNS)
			switch {
			case err == nil:
				var m struct {
					Kind string `xml:"kind"`
					ID   string `xml:"id"`
				}
				if err := xml.Unmarshal([]byte(meta), &m); err != nil {
					return nil, fmt.Errorf("%s: metadata of %s: %v\n%s", hn, d.name, err, meta)
				}
				d.kind, d.id = m.Kind, m.ID
			case strings.Contains(err.Error(), "metadata not found"):
			default:
				return nil, err // e.g. the domain went away meanwhile: the caller looks again
			}
			out = append(out, d)
		}
	}
	return out, nil
}

// parseList reads `virsh list --all` into name and state pairs.
func parseList(s string) [][2]string {
	var rows [][2]string
	for _, fields := range parseTable(s) {
		if len(fields) >= 3 {
			rows = append(rows, [2]string{fields[1], strings.Join(fields[2:], " ")})
		}
	}
	return rows
}

// parseTable splits the rows of a virsh table (after its header and rule) into fields.
func parseTable(s string) [][]string {
	var rows [][]string
	for i, line := range strings.Split(s, "\n") {
		if fields := strings.Fields(line); i >= 2 && len(fields) > 0 {
			rows = append(rows, fields)
		}
	}
	return rows
}

// volumes lists the volumes of devfleet's pool on a host (none before the host's first disk).
func (f *lvFleet) volumes(host string) ([]string, error) {
	out, err := virsh(f.hosts[host], "vol-list", pool)
	if err != nil && strings.Contains(err.Error(), "Storage pool not found") {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, row := range parseTable(out) {
		names = append(names, row[0])
	}
	return names, nil
}

// allNames lists a host's domains, running or not.
func (f *lvFleet) allNames(host string) ([]string, error) {
	out, err := virsh(f.hosts[host], "list", "--all", "--name")
	return strings.Fields(out), err
}

func (f *lvFleet) wantDomState(host, name, want string) error {
	got, err := virsh(f.hosts[host], "domstate", name)
	if err != nil {
		return err
	}
	if got = strings.TrimSpace(got); got != want {
		return fmt.Errorf("virsh domstate %s on %s = %q, want %q", name, host, got, want)
	}
	return nil
}

// agree checks that state and libvirt match: every devserver (but skip) is running, as exactly
// one running domain of the devserver's ID on the devserver's host and no domain of its name
// elsewhere; and every domain on the hosts is a devserver's.
func (f *lvFleet) agree(skip ...string) error {
	var ds []devserverJSON
	if err := f.list(&ds); err != nil {
		return err
	}
	doms, err := f.domains()
	if err != nil {
		return err
	}
	byName := map[string]devserverJSON{}
	for _, d := range ds {
		byName[d.Name] = d
	}
	var problems []string
	// Each devserver has its volume on its host, and no volume is left without one.
	for _, hn := range f.hostNames() {
		vols, err := f.volumes(hn)
		if err != nil {
			return err
		}
		for _, v := range vols {
			if d, ok := byName[strings.TrimSuffix(v, ".raw")]; !ok || d.Host != hn {
				problems = append(problems, fmt.Sprintf("volume %s on %s belongs to no devserver of %s", v, hn, hn))
			}
		}
		for _, d := range ds {
			if d.Host == hn && !slices.Contains(skip, d.Name) && !f.diskless[d.Flavor] && !slices.Contains(vols, d.Name+".raw") {
				problems = append(problems, fmt.Sprintf("%s has no volume %s.raw on %s: %v", d.Name, d.Name, hn, vols))
			}
		}
	}
	cs, err := f.containerList()
	if err != nil {
		return err
	}
	containers := map[string]containerJSON{}
	for _, c := range cs {
		containers[c.Name] = c
		n := 0
		for _, dom := range doms {
			if dom.name == c.Name {
				n++
			}
		}
		if c.State == "CONTAINER_STATE_RUNNING" && n != 1 {
			problems = append(problems, fmt.Sprintf("container %s is running on %s in the state; libvirt has %d domains of that name", c.Name, c.Host, n))
		}
	}
	for _, dom := range doms {
		d, ok := byName[dom.name]
		if c, isContainer := containers[dom.name]; dom.kind == "container" {
			if !isContainer || c.ID != dom.id || c.Host != dom.host {
				problems = append(problems, fmt.Sprintf("orphan container domain %v", dom))
			}
			continue
		}
		switch {
		case dom.kind == "":
			problems = append(problems, fmt.Sprintf("%v has no devfleet metadata", dom))
		case !ok:
			problems = append(problems, fmt.Sprintf("orphan %v: no devserver %s", dom, dom.name))
		case dom.kind != "devserver" || dom.id != d.ID || dom.host != d.Host:
			problems = append(problems, fmt.Sprintf("orphan %v: devserver %s is %s on %s", dom, d.Name, d.ID, d.Host))
		}
	}
	for _, d := range ds {
		if slices.Contains(skip, d.Name) {
			continue
		}
		if d.State != "DEVSERVER_STATE_RUNNING" || d.Power != "" || d.DeleteTime != "" {
			problems = append(problems, fmt.Sprintf("%s is %s on %s (%s)", d.Name, d.State, d.Host, d.StateReason))
			continue
		}
		var mine []domain
		for _, dom := range doms {
			if dom.name == d.Name {
				mine = append(mine, dom)
			}
		}
		if len(mine) != 1 || mine[0].host != d.Host || mine[0].state != "running" || mine[0].id != d.ID {
			problems = append(problems, fmt.Sprintf("%s (%s) is running on %s in the state; libvirt has %v", d.Name, d.ID, d.Host, mine))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("state and libvirt disagree:\n  %s", strings.Join(problems, "\n  "))
	}
	return nil
}

func (f *lvFleet) waitAgree(timeout time.Duration, what string) {
	f.t.Helper()
	f.waitFor(timeout, what, func() error { return f.agree() })
}

// waitFor polls cond until it returns nil; on timeout it fails with the fleet's state.
func (f *lvFleet) waitFor(timeout time.Duration, what string, cond func() error) {
	f.t.Helper()
	if err := poll(timeout, 200*time.Millisecond, cond); err != nil {
		f.fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
	}
}

// fatalf fails the test with what devfleet and libvirt show.
func (f *lvFleet) fatalf(format string, args ...any) {
	f.t.Helper()
	f.t.Fatalf("%s\n%s", fmt.Sprintf(format, args...), f.dump())
}

// dump is `devserver list`, every host's `virsh list --all` and the tail of each node's log.
func (f *lvFleet) dump() string {
	var b strings.Builder
	out, errOut, _, _ := runCLI(f.via.grpc, "devserver", "list", "--stale")
	fmt.Fprintf(&b, "--- devserver list (stale, from %s):\n%s%s", f.via.id, out, errOut)
	for _, hn := range f.hostNames() {
		out, err := virsh(f.hosts[hn], "list", "--all")
		fmt.Fprintf(&b, "--- virsh list --all on %s:\n%s", hn, out)
		if err != nil {
			fmt.Fprintf(&b, "%v\n", err)
		}
		vols, err := f.volumes(hn)
		fmt.Fprintf(&b, "--- volumes in pool %s on %s: %v %v\n", pool, hn, vols, err)
	}
	for _, n := range f.nodes {
		if n.log == nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(n.log.String(), "\n"), "\n")
		if len(lines) > 25 {
			lines = lines[len(lines)-25:]
		}
		fmt.Fprintf(&b, "--- devfleetd %s (running %v), last %d log lines:\n%s\n", n.id, n.running(), len(lines), strings.Join(lines, "\n"))
	}
	return b.String()
}

func (f *lvFleet) hostNames() []string {
	var names []string
	for n := range f.hosts {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// virsh runs virsh against a host and fails the test if it fails.
func (f *lvFleet) virsh(host string, args ...string) string {
	f.t.Helper()
	out, err := virsh(f.hosts[host], args...)
	if err != nil {
		f.fatalf("%v", err)
	}
	return out
}

// virsh runs virsh against a host's libvirt and returns its standard output.
func virsh(h libvirthost.Host, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "virsh", append([]string{"-c", h.URI}, args...)...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: virsh %s: %v: %s", h.Name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// runCLI is cli without the testing.T, for goroutines and polling: err is set only when the
// CLI could not be run at all.
func runCLI(addr string, args ...string) (stdout, stderr string, code int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "devfleet"), append([]string{"--addr", addr}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		exitErr, ok := err.(*exec.ExitError)
		if !ok {
			return "", "", 0, fmt.Errorf("devfleet %s: %v", strings.Join(args, " "), err)
		}
		return out.String(), errb.String(), exitErr.ExitCode(), nil
	}
	return out.String(), errb.String(), 0, nil
}

// nodeInfo is a host's CPUs and memory (MiB) as `virsh nodeinfo` reports them.
func (f *lvFleet) nodeInfo(host string) (cpus, memMiB int64) {
	f.t.Helper()
	out := f.virsh(host, "nodeinfo")
	for _, line := range strings.Split(out, "\n") {
		key, val, _ := strings.Cut(line, ":")
		fields := strings.Fields(val)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		switch strings.TrimSpace(key) {
		case "CPU(s)":
			cpus = n
		case "Memory size":
			memMiB = n / 1024 // KiB
		default:
			continue
		}
		if err != nil {
			f.fatalf("virsh nodeinfo on %s: %q: %v", host, line, err)
		}
	}
	if cpus == 0 || memMiB == 0 {
		f.fatalf("virsh nodeinfo on %s: no CPUs or memory in\n%s", host, out)
	}
	return cpus, memMiB
}

// coldMoves resizes ds4 on its host (a bigger flavor: shut down, redefined, started again, its
// disk grown, its data kept), then moves it to another region, followed with --monitor: shut
// down, its disk copied through libvirt storage streams, started on the far host only.
func (f *lvFleet) coldMoves(far libvirthost.Host) {
	t := f.t
	step := time.Now()
	d, err := f.devserver("ds4")
	if err != nil {
		f.fatalf("%v", err)
	}
	src := d.Host
	// Data on the disk (test guests boot nothing from it, so nothing else writes it).
	want := "devfleet keeps your disk\n"
	marker := filepath.Join(t.TempDir(), "marker")
	if err := os.WriteFile(marker, []byte(want), 0o644); err != nil {
		f.fatalf("%v", err)
	}
	f.virsh(src, "vol-upload", "--pool", "devfleet", "ds4.raw", marker)
	diskHolds := func(host string) error {
		out := filepath.Join(t.TempDir(), "read-back")
		if _, err := virsh(f.hosts[host], "vol-download", "--pool", "devfleet", "ds4.raw", out, "--length", fmt.Sprint(len(want))); err != nil {
			return err
		}
		got, err := os.ReadFile(out)
		if err != nil || string(got) != want {
			return fmt.Errorf("ds4.raw on %s starts with %q (%v), want %q", host, got, err, want)
		}
		return nil
	}

	f.must("flavor", "add", "tiny-big", "--cpus", "1", "--memory-mib", "256", "--disk-gib", "2")
	f.must("--as", "alice", "devserver", "migrate", "ds4", "--flavor", "tiny-big", "--wait")
	f.waitFor(30*time.Second, "ds4 resized on "+src, func() error {
		d, err := f.devserver("ds4")
		if err != nil {
			return err
		}
		if d.Host != src || d.Flavor != "tiny-big" || d.State != "DEVSERVER_STATE_RUNNING" {
			return fmt.Errorf("ds4 is %s on %s with flavor %s", d.State, d.Host, d.Flavor)
		}
		if info := f.virsh(src, "dominfo", "ds4"); !strings.Contains(info, "262144 KiB") {
			return fmt.Errorf("ds4 on %s after the resize:\n%s", src, info)
		}
		if info := f.virsh(src, "vol-info", "--pool", "devfleet", "ds4.raw"); !strings.Contains(info, "2.00 GiB") {
			return fmt.Errorf("ds4.raw on %s after the resize:\n%s", src, info)
		}
		if err := diskHolds(src); err != nil {
			return err
		}
		return f.agree()
	})
	t.Logf("cold resize of ds4 on %s (shutdown grace 2s included) in %v", src, time.Since(step).Round(time.Millisecond))

	step = time.Now()
	f.must("region", "add", "lab2")
	f.must("site", "add", "lab2a", "--region", "lab2")
	f.must("host", "add", far.Name, "--site", "lab2a", "--libvirt", far.URI, "--migration-uri", far.TCPURI, "--disk-gib", "20", "--cpu-overcommit", "4")
	f.hosts[far.Name] = far
	out, errOut, code := cli(t, f.via.grpc, "--as", "alice", "devserver", "migrate", "ds4", "--region", "lab2", "--monitor")
	if code != 0 || !strings.Contains(errOut, "(cold: shutting down)") || !strings.Contains(errOut, "(cold: copying disk)") {
		f.fatalf("migrate --region --monitor: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	t.Logf("migrate --region lab2 --monitor:\n%s%s", errOut, out)
	f.waitFor(30*time.Second, "ds4 on "+far.Name+" only, with its data", func() error {
		d, err := f.devserver("ds4")
		if err != nil {
			return err
		}
		if d.Host != far.Name || d.Region != "lab2" {
			return fmt.Errorf("ds4 is recorded on %s in %s", d.Host, d.Region)
		}
		if vols, err := f.volumes(src); err != nil || slices.Contains(vols, "ds4.raw") {
			return fmt.Errorf("%s still has ds4.raw (%v): %v", src, err, vols)
		}
		if err := diskHolds(far.Name); err != nil {
			return err
		}
		return f.agree()
	})
	t.Logf("cold move of ds4 %s -> %s (another region, 2 GiB disk copied) in %v", src, far.Name, time.Since(step).Round(time.Millisecond))
}

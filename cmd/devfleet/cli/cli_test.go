package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/devfleet/devfleet/controlplane/clustertest"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// result is what one devfleet command line did.
type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs a command line in-process, as main would.
func runCLI(args ...string) result {
	var out, errb bytes.Buffer
	code := Main(args, &out, &errb)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// testFleet is a test cluster and the CLI pointed at one of its nodes.
type testFleet struct {
	t    *testing.T
	c    *clustertest.Cluster
	addr string
}

func newFleet(t *testing.T) *testFleet {
	t.Helper()
	c := clustertest.New(t, 1, clustertest.Options{})
	return &testFleet{t: t, c: c, addr: c.Nodes[0].Server.GRPCAddr()}
}

// run runs a command line against the fleet's node.
func (f *testFleet) run(args ...string) result {
	return runCLI(append([]string{"--addr", f.addr}, args...)...)
}

// ok runs a command line that must succeed and returns its stdout.
func (f *testFleet) ok(args ...string) string {
	f.t.Helper()
	r := f.run(args...)
	if r.code != 0 || r.stderr != "" {
		f.t.Fatalf("devfleet %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// fail runs a command line that must fail with code and one error line containing each of
// wants, and nothing on stdout.
func (f *testFleet) fail(code int, args []string, wants ...string) {
	f.t.Helper()
	checkFailure(f.t, f.run(args...), code, wants...)
}

func checkFailure(t *testing.T, r result, code int, wants ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\n%s", r.code, code, r)
	}
	if r.stdout != "" {
		t.Errorf("stdout not empty:\n%s", r.stdout)
	}
	if !strings.HasPrefix(r.stderr, "devfleet: ") || !strings.HasSuffix(r.stderr, "\n") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("stderr is not one line \"devfleet: ...\": %q", r.stderr)
	}
	for _, w := range wants {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr %q does not contain %q", r.stderr, w)
		}
	}
}

// decode parses a JSON document the CLI printed.
func decode[T any](t *testing.T, out string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("output is not valid JSON: %v\n%s", err, out)
	}
	return v
}

// rows splits table output into lines of fields.
func rows(out string) [][]string {
	var rs [][]string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		rs = append(rs, strings.Fields(l))
	}
	return rs
}

// keyValues parses the "key: value" lines of a show command.
func keyValues(t *testing.T, out string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			t.Fatalf("line %q is not key: value", l)
		}
		m[k] = strings.TrimSpace(v)
	}
	return m
}

// seed creates region eu, site fra1 and the named hosts in it through the CLI.
func (f *testFleet) seed(hosts ...string) {
	f.t.Helper()
	f.ok("region", "add", "eu", "--description", "Europe")
	f.ok("site", "add", "fra1", "--region", "eu")
	for _, h := range hosts {
		f.ok("host", "add", h, "--site", "fra1", "--cpus", "32", "--memory-mib", "131072", "--disk-gib", "2000")
	}
}

func TestInventoryTableAndJSON(t *testing.T) {
	t.Parallel()
	f := newFleet(t)

	if got, want := f.ok("region", "add", "eu", "--description", "Europe"), "region eu created\n"; got != want {
		t.Errorf("region add printed %q, want %q", got, want)
	}
	if got, want := f.ok("site", "add", "fra1", "--region", "eu", "--description", "Frankfurt 1"), "site fra1 created in region eu\n"; got != want {
		t.Errorf("site add printed %q, want %q", got, want)
	}
	// No --libvirt: the in-process cluster has no hypervisor connector, so it refuses hosts with a
	// libvirt URI (TestServerErrors checks that --libvirt reaches the server).
	if got, want := f.ok("host", "add", "fra1-h1", "--site", "fra1", "--cpus", "32", "--memory-mib", "131072", "--disk-gib", "2000",
		"--gpus", "2", "--label", "rack=r12", "--label", "tier=gold",
		"--cpu-overcommit", "4", "--reserved-cpus", "2", "--reserved-memory-mib", "4096"),
		"host fra1-h1 created in site fra1 (region eu)\n"; got != want {
		t.Errorf("host add printed %q, want %q", got, want)
	}
	// JSON mode prints the created object.
	h2 := decode[map[string]any](t, f.ok("-o", "json", "host", "add", "fra1-h2", "--site", "fra1", "--cpus", "8", "--memory-mib", "16384", "--disk-gib", "100"))
	if h2["name"] != "fra1-h2" || h2["region"] != "eu" || h2["state"] != "HOST_STATE_ACTIVE" {
		t.Errorf("host add -o json = %v", h2)
	}
	f.ok("flavor", "add", "metal", "--cpus", "64", "--memory-mib", "262144", "--disk-gib", "2000", "--kind", "physical", "--description", "a whole machine")
	f.ok("flavor", "add", "small", "--cpus", "4", "--memory-mib", "16384", "--disk-gib", "100")

	t.Run("table", func(t *testing.T) {
		want := [][]string{
			{"NAME", "SITE", "REGION", "STATE", "HEALTH", "CPUS", "USED_CPUS", "MEMORY_MIB", "USED_MEMORY_MIB", "DISK_GIB", "GPUS", "REASON"},
			{"fra1-h1", "fra1", "eu", "active", "unknown", "32", "0", "131072", "0", "2000", "2", "-"},
			{"fra1-h2", "fra1", "eu", "active", "unknown", "8", "0", "16384", "0", "100", "0", "-"},
		}
		if got := rows(f.ok("host", "list")); !reflect.DeepEqual(got, want) {
			t.Errorf("host list:\n got %q\nwant %q", got, want)
		}
		out := f.ok("host", "list")
		if lines := strings.Split(out, "\n"); strings.Index(lines[0], "STATE") != strings.Index(lines[1], "active") {
			t.Errorf("host list columns are not aligned:\n%s", out)
		}
		if got, want := rows(f.ok("region", "list")), [][]string{{"NAME", "RESERVE", "DESCRIPTION"}, {"eu", "-", "Europe"}}; !reflect.DeepEqual(got, want) {
			t.Errorf("region list: got %q, want %q", got, want)
		}
		if got, want := rows(f.ok("site", "list", "--region", "eu")), [][]string{{"NAME", "REGION", "DESCRIPTION"}, {"fra1", "eu", "Frankfurt", "1"}}; !reflect.DeepEqual(got, want) {
			t.Errorf("site list: got %q, want %q", got, want)
		}
		wantFlavors := [][]string{
			{"NAME", "KIND", "CPUS", "MEMORY_MIB", "DISK_GIB", "GPUS", "ALLOWED_REGIONS", "REPAIR", "DESCRIPTION"},
			{"metal", "physical", "64", "262144", "2000", "0", "any", "recreate", "a", "whole", "machine"},
			{"small", "vm", "4", "16384", "100", "0", "any", "recreate", "-"},
		}
		if got := rows(f.ok("flavor", "list")); !reflect.DeepEqual(got, wantFlavors) {
			t.Errorf("flavor list:\n got %q\nwant %q", got, wantFlavors)
		}

		host := keyValues(t, f.ok("host", "show", "fra1-h1"))
		for k, v := range map[string]string{
			"name":           "fra1-h1",
			"site":           "fra1",
			"region":         "eu",
			"state":          "active",
			"state_reason":   "-",
			"health":         "unknown",
			"health_reason":  "-",
			"last_seen_time": "-",
			"capacity":       "vcpus=32 memory_mib=131072 disk_gib=2000 gpus=2",
			"reserved":       "vcpus=2 memory_mib=4096 disk_gib=0 gpus=0",
			"allocated":      "vcpus=0 memory_mib=0 disk_gib=0 gpus=0",
			"overcommit":     "cpu=4 memory=1 disk=1",
			"labels":         "rack=r12,tier=gold",
			"libvirt_uri":    "-",
		} {
			if host[k] != v {
				t.Errorf("host show: %s = %q, want %q", k, host[k], v)
			}
		}
		if _, err := time.Parse(time.RFC3339, host["create_time"]); err != nil {
			t.Errorf("host show: create_time %q: %v", host["create_time"], err)
		}
		if r := keyValues(t, f.ok("region", "show", "eu")); r["name"] != "eu" || r["description"] != "Europe" || r["reserve"] != "-" {
			t.Errorf("region show = %v", r)
		}
		if s := keyValues(t, f.ok("site", "show", "fra1")); s["region"] != "eu" || s["description"] != "Frankfurt 1" {
			t.Errorf("site show = %v", s)
		}
		if fl := keyValues(t, f.ok("flavor", "show", "metal")); fl["kind"] != "physical" || fl["resources"] != "vcpus=64 memory_mib=262144 disk_gib=2000 gpus=0" || fl["allowed_regions"] != "any" || fl["repair"] != "recreate" {
			t.Errorf("flavor show = %v", fl)
		}
	})

	t.Run("json", func(t *testing.T) {
		hosts := decode[[]map[string]any](t, f.ok("-o", "json", "host", "list"))
		if len(hosts) != 2 {
			t.Fatalf("host list -o json: %d hosts, want 2", len(hosts))
		}
		h := hosts[0]
		capacity, _ := h["capacity"].(map[string]any)
		// Proto field names (memory_mib, not memoryMib); int64 as strings, as protojson does.
		if h["name"] != "fra1-h1" || capacity["memory_mib"] != "131072" || capacity["vcpus"] != "32" || capacity["gpus"] != "2" {
			t.Errorf("host list -o json [0] = %v", h)
		}
		if _, camel := capacity["memoryMib"]; camel {
			t.Errorf("JSON uses camelCase names: %v", capacity)
		}
		if got := h["labels"]; !reflect.DeepEqual(got, map[string]any{"rack": "r12", "tier": "gold"}) {
			t.Errorf("labels = %v", got)
		}
		if _, set := h["libvirt_uri"]; set {
			t.Errorf("libvirt_uri = %v, want it left out", h["libvirt_uri"])
		}
		if oc, _ := h["overcommit"].(map[string]any); oc["cpu"] != 4.0 {
			t.Errorf("overcommit = %v", h["overcommit"])
		}

		one := decode[map[string]any](t, f.ok("host", "show", "fra1-h1", "-o", "json"))
		if !reflect.DeepEqual(one, h) {
			t.Errorf("host show -o json differs from its list entry:\n%v\n%v", one, h)
		}
		flavors := decode[[]map[string]any](t, f.ok("-o", "json", "flavor", "list"))
		// The default repair policy is the zero value, which JSON leaves out.
		if len(flavors) != 2 || flavors[0]["kind"] != "FLAVOR_KIND_PHYSICAL" || flavors[1]["kind"] != "FLAVOR_KIND_VM" ||
			flavors[0]["repair"] != nil || flavors[1]["repair"] != nil {
			t.Errorf("flavor list -o json = %v", flavors)
		}
		if r := decode[map[string]any](t, f.ok("-o", "json", "region", "show", "eu")); r["name"] != "eu" || r["create_index"] == nil {
			t.Errorf("region show -o json = %v", r)
		}
		if s := decode[[]map[string]any](t, f.ok("-o", "json", "site", "list")); len(s) != 1 || s[0]["region"] != "eu" {
			t.Errorf("site list -o json = %v", s)
		}
		// An empty list is an empty array, not nothing.
		if got := decode[[]any](t, f.ok("-o", "json", "devserver", "list")); len(got) != 0 {
			t.Errorf("devserver list -o json = %v", got)
		}
	})

	t.Run("delete", func(t *testing.T) {
		if got := f.ok("host", "delete", "fra1-h2"); got != "host fra1-h2 deleted\n" {
			t.Errorf("host delete printed %q", got)
		}
		f.fail(1, []string{"host", "show", "fra1-h2"}, `host "fra1-h2" not found`, "(NotFound)")
		if got := decode[map[string]any](t, f.ok("flavor", "delete", "small", "-o", "json")); got["index"] == nil {
			t.Errorf("flavor delete -o json = %v", got)
		}
		f.fail(1, []string{"flavor", "show", "small"}, "(NotFound)")
	})
}

func TestCordonUncordon(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.seed("fra1-h1", "fra1-h2")

	if got, want := f.ok("host", "cordon", "fra1-h1", "--reason", "disk swap"), "host fra1-h1 cordoned: disk swap\n"; got != want {
		t.Errorf("cordon printed %q, want %q", got, want)
	}
	if got := rows(f.ok("host", "list", "--state", "cordoned")); len(got) != 2 || got[1][0] != "fra1-h1" || got[1][3] != "cordoned" || strings.Join(got[1][11:], " ") != "disk swap" {
		t.Errorf("host list --state cordoned = %q", got)
	}
	if got := rows(f.ok("host", "list", "--state", "ACTIVE")); len(got) != 2 || got[1][0] != "fra1-h2" {
		t.Errorf("host list --state ACTIVE = %q", got)
	}
	if h := keyValues(t, f.ok("host", "show", "fra1-h1")); h["state"] != "cordoned" || h["state_reason"] != "disk swap" || h["state_change_time"] == "-" {
		t.Errorf("host show after cordon = %v", h)
	}
	if got, want := f.ok("host", "uncordon", "fra1-h1", "--reason", "disk replaced"), "host fra1-h1 uncordoned\n"; got != want {
		t.Errorf("uncordon printed %q, want %q", got, want)
	}
	if h := decode[map[string]any](t, f.ok("-o", "json", "host", "show", "fra1-h1")); h["state"] != "HOST_STATE_ACTIVE" || h["state_reason"] != nil {
		t.Errorf("host after uncordon = %v", h)
	}
	if got := rows(f.ok("host", "list", "--state", "cordoned")); len(got) != 1 {
		t.Errorf("host list --state cordoned after uncordon = %q, want the header only", got)
	}
	// JSON mode prints the host.
	if h := decode[map[string]any](t, f.ok("-o", "json", "host", "cordon", "fra1-h2", "--reason", "bad dimm")); h["state"] != "HOST_STATE_CORDONED" || h["state_reason"] != "bad dimm" {
		t.Errorf("cordon -o json = %v", h)
	}
}

// TestLibvirtHostCapacity: a host given --libvirt may leave --cpus and --memory-mib out and
// takes them from libvirt (here an in-memory host).
func TestLibvirtHostCapacity(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.seed()
	f.ok("host", "add", "lv1", "--site", "fra1", "--libvirt", "fake://lv1?cpus=12&memory_mib=24576", "--disk-gib", "500")
	h := decode[map[string]any](t, f.ok("-o", "json", "host", "show", "lv1"))
	if c, _ := h["capacity"].(map[string]any); c["vcpus"] != "12" || c["memory_mib"] != "24576" || c["disk_gib"] != "500" {
		t.Errorf("host lv1 registered without cpus and memory: capacity %v, want 12 vCPUs and 24576 MiB from libvirt, 500 GiB", h["capacity"])
	}
	f.fail(1, []string{"host", "add", "lv2", "--site", "fra1", "--libvirt", "fake://lv2?cpus=4&memory_mib=8192", "--disk-gib", "10", "--cpus", "8", "--memory-mib", "1024"},
		"host.capacity.vcpus", "declared 8", "reports 4", "(InvalidArgument)")
}

func TestServerErrors(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.seed("fra1-h1", "fra1-h2")

	for _, tc := range []struct {
		name  string
		args  []string
		wants []string
	}{
		{"duplicate region", []string{"region", "add", "eu"}, []string{`region "eu" already exists`, "(AlreadyExists)"}},
		{"duplicate host", []string{"host", "add", "fra1-h1", "--site", "fra1", "--cpus", "1", "--memory-mib", "1", "--disk-gib", "1"}, []string{"(AlreadyExists)"}},
		{"negative cpus", []string{"host", "add", "fra1-h9", "--site", "fra1", "--cpus=-1", "--memory-mib", "1", "--disk-gib", "1"}, []string{"host.capacity.vcpus", "-1", "(InvalidArgument)"}},
		{"bad libvirt uri", []string{"host", "add", "fra1-h9", "--site", "fra1", "--cpus", "1", "--memory-mib", "1", "--disk-gib", "1", "--libvirt", "http://x"}, []string{"host.libvirt_uri", "(InvalidArgument)"}},
		{"missing region", []string{"site", "add", "mars1", "--region", "mars"}, []string{`region "mars" not found`, "(NotFound)"}},
		{"missing site", []string{"host", "add", "h", "--site", "nope", "--cpus", "1", "--memory-mib", "1", "--disk-gib", "1"}, []string{`site "nope" not found`, "(NotFound)"}},
		{"list filter on a missing site", []string{"host", "list", "--site", "nope"}, []string{`site "nope" not found`, "(NotFound)"}},
		{"show missing", []string{"region", "show", "mars", "--stale"}, []string{`region "mars" not found`, "(NotFound)"}},
		{"delete site with hosts", []string{"site", "delete", "fra1"}, []string{`site "fra1"`, "fra1-h1, fra1-h2", "(FailedPrecondition)"}},
		{"delete region with sites", []string{"region", "delete", "eu"}, []string{"fra1", "(FailedPrecondition)"}},
		{"empty cordon reason", []string{"host", "cordon", "fra1-h1", "--reason", ""}, []string{"reason", "(InvalidArgument)"}},
		{"remove the leader", []string{"cluster", "remove", "n1"}, []string{"transfer-leadership", "(FailedPrecondition)"}},
		{"join with a bad address", []string{"cluster", "join", "n9", "--raft-addr", "nowhere", "--grpc-addr", "127.0.0.1:1"}, []string{"raft_address", "(InvalidArgument)"}},
		{"restore a file that is not an archive", []string{"cluster", "snapshot", "restore", writeFile(t, "garbage")}, []string{"(InvalidArgument)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checkFailure(t, f.run(tc.args...), 1, tc.wants...)
		})
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUsageErrors checks that bad command lines exit 2 with one readable line, before the CLI
// contacts anything.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var contacted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			contacted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	addr := ln.Addr().String()
	hostAdd := []string{"host", "add", "h1", "--site", "s", "--cpus", "1", "--memory-mib", "1", "--disk-gib", "1"}
	create := []string{"devserver", "create", "d1", "--owner", "bob", "--flavor", "small", "--region", "eu"}

	for _, tc := range []struct {
		name  string
		args  []string
		wants []string
	}{
		{"label without =", slices.Concat(hostAdd, []string{"--label", "bad"}), []string{"host add", `"bad"`, "--label", "key=value"}},
		{"label without key", slices.Concat(hostAdd, []string{"--label", "=v"}), []string{"--label", "key=value"}},
		{"label twice", slices.Concat(hostAdd, []string{"--label", "a=1", "--label", "a=2"}), []string{`label "a" given twice`}},
		{"output before the command", []string{"-o", "yaml", "region", "list"}, []string{`"yaml"`, "must be table or json"}},
		{"output after the command", []string{"region", "list", "--output=yaml"}, []string{"must be table or json"}},
		{"bad state", []string{"host", "list", "--state", "asleep"}, []string{`"asleep"`, "active, cordoned, draining, drained, decommissioning or retired"}},
		{"bad kind", []string{"flavor", "add", "f", "--cpus", "1", "--memory-mib", "1", "--disk-gib", "1", "--kind", "container"}, []string{"--kind", "vm or physical"}},
		{"bad repair", []string{"flavor", "add", "f", "--cpus", "1", "--memory-mib", "1", "--disk-gib", "1", "--repair", "sometimes"}, []string{"flavor add: ", `"sometimes"`, "--repair", "must be recreate or notify-only"}},
		{"repair with an underscore", []string{"flavor", "add", "f", "--cpus", "1", "--memory-mib", "1", "--disk-gib", "1", "--repair=notify_only"}, []string{"--repair", "must be recreate or notify-only"}},
		{"not a number", []string{"host", "add", "h1", "--site", "s", "--cpus", "many", "--memory-mib", "1", "--disk-gib", "1"}, []string{"--cpus"}},
		{"missing name", []string{"host", "show"}, []string{"host show: expects NAME, got 0 arguments"}},
		{"two names", []string{"region", "delete", "a", "b"}, []string{"region delete: expects NAME, got 2 arguments (a b)"}},
		{"arguments to a list", []string{"region", "list", "eu"}, []string{"expects no arguments, got 1 argument"}},
		{"two node ids", []string{"cluster", "transfer-leadership", "n1", "n2"}, []string{"[NODE_ID]"}},
		{"cordon without reason", []string{"host", "cordon", "h1"}, []string{`required flag(s) "reason" not set`}},
		{"host without capacity", []string{"host", "add", "h1", "--site", "s"}, []string{`"cpus"`, `"disk-gib"`, `"memory-mib"`}},
		{"host without anything", []string{"host", "add", "h1"}, []string{`host add: required flag(s) "cpus", "disk-gib", "memory-mib", "site" not set`}},
		{"libvirt host without disk", []string{"host", "add", "h1", "--site", "s", "--libvirt", "qemu:///system"}, []string{`host add: required flag(s) "disk-gib" not set`}},
		{"libvirt host with cpus only", []string{"host", "add", "h1", "--site", "s", "--libvirt", "qemu:///system", "--disk-gib", "1", "--cpus", "2"}, []string{"give both --cpus and --memory-mib, or neither to take them from libvirt"}},
		{"site without region", []string{"site", "add", "s"}, []string{`"region"`}},
		{"join without raft address", []string{"cluster", "join", "n4", "--grpc-addr", "10.0.0.4:7401"}, []string{`"raft-addr"`}},
		{"expires-in and permanent", slices.Concat(create, []string{"--expires-in", "72h", "--permanent"}), []string{"devserver create: --expires-in and --permanent exclude each other"}},
		{"neither expires-in nor permanent", create, []string{"devserver create: give --expires-in DURATION for a temporary devserver, or --permanent"}},
		{"expires-in not positive", slices.Concat(create, []string{"--expires-in", "0s"}), []string{"--expires-in must be positive, got 0s"}},
		{"host with site", slices.Concat(create, []string{"--permanent", "--host", "h1", "--site", "s"}), []string{"--site and --spread guide placement; leave them out with --host"}},
		{"host with spread", slices.Concat(create, []string{"--permanent", "--host", "h1", "--spread", "sites"}), []string{"leave them out with --host"}},
		{"bad spread", slices.Concat(create, []string{"--permanent", "--spread", "racks"}), []string{`"racks"`, "--spread", "must be hosts or sites"}},
		{"empty sharer", slices.Concat(create, []string{"--permanent", "--sharer", "alice,"}), []string{`--sharer: empty name in "alice,"`}},
		{"empty feature", slices.Concat(create, []string{"--permanent", "--feature", "gpu,"}), []string{`devserver create: --feature: empty name in "gpu,"`}},
		{"no feature", slices.Concat(create, []string{"--permanent", "--feature", ""}), []string{"devserver create: --feature needs at least one name"}},
		{"stop without a name", []string{"devserver", "stop"}, []string{"devserver stop: expects NAME, got 0 arguments"}},
		{"start two", []string{"devserver", "start", "a", "b"}, []string{"devserver start: expects NAME, got 2 arguments (a b)"}},
		{"notices without owner", []string{"notice", "list"}, []string{"notice list: ", `required flag(s) "owner" not set`}},
		{"notices limit zero", []string{"notice", "list", "--owner", "bob", "--limit", "0"}, []string{"notice list: --limit must be at least 1, got 0"}},
		{"notices limit not a number", []string{"notice", "list", "--owner", "bob", "--limit", "all"}, []string{"--limit"}},
		{"unknown notice subcommand", []string{"notice", "lst"}, []string{`unknown command "lst" for "devfleet notice"`, "did you mean list?"}},
		{"create without owner", []string{"devserver", "create", "d1", "--flavor", "small", "--region", "eu", "--permanent"}, []string{`required flag(s) "owner" not set`}},
		{"extend without by", []string{"devserver", "extend", "d1"}, []string{`required flag(s) "by" not set`}},
		{"extend by nothing", []string{"devserver", "extend", "d1", "--by", "-1h"}, []string{"devserver extend: --by must be positive, got -1h0m0s"}},
		{"share without anyone", []string{"devserver", "share", "d1"}, []string{`required flag(s) "with" not set`}},
		{"unshare with nobody", []string{"devserver", "unshare", "d1", "--with", ""}, []string{"devserver unshare: --with needs at least one name"}},
		{"region update without a change", []string{"region", "update", "eu"}, []string{"region update: nothing to change: give --description, --reserve-fraction, --reserve-hosts or --no-reserve"}},
		{"two reserves", []string{"region", "update", "eu", "--reserve-fraction", "0.1", "--reserve-hosts", "2"}, []string{"--reserve-fraction and --reserve-hosts exclude each other"}},
		{"reserve and no reserve", []string{"region", "update", "eu", "--reserve-hosts", "2", "--no-reserve"}, []string{"--reserve-hosts and --no-reserve exclude each other"}},
		{"flavor update without a change", []string{"flavor", "update", "xl"}, []string{"flavor update: nothing to change: give --description, --allowed-regions or --any-region"}},
		{"allowed and any region", []string{"flavor", "update", "xl", "--allowed-regions", "eu", "--any-region"}, []string{"--allowed-regions and --any-region exclude each other"}},
		{"empty allowed regions", []string{"flavor", "update", "xl", "--allowed-regions", ""}, []string{"--allowed-regions needs at least one name"}},
		{"empty name in allowed regions", []string{"flavor", "add", "xl", "--cpus", "1", "--memory-mib", "1", "--disk-gib", "1", "--allowed-regions", "eu,"}, []string{`--allowed-regions: empty name in "eu,"`}},
		{"lose nothing", []string{"capacity", "lose"}, []string{"capacity lose: name what to lose: give --region, --site or --hosts"}},
		{"lose no hosts", []string{"capacity", "lose", "--hosts", ""}, []string{"--hosts needs at least one name"}},
		{"lose with an argument", []string{"capacity", "lose", "eu"}, []string{"capacity lose: expects no arguments, got 1 argument (eu)"}},
		{"place without flavor", []string{"capacity", "place", "--region", "eu"}, []string{`required flag(s) "flavor" not set`}},
		{"place spread without owner", []string{"capacity", "place", "--flavor", "small", "--region", "eu", "--spread", "hosts"}, []string{"--owner and --spread go together"}},
		{"place owner without spread", []string{"capacity", "place", "--flavor", "small", "--region", "eu", "--owner", "bob"}, []string{"--owner and --spread go together"}},
		{"unknown capacity subcommand", []string{"capacity", "reprot"}, []string{`unknown command "reprot" for "devfleet capacity"`, "did you mean report?"}},
		{"migrate without a name", []string{"devserver", "migrate", "--to-host", "h2"}, []string{"devserver migrate: expects NAME, got 0 arguments"}},
		{"bad migration reason", []string{"devserver", "migrate", "d1", "--reason", "bogus"}, []string{"devserver migrate: ", `"bogus"`, "--reason", "must be maintenance, user, rebalance or evacuation"}},
		{"negative max downtime", []string{"devserver", "migrate", "d1", "--max-downtime", "-300ms"}, []string{"devserver migrate: --max-downtime must not be negative, got -300ms"}},
		{"max downtime below a millisecond", []string{"devserver", "migrate", "d1", "--max-downtime", "1500us"}, []string{"--max-downtime is in whole milliseconds, got 1.5ms"}},
		{"negative bandwidth", []string{"devserver", "migrate", "d1", "--bandwidth-mibps", "-5"}, []string{"--bandwidth-mibps"}},
		{"priority not a number", []string{"devserver", "migrate", "d1", "--priority", "high"}, []string{"--priority"}},
		{"empty destination", []string{"devserver", "migrate", "d1", "--to-host", ""}, []string{"--to-host must not be empty; leave it out to let devfleet choose the host"}},
		{"empty region", []string{"devserver", "migrate", "d1", "--region", ""}, []string{"--region must not be empty; leave it out to stay in the devserver's region"}},
		{"empty flavor", []string{"devserver", "migrate", "d1", "--flavor", ""}, []string{"--flavor must not be empty; leave it out to keep the devserver's flavor"}},
		{"bad start time", []string{"devserver", "migrate", "d1", "--at", "tomorrow"}, []string{`devserver migrate: --at: want an RFC 3339 time such as 2026-11-24T02:00:00Z or +8h, got "tomorrow"`}},
		{"bad relative start time", []string{"devserver", "migrate", "d1", "--at", "+soon"}, []string{`--at: want +DURATION such as +8h, got "+soon"`}},
		{"empty as", []string{"--as", "", "devserver", "migrate", "d1"}, []string{"devserver migrate: --as must not be empty"}},
		{"drain nothing", []string{"drain", "start", "--reason", "x"}, []string{"drain start: name what to drain: give --hosts, --site or --region"}},
		{"drain hosts and a site", []string{"drain", "start", "--hosts", "h1", "--site", "s1", "--reason", "x"}, []string{"--hosts and --site exclude each other"}},
		{"drain without a reason", []string{"drain", "start", "--hosts", "h1"}, []string{"--reason is required"}},
		{"drain with a past deadline", []string{"drain", "start", "--hosts", "h1", "--reason", "x", "--deadline", "-1h"}, []string{"--deadline must be a positive duration from now"}},
		{"drain empty host list", []string{"drain", "start", "--hosts", "", "--reason", "x"}, []string{"--hosts needs at least one name"}},
		{"drain monitor a dry run", []string{"drain", "start", "--hosts", "h1", "--reason", "x", "--dry-run", "--monitor"}, []string{"--monitor and --dry-run exclude each other"}},
		{"drain bad deadline action", []string{"drain", "start", "--hosts", "h1", "--reason", "x", "--deadline-action", "explode"}, []string{"--deadline-action", "leave, cold_migrate or stop"}},
		{"extend without by", []string{"drain", "extend", "abc"}, []string{"drain extend: --by must be a positive duration, e.g. 2h, got 0s"}},
		{"decom without a reason", []string{"decom", "start", "h1"}, []string{"decom start: --reason is required"}},
		{"decom announce and now", []string{"decom", "start", "h1", "--reason", "x", "--announce", "1h", "--now"}, []string{"--announce and --now exclude each other"}},
		{"at without when", []string{"events", "at", "host", "h1"}, []string{"events at: say when: give --index or --time"}},
		{"watch since and after", []string{"events", "watch", "--since", "1h", "--after", "12/0"}, []string{"--since and --after exclude each other"}},
		{"watch after garbage", []string{"events", "watch", "--after", "soon"}, []string{`--after: want INDEX/N as printed, e.g. 1042/0, got "soon"`}},
		{"decom host and site", []string{"decom", "start", "h1", "--site", "s1", "--reason", "x"}, []string{"decom start: expects no arguments, got 1 argument (h1)"}},
		{"migration show without an ID", []string{"migration", "show"}, []string{"migration show: expects ID, got 0 arguments"}},
		{"abort two migrations", []string{"migration", "abort", "a", "b"}, []string{"migration abort: expects ID, got 2 arguments (a b)"}},
		{"unknown migration subcommand", []string{"migration", "lsit"}, []string{`unknown command "lsit" for "devfleet migration"`, "did you mean list?"}},
		{"unknown flag", []string{"region", "list", "--colour"}, []string{"unknown flag: --colour"}},
		{"unknown command", []string{"hots", "list"}, []string{`unknown command "hots"`, "did you mean host?"}},
		{"unknown subcommand", []string{"host", "lsit"}, []string{`unknown command "lsit" for "devfleet host"`, "did you mean list?"}},
		{"unknown snapshot subcommand", []string{"cluster", "snapshot", "take", "f"}, []string{`unknown command "take"`}},
		{"negative timeout", []string{"--timeout", "-1s", "region", "list"}, []string{"--timeout must not be negative"}},
		{"empty address", []string{"region", "list", "--addr", ""}, []string{"--addr must not be empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--addr", addr}, tc.args...)
			if tc.name == "empty address" {
				args = tc.args
			}
			checkFailure(t, runCLI(args...), 2, tc.wants...)
		})
	}
	time.Sleep(50 * time.Millisecond) // let a stray connection reach Accept
	if n := contacted.Load(); n != 0 {
		t.Errorf("usage errors contacted the server %d times", n)
	}
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	t.Run("nothing listens", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		checkFailure(t, runCLI("--addr", addr, "region", "list"), 1, "cannot reach "+addr+": ", "connection refused", "(Unavailable)")
	})
	t.Run("no answer", func(t *testing.T) {
		t.Parallel()
		// Accepts connections and never speaks: the call runs into --timeout.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			var conns []net.Conn
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				conns = append(conns, c)
			}
		}()
		addr := ln.Addr().String()
		checkFailure(t, runCLI("--addr", addr, "--timeout", "300ms", "cluster", "status"), 1, "no answer from "+addr+" within 300ms", "(DeadlineExceeded)")
	})
}

// TestThreeNodes writes through a follower and reads through another node, consistently and
// with --stale.
func TestThreeNodes(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, 3, clustertest.Options{})
	leader := c.WaitLeader()
	followers := c.Followers()
	if len(followers) != 2 {
		t.Fatalf("%d followers, want 2", len(followers))
	}
	writer := &testFleet{t: t, c: c, addr: followers[0].Server.GRPCAddr()}
	reader := &testFleet{t: t, c: c, addr: followers[1].Server.GRPCAddr()}

	writer.seed("fra1-h1")
	writer.ok("host", "cordon", "fra1-h1", "--reason", "disk swap")

	// A consistent read goes through the leader: the write is there at once.
	if h := keyValues(t, reader.ok("host", "show", "fra1-h1")); h["state"] != "cordoned" {
		t.Errorf("consistent read through the other follower: state %q", h["state"])
	}
	// A stale read is served by the follower itself, which catches up shortly.
	clustertest.WaitFor(t, 10*time.Second, "the follower to apply the cordon", func() error {
		r := reader.run("host", "list", "--stale", "--state", "cordoned", "-o", "json")
		if r.code != 0 {
			return fmt.Errorf("%s", r)
		}
		var hosts []map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &hosts); err != nil {
			return err
		}
		if len(hosts) != 1 || hosts[0]["name"] != "fra1-h1" {
			return fmt.Errorf("stale host list = %v", hosts)
		}
		return nil
	})
	if r := keyValues(t, reader.ok("region", "show", "eu", "--stale")); r["description"] != "Europe" {
		t.Errorf("stale region show = %v", r)
	}

	st := keyValues(t, reader.ok("cluster", "status"))
	if st["node_id"] != followers[1].ID || st["state"] != "follower" || st["leader_id"] != leader.ID || st["voters"] != "3" {
		t.Errorf("cluster status through %s = %v", followers[1].ID, st)
	}
	for _, stale := range []string{"--stale=false", "--stale"} {
		members := decode[[]map[string]any](t, reader.ok("cluster", "members", "-o", "json", stale))
		leaders := 0
		for _, m := range members {
			if m["suffrage"] != "SUFFRAGE_VOTER" {
				t.Errorf("member %v is not a voter", m)
			}
			if m["leader"] == true {
				leaders++
				if m["node_id"] != leader.ID {
					t.Errorf("leader is %v, want %s", m["node_id"], leader.ID)
				}
			}
		}
		if len(members) != 3 || leaders != 1 {
			t.Errorf("cluster members %s = %v", stale, members)
		}
	}
	if got := rows(reader.ok("cluster", "members")); len(got) != 4 || strings.Join(got[0], " ") != "NODE_ID SUFFRAGE LEADER RAFT_ADDRESS GRPC_ADDRESS HTTP_ADDRESS" {
		t.Errorf("cluster members table = %q", got)
	}

	// Leadership moves to the named follower.
	target := followers[1].ID
	if got, want := writer.ok("cluster", "transfer-leadership", target), "leadership transferred to "+target+"\n"; got != want {
		t.Errorf("transfer-leadership printed %q, want %q", got, want)
	}
	clustertest.WaitFor(t, 10*time.Second, target+" to lead", func() error {
		if l := c.Leader(); l == nil || l.ID != target {
			return fmt.Errorf("leader is not %s", target)
		}
		return nil
	})
}

func TestClusterMembership(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	// A non-voter does not count for quorum, so the single node commits without it.
	m := decode[map[string]any](t, f.ok("-o", "json", "cluster", "join", "n9", "--raft-addr", "127.0.0.1:1", "--grpc-addr", "127.0.0.1:2", "--http-addr", "127.0.0.1:3", "--nonvoter"))
	if m["node_id"] != "n9" || m["suffrage"] != "SUFFRAGE_NONVOTER" || m["http_address"] != "127.0.0.1:3" {
		t.Errorf("cluster join -o json = %v", m)
	}
	var n9 []string
	for _, r := range rows(f.ok("cluster", "members")) {
		if r[0] == "n9" {
			n9 = r
		}
	}
	if want := []string{"n9", "nonvoter", "no", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}; !reflect.DeepEqual(n9, want) {
		t.Errorf("cluster members row of n9 = %q, want %q", n9, want)
	}
	if got := f.ok("cluster", "remove", "n9"); got != "member n9 removed\n" {
		t.Errorf("cluster remove printed %q", got)
	}
	if got := rows(f.ok("cluster", "members")); len(got) != 2 || got[1][0] != "n1" {
		t.Errorf("cluster members after remove = %q", got)
	}
	if st := decode[map[string]any](t, f.ok("-o", "json", "cluster", "status")); st["node_id"] != "n1" || st["state"] != "RAFT_STATE_LEADER" || st["leader_ready"] != true {
		t.Errorf("cluster status -o json = %v", st)
	}
}

func TestPaging(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := context.Background()
	var want []string
	for i := range 30 {
		name := fmt.Sprintf("r%02d", i)
		want = append(want, name)
		if _, err := f.c.Nodes[0].Fleet().CreateRegion(ctx, &v1.CreateRegionRequest{Region: &v1.Region{Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, size := range []string{"7", "10", "500"} {
		regions := decode[[]map[string]any](t, f.ok("-o", "json", "region", "list", "--page-size", size))
		var got []string
		for _, r := range regions {
			got = append(got, r["name"].(string))
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("region list --page-size %s: got %v, want %v", size, got, want)
		}
	}
	if got := rows(f.ok("region", "list", "--page-size", "4", "--stale")); len(got) != 31 || got[30][0] != "r29" {
		t.Errorf("region list table across pages: %d lines", len(got))
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "fleet.snap")

	f.seed("fra1-h1")
	out := f.ok("cluster", "snapshot", "save", file)
	info, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("wrote %d bytes to %s\n", info.Size(), file); out != want || info.Size() == 0 {
		t.Errorf("snapshot save printed %q, want %q", out, want)
	}
	if _, err := os.Stat(file + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("%s.tmp left behind: %v", file, err)
	}
	saved := decode[map[string]any](t, f.ok("-o", "json", "cluster", "snapshot", "save", file+"2"))
	if info2, err := os.Stat(file + "2"); err != nil || saved["file"] != file+"2" || saved["bytes"] != float64(info2.Size()) {
		t.Errorf("snapshot save -o json = %v; file: %v, %v", saved, info2, err)
	}

	// Change the state, then go back to the archive.
	f.ok("host", "delete", "fra1-h1")
	f.ok("region", "add", "us")
	out = f.ok("cluster", "snapshot", "restore", file)
	if !strings.HasPrefix(out, "restored "+file+": cluster state is at index ") {
		t.Errorf("snapshot restore printed %q", out)
	}
	if h := keyValues(t, f.ok("host", "show", "fra1-h1")); h["site"] != "fra1" {
		t.Errorf("host after restore = %v", h)
	}
	f.fail(1, []string{"region", "show", "us"}, "(NotFound)")
	if r := decode[map[string]any](t, f.ok("-o", "json", "cluster", "snapshot", "restore", file)); r["index"] == nil {
		t.Errorf("snapshot restore -o json = %v", r)
	}

	// A save that cannot write leaves nothing behind; a missing file fails before the upload.
	f.fail(1, []string{"cluster", "snapshot", "save", filepath.Join(dir, "missing", "x.snap")}, "no such file or directory")
	f.fail(1, []string{"cluster", "snapshot", "restore", filepath.Join(dir, "missing.snap")}, "missing.snap", "no such file or directory")
}

func TestDevservers(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.seed("fra1-h1")
	f.ok("flavor", "add", "small", "--cpus", "4", "--memory-mib", "16384", "--disk-gib", "100")
	// On a host of the operator's choosing, rather than placed.
	if got, want := f.ok("devserver", "create", "alice-dev", "--owner", "alice", "--flavor", "small", "--region", "eu", "--host", "fra1-h1", "--permanent"),
		"devserver alice-dev created on fra1-h1 (site fra1, region eu), permanent\n"; got != want {
		t.Errorf("devserver create --host printed %q, want %q", got, want)
	}

	want := [][]string{
		{"NAME", "OWNER", "FLAVOR", "REGION", "SITE", "HOST", "STATE", "LIFESPAN", "EXPIRES"},
		{"alice-dev", "alice", "small", "eu", "fra1", "fra1-h1", "provisioning", "permanent", "-"},
	}
	for _, filter := range [][]string{nil, {"--owner", "alice"}, {"--host", "fra1-h1"}, {"--site", "fra1", "--region", "eu", "--stale"}} {
		if got := rows(f.ok(append([]string{"devserver", "list"}, filter...)...)); !reflect.DeepEqual(got, want) {
			t.Errorf("devserver list %v:\n got %q\nwant %q", filter, got, want)
		}
	}
	if got := rows(f.ok("devserver", "list", "--owner", "bob")); len(got) != 1 {
		t.Errorf("devserver list --owner bob = %q, want the header only", got)
	}
	d := keyValues(t, f.ok("devserver", "show", "alice-dev"))
	if d["owner"] != "alice" || d["host"] != "fra1-h1" || d["lifespan"] != "permanent" || d["id"] == "-" {
		t.Errorf("devserver show = %v", d)
	}
	if d := decode[map[string]any](t, f.ok("-o", "json", "devserver", "show", "alice-dev", "--stale")); d["lifespan"] != "LIFESPAN_PERMANENT" || d["state"] != "DEVSERVER_STATE_PROVISIONING" {
		t.Errorf("devserver show -o json = %v", d)
	}
	f.fail(1, []string{"host", "delete", "fra1-h1"}, "alice-dev", "(FailedPrecondition)")
	f.fail(1, []string{"devserver", "list", "--host", "nope"}, `host "nope" not found`, "(NotFound)")
}

func TestCompletion(t *testing.T) {
	t.Parallel()
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		r := runCLI("completion", shell)
		if r.code != 0 || !strings.Contains(r.stdout, "devfleet") || r.stderr != "" {
			t.Errorf("completion %s: %s", shell, r)
		}
	}
	if r := runCLI("completion", "bash"); !strings.Contains(r.stdout, "bash completion") {
		t.Errorf("completion bash does not look like a bash completion script:\n%.200s", r.stdout)
	}

	f := newFleet(t)
	f.seed("fra1-h1", "fra1-h2", "fra2-h1")
	complete := func(args ...string) []string {
		t.Helper()
		r := f.run(append([]string{"__complete"}, args...)...)
		if r.code != 0 {
			t.Fatalf("__complete %v: %s", args, r)
		}
		lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
		return lines[:len(lines)-1] // the last line is the directive
	}
	if got, want := complete("host", "show", "fra1-"), []string{"fra1-h1", "fra1-h2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("completing host show fra1-: %q, want %q", got, want)
	}
	if got, want := complete("host", "list", "--state", "dr"), []string{"draining", "drained"}; !reflect.DeepEqual(got, want) {
		t.Errorf("completing --state dr: %q, want %q", got, want)
	}
	if got, want := complete("site", "add", "x", "--region", ""), []string{"eu"}; !reflect.DeepEqual(got, want) {
		t.Errorf("completing --region: %q, want %q", got, want)
	}
	if got, want := complete("devserver", "create", "x", "--spread", ""), []string{"hosts", "sites"}; !reflect.DeepEqual(got, want) {
		t.Errorf("completing --spread: %q, want %q", got, want)
	}
	if got, want := complete("flavor", "add", "x", "--repair", ""), []string{"recreate", "notify-only"}; !reflect.DeepEqual(got, want) {
		t.Errorf("completing --repair: %q, want %q", got, want)
	}
	if got, want := complete("capacity", "lose", "--hosts", "fra1-"), []string{"fra1-h1", "fra1-h2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("completing capacity lose --hosts fra1-: %q, want %q", got, want)
	}
	if got := complete("host", "show", "fra1-h1", ""); len(got) != 0 {
		t.Errorf("completing a second name: %q, want nothing", got)
	}
}

// TestAddressFromEnvironment checks that DEVFLEET_ADDR replaces the default address.
func TestAddressFromEnvironment(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.ok("region", "add", "eu")
	getenv := func(k string) string {
		if k == addrEnv {
			return f.addr
		}
		return ""
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"region", "list"}, &out, &errb, getenv); code != 0 || !strings.Contains(out.String(), "eu") {
		t.Errorf("region list with %s=%s: exit %d, stdout %q, stderr %q", addrEnv, f.addr, code, out.String(), errb.String())
	}
	out.Reset()
	run(context.Background(), []string{"--help"}, &out, &errb, func(string) string { return "" })
	if !strings.Contains(out.String(), `(default "`+defaultAddr+`")`) {
		t.Errorf("help does not show the default address %s:\n%s", defaultAddr, out.String())
	}
}

func TestShortEnumNames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   protoreflect.Enum
		want string
	}{
		{v1.HostState_HOST_STATE_CORDONED, "cordoned"},
		{v1.HostState_HOST_STATE_DECOMMISSIONING, "decommissioning"},
		{v1.HostState_HOST_STATE_UNSPECIFIED, ""},
		{v1.FlavorKind_FLAVOR_KIND_PHYSICAL, "physical"},
		{v1.RaftState_RAFT_STATE_LEADER, "leader"},
		{v1.Suffrage_SUFFRAGE_NONVOTER, "nonvoter"},
		{v1.HostState(42), "42"},
	} {
		if got := short(tc.in); got != tc.want {
			t.Errorf("short(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// events watch replays the feed from --since, prints one line per event (JSON with -o json),
// and ends cleanly at --timeout.
func TestEventsWatch(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.seed("fra1-h1")
	f.ok("host", "cordon", "fra1-h1", "--reason", "disk swap")
	out := f.ok("events", "watch", "--since", "1h", "--topic", "host", "--timeout", "1s")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "host fra1-h1 changed") || !strings.Contains(lines[1], "host fra1-h1 changed") {
		t.Fatalf("events watch printed:\n%s", out)
	}
	js := f.ok("-o", "json", "events", "watch", "--since", "1h", "--topic", "host", "--timeout", "1s")
	var e map[string]any
	if err := json.Unmarshal([]byte(strings.Split(strings.TrimSpace(js), "\n")[1]), &e); err != nil {
		t.Fatalf("events watch -o json: %v\n%s", err, js)
	}
	if obj, _ := e["object"].(map[string]any); obj["state"] != "HOST_STATE_CORDONED" {
		t.Fatalf("the cordon's event: %v", e)
	}
	if out := f.ok("events", "list", "host", "fra1-h1"); strings.Count(out, "host fra1-h1 changed") != 2 {
		t.Fatalf("events list:\n%s", out)
	}
	if out := f.ok("events", "at", "host", "fra1-h1", "--time", "+1h"); !strings.Contains(out, "HOST_STATE_CORDONED") {
		t.Fatalf("events at (now):\n%s", out)
	}
}

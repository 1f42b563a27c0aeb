package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devfleet/devfleet/controlplane/clustertest"
)

func TestContainerProfilesAndPools(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.ok("region", "add", "eu")

	if got, want := f.ok("profile", "add", "www", "--cpus", "2", "--memory-mib", "4096", "--description", "web frontend"),
		"container profile www created (vcpus=2 memory_mib=4096; claimed containers live 36h)\n"; got != want {
		t.Errorf("profile add printed %q, want %q", got, want)
	}
	jup := decode[map[string]any](t, f.ok("-o", "json", "profile", "add", "jupyter", "--cpus", "8", "--memory-mib", "32768", "--ttl", "90m"))
	if jup["name"] != "jupyter" || jup["vcpus"] != "8" || jup["memory_mib"] != "32768" || jup["ttl"] != "5400s" {
		t.Errorf("profile add -o json = %v", jup)
	}
	want := [][]string{
		{"NAME", "CPUS", "MEMORY_MIB", "TTL", "DESCRIPTION"},
		{"jupyter", "8", "32768", "1h30m", "-"},
		{"www", "2", "4096", "36h", "web", "frontend"},
	}
	if got := rows(f.ok("profile", "list")); !reflect.DeepEqual(got, want) {
		t.Errorf("profile list:\n got %q\nwant %q", got, want)
	}
	if got := decode[[]map[string]any](t, f.ok("profile", "list", "-o", "json", "--stale")); len(got) != 2 || got[1]["ttl"] != "129600s" || got[1]["description"] != "web frontend" {
		t.Errorf("profile list -o json = %v", got)
	}

	// Pools: none yet; a pool needs no host to be set.
	if got := decode[[]any](t, f.ok("-o", "json", "pool", "list")); len(got) != 0 {
		t.Errorf("pool list -o json with no pools = %v", got)
	}
	if got, want := f.ok("pool", "set", "--region", "eu", "--profile", "www", "--target", "2"), "pool eu/www keeps 2 warm containers\n"; got != want {
		t.Errorf("pool set printed %q, want %q", got, want)
	}
	if p := decode[map[string]any](t, f.ok("-o", "json", "pool", "set", "--region", "eu", "--profile", "jupyter", "--target", "1")); p["region"] != "eu" || p["profile"] != "jupyter" || p["target"] != 1.0 {
		t.Errorf("pool set -o json = %v", p)
	}
	wantPools := [][]string{
		{"REGION", "PROFILE", "TARGET", "WARM", "WARMING", "CLAIMED"},
		{"eu", "jupyter", "1", "0", "0", "0"},
		{"eu", "www", "2", "0", "0", "0"},
	}
	if got := rows(f.ok("pool", "list")); !reflect.DeepEqual(got, wantPools) {
		t.Errorf("pool list:\n got %q\nwant %q", got, wantPools)
	}

	for _, tc := range []struct {
		name  string
		args  []string
		code  int
		wants []string
	}{
		{"pool of an unknown profile", []string{"pool", "set", "--region", "eu", "--profile", "nope", "--target", "1"}, 1, []string{`container profile "nope" not found`, "(NotFound)"}},
		{"pool in an unknown region", []string{"pool", "set", "--region", "mars", "--profile", "www", "--target", "1"}, 1, []string{`region "mars" not found`, "(NotFound)"}},
		{"negative target", []string{"pool", "set", "--region", "eu", "--profile", "www", "--target", "-1"}, 2, []string{"pool set: --target must not be negative, got -1"}},
		{"negative target with =", []string{"pool", "set", "--region", "eu", "--profile", "www", "--target=-1"}, 2, []string{"--target"}},
		{"target too large", []string{"pool", "set", "--region", "eu", "--profile", "www", "--target", "1001"}, 1, []string{"target", "1001", "(InvalidArgument)"}},
		{"duplicate profile", []string{"profile", "add", "www", "--cpus", "1", "--memory-mib", "512"}, 1, []string{`container profile "www" already exists`, "(AlreadyExists)"}},
		{"ttl too long", []string{"profile", "add", "big", "--cpus", "1", "--memory-mib", "512", "--ttl", "400h"}, 1, []string{"profile.ttl", "(InvalidArgument)"}},
		{"no cpus", []string{"profile", "add", "none", "--cpus", "0", "--memory-mib", "512"}, 1, []string{"profile", "vcpus", "(InvalidArgument)"}},
		{"delete a profile with a pool", []string{"profile", "delete", "www"}, 1, []string{`container profile "www" has a pool in region "eu"`, "(FailedPrecondition)"}},
		{"delete an unknown profile", []string{"profile", "delete", "nope"}, 1, []string{`container profile "nope" not found`, "(NotFound)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkFailure(t, f.run(tc.args...), tc.code, tc.wants...)
		})
	}

	// Target 0 removes the pool; then the profile can go.
	if got, want := f.ok("pool", "set", "--region", "eu", "--profile", "www", "--target", "0"),
		"pool eu/www removed: claims of www in eu create their containers\n"; got != want {
		t.Errorf("pool set --target 0 printed %q, want %q", got, want)
	}
	if got := rows(f.ok("pool", "list")); len(got) != 2 || got[1][1] != "jupyter" {
		t.Errorf("pool list after removing eu/www = %q", got)
	}
	if got, want := f.ok("profile", "delete", "www"), "container profile www deleted\n"; got != want {
		t.Errorf("profile delete printed %q, want %q", got, want)
	}
	if got := rows(f.ok("profile", "list")); len(got) != 2 || got[1][0] != "jupyter" {
		t.Errorf("profile list after delete = %q", got)
	}
	f.ok("pool", "set", "--region", "eu", "--profile", "jupyter", "--target", "0")
	if got := decode[map[string]any](t, f.ok("-o", "json", "profile", "delete", "jupyter")); got["name"] != "jupyter" {
		t.Errorf("profile delete -o json = %v", got)
	}
	if got := decode[[]any](t, f.ok("-o", "json", "profile", "list")); len(got) != 0 {
		t.Errorf("profile list -o json after deleting both = %v", got)
	}
}

// poolCounts reads pool list -o json: region/profile → target, warm, warming, claimed.
func (f *testFleet) poolCounts() (map[string][4]int, error) {
	r := f.run("-o", "json", "pool", "list")
	if r.code != 0 {
		return nil, fmt.Errorf("%s", r)
	}
	var pools []struct {
		Pool struct {
			Region, Profile string
			Target          int
		}
		Warm, Warming, Claimed int
	}
	if err := json.Unmarshal([]byte(r.stdout), &pools); err != nil {
		return nil, err
	}
	out := map[string][4]int{}
	for _, p := range pools {
		out[p.Pool.Region+"/"+p.Pool.Profile] = [4]int{p.Pool.Target, p.Warm, p.Warming, p.Claimed}
	}
	return out, nil
}

// waitPool waits until pool list shows a pool with the given target, warm, warming and claimed
// counts.
func (f *testFleet) waitPool(pool string, want [4]int) {
	f.t.Helper()
	clustertest.WaitFor(f.t, 30*time.Second, fmt.Sprintf("pool %s to show target, warm, warming, claimed = %v", pool, want), func() error {
		counts, err := f.poolCounts()
		if err != nil {
			return err
		}
		if counts[pool] != want {
			return fmt.Errorf("pool list: %v", counts)
		}
		return nil
	})
}

var claimLine = regexp.MustCompile(`^container (c-[0-9a-f]{12}) \((\S+), (\S+)\) (.*); expires (\S+)\n$`)

// claim runs container claim and returns the container's name, after checking the line it
// printed: what it says after the profile and region, and an expiry about ttl away.
func (f *testFleet) claim(ttl time.Duration, how string, args ...string) string {
	f.t.Helper()
	out := f.ok(append([]string{"container", "claim"}, args...)...)
	m := claimLine.FindStringSubmatch(out)
	if m == nil {
		f.t.Fatalf("container claim printed %q, want %s", out, claimLine)
	}
	if m[4] != how {
		f.t.Errorf("container claim printed %q, want %q between the region and the expiry", out, how)
	}
	exp, err := time.Parse(time.RFC3339, m[5])
	if err != nil {
		f.t.Fatalf("container claim: expiry %q: %v", m[5], err)
	}
	if d := time.Until(exp); d < ttl-time.Minute || d > ttl+time.Minute {
		f.t.Errorf("container claim: expires %s, in %s, want about %s", m[5], d, ttl)
	}
	return m[1]
}

// containerNamesIn lists the names container list prints.
func (f *testFleet) containerNamesIn(args ...string) []string {
	f.t.Helper()
	var out []string
	for _, r := range rows(f.ok(append([]string{"container", "list"}, args...)...))[1:] {
		out = append(out, r[0])
	}
	return out
}

func TestContainerClaims(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.ok("region", "add", "eu")
	f.ok("site", "add", "fra1", "--region", "eu")
	f.ok("host", "add", "h1", "--site", "fra1", "--cpus", "64", "--memory-mib", "262144", "--disk-gib", "1000",
		"--libvirt", "fake://h1?cpus=64&memory_mib=262144")
	f.ok("profile", "add", "www", "--cpus", "2", "--memory-mib", "4096")
	f.ok("profile", "add", "solo", "--cpus", "1", "--memory-mib", "512", "--ttl", "2h")

	// The provisioner fills the pool: two warm containers, running and unclaimed.
	f.ok("pool", "set", "--region", "eu", "--profile", "www", "--target", "2")
	f.waitPool("eu/www", [4]int{2, 2, 0, 0})
	list := rows(f.ok("container", "list"))
	if len(list) != 3 || strings.Join(list[0], " ") != "NAME PROFILE REGION HOST STATE CLAIMED_BY EXPIRES" {
		t.Fatalf("container list with a full pool = %q", list)
	}
	for _, r := range list[1:] {
		if !reflect.DeepEqual(r[1:], []string{"www", "eu", "h1", "running", "-", "-"}) {
			t.Errorf("warm container row %q", r)
		}
	}

	// A hit: one of the warm ones, handed over at once; the pool refills.
	name := f.claim(36*time.Hour, "claimed from the warm pool on host h1", "--profile", "www", "--region", "eu", "--owner", "alice")
	if !slices.Contains([]string{list[1][0], list[2][0]}, name) {
		t.Errorf("claimed %s, not one of the warm containers %s and %s", name, list[1][0], list[2][0])
	}
	c := keyValues(t, f.ok("container", "show", name))
	for k, v := range map[string]string{"name": name, "profile": "www", "region": "eu", "site": "fra1", "host": "h1", "state": "running", "claimed_by": "alice"} {
		if c[k] != v {
			t.Errorf("container show: %s = %q, want %q", k, c[k], v)
		}
	}
	if _, err := time.Parse(time.RFC3339, c["claim_time"]); err != nil {
		t.Errorf("container show: claim_time %q: %v", c["claim_time"], err)
	}
	f.waitPool("eu/www", [4]int{2, 2, 0, 1})
	if got := f.containerNamesIn("--owner", "alice"); !reflect.DeepEqual(got, []string{name}) {
		t.Errorf("container list --owner alice = %q, want [%s]", got, name)
	}
	if got := f.containerNamesIn("--profile", "www", "--region", "eu", "--stale"); len(got) != 3 {
		t.Errorf("container list --profile www --region eu = %q, want 3 containers", got)
	}
	if got := f.containerNamesIn("--profile", "solo"); len(got) != 0 {
		t.Errorf("container list --profile solo = %q, want none", got)
	}

	// A miss: solo has no pool, so the claim makes a container, which runs shortly.
	miss := f.claim(2*time.Hour, "created for you on host h1 (the pool had no warm container): it runs in a few seconds", "--profile", "solo", "--region", "eu", "--owner", "bob")
	clustertest.WaitFor(t, 30*time.Second, "the claimed container "+miss+" to run", func() error {
		if s := keyValues(t, f.ok("container", "show", miss)); s["state"] != "running" || s["claimed_by"] != "bob" {
			return fmt.Errorf("container show %s = %v", miss, s)
		}
		return nil
	})
	resp := decode[map[string]any](t, f.ok("-o", "json", "container", "claim", "--profile", "solo", "--region", "eu", "--owner", "bob"))
	ct, _ := resp["container"].(map[string]any)
	if _, hit := resp["pool_hit"]; hit || ct["profile"] != "solo" || ct["claimed_by"] != "bob" || ct["state"] != "CONTAINER_STATE_PROVISIONING" {
		t.Errorf("container claim -o json on a miss = %v", resp)
	}
	if got := decode[map[string]any](t, f.ok("-o", "json", "container", "show", ct["name"].(string))); got["id"] != ct["id"] {
		t.Errorf("container show -o json = %v, want the claimed container %v", got, ct)
	}
	if hit := decode[map[string]any](t, f.ok("-o", "json", "container", "claim", "--profile", "www", "--region", "eu", "--owner", "carol")); hit["pool_hit"] != true {
		t.Errorf("container claim -o json on a hit = %v", hit)
	}

	// The owner defaults to $USER.
	var out, errb bytes.Buffer
	getenv := func(k string) string {
		if k == ownerEnv {
			return "dave"
		}
		return ""
	}
	if code := run(context.Background(), []string{"--addr", f.addr, "-o", "json", "container", "claim", "--profile", "solo", "--region", "eu"}, &out, &errb, getenv); code != 0 {
		t.Fatalf("container claim without --owner, $USER=dave: exit %d, stderr %q", code, errb.String())
	}
	if resp := decode[map[string]any](t, out.String()); resp["container"].(map[string]any)["claimed_by"] != "dave" {
		t.Errorf("container claim without --owner, $USER=dave: %v", resp)
	}

	for _, tc := range []struct {
		name  string
		args  []string
		wants []string
	}{
		{"unknown profile", []string{"container", "claim", "--profile", "nope", "--region", "eu", "--owner", "bob"}, []string{`container profile "nope" not found`, "(NotFound)"}},
		{"unknown region", []string{"container", "claim", "--profile", "www", "--region", "mars", "--owner", "bob"}, []string{`region "mars" not found`, "(NotFound)"}},
		{"bad owner", []string{"container", "claim", "--profile", "www", "--region", "eu", "--owner", "Bob Smith"}, []string{"owner", "(InvalidArgument)"}},
		{"show unknown", []string{"container", "show", "c-000000000000"}, []string{`container "c-000000000000" not found`, "(NotFound)"}},
		{"release unknown", []string{"container", "release", "c-000000000000"}, []string{`container "c-000000000000" not found`, "(NotFound)"}},
		{"delete a profile with containers", []string{"profile", "delete", "solo"}, []string{`container profile "solo" still has`, "(FailedPrecondition)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkFailure(t, f.run(tc.args...), 1, tc.wants...)
		})
	}

	t.Run("completion", func(t *testing.T) {
		complete := func(args ...string) []string {
			t.Helper()
			r := f.run(append([]string{"__complete"}, args...)...)
			if r.code != 0 {
				t.Fatalf("__complete %v: %s", args, r)
			}
			lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
			return lines[:len(lines)-1] // the last line is the directive
		}
		if got, want := complete("profile", "delete", ""), []string{"solo", "www"}; !reflect.DeepEqual(got, want) {
			t.Errorf("completing profile delete: %q, want %q", got, want)
		}
		if got, want := complete("container", "claim", "--profile", "w"), []string{"www"}; !reflect.DeepEqual(got, want) {
			t.Errorf("completing container claim --profile w: %q, want %q", got, want)
		}
		if got, want := complete("pool", "set", "--region", ""), []string{"eu"}; !reflect.DeepEqual(got, want) {
			t.Errorf("completing pool set --region: %q, want %q", got, want)
		}
		if got := complete("container", "show", name[:len(name)-2]); !slices.Contains(got, name) {
			t.Errorf("completing container show %s: %q, want it to offer %s", name[:len(name)-2], got, name)
		}
		if got := complete("container", "release", "c-"); len(got) < 4 {
			t.Errorf("completing container release c-: %q, want every container", got)
		}
	})

	// Release: the container is marked deleted at once, then goes.
	if got, want := f.ok("container", "release", name), "container "+name+" released; its guest on host h1 is being removed\n"; got != want {
		t.Errorf("container release printed %q, want %q", got, want)
	}
	clustertest.WaitFor(t, 30*time.Second, "the released container "+name+" to leave the list", func() error {
		if got := f.containerNamesIn(); slices.Contains(got, name) {
			return fmt.Errorf("container list still has %s: %q", name, got)
		}
		return nil
	})
	f.fail(1, []string{"container", "show", name}, "(NotFound)")
}

// TestContainerUsageErrors checks that bad command lines of the container commands exit 2
// before the CLI contacts anything.
func TestContainerUsageErrors(t *testing.T) {
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
	noUser := func(string) string { return "" }

	for _, tc := range []struct {
		name  string
		args  []string
		wants []string
	}{
		{"profile without cpus", []string{"profile", "add", "www", "--memory-mib", "512"}, []string{"profile add: ", `required flag(s) "cpus" not set`}},
		{"profile without memory", []string{"profile", "add", "www", "--cpus", "1"}, []string{`"memory-mib"`}},
		{"profile without a name", []string{"profile", "add", "--cpus", "1", "--memory-mib", "512"}, []string{"profile add: expects NAME, got 0 arguments"}},
		{"ttl not positive", []string{"profile", "add", "www", "--cpus", "1", "--memory-mib", "512", "--ttl", "0s"}, []string{"profile add: --ttl must be positive, got 0s"}},
		{"ttl not a duration", []string{"profile", "add", "www", "--cpus", "1", "--memory-mib", "512", "--ttl", "2days"}, []string{"--ttl"}},
		{"delete two profiles", []string{"profile", "delete", "a", "b"}, []string{"profile delete: expects NAME, got 2 arguments (a b)"}},
		{"pool without target", []string{"pool", "set", "--region", "eu", "--profile", "www"}, []string{`required flag(s) "target" not set`}},
		{"pool target not a number", []string{"pool", "set", "--region", "eu", "--profile", "www", "--target", "many"}, []string{"--target"}},
		{"unknown pool subcommand", []string{"pool", "lisst"}, []string{`unknown command "lisst" for "devfleet pool"`, "did you mean list?"}},
		{"claim without profile", []string{"container", "claim", "--region", "eu", "--owner", "bob"}, []string{`required flag(s) "profile" not set`}},
		{"claim without owner or USER", []string{"container", "claim", "--profile", "www", "--region", "eu"}, []string{"container claim: give --owner USER ($USER is not set)"}},
		{"claim with an empty owner", []string{"container", "claim", "--profile", "www", "--region", "eu", "--owner", ""}, []string{"container claim: --owner must not be empty"}},
		{"claim with a name", []string{"container", "claim", "c-1", "--profile", "www", "--region", "eu", "--owner", "bob"}, []string{"expects no arguments, got 1 argument (c-1)"}},
		{"release without a name", []string{"container", "release"}, []string{"container release: expects NAME, got 0 arguments"}},
		{"show two", []string{"container", "show", "a", "b"}, []string{"container show: expects NAME, got 2 arguments (a b)"}},
		{"list with an argument", []string{"container", "list", "eu"}, []string{"container list: expects no arguments, got 1 argument (eu)"}},
		{"unknown container subcommand", []string{"container", "clam"}, []string{`unknown command "clam" for "devfleet container"`, "did you mean claim?"}},
		{"bench claims zero", []string{"bench", "claim", "--claims", "0"}, []string{"bench claim: --claims must be between 1 and 1000"}},
		{"bench claims beyond the hosts", []string{"bench", "claim", "--claims", "300", "--hosts", "2"}, []string{"--claims 300", "2 hosts of 128 vCPUs"}},
		{"bench no hosts", []string{"bench", "claim", "--hosts", "0"}, []string{"--hosts must be positive"}},
		{"bench clients zero", []string{"bench", "claim", "--clients", "0"}, []string{"--clients: 0 is not between 1 and 4096"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), append([]string{"--addr", addr}, tc.args...), &out, &errb, noUser)
			checkFailure(t, result{code: code, stdout: out.String(), stderr: errb.String()}, 2, tc.wants...)
		})
	}
	time.Sleep(50 * time.Millisecond) // let a stray connection reach Accept
	if n := contacted.Load(); n != 0 {
		t.Errorf("usage errors contacted the server %d times", n)
	}
}

func TestBenchClaim(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := runCLI("bench", "claim", "--claims", "20", "--clients", "2", "--hosts", "2", "--dir", dir)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("bench claim: %s", r)
	}
	if !strings.Contains(r.stdout, "pool bench/www filled with 20 warm containers") {
		t.Errorf("bench claim does not print the pool fill:\n%s", r.stdout)
	}
	var line string
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(l, "claim ") {
			line = l
		}
	}
	if fs := strings.Fields(line); len(fs) < 6 || fs[1] != "clients" || fs[2] != "2" || fs[3] != "20" || fs[4] != "claims" || !strings.Contains(line, "errors 0") {
		t.Errorf("bench claim printed no claim line for 2 clients without errors:\n%s", r.stdout)
	}
	// Each run's cluster lives in a temp dir under --dir, removed afterwards.
	if left, err := os.ReadDir(dir); err != nil || len(left) != 0 {
		t.Errorf("bench claim left %v in --dir (%v)", left, err)
	}
}

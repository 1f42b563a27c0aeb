package cli

import (
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// expiresRE matches the expiry at the end of a create line.
var expiresRE = regexp.MustCompile(`, expires (\S+)\n$`)

func TestDevserverWrites(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.seed("fra1-h1", "fra1-h2")
	f.ok("flavor", "add", "small", "--cpus", "4", "--memory-mib", "16384", "--disk-gib", "100")
	f.ok("flavor", "add", "big", "--cpus", "32", "--memory-mib", "131072", "--disk-gib", "100")

	// Placed: the hosts are equal and empty, so the first by name.
	before := time.Now()
	out := f.ok("devserver", "create", "bob-dev", "--owner", "bob", "--flavor", "small", "--region", "eu", "--expires-in", "72h", "--sharer", "alice")
	after := time.Now()
	const prefix = "devserver bob-dev created on fra1-h1 (site fra1, region eu), expires "
	m := expiresRE.FindStringSubmatch(out)
	if !strings.HasPrefix(out, prefix) || m == nil {
		t.Fatalf("devserver create printed %q, want %q and a time", out, prefix)
	}
	exp, err := time.Parse(time.RFC3339, m[1])
	if err != nil || exp.Before(before.Add(72*time.Hour).Truncate(time.Second)) || exp.After(after.Add(72*time.Hour)) {
		t.Errorf("expiry %q (%v) is not 72h after the create", m[1], err)
	}
	// JSON mode prints the devserver; binpack puts it beside bob-dev.
	d := decode[map[string]any](t, f.ok("-o", "json", "devserver", "create", "carol-dev", "--owner", "carol", "--flavor", "small", "--region", "eu", "--permanent", "--site", "fra1"))
	if d["host"] != "fra1-h1" || d["site"] != "fra1" || d["lifespan"] != "LIFESPAN_PERMANENT" || d["expire_time"] != nil || d["id"] == nil {
		t.Errorf("devserver create -o json = %v", d)
	}
	// Spread keeps bob's second devserver off fra1-h1.
	if got, want := f.ok("devserver", "create", "bob-2", "--owner", "bob", "--flavor", "small", "--region", "eu", "--permanent", "--spread", "hosts"),
		"devserver bob-2 created on fra1-h2 (site fra1, region eu), permanent\n"; got != want {
		t.Errorf("devserver create --spread hosts printed %q, want %q", got, want)
	}
	wantHosts := [][]string{
		{"NAME", "SITE", "REGION", "STATE", "HEALTH", "CPUS", "USED_CPUS", "MEMORY_MIB", "USED_MEMORY_MIB", "DISK_GIB", "GPUS", "REASON"},
		{"fra1-h1", "fra1", "eu", "active", "unknown", "32", "8", "131072", "32768", "2000", "0", "-"},
		{"fra1-h2", "fra1", "eu", "active", "unknown", "32", "4", "131072", "16384", "2000", "0", "-"},
	}
	if got := rows(f.ok("host", "list")); !reflect.DeepEqual(got, wantHosts) {
		t.Errorf("host list:\n got %q\nwant %q", got, wantHosts)
	}
	if h := keyValues(t, f.ok("host", "show", "fra1-h1")); h["allocated"] != "vcpus=8 memory_mib=32768 disk_gib=200 gpus=0" || h["health"] != "unknown" {
		t.Errorf("host show = %v", h)
	}
	// No host has 32 vCPUs free: refused, with why, on one line.
	r := f.run("devserver", "create", "big-1", "--owner", "bob", "--flavor", "big", "--region", "eu", "--permanent")
	checkFailure(t, r, 1)
	if want := "devfleet: no room for flavor big: region eu: 2 hosts; 2 lack vCPUs for flavor big (need 32) (FailedPrecondition)\n"; r.stderr != want {
		t.Errorf("refused create: stderr %q, want %q", r.stderr, want)
	}

	t.Run("extend", func(t *testing.T) {
		if got, want := f.ok("devserver", "extend", "bob-dev", "--by", "24h"), "devserver bob-dev expires "+exp.Add(24*time.Hour).Format(time.RFC3339)+"\n"; got != want {
			t.Errorf("devserver extend printed %q, want %q", got, want)
		}
		d := decode[map[string]any](t, f.ok("-o", "json", "devserver", "extend", "bob-dev", "--by", "1h30m"))
		got, err := time.Parse(time.RFC3339Nano, d["expire_time"].(string))
		if err != nil || got.Truncate(time.Second) != exp.Add(25*time.Hour+30*time.Minute) {
			t.Errorf("devserver extend -o json: expire_time %v (%v), want %v", d["expire_time"], err, exp.Add(25*time.Hour+30*time.Minute))
		}
		if d := keyValues(t, f.ok("devserver", "show", "bob-dev")); d["expire_time"] != exp.Add(25*time.Hour+30*time.Minute).Format(time.RFC3339) || d["lifespan"] != "temporary" {
			t.Errorf("devserver show after extend = %v", d)
		}
		f.fail(1, []string{"devserver", "extend", "carol-dev", "--by", "24h"}, `devserver "carol-dev" is permanent: it does not expire, so there is nothing to extend (FailedPrecondition)`)
		f.fail(1, []string{"devserver", "extend", "nope", "--by", "24h"}, `devserver "nope" not found (NotFound)`)
	})

	t.Run("share", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"share", "bob-dev", "--with", "carol", "--with", "dave"}, "devserver bob-dev is shared with alice, carol, dave\n"},
			{[]string{"share", "bob-dev", "--with", "dave,erin"}, "devserver bob-dev is shared with alice, carol, dave, erin\n"},
			{[]string{"share", "bob-dev", "--with", "erin"}, "devserver bob-dev is shared with alice, carol, dave, erin\n"},
			{[]string{"unshare", "bob-dev", "--with", "carol"}, "devserver bob-dev is shared with alice, dave, erin\n"},
			{[]string{"unshare", "bob-dev", "--with", "alice,dave", "--with", "erin"}, "devserver bob-dev is shared with nobody\n"},
		} {
			if got := f.ok(append([]string{"devserver"}, tc.args...)...); got != tc.want {
				t.Errorf("devserver %v printed %q, want %q", tc.args, got, tc.want)
			}
		}
		d := decode[map[string]any](t, f.ok("-o", "json", "devserver", "share", "bob-dev", "--with", "frank"))
		if !reflect.DeepEqual(d["sharers"], []any{"frank"}) {
			t.Errorf("devserver share -o json = %v", d)
		}
		if d := keyValues(t, f.ok("devserver", "show", "bob-dev")); d["sharers"] != "frank" {
			t.Errorf("devserver show sharers = %q", d["sharers"])
		}
		f.fail(1, []string{"devserver", "unshare", "bob-dev", "--with", "frank,zed"}, `devserver "bob-dev" is not shared with zed (FailedPrecondition)`)
		f.fail(1, []string{"devserver", "share", "bob-dev", "--with", "bob"}, `"bob" is the owner`, "(InvalidArgument)")
		f.fail(1, []string{"devserver", "share", "nope", "--with", "bob"}, `devserver "nope" not found (NotFound)`)
		if d := keyValues(t, f.ok("devserver", "show", "bob-dev")); d["sharers"] != "frank" {
			t.Errorf("sharers after refused changes = %q", d["sharers"])
		}
	})

	t.Run("delete", func(t *testing.T) {
		if got := f.ok("devserver", "delete", "bob-dev"); got != "devserver bob-dev deleted\n" {
			t.Errorf("devserver delete printed %q", got)
		}
		f.fail(1, []string{"devserver", "show", "bob-dev"}, `devserver "bob-dev" not found (NotFound)`)
		if got := decode[map[string]any](t, f.ok("-o", "json", "devserver", "delete", "bob-2")); got["index"] == nil {
			t.Errorf("devserver delete -o json = %v", got)
		}
		if got := rows(f.ok("host", "list", "--site", "fra1")); got[1][6] != "4" || got[2][6] != "0" {
			t.Errorf("host list after deletes: %q", got)
		}
		f.fail(1, []string{"devserver", "delete", "bob-dev"}, "(NotFound)")
	})
}

// TestDevserverPowerAndFeatures checks --feature and stop/start against the in-process cluster,
// whose hosts have no libvirt URI: the server records the power the owner asked for, and no
// provisioner changes the state.
func TestDevserverPowerAndFeatures(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.seed("fra1-h1")
	f.ok("flavor", "add", "small", "--cpus", "4", "--memory-mib", "16384", "--disk-gib", "100")

	// --feature is repeatable and takes comma-separated names; the order is kept.
	features := []any{"cuda", "docker", "nested-virt"}
	d := decode[map[string]any](t, f.ok("-o", "json", "devserver", "create", "bob-dev", "--owner", "bob", "--flavor", "small", "--region", "eu", "--permanent",
		"--feature", "cuda", "--feature", "docker,nested-virt"))
	if !reflect.DeepEqual(d["features"], features) {
		t.Errorf("devserver create --feature -o json: features %v, want %v", d["features"], features)
	}
	if d := decode[map[string]any](t, f.ok("-o", "json", "devserver", "show", "bob-dev")); !reflect.DeepEqual(d["features"], features) {
		t.Errorf("devserver show -o json: features %v, want %v", d["features"], features)
	}
	show := keyValues(t, f.ok("devserver", "show", "bob-dev"))
	if show["features"] != "cuda,docker,nested-virt" || show["power"] != "on" || show["state"] != "provisioning" {
		t.Errorf("devserver show = %v", show)
	}
	// Output-only fields the devserver does not have are left out, not shown as "-".
	for _, k := range []string{"domain", "repairs", "expiry_notice_time", "delete_time"} {
		if v, ok := show[k]; ok {
			t.Errorf("devserver show has %s = %q; want it left out while unset", k, v)
		}
	}
	f.ok("devserver", "create", "bob-2", "--owner", "bob", "--flavor", "small", "--region", "eu", "--permanent")
	if v, ok := keyValues(t, f.ok("devserver", "show", "bob-2"))["features"]; ok {
		t.Errorf("devserver show without features: features = %q, want it left out", v)
	}
	f.fail(1, []string{"devserver", "create", "bob-3", "--owner", "bob", "--flavor", "small", "--region", "eu", "--permanent", "--feature", "CUDA"},
		"devserver.features", `"CUDA"`, "(InvalidArgument)")
	f.fail(1, []string{"devserver", "create", "bob-3", "--owner", "bob", "--flavor", "small", "--region", "eu", "--permanent", "--feature", "cuda,cuda"},
		"devserver.features", `"cuda" is listed twice`, "(InvalidArgument)")

	// Stop: the power is recorded, the devserver keeps its host and its room.
	if got, want := f.ok("devserver", "stop", "bob-dev"), "devserver bob-dev: power off asked; it keeps host fra1-h1 and its room (state provisioning)\n"; got != want {
		t.Errorf("devserver stop printed %q, want %q", got, want)
	}
	if d := decode[map[string]any](t, f.ok("-o", "json", "devserver", "show", "bob-dev")); d["power"] != "POWER_OFF" || d["host"] != "fra1-h1" {
		t.Errorf("devserver show -o json after stop: power %v, host %v; want POWER_OFF on fra1-h1", d["power"], d["host"])
	}
	if d := keyValues(t, f.ok("devserver", "show", "bob-dev")); d["power"] != "off" {
		t.Errorf("devserver show after stop: power %q, want off", d["power"])
	}
	if got := rows(f.ok("host", "list")); got[1][6] != "8" {
		t.Errorf("host list after stop: USED_CPUS %q, want 8 (the stopped devserver keeps its room)", got[1][6])
	}
	// Stopping again changes nothing; JSON mode prints the devserver.
	if d := decode[map[string]any](t, f.ok("-o", "json", "devserver", "stop", "bob-dev")); d["power"] != "POWER_OFF" || d["name"] != "bob-dev" {
		t.Errorf("devserver stop -o json = %v", d)
	}
	// The STATE column is the provisioner's, and power does not change it.
	want := [][]string{
		{"NAME", "OWNER", "FLAVOR", "REGION", "SITE", "HOST", "STATE", "LIFESPAN", "EXPIRES"},
		{"bob-2", "bob", "small", "eu", "fra1", "fra1-h1", "provisioning", "permanent", "-"},
		{"bob-dev", "bob", "small", "eu", "fra1", "fra1-h1", "provisioning", "permanent", "-"},
	}
	if got := rows(f.ok("devserver", "list")); !reflect.DeepEqual(got, want) {
		t.Errorf("devserver list after stop:\n got %q\nwant %q", got, want)
	}

	// Start: power on is the zero value, which JSON leaves out.
	if got, want := f.ok("devserver", "start", "bob-dev"), "devserver bob-dev: power on asked (host fra1-h1, state provisioning)\n"; got != want {
		t.Errorf("devserver start printed %q, want %q", got, want)
	}
	if d := decode[map[string]any](t, f.ok("-o", "json", "devserver", "show", "bob-dev")); d["power"] != nil || d["host"] != "fra1-h1" {
		t.Errorf("devserver show -o json after start: power %v, host %v; want no power (POWER_ON) on fra1-h1", d["power"], d["host"])
	}
	f.ok("devserver", "stop", "bob-dev")
	if d := decode[map[string]any](t, f.ok("-o", "json", "devserver", "start", "bob-dev")); d["power"] != nil || d["name"] != "bob-dev" {
		t.Errorf("devserver start -o json = %v", d)
	}
	if d := keyValues(t, f.ok("devserver", "show", "bob-dev", "--stale")); d["power"] != "on" {
		t.Errorf("devserver show after start: power %q, want on", d["power"])
	}

	f.fail(1, []string{"devserver", "stop", "nope"}, `devserver "nope" not found (NotFound)`)
	f.fail(1, []string{"devserver", "start", "nope"}, `devserver "nope" not found (NotFound)`)

	r := f.run("__complete", "devserver", "stop", "bob-")
	if lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n"); r.code != 0 || !reflect.DeepEqual(lines[:len(lines)-1], []string{"bob-2", "bob-dev"}) {
		t.Errorf("completing devserver stop bob-: %s", r)
	}
}

// TestDeleteOutcome checks the line devserver delete prints for what the read after the delete
// finds. (The in-process cluster has no libvirt hosts, so only "deleted" happens end to end.)
func TestDeleteOutcome(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		d    *v1.Devserver
		err  error
		want string
	}{
		{"gone at once", nil, status.Error(codes.NotFound, `devserver "d" not found`), "devserver d deleted"},
		{"guest goes first", &v1.Devserver{Name: "d", State: v1.DevserverState_DEVSERVER_STATE_DELETED, DeleteTime: timestamppb.Now()}, nil, "devserver d is being deleted (its guest is removed first)"},
		{"taken again", &v1.Devserver{Name: "d"}, nil, "devserver d: deletion accepted"},
		{"read failed", nil, status.Error(codes.Unavailable, "no leader"), "devserver d: deletion accepted"},
	} {
		if got := deleteOutcome("d", tc.d, tc.err); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// Concurrent shares of one devserver all take effect: each is a compare-and-set that reads
// again when another got in first.
func TestConcurrentSharesAreNotLost(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.seed("fra1-h1")
	f.ok("flavor", "add", "small", "--cpus", "4", "--memory-mib", "16384", "--disk-gib", "100")
	f.ok("devserver", "create", "team-dev", "--owner", "bob", "--flavor", "small", "--region", "eu", "--permanent")
	users := []string{"u1", "u2", "u3", "u4", "u5", "u6"}
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Go(func() {
			if r := f.run("devserver", "share", "team-dev", "--with", u); r.code != 0 {
				t.Errorf("share with %s: %s", u, r)
			}
		})
	}
	wg.Wait()
	d := decode[map[string]any](t, f.ok("-o", "json", "devserver", "show", "team-dev"))
	got, _ := d["sharers"].([]any)
	if len(got) != len(users) {
		t.Fatalf("sharers after %d concurrent shares: %v", len(users), got)
	}
}

package cli

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
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
		{"NAME", "SITE", "REGION", "STATE", "CPUS", "USED_CPUS", "MEMORY_MIB", "USED_MEMORY_MIB", "DISK_GIB", "GPUS", "REASON"},
		{"fra1-h1", "fra1", "eu", "active", "32", "8", "131072", "32768", "2000", "0", "-"},
		{"fra1-h2", "fra1", "eu", "active", "32", "4", "131072", "16384", "2000", "0", "-"},
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
		if got := rows(f.ok("host", "list", "--site", "fra1")); got[1][5] != "4" || got[2][5] != "0" {
			t.Errorf("host list after deletes: %q", got)
		}
		f.fail(1, []string{"devserver", "delete", "bob-dev"}, "(NotFound)")
	})
}

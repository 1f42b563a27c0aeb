package cli

import (
	"reflect"
	"strings"
	"testing"
)

// seedCapacity makes, through the CLI, regions eu (sites eu-1 with eu-h1 and eu-h2, eu-2 with
// eu-h3; 16 vCPUs and 64 GiB each) and us (site us-1 with us-h1: 32 vCPUs, 128 GiB), flavors
// small (4 vCPUs, 16 GiB) and xl (16 vCPUs, 64 GiB, eu only), and places xl d1 (permanent) and
// small s0 (temporary) in eu; eu keeps 1 host in reserve.
func (f *testFleet) seedCapacity() {
	f.t.Helper()
	for _, args := range [][]string{
		{"region", "add", "eu"},
		{"region", "add", "us"},
		{"site", "add", "eu-1", "--region", "eu"},
		{"site", "add", "eu-2", "--region", "eu"},
		{"site", "add", "us-1", "--region", "us"},
		{"host", "add", "eu-h1", "--site", "eu-1", "--cpus", "16", "--memory-mib", "65536", "--disk-gib", "1000"},
		{"host", "add", "eu-h2", "--site", "eu-1", "--cpus", "16", "--memory-mib", "65536", "--disk-gib", "1000"},
		{"host", "add", "eu-h3", "--site", "eu-2", "--cpus", "16", "--memory-mib", "65536", "--disk-gib", "1000"},
		{"host", "add", "us-h1", "--site", "us-1", "--cpus", "32", "--memory-mib", "131072", "--disk-gib", "1000"},
		{"flavor", "add", "small", "--cpus", "4", "--memory-mib", "16384", "--disk-gib", "100"},
		{"flavor", "add", "xl", "--cpus", "16", "--memory-mib", "65536", "--disk-gib", "100", "--allowed-regions", "eu"},
		{"devserver", "create", "d1", "--owner", "alice", "--flavor", "xl", "--region", "eu", "--permanent"},
		{"devserver", "create", "s0", "--owner", "alice", "--flavor", "small", "--region", "eu", "--expires-in", "72h"},
		{"region", "update", "eu", "--reserve-hosts", "1"},
	} {
		f.ok(args...)
	}
}

func TestCapacity(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.seedCapacity()

	// Nothing below writes: the subtests share the fleet.
	t.Run("report", func(t *testing.T) {
		t.Parallel()
		// eu: usable 3 × 16 vCPUs; d1 fills eu-h1, s0 takes 4 of eu-h2: 28 vCPUs free. The
		// reserve is one host (16 vCPUs): beyond it 12 vCPUs, 3 small, no xl. xl is eu only.
		// Losing eu: s0 moves to us, d1 (xl) has nowhere to go.
		want := `region eu: 3 hosts (3 eligible); free 28/48 vCPUs, 114688/196608 MiB; reserve 1 host = 16 vCPUs, 65536 MiB
FLAVOR  FITS  BEYOND_RESERVE
small   7     3
xl      1     0

region us: 1 host (1 eligible); free 32/32 vCPUs, 131072/131072 MiB; no reserve
FLAVOR  FITS  BEYOND_RESERVE
small   8     8

SCOPE   NAME  OK   AFFECTED  HOMELESS  SHORTFALL
region  eu    no   2         1         xl:1
region  us    yes  0         0         -
site    eu-1  yes  2         0         -
site    eu-2  yes  0         0         -
site    us-1  yes  0         0         -
`
		if got := f.ok("capacity", "report"); got != want {
			t.Errorf("capacity report:\n%s\nwant:\n%s", got, want)
		}
		// --region limits the headroom, not the N-1 check.
		got := f.ok("capacity", "report", "--region", "us", "--stale")
		if want := want[strings.Index(want, "region us:"):]; got != want {
			t.Errorf("capacity report --region us:\n%s\nwant:\n%s", got, want)
		}
	})

	t.Run("report json", func(t *testing.T) {
		t.Parallel()
		rep := decode[map[string]any](t, f.ok("-o", "json", "capacity", "report", "--region", "eu"))
		regions, _ := rep["regions"].([]any)
		losses, _ := rep["losses"].([]any)
		if len(regions) != 1 || len(losses) != 5 || rep["index"] == nil {
			t.Fatalf("capacity report -o json = %v", rep)
		}
		eu := regions[0].(map[string]any)
		wantEU := map[string]any{
			"region": "eu", "hosts": 3.0, "eligible_hosts": 3.0,
			"usable":          map[string]any{"vcpus": "48", "memory_mib": "196608", "disk_gib": "3000"},
			"free":            map[string]any{"vcpus": "28", "memory_mib": "114688", "disk_gib": "2800"},
			"reserve_setting": map[string]any{"hosts": 1.0},
			"reserve":         map[string]any{"vcpus": "16", "memory_mib": "65536", "disk_gib": "1000"},
			"flavors": []any{
				map[string]any{"flavor": "small", "fits": "7", "fits_beyond_reserve": "3"},
				map[string]any{"flavor": "xl", "fits": "1"},
			},
		}
		if !reflect.DeepEqual(eu, wantEU) {
			t.Errorf("region eu:\n got %v\nwant %v", eu, wantEU)
		}
		wantLoss := map[string]any{"scope": "region", "name": "eu", "affected": 2.0, "homeless": 1.0,
			"shortfall": []any{map[string]any{"flavor": "xl", "devservers": 1.0}}}
		if got := losses[0]; !reflect.DeepEqual(got, wantLoss) {
			t.Errorf("loss of eu:\n got %v\nwant %v", got, wantLoss)
		}
	})

	t.Run("lose", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--region", "eu"}, `losing region eu: 2 devservers affected; 1 moves, 1 has no home
DEVSERVER  FLAVOR  FROM   TO     REGION
s0         small   eu-h2  us-h1  us
no home: d1
shortfall: xl:1
`},
			// eu survives: d1 goes to eu-h3, spending eu's reserve, as a real loss may.
			{[]string{"--site", "eu-1"}, `losing site eu-1: 2 devservers affected; 2 move, 0 have no home
DEVSERVER  FLAVOR  FROM   TO     REGION
d1         xl      eu-h1  eu-h3  eu
s0         small   eu-h2  us-h1  us
`},
			// A drain may not spend it.
			{[]string{"--site", "eu-1", "--keep-reserve", "--stale"}, `losing site eu-1: 2 devservers affected; 1 moves, 1 has no home
DEVSERVER  FLAVOR  FROM   TO     REGION
s0         small   eu-h2  us-h1  us
no home: d1
shortfall: xl:1
`},
			// Flags combine and repeat; a name given twice counts once.
			{[]string{"--region", "us", "--site", "eu-2", "--hosts", "eu-h2,eu-h3", "--hosts", "eu-h2"}, `losing region us, site eu-2, hosts eu-h2 eu-h3: 1 devserver affected; 0 move, 1 has no home
no home: s0
shortfall: small:1
`},
			{[]string{"--hosts", "us-h1"}, "losing host us-h1: no devservers affected\n"},
		} {
			// "Some have no home" is an answer: exit 0.
			if got := f.ok(append([]string{"capacity", "lose"}, tc.args...)...); got != tc.want {
				t.Errorf("capacity lose %v:\n%s\nwant:\n%s", tc.args, got, tc.want)
			}
		}
		rep := decode[map[string]any](t, f.ok("-o", "json", "capacity", "lose", "--region", "eu"))
		delete(rep, "index")
		want := map[string]any{
			"gone": "region eu", "affected": 2.0,
			"moves":     []any{map[string]any{"devserver": "s0", "flavor": "small", "from_host": "eu-h2", "to_host": "us-h1", "to_region": "us"}},
			"homeless":  []any{"d1"},
			"shortfall": []any{map[string]any{"flavor": "xl", "devservers": 1.0}},
		}
		if !reflect.DeepEqual(rep, want) {
			t.Errorf("capacity lose -o json:\n got %v\nwant %v", rep, want)
		}
		if rep := decode[map[string]any](t, f.ok("-o", "json", "capacity", "lose", "--site", "eu-1")); rep["ok"] != true {
			t.Errorf("capacity lose --site eu-1 -o json = %v", rep)
		}
	})

	t.Run("place", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			args []string
			want string
		}{
			// Binpack: eu-h2 (with s0) is fuller than eu-h3; after placing it is half used.
			{[]string{"--flavor", "small", "--region", "eu"}, "would place on eu-h2 (site eu-1), score 0.50, 2 candidates\n"},
			{[]string{"--flavor", "small", "--region", "eu", "--owner", "alice", "--spread", "hosts", "--stale"}, "would place on eu-h3 (site eu-2), score 0.25, 1 candidate\n"},
			{[]string{"--flavor", "small", "--region", "eu", "--site", "eu-2"}, "would place on eu-h3 (site eu-2), score 0.25, 1 candidate\n"},
			// No host is an answer too: exit 0.
			{[]string{"--flavor", "xl", "--region", "eu", "--site", "eu-1"}, "no host: region eu: 3 hosts; 1 in other sites, 2 lack vCPUs for flavor xl (need 16)\n"},
			{[]string{"--flavor", "xl", "--region", "eu"}, "no host: region eu: 3 hosts; 2 lack vCPUs for flavor xl (need 16); the hosts that fit would eat into the region's capacity reserve (28 vCPUs, 114688 MiB free, 16 vCPUs, 65536 MiB reserved)\n"},
		} {
			if got := f.ok(append([]string{"capacity", "place"}, tc.args...)...); got != tc.want {
				t.Errorf("capacity place %v:\n got %q\nwant %q", tc.args, got, tc.want)
			}
		}
		p := decode[map[string]any](t, f.ok("-o", "json", "capacity", "place", "--flavor", "small", "--region", "eu"))
		if p["host"] != "eu-h2" || p["site"] != "eu-1" || p["score"] != 0.5 || p["candidates"] != 2.0 || p["index"] == nil {
			t.Errorf("capacity place -o json = %v", p)
		}
		p = decode[map[string]any](t, f.ok("-o", "json", "capacity", "place", "--flavor", "xl", "--region", "eu", "--site", "eu-1"))
		want := []any{
			map[string]any{"reason": "in other sites", "hosts": 1.0},
			map[string]any{"reason": "lack vCPUs for flavor xl (need 16)", "hosts": 2.0},
		}
		if p["host"] != nil || !strings.HasPrefix(p["explanation"].(string), "region eu: 3 hosts;") || !reflect.DeepEqual(p["rejected"], want) {
			t.Errorf("capacity place -o json without a host = %v", p)
		}
	})

	t.Run("refused create", func(t *testing.T) {
		t.Parallel()
		// The placement's explanation is the error, on one line.
		r := f.run("devserver", "create", "d9", "--owner", "bob", "--flavor", "xl", "--region", "eu", "--site", "eu-1", "--permanent", "-o", "json")
		checkFailure(t, r, 1)
		if want := "devfleet: no room for flavor xl: region eu: 3 hosts; 1 in other sites, 2 lack vCPUs for flavor xl (need 16) (FailedPrecondition)\n"; r.stderr != want {
			t.Errorf("refused create: stderr %q, want %q", r.stderr, want)
		}
		f.fail(1, []string{"devserver", "create", "d9", "--owner", "bob", "--flavor", "xl", "--region", "us", "--expires-in", "2h"},
			`flavor "xl" is not allowed in region "us"`, "(FailedPrecondition)")
		f.fail(1, []string{"devserver", "show", "d9"}, "(NotFound)")
	})

	t.Run("bad input", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			args  []string
			wants []string
		}{
			{[]string{"capacity", "report", "--region", "mars"}, []string{`devfleet: region "mars" not found (NotFound)`}},
			{[]string{"capacity", "lose", "--region", "eu", "--site", "mars-1"}, []string{`devfleet: site "mars-1" not found (NotFound)`}},
			{[]string{"capacity", "lose", "--hosts", "eu-h1,Bad_Name"}, []string{"hosts", "(InvalidArgument)"}},
			{[]string{"capacity", "place", "--flavor", "small", "--region", "mars"}, []string{`devfleet: region "mars" not found (NotFound)`}},
			{[]string{"capacity", "place", "--flavor", "nope", "--region", "eu"}, []string{`flavor "nope" not found`, "(NotFound)"}},
			{[]string{"capacity", "place", "--flavor", "small", "--region", "eu", "--site", "us-1"}, []string{`site "us-1" is in region "us", not "eu"`, "(InvalidArgument)"}},
			{[]string{"devserver", "create", "d9", "--owner", "bob", "--flavor", "small", "--region", "mars", "--permanent"}, []string{`region "mars" not found`, "(NotFound)"}},
			{[]string{"devserver", "create", "d9", "--owner", "bob", "--flavor", "small", "--region", "eu", "--expires-in", "30m"}, []string{"expires_in", "between 1h0m0s and 8760h0m0s", "(InvalidArgument)"}},
		} {
			checkFailure(t, f.run(tc.args...), 1, tc.wants...)
		}
	})
}

package cli

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/clustertest"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// runEnv runs a command line against the fleet's node with env as the whole environment, so
// that the test's own $USER does not name the caller.
func (f *testFleet) runEnv(env map[string]string, args ...string) result {
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"--addr", f.addr}, args...), &out, &errb, func(k string) string { return env[k] })
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// okAs runs a command line as user (--as) that must succeed and returns its stdout.
func (f *testFleet) okAs(user string, args ...string) string {
	f.t.Helper()
	r := f.runEnv(nil, append([]string{"--as", user}, args...)...)
	if r.code != 0 || r.stderr != "" {
		f.t.Fatalf("devfleet --as %s %s: %s", user, strings.Join(args, " "), r)
	}
	return r.stdout
}

// seedMigration registers two in-memory hosts h1 and h2 in region eu, a flavor tiny without a
// disk (a quick move) and alice's devserver alice-dev on h1, and waits until
// it runs.
func (f *testFleet) seedMigration() {
	f.t.Helper()
	f.ok("region", "add", "eu")
	f.ok("site", "add", "fra1", "--region", "eu")
	for _, h := range []string{"h1", "h2"} {
		f.ok("host", "add", h, "--site", "fra1", "--libvirt", "fake://"+h+"?cpus=64&memory_mib=262144", "--disk-gib", "100")
	}
	f.ok("flavor", "add", "tiny", "--cpus", "1", "--memory-mib", "512", "--disk-gib", "0")
	f.ok("devserver", "create", "alice-dev", "--owner", "alice", "--flavor", "tiny", "--region", "eu", "--host", "h1", "--permanent")
	f.waitDevserver("alice-dev", "h1")
}

// waitDevserver waits until the devserver runs on host.
func (f *testFleet) waitDevserver(name, host string) {
	f.t.Helper()
	clustertest.WaitFor(f.t, 15*time.Second, name+" to run on "+host, func() error {
		r := f.run("-o", "json", "devserver", "show", name)
		if r.code != 0 {
			return fmt.Errorf("%s", r)
		}
		d := decode[map[string]any](f.t, r.stdout)
		if d["state"] != "DEVSERVER_STATE_RUNNING" || d["host"] != host {
			return fmt.Errorf("state %v on %v", d["state"], d["host"])
		}
		return nil
	})
}

// migrations lists the migrations as JSON.
func (f *testFleet) migrations(args ...string) []map[string]any {
	f.t.Helper()
	return decode[[]map[string]any](f.t, f.ok(append([]string{"-o", "json", "migration", "list"}, args...)...))
}

func TestMigrateRefused(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.seedMigration()
	migrate := []string{"devserver", "migrate", "alice-dev", "--to-host", "h2"}

	for _, tc := range []struct {
		name  string
		env   map[string]string
		args  []string
		wants []string
	}{
		{"unknown devserver", nil, []string{"--as", "alice", "devserver", "migrate", "nope"}, []string{`devserver "nope" not found`, "(NotFound)"}},
		{"nobody: no --as, no $USER", nil, migrate, []string{"devfleet-as", "say who you are (devfleet --as USER)", "(PermissionDenied)"}},
		{"a stranger", nil, append([]string{"--as", "mallory"}, migrate...), []string{"mallory is not the owner of devserver alice-dev", "(PermissionDenied)"}},
		{"a stranger in $USER", map[string]string{"USER": "mallory"}, migrate, []string{"mallory is not the owner", "(PermissionDenied)"}},
		{"DEVFLEET_AS before $USER", map[string]string{"USER": "alice", "DEVFLEET_AS": "mallory"}, migrate, []string{"mallory is not the owner", "(PermissionDenied)"}},
		{"a stranger aborts nothing", nil, []string{"--as", "mallory", "migration", "abort", "0000"}, []string{`migration "0000" not found`, "(NotFound)"}},
		{"to its own host", nil, []string{"--as", "alice", "devserver", "migrate", "alice-dev", "--to-host", "h1"}, []string{`devserver "alice-dev" already runs on h1`, "(FailedPrecondition)"}},
		{"to an unknown host", nil, []string{"--as", "alice", "devserver", "migrate", "alice-dev", "--to-host", "h9"}, []string{`host "h9" not found`, "(NotFound)"}},
		{"show unknown", nil, []string{"migration", "show", "4f1c2d3e-0000-0000-0000-000000000000"}, []string{`migration "4f1c2d3e-0000-0000-0000-000000000000" not found`, "(NotFound)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkFailure(t, f.runEnv(tc.env, tc.args...), 1, tc.wants...)
		})
	}
	if got := f.migrations(); len(got) != 0 {
		t.Errorf("refused migrations were recorded: %v", got)
	}
	if d := keyValues(t, f.ok("devserver", "show", "alice-dev")); d["state"] != "running" || d["host"] != "h1" {
		t.Errorf("devserver after refused migrations = %v", d)
	}
}

var (
	queuedRE   = regexp.MustCompile(`^migration ([0-9a-f-]{36}): alice-dev from (h[12]) to (h[12]) \(live, (\w+), priority (\d+)\); queued$`)
	migratedRE = regexp.MustCompile(`^migrated alice-dev to h2 in \d+\.\ds \(512 MiB at \d+\.\d MiB/s, downtime \d+ ms\)$`)
	runningRE  = regexp.MustCompile(`^running(: \d+/512 MiB \d+%(, \d+\.\d MiB/s, ETA (<1s|\d+s))?(, iteration \d+)?(, expected downtime \d+ ms)?)?$`)
)

// TestMigrateDevserver moves a devserver between two in-memory hosts and follows it with
// --monitor, then lists and shows the migration, aborts another and checks what waiting reports.
func TestMigrateDevserver(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.seedMigration()

	// $USER names the caller when --as is left out. 256 MiB/s: the copy takes about 2s.
	r := f.runEnv(map[string]string{"USER": "alice"}, "devserver", "migrate", "alice-dev", "--to-host", "h2", "--bandwidth-mibps", "256", "--monitor")
	if r.code != 0 {
		t.Fatalf("devserver migrate --monitor: %s", r)
	}
	out := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(out) != 2 {
		t.Fatalf("devserver migrate --monitor printed %d lines on stdout, want the queued line and the summary:\n%s", len(out), r)
	}
	q := queuedRE.FindStringSubmatch(out[0])
	if q == nil || q[2] != "h1" || q[3] != "h2" || q[4] != "user" || q[5] != "100" {
		t.Errorf("queued line %q does not match %s with h1 to h2, user, priority 100", out[0], queuedRE)
	}
	if !migratedRE.MatchString(out[1]) {
		t.Errorf("summary line %q does not match %s", out[1], migratedRE)
	}
	// Not a terminal: one progress line per change, from the first phase to the last.
	progress := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if progress[0] != "pending" || progress[len(progress)-1] != "succeeded" {
		t.Errorf("progress lines run from %q to %q, want pending to succeeded:\n%s", progress[0], progress[len(progress)-1], r.stderr)
	}
	var running int
	for _, l := range progress {
		if strings.HasPrefix(l, "running") {
			running++
			if !runningRE.MatchString(l) {
				t.Errorf("progress line %q does not match %s", l, runningRE)
			}
		}
	}
	if running == 0 {
		t.Errorf("no progress line while running:\n%s", r.stderr)
	}
	id := q[1]
	f.waitDevserver("alice-dev", "h2")

	// migration list: the table shows the start of the ID, JSON all of it.
	list := rows(f.ok("migration", "list"))
	if len(list) != 2 || len(list[1]) != 9 {
		t.Fatalf("migration list = %q, want the header and one row of 9 cells", list)
	}
	if want := []string{"ID", "DEVSERVER", "FROM", "TO", "REASON", "PHASE", "PROGRESS", "ATTEMPTS", "AGE"}; !reflect.DeepEqual(list[0], want) {
		t.Errorf("migration list header = %q, want %q", list[0], want)
	}
	if want := []string{id[:8], "alice-dev", "h1", "h2", "user", "succeeded", "-", "1"}; !reflect.DeepEqual(list[1][:8], want) || !regexp.MustCompile(`^\d+s$`).MatchString(list[1][8]) {
		t.Errorf("migration list row = %q, want %q and an age in seconds", list[1], want)
	}
	if got := f.migrations("--devserver", "alice-dev"); len(got) != 1 || got[0]["id"] != id || got[0]["phase"] != "MIGRATION_PHASE_SUCCEEDED" {
		t.Errorf("migration list --devserver alice-dev -o json = %v", got)
	}
	if got := f.migrations("--active"); len(got) != 0 {
		t.Errorf("migration list --active after the end = %v", got)
	}
	if got := rows(f.ok("migration", "list", "--devserver", "bob-dev")); len(got) != 1 {
		t.Errorf("migration list --devserver bob-dev = %q, want the header only", got)
	}

	// migration show, by the ID's start as listed.
	m := keyValues(t, f.ok("migration", "show", id[:8]))
	for k, v := range map[string]string{
		"id": id, "devserver": "alice-dev", "source_host": "h1", "dest_host": "h2", "reason": "user", "priority": "100",
		"phase": "succeeded", "cold": "no", "attempts": "1", "requested_by": "alice", "abort_requested": "no",
		"failure_reason": "-", "policy": "bandwidth_mibps=256", "memory_total_mib": "512",
	} {
		if m[k] != v {
			t.Errorf("migration show: %s = %q, want %q", k, m[k], v)
		}
	}
	for _, k := range []string{"progress", "downtime_ms", "start_time", "end_time", "sample_time"} {
		if m[k] == "" || m[k] == "-" {
			t.Errorf("migration show: %s is empty: %v", k, m)
		}
	}
	if js := decode[map[string]any](t, f.ok("-o", "json", "migration", "show", id)); js["requested_by"] != "alice" || js["progress"] == nil {
		t.Errorf("migration show -o json = %v", js)
	}
	f.fail(1, []string{"--as", "alice", "migration", "abort", id}, "migration "+id+" already ended", "(FailedPrecondition)")

	// An explicit --timeout bounds the wait; the migration goes on. 1 MiB/s: it would take minutes.
	r = f.runEnv(nil, "--as", "alice", "--timeout", "1s", "devserver", "migrate", "alice-dev", "--reason", "maintenance", "--bandwidth-mibps", "1", "--max-downtime", "50ms", "--wait")
	if q = queuedRE.FindStringSubmatch(strings.TrimSpace(r.stdout)); q == nil || q[2] != "h2" || q[4] != "maintenance" || q[5] != "200" {
		t.Errorf("devserver migrate --wait --timeout 1s: stdout %q, want the queued line from h2, maintenance, priority 200", r.stdout)
	}
	r.stdout = ""
	checkFailure(t, r, 1, "gave up after --timeout 1s: migration "+q[1]+" of alice-dev is still ", " and goes on", "devfleet migration abort "+q[1], "(DeadlineExceeded)")
	id = q[1]
	if got := f.migrations("--active"); len(got) != 1 || got[0]["id"] != id {
		t.Fatalf("migration list --active = %v, want %s", got, id)
	}
	if got := rows(f.ok("migration", "list", "--active")); len(got) != 2 || got[1][0] != id[:8] || got[1][2] != "h2" || got[1][3] != "h1" || got[1][4] != "maintenance" {
		t.Errorf("migration list --active = %q", got)
	}
	f.fail(1, []string{"--as", "mallory", "migration", "abort", id}, "mallory is not the owner", "(PermissionDenied)")
	out0 := f.okAs("alice", "migration", "abort", id[:8])
	if !strings.HasPrefix(out0, "migration "+id+": abort requested (phase ") || !strings.HasSuffix(out0, "); devserver alice-dev stays on h2\n") {
		t.Errorf("migration abort printed %q", out0)
	}
	clustertest.WaitFor(t, 15*time.Second, "the aborted migration to end", func() error {
		m := keyValues(t, f.ok("migration", "show", id))
		if m["abort_requested"] != "yes" || m["phase"] != "aborted" {
			return fmt.Errorf("abort_requested %s, phase %s", m["abort_requested"], m["phase"])
		}
		return nil
	})
	f.waitDevserver("alice-dev", "h2")

	// --wait reports a migration aborted meanwhile: exit 1, one line with the phase and why.
	done := make(chan result, 1)
	go func() {
		done <- f.runEnv(nil, "--as", "alice", "devserver", "migrate", "alice-dev", "--bandwidth-mibps", "1", "--wait", "-o", "json")
	}()
	clustertest.WaitFor(t, 15*time.Second, "a migration to abort", func() error {
		active := f.migrations("--active")
		if len(active) != 1 {
			return fmt.Errorf("%d active migrations", len(active))
		}
		id = active[0]["id"].(string)
		return nil
	})
	if js := decode[map[string]any](t, f.okAs("alice", "-o", "json", "migration", "abort", id)); js["abort_requested"] != true || js["id"] != id {
		t.Errorf("migration abort -o json = %v", js)
	}
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("devserver migrate --wait did not return after the abort")
	}
	// -o json prints the migration as it ended, whatever the outcome.
	if js := decode[map[string]any](t, r.stdout); js["id"] != id || js["phase"] != "MIGRATION_PHASE_ABORTED" {
		t.Errorf("devserver migrate --wait -o json printed %v", js)
	}
	r.stdout = ""
	checkFailure(t, r, 1, "migration "+id+" of alice-dev ended in phase aborted: ", "devserver alice-dev stays on h2")
	f.waitDevserver("alice-dev", "h2")

	// --wait alone, JSON: the migration as it succeeded.
	js := decode[map[string]any](t, f.okAs("alice", "-o", "json", "devserver", "migrate", "alice-dev", "--wait"))
	if js["phase"] != "MIGRATION_PHASE_SUCCEEDED" || js["source_host"] != "h2" || js["dest_host"] != "h1" {
		t.Errorf("devserver migrate --wait -o json = %v", js)
	}
	f.waitDevserver("alice-dev", "h1")
	if got := rows(f.ok("migration", "list")); len(got) != 5 {
		t.Errorf("migration list after four migrations = %q", got)
	}
}

// TestMigrateQueued checks what devserver migrate prints without waiting, and that a sharer
// may move the devserver.
func TestMigrateQueued(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.seedMigration()
	f.ok("devserver", "share", "alice-dev", "--with", "bob")
	js := decode[map[string]any](t, f.okAs("bob", "-o", "json", "devserver", "migrate", "alice-dev", "--priority", "7", "--reason", "Rebalance", "--bandwidth-mibps", "1"))
	if js["phase"] != "MIGRATION_PHASE_PENDING" || js["source_host"] != "h1" || js["dest_host"] != "h2" || js["priority"] != 7.0 ||
		js["reason"] != "MIGRATION_REASON_REBALANCE" || js["requested_by"] != "bob" {
		t.Errorf("devserver migrate -o json = %v", js)
	}
	if pol, _ := js["policy"].(map[string]any); pol["bandwidth_mibps"] != "1" {
		t.Errorf("policy = %v", js["policy"])
	}
	id := js["id"].(string)
	f.fail(1, []string{"--as", "alice", "devserver", "migrate", "alice-dev"}, `devserver "alice-dev"`, "(FailedPrecondition)")
	out := f.okAs("alice", "migration", "abort", id)
	if !strings.HasPrefix(out, "migration "+id+": abort requested") {
		t.Errorf("migration abort printed %q", out)
	}
	clustertest.WaitFor(t, 15*time.Second, "the migration to end", func() error {
		if m := keyValues(t, f.ok("migration", "show", id)); m["phase"] != "aborted" {
			return fmt.Errorf("phase %s", m["phase"])
		}
		return nil
	})
	f.waitDevserver("alice-dev", "h1")
	// Capacity picks the destination when --to-host is left out; the queued line names it.
	// Interrupting --wait stops the waiting, not the migration.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(1500*time.Millisecond, cancel)
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"--addr", f.addr, "--as", "alice", "devserver", "migrate", "alice-dev", "--bandwidth-mibps", "1", "--wait"}, &stdout, &stderr, func(string) string { return "" })
	q := queuedRE.FindStringSubmatch(strings.TrimSpace(stdout.String()))
	if q == nil || q[2] != "h1" || q[3] != "h2" || q[4] != "user" || q[5] != "100" {
		t.Fatalf("devserver migrate --wait printed %q", stdout.String())
	}
	checkFailure(t, result{code: code, stderr: stderr.String()}, 1, "interrupted: migration "+q[1]+" of alice-dev is still ", "and goes on", "(Canceled)")
	if got := f.migrations("--active"); len(got) != 1 || got[0]["id"] != q[1] {
		t.Errorf("migration list --active after the interrupt = %v, want %s", got, q[1])
	}
	f.okAs("alice", "migration", "abort", q[1])
}

func TestMigrationCompletion(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.seedMigration()
	complete := func(args ...string) []string {
		t.Helper()
		r := f.run(append([]string{"__complete"}, args...)...)
		if r.code != 0 {
			t.Fatalf("__complete %v: %s", args, r)
		}
		lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
		return lines[:len(lines)-1] // the last line is the directive
	}
	if got, want := complete("devserver", "migrate", "al"), []string{"alice-dev"}; !reflect.DeepEqual(got, want) {
		t.Errorf("completing devserver migrate al: %q, want %q", got, want)
	}
	if got, want := complete("devserver", "migrate", "alice-dev", "--to-host", ""), []string{"h1", "h2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("completing --to-host: %q, want %q", got, want)
	}
	if got, want := complete("devserver", "migrate", "alice-dev", "--reason", ""), []string{"maintenance", "user", "rebalance", "evacuation"}; !reflect.DeepEqual(got, want) {
		t.Errorf("completing --reason: %q, want %q", got, want)
	}
	if got, want := complete("migration", "list", "--devserver", ""), []string{"alice-dev"}; !reflect.DeepEqual(got, want) {
		t.Errorf("completing migration list --devserver: %q, want %q", got, want)
	}
	js := decode[map[string]any](t, f.okAs("alice", "-o", "json", "devserver", "migrate", "alice-dev", "--bandwidth-mibps", "1"))
	id := js["id"].(string)
	for _, cmd := range []string{"show", "abort"} {
		if got, want := complete("migration", cmd, id[:4]), []string{id}; !reflect.DeepEqual(got, want) {
			t.Errorf("completing migration %s: %q, want %q", cmd, got, want)
		}
	}
	f.okAs("alice", "migration", "abort", id)
	clustertest.WaitFor(t, 15*time.Second, "the migration to end", func() error {
		if got := f.migrations("--active"); len(got) != 0 {
			return fmt.Errorf("%d active", len(got))
		}
		return nil
	})
	// Only migrations under way can be aborted.
	if got := complete("migration", "abort", ""); len(got) != 0 {
		t.Errorf("completing migration abort after the end: %q, want nothing", got)
	}
	if got, want := complete("migration", "show", ""), []string{id}; !reflect.DeepEqual(got, want) {
		t.Errorf("completing migration show: %q, want %q", got, want)
	}
}

// TestAsHelp checks that the root help explains --as, its environment variables and its
// default. (That --as, DEVFLEET_AS and $USER reach the server is what TestMigrateRefused and
// TestMigrateDevserver check.)
func TestAsHelp(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	run(context.Background(), []string{"--help"}, &out, &errb, func(k string) string { return map[string]string{"USER": "carol"}[k] })
	help := out.String()
	for _, want := range []string{"--as string", "DEVFLEET_AS", `(default "carol")`, "name themselves with --as USER"} {
		if !strings.Contains(help, want) {
			t.Errorf("root help does not mention %q:\n%s", want, help)
		}
	}
}

func TestProgressText(t *testing.T) {
	t.Parallel()
	running := &v1.Migration{Phase: v1.MigrationPhase_MIGRATION_PHASE_RUNNING, Attempts: 1, Progress: &v1.MigrationProgress{
		MemoryTotalBytes: 512 * mib, MemoryProcessedBytes: 300 * mib, MemoryRemainingBytes: 256 * mib,
		DataRateBytesPerSecond: 42 * mib, Iteration: 2, ExpectedDowntimeMs: 28,
	}}
	for _, tc := range []struct {
		m    *v1.Migration
		want string
	}{
		{&v1.Migration{Phase: v1.MigrationPhase_MIGRATION_PHASE_PENDING}, "pending"},
		{&v1.Migration{Phase: v1.MigrationPhase_MIGRATION_PHASE_SCHEDULED, Attempts: 1}, "scheduled: 1 attempt failed"},
		{&v1.Migration{Phase: v1.MigrationPhase_MIGRATION_PHASE_PREPARING_TARGET, Attempts: 2}, "preparing_target: attempt 2"},
		{&v1.Migration{Phase: v1.MigrationPhase_MIGRATION_PHASE_FAILED, Attempts: 3}, "failed"},
		{running, "running: 300/512 MiB 50%, 42.0 MiB/s, ETA 6s, iteration 2, expected downtime 28 ms"},
		{&v1.Migration{Phase: v1.MigrationPhase_MIGRATION_PHASE_RUNNING, AbortRequested: true, Progress: &v1.MigrationProgress{MemoryTotalBytes: 512 * mib}}, "running: 0/512 MiB 0%, abort requested"},
		{&v1.Migration{Phase: v1.MigrationPhase_MIGRATION_PHASE_ABORTED, AbortRequested: true, Progress: running.Progress}, "aborted"},
	} {
		if got := progressText(tc.m); got != tc.want {
			t.Errorf("progressText(%v) = %q, want %q", tc.m, got, tc.want)
		}
	}

	// On a terminal the line is rewritten in place and ended once.
	var b bytes.Buffer
	p := &progressLine{w: &b, tty: true}
	p.show(&v1.Migration{Phase: v1.MigrationPhase_MIGRATION_PHASE_PENDING})
	p.show(&v1.Migration{Phase: v1.MigrationPhase_MIGRATION_PHASE_PENDING})
	p.show(&v1.Migration{Phase: v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED})
	p.end()
	p.end()
	if got, want := b.String(), "\rpending\x1b[K\rsucceeded\x1b[K\n"; got != want {
		t.Errorf("terminal progress = %q, want %q", got, want)
	}
	var nilLine *progressLine
	nilLine.show(running) // --wait without --monitor shows nothing
	nilLine.end()
}

func TestMigratedLine(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	m := &v1.Migration{Devserver: "bob-dev", DestHost: "fra1-h7", Phase: v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED,
		CreateTime: timestamppb.New(start.Add(-time.Minute)), StartTime: timestamppb.New(start), EndTime: timestamppb.New(start.Add(12300 * time.Millisecond)),
		Progress: &v1.MigrationProgress{MemoryTotalBytes: 512 * mib, MemoryProcessedBytes: 515 * mib, DowntimeMs: 28}}
	if got, want := migratedLine(m), "migrated bob-dev to fra1-h7 in 12.3s (512 MiB at 41.9 MiB/s, downtime 28 ms)"; got != want {
		t.Errorf("migratedLine = %q, want %q", got, want)
	}
	m.StartTime, m.Progress = nil, nil
	if got, want := migratedLine(m), "migrated bob-dev to fra1-h7 in 1m12.3s"; got != want {
		t.Errorf("migratedLine without start and progress = %q, want %q", got, want)
	}
}

func TestShortIDsAndAge(t *testing.T) {
	t.Parallel()
	ms := []*v1.Migration{{Id: "0123456789ab"}, {Id: "0123456799ab"}, {Id: "fedcba9876"}, {Id: "abc"}}
	want := map[string]string{"0123456789ab": "012345678", "0123456799ab": "012345679", "fedcba9876": "fedcba98", "abc": "abc"}
	if got := shortIDs(ms); !reflect.DeepEqual(got, want) {
		t.Errorf("shortIDs = %v, want %v", got, want)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{
		-time.Second: "0s", 45 * time.Second: "45s", 12 * time.Minute: "12m", 5 * time.Hour: "5h", 47 * time.Hour: "47h", 72 * time.Hour: "3d",
	} {
		if got := age(timestamppb.New(now.Add(-d)), now); got != want {
			t.Errorf("age(%s) = %q, want %q", d, got, want)
		}
	}
}

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devfleet/devfleet/e2e/libvirthost"
	"github.com/devfleet/devfleet/notify"
)

// TestLibvirtDrain drains a real libvirt host of six running devservers through the CLI,
// followed with --monitor, and kills the devfleetd leader mid-way: every devserver ends running
// on another host, exactly once, and the drain's timeline shows the new leader taking over.
func TestLibvirtDrain(t *testing.T) {
	t.Parallel()
	began := time.Now()
	lv := libvirthost.StartT(t, 3)
	// A webhook receiver: every delivery's signature is checked, and deliveries are deduplicated
	// on their ID (a new leader sends recent ones again).
	secret := []byte("e2e-webhook-secret-0123456789")
	var hookMu sync.Mutex
	hooked := map[string]notify.Message{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := notify.Verify(secret, r.Header, body, 0); err != nil {
			t.Errorf("webhook delivery with a bad signature: %v", err)
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var m notify.Message
		if err := json.Unmarshal(body, &m); err != nil {
			t.Errorf("webhook delivery: %v", err)
		}
		hookMu.Lock()
		hooked[m.ID] = m
		hookMu.Unlock()
	}))
	t.Cleanup(hook.Close)
	secretFile := filepath.Join(t.TempDir(), "webhook-secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	nodes := startCluster(t, 3, "--operators", "ops", "--webhook-url", hook.URL, "--webhook-secret-file", secretFile)
	f := &lvFleet{t: t, nodes: nodes, hosts: map[string]libvirthost.Host{}, diskless: map[string]bool{"mini": true}}
	leader := leaderOf(t, nodes)
	for _, n := range nodes {
		if n != leader {
			f.via = n
			break
		}
	}
	f.must("region", "add", "lab")
	f.must("site", "add", "lab1", "--region", "lab")
	for _, h := range lv {
		f.hosts[h.Name] = h
		f.must("host", "add", h.Name, "--site", "lab1", "--libvirt", h.URI, "--migration-uri", h.TCPURI, "--disk-gib", "20", "--cpu-overcommit", "4")
	}
	f.must("flavor", "add", "mini", "--cpus", "1", "--memory-mib", "128", "--disk-gib", "0")
	var names []string
	for i := range 6 {
		name := fmt.Sprintf("dd%d", i)
		names = append(names, name)
		f.must("devserver", "create", name, "--owner", "erin", "--flavor", "mini", "--region", "lab", "--permanent", "--host", "h1")
	}
	f.waitAgree(60*time.Second, "six devservers running on h1")
	t.Logf("3 hosts, 3 nodes, 6 devservers on h1 in %v", time.Since(began).Round(time.Millisecond))

	// Not an operator: refused, and nothing is cordoned.
	_, errOut, code := cli(t, f.via.grpc, "--as", "erin", "drain", "start", "--hosts", "h1", "--reason", "e2e")
	if code != 1 || !strings.Contains(errOut, "not an operator") || !strings.Contains(errOut, "(PermissionDenied)") {
		f.fatalf("drain by a non-operator: exit %d, %s", code, errOut)
	}
	if s := f.hostState("h1"); s != "HOST_STATE_ACTIVE" {
		f.fatalf("h1 is %s after a refused drain", s)
	}
	out := f.must("--as", "ops", "drain", "start", "--hosts", "h1", "--reason", "e2e dry run", "--dry-run")
	if !strings.Contains(out, "plan: 6 devservers in ") {
		f.fatalf("dry run:\n%s", out)
	}

	step := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// A second terminal: a watcher of the drain's events, told only the leader's address (the
	// node about to be killed), and a developer asking doctor about the devservers in flight.
	watch := startWatch(t, ctx, leaderOf(t, nodes).grpc, "--topic", "drain", "--topic", "drain-item", "--topic", "migration", "--since", "10m", "-o", "json")
	doctorCtx, stopDoctor := context.WithCancel(ctx)
	defer stopDoctor()
	doctor := pollDoctor(doctorCtx, f.via.grpc, names)
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "devfleet"), "--addr", f.via.grpc, "--as", "ops",
		"drain", "start", "--hosts", "h1", "--reason", "e2e: drain with a leader crash", "--per-source", "2", "--monitor")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Kill the leader once the first devserver moved.
	f.waitFor(60*time.Second, "a devserver moved off h1", func() error {
		for _, n := range names {
			if d, err := f.devserver(n); err == nil && d.Host != "h1" {
				return nil
			}
		}
		return fmt.Errorf("all on h1")
	})
	leader = leaderOf(t, nodes)
	if leader == f.via {
		t.Fatalf("the CLI's node %s became the leader", f.via.id)
	}
	leader.kill9(t)
	killed := time.Now()
	leader.start(t)
	if err := <-done; err != nil {
		f.fatalf("drain start --monitor: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	t.Logf("drain with the leader %s killed %v in: %v; --monitor:\n%s%s", leader.id, killed.Sub(step).Round(time.Millisecond),
		time.Since(step).Round(time.Millisecond), tail(stderr.String(), 12), stdout.String())
	f.waitAgree(30*time.Second, "every devserver on another host, one guest each")
	for _, n := range names {
		if d, _ := f.devserver(n); d.Host == "h1" {
			f.fatalf("%s is still on h1", n)
		}
	}
	if names, err := f.allNames("h1"); err != nil || len(names) != 0 {
		f.fatalf("h1 still has domains %v (%v)", names, err)
	}
	if s := f.hostState("h1"); s != "HOST_STATE_DRAINED" {
		f.fatalf("h1 is %s after the drain", s)
	}
	id := strings.Fields(stdout.String())[1]
	id = strings.TrimSuffix(id, ":")
	timeline := f.must("drain", "timeline", id)
	if n := strings.Count(timeline, " leader "); n < 2 {
		f.fatalf("the timeline shows %d leaders, want the failover:\n%s", n, timeline)
	}
	if moved := strings.Count(timeline, " moved "); moved != 6 {
		f.fatalf("the timeline shows %d moves, want 6:\n%s", moved, timeline)
	}
	t.Logf("drain timeline:\n%s", timeline)
	if !slices.Contains(strings.Fields(timeline), "finished") {
		f.fatalf("no end in the timeline:\n%s", timeline)
	}

	// doctor, asked while the devservers moved, said which drain moved them.
	stopDoctor()
	said := <-doctor
	if !strings.Contains(said, "is being migrated from h1 to ") || !strings.Contains(said, "by drain "+id+" (e2e: drain with a leader crash)") {
		f.fatalf("doctor on a moving devserver said:\n%s", said)
	}
	t.Logf("doctor on a devserver in flight:\n%s", said)
	// The watcher got every drain and migration event exactly once, across the leader's death:
	// the same events as a survivor's history, none twice.
	var survivor *node
	for _, n := range nodes {
		if n != leader {
			survivor = n
			break
		}
	}
	ref, errOut, code := cli(t, survivor.grpc, "events", "watch", "--pin", "--topic", "drain", "--topic", "drain-item", "--topic", "migration", "--since", "10m", "-o", "json", "--timeout", "5s")
	if code != 0 {
		f.fatalf("the reference watch: exit %d: %s", code, errOut)
	}
	want := eventPositions(t, ref)
	f.waitFor(30*time.Second, "the watcher caught up", func() error {
		if got := watch.positions(t); len(got) < len(want) {
			return fmt.Errorf("%d of %d events", len(got), len(want))
		}
		return nil
	})
	lines := watch.lines()
	got := eventPositions(t, strings.Join(lines, "\n"))
	seen := map[string]bool{}
	for _, p := range got {
		if seen[p] {
			f.fatalf("the watcher got event %s twice", p)
		}
		seen[p] = true
	}
	if !slices.Equal(got, want) {
		f.fatalf("the watcher's %d events differ from the history's %d:\nwatcher %v\nhistory %v", len(got), len(want), got, want)
	}
	drainEvents, migrationEvents := 0, 0
	for _, l := range lines {
		var e struct {
			Topic string `json:"topic"`
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			f.fatalf("an event line that is not JSON: %q: %v", l, err)
		}
		drainEvents += boolCount(e.Topic == "drain")
		migrationEvents += boolCount(e.Topic == "migration")
	}
	if drainEvents == 0 || migrationEvents < 6 {
		f.fatalf("the watcher got %d drain and %d migration events", drainEvents, migrationEvents)
	}
	t.Logf("watcher: %d events (%d drain, %d migration), each once, across the leader's death; its log:\n%s", len(got), drainEvents, migrationEvents, watch.stderr())

	// The same drain, recorded from a node and replayed (backtesting): the analyzers see it end.
	rec := filepath.Join(t.TempDir(), "drain.rec")
	f.must("analyze", "record", "--since", "10m", "-o", rec)
	if out := f.must("analyze", "run", "drain-stuck", "--input", "drain="+id, "--replay", rec); !strings.Contains(out, "drain "+id+" ended ") || !strings.Contains(out, "succeeded") {
		f.fatalf("drain-stuck on the recording:\n%s", out)
	}
	if out := f.must("analyze", "run", "doctor", "--input", "devserver=dd0", "--replay", rec); !strings.Contains(out, "dd0 is running on host h") {
		f.fatalf("doctor dd0 on the recording:\n%s", out)
	}

	// Decommission the host that now runs them all: its devservers move to the last host, a
	// leftover domain is wiped, and the host is retired with no guest left.
	step = time.Now()
	xml := filepath.Join(t.TempDir(), "leftover.xml")
	if err := os.WriteFile(xml, []byte(libvirthost.TinyDomainXML("leftover", 64)), 0o644); err != nil {
		t.Fatal(err)
	}
	f.virsh("h2", "define", xml) // a leftover domain (shut off, not devfleet's)
	out, errOut, code = cli(t, f.via.grpc, "--as", "ops", "decom", "start", "h2", "--reason", "e2e: end of life", "--now", "--wait")
	if code != 0 {
		f.fatalf("decom start --wait: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	t.Logf("decommission of h2 in %v:\n%s%s", time.Since(step).Round(time.Millisecond), errOut, out)
	for _, want := range []string{"announce:", "cordon:", "drain:", "verify:", "wipe: removed 1 leftover domains and 0 volumes", "retire:"} {
		if !strings.Contains(errOut, want) {
			f.fatalf("decom steps lack %q:\n%s", want, errOut)
		}
	}
	if s := f.hostState("h2"); s != "HOST_STATE_RETIRED" {
		f.fatalf("h2 is %s after its decommission", s)
	}
	if names, err := f.allNames("h2"); err != nil || len(names) != 0 {
		f.fatalf("h2 still has domains %v (%v)", names, err)
	}
	if vols, err := f.volumes("h2"); err != nil || len(vols) != 0 {
		f.fatalf("h2 still has volumes %v (%v)", vols, err)
	}
	f.waitAgree(30*time.Second, "every devserver on h3 after the decommission")

	// The webhook got the drain's start and end and the owners' notices of the decommission.
	f.waitFor(30*time.Second, "the webhook deliveries", func() error {
		hookMu.Lock()
		defer hookMu.Unlock()
		kinds := map[string]int{}
		for _, m := range hooked {
			kinds[m.Kind]++
		}
		if kinds["drain.started"] < 2 || kinds["drain.finished"] < 2 || kinds["maintenance"] < 6 {
			return fmt.Errorf("deliveries by kind: %v", kinds)
		}
		return nil
	})
	hookMu.Lock()
	t.Logf("webhook: %d distinct deliveries, all signed", len(hooked))
	hookMu.Unlock()
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n") + "\n"
}

// watchProc is a devfleet events watch running in the background, its output kept.
type watchProc struct {
	mu       sync.Mutex
	out, err bytes.Buffer
}

// startWatch starts devfleet events watch against addr; it stops with ctx (and the test).
func startWatch(t *testing.T, ctx context.Context, addr string, args ...string) *watchProc {
	t.Helper()
	w := &watchProc{}
	ctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "devfleet"), append([]string{"--addr", addr, "events", "watch"}, args...)...)
	cmd.Stdout, cmd.Stderr = lockedWriter{&w.mu, &w.out}, lockedWriter{&w.mu, &w.err}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	return w
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// lines are the complete lines printed so far.
func (w *watchProc) lines() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.out.String()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.Split(s[:i], "\n")
	}
	return nil
}

func (w *watchProc) stderr() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err.String()
}

func (w *watchProc) positions(t *testing.T) []string {
	return eventPositions(t, strings.Join(w.lines(), "\n"))
}

// eventPositions are the index/n of the events printed one JSON object a line, in order.
func eventPositions(t *testing.T, out string) []string {
	t.Helper()
	var ps []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var e struct {
			Index string `json:"index"`
			N     uint32 `json:"n"`
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("an event line that is not JSON: %q: %v", l, err)
		}
		ps = append(ps, fmt.Sprintf("%s/%d", e.Index, e.N))
	}
	return ps
}

func boolCount(b bool) int {
	if b {
		return 1
	}
	return 0
}

// pollDoctor runs devfleet doctor on the devservers, round and round, until one says it is being
// migrated; it sends that output (or the last one, when ctx ends first).
func pollDoctor(ctx context.Context, addr string, names []string) <-chan string {
	out := make(chan string, 1)
	go func() {
		last := ""
		for i := 0; ctx.Err() == nil; i++ {
			b, err := exec.CommandContext(ctx, filepath.Join(binDir, "devfleet"), "--addr", addr, "doctor", names[i%len(names)]).CombinedOutput()
			if ctx.Err() != nil {
				break
			}
			last = fmt.Sprintf("%s(exit: %v)", b, err)
			if strings.Contains(last, "is being migrated") {
				break
			}
		}
		out <- last
	}()
	return out
}

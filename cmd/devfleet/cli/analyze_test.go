package cli

import (
	"archive/tar"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestDoctorAnalyzeAlerts(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.seed("fra1-h1")
	f.ok("flavor", "add", "small", "--cpus", "2", "--memory-mib", "4096", "--disk-gib", "50")
	f.ok("devserver", "create", "bob-dev", "--owner", "bob", "--flavor", "small", "--region", "eu", "--permanent")

	if out := f.ok("doctor", "bob-dev"); !strings.Contains(out, "bob-dev is ") || !strings.Contains(out, "fra1-h1") {
		t.Errorf("doctor bob-dev:\n%s", out)
	}
	// Without a name: the caller's devservers.
	if out := f.ok("--as", "bob", "doctor"); !strings.Contains(out, "bob-dev") {
		t.Errorf("doctor as bob:\n%s", out)
	}
	f.fail(2, []string{"--as", "nobody", "doctor"}, "nobody owns no devserver; name one")
	f.fail(1, []string{"doctor", "ghost"}, `"ghost" not found`, "(NotFound)")

	dir := t.TempDir()
	out := f.ok("doctor", "bob-dev", "--rage", "--rage-dir", dir)
	m := regexp.MustCompile(`evidence bundle: (\S+\.tar\.gz)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("doctor --rage printed no bundle path:\n%s", out)
	}
	files := tarNames(t, m[1])
	for _, want := range []string{"doctor.json", "doctor.txt", "devserver.json", "host.json", "placement-history.json", "devserver-events.json", "migrations.json", "cli.json", "connectivity.txt"} {
		if !slices.ContainsFunc(files, func(n string) bool { return strings.HasSuffix(n, "/"+want) }) {
			t.Errorf("the bundle lacks %s: %v", want, files)
		}
	}

	if out := f.ok("analyze", "list"); !strings.Contains(out, "drain-stuck") || !strings.Contains(out, "stall:duration=10m0s") {
		t.Errorf("analyze list:\n%s", out)
	}
	if out := f.ok("analyze", "run", "capacity-risk"); !strings.Contains(out, "INFO") {
		t.Errorf("analyze run capacity-risk:\n%s", out)
	}
	f.fail(1, []string{"analyze", "run", "drain-stuck", "--input", "drain=d", "--input", "stall=soon"}, "inputs.stall", "not a duration", "(InvalidArgument)")
	f.fail(2, []string{"analyze", "run", "drain-stuck", "--input", "drain"}, `--input "drain": want KEY=VALUE`)
	f.fail(2, []string{"analyze", "record"}, "-o FILE: required")

	rec := filepath.Join(dir, "now.rec")
	if out := f.ok("analyze", "record", "--since", "1h", "-o", rec); !strings.Contains(out, "recorded ") {
		t.Errorf("analyze record: %s", out)
	}
	if out := f.ok("analyze", "run", "doctor", "--input", "devserver=bob-dev", "--replay", rec); !strings.Contains(out, "bob-dev") {
		t.Errorf("the replay of a fresh recording:\n%s", out)
	}
	committed := filepath.Join("..", "..", "..", "controlplane", "analyzer", "builtin", "testdata", "broken-n1.rec")
	if out := f.ok("analyze", "run", "capacity-risk", "--replay", committed); !strings.Contains(out, "CRITICAL N-1 is broken: if region eu were lost") {
		t.Errorf("the replay of broken-n1.rec:\n%s", out)
	}
	bad := writeFile(t, "not a recording")
	f.fail(2, []string{"analyze", "run", "capacity-risk", "--replay", bad}, "not a devfleet recording")
	f.fail(2, []string{"analyze", "run", "doctor", "--replay", committed}, "inputs.devserver", "required")

	if out := f.ok("alerts", "list"); !strings.HasPrefix(out, "ID") {
		t.Errorf("alerts list:\n%s", out)
	}
	f.fail(1, []string{"alerts", "show", "a-1"}, "not found", "(NotFound)")
}

func tarNames(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}

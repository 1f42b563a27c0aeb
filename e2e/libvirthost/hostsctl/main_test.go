package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/devfleet/devfleet/e2e/libvirthost"
)

// TestUpDown drives the command as `make run` does: up prints "NAME URI MIGRATION_URI" per host and leaves the
// daemons running; down, from the record alone, stops them; a second down is a no-op.
func TestUpDown(t *testing.T) {
	dir, err := os.MkdirTemp("", "hostsctl") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"up", "--n", "2", "--dir", dir}, &stdout, &stderr); err != nil {
		t.Fatalf("up: %v\n%s", err, stderr.String())
	}
	t.Cleanup(func() {
		if f, err := libvirthost.Load(dir); err == nil {
			_ = f.Stop(t.Context())
		}
	})
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("up printed %q, want 2 lines", stdout.String())
	}
	for i, line := range lines {
		f := strings.Fields(line)
		if want := "h" + string(rune('1'+i)); len(f) != 3 || f[0] != want || !strings.HasPrefix(f[1], "qemu+unix:///system?socket="+dir+"/") || !strings.HasPrefix(f[2], "qemu+tcp://") {
			t.Fatalf("line %d = %q, want %q, a unix URI under %s and a TCP migration URI", i, line, want, dir)
		}
		uri := f[1]
		if out, err := exec.CommandContext(t.Context(), "virsh", "-c", uri, "hostname").CombinedOutput(); err != nil {
			t.Fatalf("virsh -c %s hostname: %v: %s", uri, err, out)
		}
	}
	for range 2 {
		stderr.Reset()
		if err := run(t.Context(), []string{"down", "--dir", dir}, &stdout, &stderr); err != nil {
			t.Fatalf("down: %v\n%s", err, stderr.String())
		}
	}
	if !strings.Contains(stderr.String(), "nothing to stop") {
		t.Errorf("second down said %q, want it to say there is nothing to stop", stderr.String())
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"sideways"}, {"up"}, {"down"}} {
		var stdout, stderr bytes.Buffer
		if err := run(t.Context(), args, &stdout, &stderr); err == nil {
			t.Errorf("hostsctl %v succeeded, want an error", args)
		}
	}
}

package libvirthost

import (
	"context"
	"os"
	"testing"
	"time"
)

const (
	// startTTimeout bounds StartT: package installation (first run only) and daemon start.
	startTTimeout = aptTimeout + time.Minute
	// stopTTimeout bounds the Stop that StartT registers with t.Cleanup.
	stopTTimeout = time.Minute
)

// StartT starts n hosts for a test, under a temporary directory, and stops them when the test
// ends. If libvirt cannot start, the test fails loudly: it is never skipped, since a skipped
// test would hide that the real-libvirt path went untested.
func StartT(t testing.TB, n int) []Host {
	t.Helper()
	f := startFleetT(t, n)
	return f.Hosts()
}

// startFleetT is StartT returning the fleet, for this package's tests.
func startFleetT(t testing.TB, n int) *Fleet {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), startTTimeout)
	defer cancel()
	if err := EnsurePackages(ctx, t.Output()); err != nil {
		t.Fatalf("\n\n*** libvirthost: LIBVIRT IS NOT INSTALLED and installing it failed ***\n%v\n"+
			"Install %s (as root), then rerun.\n", err, debianPackages)
	}
	dir := testDir(t, n)
	begin := time.Now()
	f, err := Start(ctx, Options{N: n, Dir: dir})
	if err != nil {
		t.Fatalf("\n\n*** libvirthost: LIBVIRT DID NOT START (%d hosts under %s) ***\n%v\n"+
			"The tests need root, network namespaces (ip netns) and mount namespaces (unshare).\n", n, dir, err)
	}
	t.Logf("libvirthost: %d hosts up in %v (%s)", n, time.Since(begin).Round(time.Millisecond), f.Prefix())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopTTimeout)
		defer cancel()
		begin := time.Now()
		if err := f.Stop(ctx); err != nil {
			t.Errorf("libvirthost: stop %s: %v", f.Prefix(), err)
			return
		}
		t.Logf("libvirthost: %d hosts down in %v (%s)", n, time.Since(begin).Round(time.Millisecond), f.Prefix())
	})
	return f
}

// testDir returns t.TempDir(), or a shorter directory under os.TempDir() when t.TempDir() would
// make a unix socket path too long or an awkward URI.
func testDir(t testing.TB, n int) string {
	t.Helper()
	dir := t.TempDir()
	if checkDir(dir, n) == nil {
		return dir
	}
	dir, err := os.MkdirTemp("", "dfh")
	if err != nil {
		t.Fatalf("libvirthost: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := checkDir(dir, n); err != nil {
		t.Fatalf("libvirthost: even %s is unusable: %v (set TMPDIR to a short path)", dir, err)
	}
	return dir
}

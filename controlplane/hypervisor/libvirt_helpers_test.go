package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfleet/devfleet/e2e/libvirthost"
)

// virsh runs virsh against a host and returns its output; a failure fails the test.
func virsh(t testing.TB, h libvirthost.Host, args ...string) string {
	t.Helper()
	out, err := runTool(h, "virsh", append([]string{"-c", h.URI}, args...)...)
	if err != nil {
		t.Fatalf("virsh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// virtAdmin runs virt-admin against a host's daemon (its admin socket).
func virtAdmin(t *testing.T, h libvirthost.Host, args ...string) string {
	t.Helper()
	uri := "libvirtd:///system?socket=" + filepath.Join(h.Dir, "run", "libvirt-admin-sock")
	out, err := runTool(h, "virt-admin", append([]string{"-c", uri}, args...)...)
	if err != nil {
		t.Fatalf("virt-admin %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func runTool(_ libvirthost.Host, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// clientIDs lists the ids of the clients connected to a host's daemon (virt-admin client-list).
func clientIDs(t *testing.T, h libvirthost.Host) []string {
	t.Helper()
	var ids []string
	for _, line := range strings.Split(virtAdmin(t, h, "client-list", "libvirtd"), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] != "Id" && !strings.HasPrefix(f[0], "-") {
			ids = append(ids, f[0])
		}
	}
	return ids
}

// dialHost connects to a real host, failing the test if it cannot.
func dialHost(t *testing.T, h libvirthost.Host) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Dial(ctx, h.URI, ConnOptions{Host: h.Name, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("dial %s: %v", h.URI, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// forwardTCP listens on loopback in this network namespace and forwards each connection to
// addr inside the network namespace netns: the hosts' TCP listeners live in their own
// namespaces, and this is how a test reaches one over qemu+tcp. It returns the local address.
func forwardTCP(t *testing.T, netns, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := dialInNetns(netns, addr)
			if err != nil {
				t.Errorf("forward to %s in %s: %v", addr, netns, err)
				in.Close()
				continue
			}
			wg.Go(func() { pipe(in, out) })
		}
	})
	return ln.Addr().String()
}

// dialInNetns dials addr from a thread that entered netns; the thread is discarded afterwards
// (its goroutine exits while locked), and the socket stays in that namespace.
func dialInNetns(netns, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		f, err := os.Open(filepath.Join("/run/netns", netns))
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, fmt.Errorf("setns %s: %w", netns, err)}
			return
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

func pipe(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	a.Close()
	b.Close()
	<-done
}

// signalDaemon sends sig to a host's libvirtd.
func signalDaemon(t *testing.T, h libvirthost.Host, sig syscall.Signal) {
	t.Helper()
	if h.Pid <= 0 {
		t.Fatalf("host %s: no daemon pid", h.Name)
	}
	if err := syscall.Kill(h.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("kill -%d %d: %v", sig, h.Pid, err)
	}
}

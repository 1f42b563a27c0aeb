// Package e2e runs devfleet as real processes: devfleetd nodes on loopback, driven through the
// real devfleet CLI binary. Nothing here is skipped: if a binary cannot be built or a process
// cannot start, the test fails.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// binDir holds devfleetd and devfleet, built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "devfleet-e2e-bin-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	build := exec.Command("go", "build", "-o", dir+"/", "../cmd/devfleetd", "../cmd/devfleet")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the binaries failed:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback address with a port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// node is one devfleetd process.
type node struct {
	id, dataDir, raft, grpc, http string
	flags                         []string // on every start
	cmd                           *exec.Cmd
	log                           *bytes.Buffer
	exited                        chan error
}

func newNode(t *testing.T, id string) *node {
	return &node{id: id, dataDir: t.TempDir(), raft: freePort(t), grpc: freePort(t), http: freePort(t)}
}

// start runs devfleetd with the node's flags plus extra.
func (n *node) start(t *testing.T, extra ...string) {
	t.Helper()
	extra = append(slices.Clone(n.flags), extra...)
	args := append([]string{
		"--node-id", n.id, "--data-dir", n.dataDir,
		"--raft-addr", n.raft, "--grpc-addr", n.grpc, "--http-addr", n.http,
		"--raft-heartbeat-timeout", "300ms", "--raft-election-timeout", "300ms", "--raft-leader-lease-timeout", "150ms",
		"--log-level", "warn",
	}, extra...)
	n.cmd = exec.Command(filepath.Join(binDir, "devfleetd"), args...)
	n.log = &bytes.Buffer{}
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start devfleetd %s: %v", n.id, err)
	}
	n.exited = make(chan error, 1)
	go func() { n.exited <- n.cmd.Wait() }()
	t.Cleanup(func() {
		if n.running() {
			_ = n.cmd.Process.Kill()
			<-n.exited
		}
		if t.Failed() {
			t.Logf("devfleetd %s output:\n%s", n.id, n.log.String())
		}
	})
}

func (n *node) running() bool {
	if n.cmd == nil || n.cmd.ProcessState != nil {
		return false
	}
	select {
	case err := <-n.exited:
		n.exited <- err
		return false
	default:
		return true
	}
}

// kill9 kills the process as a crash would.
func (n *node) kill9(t *testing.T) {
	t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-n.exited
	n.exited <- nil
}

// cli runs the devfleet CLI against addr and returns stdout, stderr and the exit code.
func cli(t *testing.T, addr string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "devfleet"), append([]string{"--addr", addr}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		exitErr, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("devfleet %s: %v", strings.Join(args, " "), err)
		}
		code = exitErr.ExitCode()
	}
	return stdout.String(), stderr.String(), code
}

// mustCLI runs the CLI and fails the test unless it exits 0.
func mustCLI(t *testing.T, addr string, args ...string) string {
	t.Helper()
	out, errOut, code := cli(t, addr, args...)
	if code != 0 {
		t.Fatalf("devfleet %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// cliJSON runs a CLI command with -o json and decodes its output into v.
func cliJSON(t *testing.T, addr string, v any, args ...string) {
	t.Helper()
	out := mustCLI(t, addr, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("devfleet %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// waitFor polls cond until it returns nil or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	if err := poll(timeout, 100*time.Millisecond, cond); err != nil {
		t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
	}
}

// poll calls cond every interval until it returns nil (then nil) or timeout passes (then its
// last error).
func poll(timeout, interval time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(interval)
	}
}

type status struct {
	NodeID      string `json:"node_id"`
	State       string `json:"state"`
	LeaderID    string `json:"leader_id"`
	LeaderReady bool   `json:"leader_ready"`
}

func jsonInto(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// startCluster starts n devfleetd processes (n1 bootstraps, the others join it) with flags on
// every start (restarts too), and returns them once every member is known with its address and
// a leader is ready.
func startCluster(t *testing.T, n int, flags ...string) []*node {
	t.Helper()
	nodes := make([]*node, n)
	for i := range nodes {
		nodes[i] = newNode(t, fmt.Sprintf("n%d", i+1))
		nodes[i].flags = flags
	}
	nodes[0].start(t, "--bootstrap")
	for _, nd := range nodes[1:] {
		nd.start(t, "--join", nodes[0].grpc)
	}
	waitFor(t, 30*time.Second, fmt.Sprintf("%d members", n), func() error {
		var ms []member
		out, errOut, code := cli(t, nodes[n-1].grpc, "cluster", "members", "-o", "json")
		if code != 0 {
			return fmt.Errorf("%s", errOut)
		}
		if err := jsonInto(out, &ms); err != nil {
			return err
		}
		if len(ms) != n {
			return fmt.Errorf("%d members", len(ms))
		}
		for _, m := range ms {
			if m.GrpcAddress == "" {
				return fmt.Errorf("member %s without address", m.NodeID)
			}
		}
		return nil
	})
	leaderOf(t, nodes)
	return nodes
}

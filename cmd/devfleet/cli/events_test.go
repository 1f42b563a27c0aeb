package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/devfleet/devfleet/controlplane/clustertest"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// syncBuffer is a bytes.Buffer written by the CLI and read by the test at the same time.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestEventsWatchFollowsTheCluster: `events watch` pointed at the leader alone learns the other
// members; the leader crashes while regions are created, and the watch, resumed on another
// node, prints every creation once, in order.
func TestEventsWatchFollowsTheCluster(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, 3, clustertest.Options{})
	l := c.WaitLeader()
	leaderAddr := l.Server.GRPCAddr()
	victim, writer := -1, (*clustertest.Node)(nil)
	for i, n := range c.Nodes {
		if n == l {
			victim = i
		} else {
			writer = n
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const total, before = 40, 10
	wctx, stopWatch := context.WithCancel(ctx)
	var stdout, stderr syncBuffer
	code := make(chan int, 1)
	go func() {
		code <- run(wctx, []string{"--addr", leaderAddr, "-o", "json", "events", "watch", "--topic", "region", "--since", "1h"},
			&stdout, &stderr, func(string) string { return "" })
	}()
	defer func() {
		stopWatch()
		<-code
	}()
	lines := func() []string {
		s := strings.TrimSpace(stdout.String())
		if s == "" {
			return nil
		}
		return strings.Split(s, "\n")
	}
	wrote := make(chan error, 1)
	go func() {
		for i := range total {
			name := fmt.Sprintf("r%03d", i)
			for {
				_, err := writer.Fleet().CreateRegion(ctx, &v1.CreateRegionRequest{Region: &v1.Region{Name: name}})
				if err == nil || status.Code(err) == codes.AlreadyExists {
					break
				}
				if ctx.Err() != nil {
					wrote <- fmt.Errorf("create %s: %w", name, err)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		wrote <- nil
	}()
	clustertest.WaitFor(t, 30*time.Second, fmt.Sprintf("%d lines from the leader", before), func() error {
		if n := len(lines()); n < before {
			return fmt.Errorf("%d lines; stderr %q", n, stderr.String())
		}
		return nil
	})
	c.Kill(victim)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	clustertest.WaitFor(t, 40*time.Second, fmt.Sprintf("%d lines", total), func() error {
		if n := len(lines()); n < total {
			return fmt.Errorf("%d lines; stderr %q", n, stderr.String())
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond) // room for a duplicate to show up
	stopWatch()
	if rc := <-code; rc != 0 {
		t.Fatalf("exit %d; stderr %s", rc, stderr.String())
	}
	code <- 0
	got := lines()
	if len(got) != total {
		t.Fatalf("%d events printed, want %d:\n%s", len(got), total, stdout.String())
	}
	for i, line := range got {
		var e struct{ Key string }
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %d: %v: %s", i, err, line)
		}
		if want := fmt.Sprintf("r%03d", i); e.Key != want {
			t.Fatalf("event %d is %s, want %s:\n%s", i, e.Key, want, stdout.String())
		}
	}
	if !strings.Contains(stderr.String(), "lost the watch on "+leaderAddr) {
		t.Fatalf("stderr does not say the watch moved: %q", stderr.String())
	}
}

func TestEventsWatchAddrList(t *testing.T) {
	t.Parallel()
	r := runCLI("--addr", " , ", "events", "watch")
	checkFailure(t, r, exitUsage, "--addr must name at least one node")
}

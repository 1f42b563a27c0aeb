package benchmark

import (
	"context"
	"os"
	"strconv"

	"github.com/devfleet/devfleet/controlplane/raftnode"
	"testing"
	"time"
)

func TestProfileDevfleet64(t *testing.T) {
	if os.Getenv("DEVFLEET_BENCH") == "" {
		t.Skip("set DEVFLEET_BENCH=1")
	}
	inflight, _ := strconv.Atoi(os.Getenv("INFLIGHT"))
	c, err := StartCluster(t.TempDir(), raftnode.Config{MaxInflight: inflight})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Seed(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, err := c.Run(context.Background(), 64, 8*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(r)
}

func TestScaleQuick(t *testing.T) {
	if os.Getenv("DEVFLEET_BENCH") == "" {
		t.Skip("set DEVFLEET_BENCH=1")
	}
	if _, err := RunScale(ScaleOptions{Dir: t.TempDir(), Hosts: 10000, Devservers: 100000}, testOut{t}); err != nil {
		t.Fatal(err)
	}
}

package benchmark

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestRunApplyQuick(t *testing.T) {
	if os.Getenv("DEVFLEET_BENCH") == "" {
		t.Skip("set DEVFLEET_BENCH=1")
	}
	_, err := RunApply(context.Background(), ApplyOptions{Dir: t.TempDir(), Clients: []int{1, 64}, Duration: 5 * time.Second}, testOut{t})
	if err != nil {
		t.Fatal(err)
	}
}

type testOut struct{ t *testing.T }

func (o testOut) Write(p []byte) (int, error) { o.t.Log(string(p)); return len(p), nil }

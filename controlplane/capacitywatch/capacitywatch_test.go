package capacitywatch

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func write(t *testing.T, s *state.Store, idx uint64, f func(w *state.WriteTxn) error) {
	t.Helper()
	w := s.Begin(idx, time.Unix(int64(idx), 0))
	if err := f(w); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

func TestGaugesFollowTheFleetAndClearOnStop(t *testing.T) {
	t.Parallel()
	s := state.New()
	write(t, s, 1, func(w *state.WriteTxn) error {
		if _, err := w.CreateRegion(&v1.Region{Name: "eu"}); err != nil {
			return err
		}
		if _, err := w.CreateSite(&v1.Site{Name: "eu-1", Region: "eu"}); err != nil {
			return err
		}
		if _, err := w.CreateFlavor(&v1.Flavor{Name: "small", Resources: &v1.Resources{Vcpus: 4, MemoryMib: 16384}}); err != nil {
			return err
		}
		_, err := w.CreateHost(&v1.Host{Name: "h1", Site: "eu-1", Capacity: &v1.Resources{Vcpus: 16, MemoryMib: 65536}})
		return err
	})
	reg := prometheus.NewRegistry()
	c := New(s, reg, slog.New(slog.DiscardHandler))
	c.quiet, c.maxDelay = 10*time.Millisecond, 100*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()

	waitGauge := func(want float64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			if got := testutil.ToFloat64(c.headroom.WithLabelValues("eu", "small")); got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("headroom eu/small never became %v", want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitGauge(4)
	write(t, s, 2, func(w *state.WriteTxn) error {
		_, err := w.CreateDevserver(&v1.Devserver{Name: "d1", Id: "x", Owner: "a", Flavor: "small", Region: "eu", Host: "h1", Lifespan: v1.Lifespan_LIFESPAN_PERMANENT})
		return err
	})
	waitGauge(3)
	if got := testutil.ToFloat64(c.lossOK.WithLabelValues("region", "eu")); got != 0 {
		t.Fatalf("losing the only region cannot be ok: %v", got)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		losses, ok := c.Losses() // computed just after the headroom gauges
		if ok && len(losses) > 0 && losses[0].Scope == "region" && losses[0].Name == "eu" && !losses[0].Loss.OK() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Losses() = %v, %v: want region eu's loss, not ok", losses, ok)
		}
	}
	cancel()
	<-done
	if n := testutil.CollectAndCount(c.headroom); n != 0 {
		t.Fatalf("%d headroom series left after losing leadership", n)
	}
	if _, ok := c.Losses(); ok {
		t.Fatal("Losses() still known after losing leadership")
	}
}

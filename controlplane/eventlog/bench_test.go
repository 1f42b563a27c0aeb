package eventlog

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	devfleetv1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// benchBatch is one raft batch: 32 events of about 1 KiB.
func benchBatch(index uint64, at time.Time) []*devfleetv1.Event {
	evs := make([]*devfleetv1.Event, 32)
	for n := range evs {
		evs[n] = event(index, uint32(n), at, "devserver", fmt.Sprintf("ds-%04d", n), 960)
	}
	return evs
}

func openBench(b *testing.B, o Options) (*Log, string) {
	b.Helper()
	path := filepath.Join(b.TempDir(), "events.db")
	o.Logger = slog.New(slog.DiscardHandler)
	l, err := Open(path, o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	return l, path
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, int(float64(len(d))*q))]
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// BenchmarkAppend: one fsync'd transaction per batch of 32 events of ~1 KiB.
func BenchmarkAppend(b *testing.B) {
	l, _ := openBench(b, Options{})
	lat := make([]time.Duration, 0, b.N)
	now := time.Now()
	b.SetBytes(32 * 1024)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if err := l.Append(benchBatch(uint64(i+1), now)); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	b.ReportMetric(float64(32*b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(ms(quantile(lat, 0.5)), "p50-append-ms")
	b.ReportMetric(ms(quantile(lat, 0.99)), "p99-append-ms")
}

// BenchmarkDelivery100Subscribers: the delay from calling Append to each of 100 live
// subscribers receiving the batch's first event (fsync included).
func BenchmarkDelivery100Subscribers(b *testing.B) {
	const subscribers = 100
	l, _ := openBench(b, Options{})
	starts := make([]time.Time, b.N+1) // by index; written before Append publishes it
	delays := make([][]time.Duration, subscribers)
	subs := make([]*Subscription, subscribers)
	var wg sync.WaitGroup
	for i := range subs {
		subs[i] = l.Subscribe(b.Context(), Position{}, Filter{}, 4096)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range subs[i].C() {
				if e.GetN() == 0 {
					delays[i] = append(delays[i], time.Since(starts[e.GetIndex()]))
				}
				if e.GetIndex() == uint64(b.N) && e.GetN() == 31 {
					return
				}
			}
		}()
	}
	now := time.Now()
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		starts[i] = time.Now()
		if err := l.Append(benchBatch(uint64(i), now)); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	b.StopTimer()
	var all []time.Duration
	for i, d := range delays {
		if len(d) != b.N {
			b.Fatalf("subscriber %d got %d batches of %d: %v", i, len(d), b.N, subs[i].Err())
		}
		all = append(all, d...)
	}
	b.ReportMetric(float64(32*b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(ms(quantile(all, 0.5)), "p50-delivery-ms")
	b.ReportMetric(ms(quantile(all, 0.99)), "p99-delivery-ms")
}

// BenchmarkAppendDuringRetention: 64k expired events (~66 MB) are deleted in the background
// while Append goes on; the figures are Append's latency meanwhile and how long the backlog
// took. One op is the whole scenario.
func BenchmarkAppendDuringRetention(b *testing.B) {
	var lat []time.Duration
	var took time.Duration
	for range b.N {
		l, d := retentionScenario(b)
		lat, took = append(lat, l...), took+d
	}
	b.ReportMetric(ms(took)/float64(b.N), "backlog-ms")
	b.ReportMetric(float64(len(lat))/float64(b.N), "appends")
	b.ReportMetric(ms(quantile(lat, 0.5)), "p50-append-ms")
	b.ReportMetric(ms(quantile(lat, 0.99)), "p99-append-ms")
	b.ReportMetric(ms(quantile(lat, 1)), "max-append-ms")
}

func retentionScenario(b *testing.B) (lat []time.Duration, took time.Duration) {
	const backlog = 2000 // batches of 32
	clk := newClock()
	path := filepath.Join(b.TempDir(), "events.db")
	fill, err := Open(path, Options{Now: clk.Now, MaxAge: time.Hour, noSync: true})
	if err != nil {
		b.Fatal(err)
	}
	for i := uint64(1); i <= backlog; i++ {
		if err := fill.Append(benchBatch(i, clk.Now())); err != nil {
			b.Fatal(err)
		}
	}
	fill.Close()
	clk.Add(2 * time.Hour) // all of it expired
	l, err := Open(path, Options{Now: clk.Now, MaxAge: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	for i := uint64(backlog + 1); ; i++ {
		t := time.Now()
		if err := l.Append(benchBatch(i, clk.Now())); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
		if o, _ := l.Oldest(); o > backlog {
			return lat, time.Since(start)
		}
	}
}

package eventlog

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

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
			for d := range subs[i].C() {
				e := d.Event
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

// BenchmarkAppendManyKeys: as BenchmarkAppend (fsync'd batches of 32 events of ~1 KiB), but
// into a log that already holds 320k events of 10,000 devservers, each batch's events for
// random ones of them: the key index takes a random insert per event.
func BenchmarkAppendManyKeys(b *testing.B) {
	const devservers, prefill = 10_000, 10_000 // batches of 32
	rng := rand.New(rand.NewPCG(1, 2))
	batchOf := func(index uint64, at time.Time) []*devfleetv1.Event {
		evs := make([]*devfleetv1.Event, 32)
		for n := range evs {
			evs[n] = event(index, uint32(n), at, "devserver", fmt.Sprintf("ds-%05d", rng.IntN(devservers)), 960)
		}
		return evs
	}
	path := filepath.Join(b.TempDir(), "events.db")
	fill, err := Open(path, Options{noSync: true})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	for i := uint64(1); i <= prefill; i++ {
		if err := fill.Append(batchOf(i, now)); err != nil {
			b.Fatal(err)
		}
	}
	if err := fill.Close(); err != nil {
		b.Fatal(err)
	}
	l, err := Open(path, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	batches := make([][]*devfleetv1.Event, b.N)
	for i := range batches {
		batches[i] = batchOf(uint64(prefill+1+i), now)
	}
	lat := make([]time.Duration, 0, b.N)
	b.SetBytes(32 * 1024)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if err := l.Append(batches[i]); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	b.ReportMetric(float64(32*b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(ms(quantile(lat, 0.5)), "p50-append-ms")
	b.ReportMetric(ms(quantile(lat, 0.99)), "p99-append-ms")
}

// history7Days is the history of BenchmarkAtAndKeyEvents7Days10kDevservers: ~20 events a day
// for each of 10,000 devservers over 7 days (1.4M events of ~600 bytes, in batches of 32 at
// evenly spaced stamps), appended without fsync at an injected clock.
type history7Days struct {
	path        string
	clk         *clock
	start, end  time.Time
	last, day   uint64 // the newest batch (index), the batches of one day
	devservers  int
	fill, index time.Duration // appending it all, rebuilding the key index at Open
	fileMB      float64
}

func fillHistory7Days(b *testing.B) *history7Days {
	const (
		devservers = 10_000
		perDay     = 20
		days       = 7
		batches    = devservers * perDay * days / 32
	)
	h := &history7Days{path: filepath.Join(b.TempDir(), "events.db"), clk: newClock(), devservers: devservers}
	h.start = h.clk.Now()
	step := days * 24 * time.Hour / batches
	l, err := Open(h.path, Options{MaxAge: 8 * 24 * time.Hour, MaxBytes: 4 << 30, Now: h.clk.Now, noSync: true})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	start := time.Now()
	for i := uint64(1); i <= batches; i++ {
		evs := make([]*devfleetv1.Event, 32)
		for n := range evs {
			evs[n] = event(i, uint32(n), h.clk.Now(), "devserver", fmt.Sprintf("ds-%05d", rng.IntN(devservers)), 520)
		}
		if err := l.Append(evs); err != nil {
			b.Fatal(err)
		}
		h.clk.Add(step)
	}
	h.fill, h.last, h.day, h.end = time.Since(start), batches, batches/days, h.clk.Now()
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	if fi, err := os.Stat(h.path); err == nil {
		h.fileMB = float64(fi.Size()) / 1e6
	}
	b.Logf("filled 7 days of history: %d events in %v (%.0f events/s), file %.0f MB", 32*batches, h.fill.Round(time.Millisecond), float64(32*batches)/h.fill.Seconds(), h.fileMB)
	return h
}

// appendRandomKeys appends fsync'd batches of 32 events for random devservers at the clock's
// time, until done says so, and returns their latencies.
func appendRandomKeys(b *testing.B, l *Log, h *history7Days, rng *rand.Rand, done func(i int) bool) []time.Duration {
	var lat []time.Duration
	for i := 0; !done(i); i++ {
		h.last++
		evs := make([]*devfleetv1.Event, 32)
		for n := range evs {
			evs[n] = event(h.last, uint32(n), h.clk.Now(), "devserver", fmt.Sprintf("ds-%05d", rng.IntN(h.devservers)), 520)
		}
		start := time.Now()
		if err := l.Append(evs); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	return lat
}

// appendAndRetain1Day: the clock moves on so that the first day's 200k events expire (MaxAge is
// 8 days), and fsync'd Appends go on while retention deletes them in the background.
func appendAndRetain1Day(b *testing.B, l *Log, h *history7Days, rng *rand.Rand) {
	h.clk.Add(48 * time.Hour)
	bound := h.day
	start := time.Now()
	lat := appendRandomKeys(b, l, h, rng, func(int) bool { o, _ := l.Oldest(); return o > bound })
	took := time.Since(start)
	b.ReportMetric(took.Seconds(), "backlog-s")
	b.ReportMetric(float64(len(lat)), "appends")
	b.ReportMetric(ms(quantile(lat, 0.5)), "p50-append-ms")
	b.ReportMetric(ms(quantile(lat, 0.99)), "p99-append-ms")
	b.ReportMetric(ms(quantile(lat, 1)), "max-append-ms")
}

// BenchmarkAtAndKeyEvents7Days10kDevservers: point-in-time reads over 7 days of history of
// 10,000 devservers (see history7Days; the file is built once, then its key index is dropped
// and rebuilt by Open as for a file of the old format). One op of At or KeyEvents is 2,000
// queries for random devservers at random times; the figures are per query. The page cache is
// warm: the file was just written.
func BenchmarkAtAndKeyEvents7Days10kDevservers(b *testing.B) {
	h := fillHistory7Days(b)
	// Drop the key index, as in a file written before it, and time Open's rebuild.
	db, err := bbolt.Open(h.path, 0o600, &bbolt.Options{FreelistType: bbolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		b.Fatal(err)
	}
	var indexMB float64
	err = db.Update(func(tx *bbolt.Tx) error {
		s := tx.Bucket(bucketKeys).Stats()
		indexMB = float64(s.BranchAlloc+s.LeafAlloc) / 1e6
		if err := tx.DeleteBucket(bucketKeys); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Delete(keyMarker)
	})
	if err := errors.Join(err, db.Close()); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	l, err := Open(h.path, Options{MaxAge: 8 * 24 * time.Hour, MaxBytes: 4 << 30, Now: h.clk.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	h.index = time.Since(start)
	defer l.Close()
	b.Logf("key index %.0f MB as appended; rebuilt by Open in %v", indexMB, h.index.Round(time.Millisecond))
	rng := rand.New(rand.NewPCG(8, 8))
	randomTime := func(from, to time.Time) time.Time {
		return from.Add(time.Duration(rng.Int64N(int64(to.Sub(from)))))
	}
	devserver := func() string { return fmt.Sprintf("ds-%05d", rng.IntN(h.devservers)) }
	const queries = 2000

	b.Run("At", func(b *testing.B) {
		var lat []time.Duration
		found := 0
		for range b.N {
			for range queries {
				key, t := devserver(), randomTime(h.start, h.end)
				start := time.Now()
				p, err := l.AtTime(t)
				if err != nil {
					b.Fatal(err)
				}
				e, err := l.At("devserver", key, p)
				if err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
				if e != nil {
					found++
					if e.GetKey() != key || e.GetTime().AsTime().After(t) {
						b.Fatalf("At(%s, AtTime(%v)) = %v", key, t, e)
					}
				}
			}
		}
		b.ReportMetric(h.fill.Seconds(), "fill-s")
		b.ReportMetric(h.index.Seconds(), "index-rebuild-s")
		b.ReportMetric(h.fileMB, "file-MB")
		b.ReportMetric(indexMB, "index-MB")
		b.ReportMetric(float64(found)/float64(len(lat)), "found/query")
		b.ReportMetric(ms(quantile(lat, 0.5)), "p50-ms")
		b.ReportMetric(ms(quantile(lat, 0.99)), "p99-ms")
		b.ReportMetric(ms(quantile(lat, 1)), "max-ms")
	})
	b.Run("KeyEvents1Day", func(b *testing.B) {
		var lat []time.Duration
		events := 0
		for range b.N {
			for range queries {
				key, t := devserver(), randomTime(h.start, h.end.Add(-24*time.Hour))
				start := time.Now()
				from, err := l.FromTime(t)
				if err != nil {
					b.Fatal(err)
				}
				to, err := l.AtTime(t.Add(24 * time.Hour))
				if err != nil {
					b.Fatal(err)
				}
				evs, err := l.KeyEvents("devserver", key, from, to, 1000)
				if err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
				events += len(evs)
			}
		}
		b.ReportMetric(float64(events)/float64(len(lat)), "events/query")
		b.ReportMetric(ms(quantile(lat, 0.5)), "p50-ms")
		b.ReportMetric(ms(quantile(lat, 0.99)), "p99-ms")
		b.ReportMetric(ms(quantile(lat, 1)), "max-ms")
	})
	// Append into the full log (fsync'd), then while retention deletes a day of it.
	b.Run("Append", func(b *testing.B) {
		var lat []time.Duration
		for range b.N {
			lat = append(lat, appendRandomKeys(b, l, h, rng, func(i int) bool { return i == 500 })...)
		}
		var sum time.Duration
		for _, d := range lat {
			sum += d
		}
		b.ReportMetric(float64(32*len(lat))/sum.Seconds(), "events/s")
		b.ReportMetric(ms(quantile(lat, 0.5)), "p50-append-ms")
		b.ReportMetric(ms(quantile(lat, 0.99)), "p99-append-ms")
	})
	b.Run("AppendDuringRetention1Day", func(b *testing.B) {
		for range b.N {
			appendAndRetain1Day(b, l, h, rng)
		}
	})
}

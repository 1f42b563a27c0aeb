// Package benchmark measures devfleet's write path and state size on this machine: the
// figures `devfleet bench apply` and `devfleet bench scale` print, and docs/benchmarks.md records.
package benchmark

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Latencies collects per-write latencies from many goroutines.
type Latencies struct {
	mu  sync.Mutex
	all []time.Duration
}

// Add records one latency.
func (l *Latencies) Add(d time.Duration) {
	l.mu.Lock()
	l.all = append(l.all, d)
	l.mu.Unlock()
}

// Result is one measured run.
type Result struct {
	Name     string        `json:"name"`
	Clients  int           `json:"clients"`
	Writes   int           `json:"writes"`
	Errors   int           `json:"errors"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	PerSec   float64       `json:"writes_per_sec"`
	P50      time.Duration `json:"p50_ns"`
	P99      time.Duration `json:"p99_ns"`
	P999     time.Duration `json:"p999_ns"`
	AvgBatch float64       `json:"avg_batch,omitempty"`
}

// Summarize turns latencies gathered over elapsed into a Result.
func (l *Latencies) Summarize(name string, clients, errors int, elapsed time.Duration) Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	slices.Sort(l.all)
	q := func(p float64) time.Duration {
		if len(l.all) == 0 {
			return 0
		}
		return l.all[min(len(l.all)-1, int(p*float64(len(l.all))))]
	}
	return Result{
		Name: name, Clients: clients, Writes: len(l.all), Errors: errors, Elapsed: elapsed,
		PerSec: float64(len(l.all)) / elapsed.Seconds(),
		P50:    q(0.50), P99: q(0.99), P999: q(0.999),
	}
}

// String is the result as a table row.
func (r Result) String() string {
	batch := ""
	if r.AvgBatch > 0 {
		batch = fmt.Sprintf("  batch %6.1f", r.AvgBatch)
	}
	return fmt.Sprintf("%-10s clients %4d  %9.0f writes/s  p50 %7.2f ms  p99 %7.2f ms  p99.9 %7.2f ms  errors %d%s",
		r.Name, r.Clients, r.PerSec, ms(r.P50), ms(r.P99), ms(r.P999), r.Errors, batch)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// FsyncRate measures 4 KiB write+fsync operations per second in dir for the given time: the
// disk's commit ceiling, so that figures compare across machines.
func FsyncRate(dir string, d time.Duration) (float64, error) {
	f, err := os.CreateTemp(dir, "fsync-probe-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		if _, err := f.WriteAt(buf, int64(n%256)*4096); err != nil {
			return 0, err
		}
		if err := f.Sync(); err != nil {
			return 0, err
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func mkdir(base, name string) (string, error) {
	dir := filepath.Join(base, name)
	return dir, os.MkdirAll(dir, 0o750)
}

func rawLog(index uint64, data []byte) *raft.Log {
	return &raft.Log{Index: index, Type: raft.LogCommand, Data: data}
}

// closedLoop runs clients goroutines for d, each calling write(client, seq) again as soon as the
// previous call returns, and measures every successful call.
func closedLoop(ctx context.Context, name string, clients int, d time.Duration, write func(ctx context.Context, client, seq int) error) Result {
	var lat Latencies
	var errs atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				t := time.Now()
				// A call started before the end runs to completion: it is measured, not cut.
				if err := write(context.WithoutCancel(ctx), c, i); err != nil {
					errs.Add(1)
					continue
				}
				lat.Add(time.Since(t))
			}
		}()
	}
	wg.Wait()
	return lat.Summarize(name, clients, int(errs.Load()), time.Since(start))
}

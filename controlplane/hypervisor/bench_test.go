package hypervisor

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func BenchmarkMemoryDefineAndStart(b *testing.B) {
	ctx := context.Background()
	m := NewMemory(MemoryOptions{Host: "h1", CPUs: 1 << 40, MemoryMiB: 1 << 50})
	var n atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			name := fmt.Sprint("d", n.Add(1))
			if _, err := m.DefineAndStart(ctx, devserverSpec(name, 1, 128, 0)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkMemoryLookup(b *testing.B) {
	ctx := context.Background()
	m := NewMemory(MemoryOptions{Host: "h1"})
	if _, err := m.DefineAndStart(ctx, devserverSpec("d1", 1, 128, 0)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Lookup(ctx, "d1"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkConnectorFakeHosts opens a fleet of in-memory hosts through one Connector (connection
// loop, periodic ping and health reporting per host, as for real hosts), then measures calls
// spread over the fleet. It reports the time until every host is reachable, and the heap, stack
// and goroutines per host.
func BenchmarkConnectorFakeHosts(b *testing.B) {
	for _, hosts := range []int{1000, 10000} {
		b.Run(fmt.Sprint(hosts), func(b *testing.B) { benchConnector(b, hosts) })
	}
}

func benchConnector(b *testing.B, hosts int) {
	ctx := context.Background()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()

	var reachable sync.WaitGroup
	reachable.Add(hosts)
	var reported sync.Map
	c := NewConnector(Options{
		AllowFake: true,
		Logger:    slog.New(slog.DiscardHandler),
		OnHealth: func(h Health) {
			if _, dup := reported.LoadOrStore(h.Host, true); !dup && h.Reachable {
				reachable.Done()
			}
		},
	})
	defer c.Close()
	begin := time.Now()
	hvs := make([]Hypervisor, hosts)
	for i := range hvs {
		hv, err := c.Open(fmt.Sprint("h", i), fmt.Sprintf("fake://h%d?cpus=64&memory_mib=262144", i))
		if err != nil {
			b.Fatal(err)
		}
		hvs[i] = hv
	}
	reachable.Wait()
	up := time.Since(begin)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	for i, hv := range hvs {
		if _, err := hv.DefineAndStart(ctx, devserverSpec(fmt.Sprint("d", i), 1, 128, 0)); err != nil {
			b.Fatal(err)
		}
	}

	var n atomic.Int64
	b.ResetTimer()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(n.Add(1)) % hosts
			if _, err := hvs[i].Lookup(ctx, fmt.Sprint("d", i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(up.Milliseconds()), "ms-all-reachable")
	b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/float64(hosts), "heap-B/host")
	b.ReportMetric(float64(after.StackInuse-before.StackInuse)/float64(hosts), "stack-B/host")
	b.ReportMetric(float64(runtime.NumGoroutine()-goroutines)/float64(hosts), "goroutines/host")
}

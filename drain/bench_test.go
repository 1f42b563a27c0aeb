package drain_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/benchmark"
	"github.com/devfleet/devfleet/drain"
)

// benchFleet is `devfleet bench drain`'s fleet, built once: a region of 1,000 hosts and 50,000
// devservers, and four more regions to take them cold.
var benchFleet = sync.OnceValues(func() (*capacity.Fleet, error) {
	f, err := benchmark.BuildDrainFleet(benchmark.DrainOptions{Hosts: 1000, Devservers: 50000})
	if err != nil {
		return nil, err
	}
	return capacity.Load(f.Store().View()), nil
})

// BenchmarkMakePlan plans the drain of one site (12,500 devservers, live) and of the whole
// region (50,000, cold); the issue's target is 1 s for the region.
func BenchmarkMakePlan(b *testing.B) {
	f, err := benchFleet()
	if err != nil {
		b.Fatal(err)
	}
	for _, scope := range []string{"site", "region"} {
		var hosts []string
		for _, h := range f.Hosts("region0") {
			if scope == "region" || h.GetSite() == "r0s0" {
				hosts = append(hosts, h.GetName())
			}
		}
		b.Run(scope, func(b *testing.B) {
			var p drain.Plan
			for b.Loop() {
				p = drain.MakePlan(f, hosts, drain.Budgets{})
			}
			b.ReportMetric(float64(p.Moving()), "moves")
			b.ReportMetric(float64(p.LowerBound)/float64(p.Makespan), "efficiency")
		})
	}
}

// BenchmarkSchedule schedules 50,000 moves between 1,000 sources and 3,000 destinations.
func BenchmarkSchedule(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	items := make([]drain.Item, 50000)
	for i := range items {
		items[i] = drain.Item{Kind: drain.Move, Source: fmt.Sprintf("h%d", i%1000), SourceSite: fmt.Sprintf("s%d", i%4),
			Dest: fmt.Sprintf("g%d", rng.IntN(3000)), DestSite: fmt.Sprintf("t%d", rng.IntN(12)), Expected: time.Duration(4+rng.IntN(125)) * time.Second}
	}
	for _, total := range []int{5, 100} {
		b.Run(fmt.Sprintf("total=%d", total), func(b *testing.B) {
			for b.Loop() {
				drain.Schedule(items, drain.Budgets{Total: total, PerSite: total})
			}
		})
	}
}

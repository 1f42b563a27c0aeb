package drain

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// randomItems: n moves between a few hosts and sites (sometimes within one site), of random
// durations (a few of zero), with a blocked item here and there that must be left alone.
func randomItems(rng *rand.Rand, n int) []Item {
	sites := 1 + rng.IntN(4)
	hosts := 1 + rng.IntN(8)
	var items []Item
	for i := range n {
		src, dst := rng.IntN(hosts), rng.IntN(hosts)
		it := Item{
			Devserver: fmt.Sprintf("d%d", i), Kind: Move,
			Source: fmt.Sprintf("h%d", src), SourceSite: fmt.Sprintf("s%d", src%sites),
			Dest: fmt.Sprintf("g%d", dst), DestSite: fmt.Sprintf("s%d", (dst+rng.IntN(2))%sites),
			Expected: time.Duration(rng.IntN(20)) * time.Second,
		}
		switch rng.IntN(10) {
		case 0:
			it.Kind = ColdMove
		case 1:
			it.Kind, it.Dest, it.DestSite, it.Blocker = Stranded, "", "", "no room"
		}
		items = append(items, it)
	}
	return items
}

func randomBudgets(rng *rand.Rand) Budgets {
	return Budgets{PerSource: rng.IntN(4), PerDest: rng.IntN(4), PerSite: rng.IntN(6), Total: rng.IntN(8)}
}

// referenceSchedule is list scheduling written plainly: at each instant, walk every pending move
// in order and start those that fit, then go to the next end. Quadratic, and obviously right.
func referenceSchedule(items []Item, b Budgets) []time.Duration {
	b = b.WithDefaults()
	starts := make([]time.Duration, len(items))
	var pending, running []int
	for i := range items {
		if items[i].Kind.Moves() {
			pending = append(pending, i)
		}
	}
	fits := func(i int) bool {
		src, dst, total := 0, 0, len(running)
		site := map[string]int{}
		for _, j := range running {
			if items[j].Source == items[i].Source {
				src++
			}
			if items[j].Dest == items[i].Dest {
				dst++
			}
			site[items[j].SourceSite]++
			if items[j].DestSite != items[j].SourceSite {
				site[items[j].DestSite]++
			}
		}
		return src < b.PerSource && dst < b.PerDest && total < b.Total &&
			site[items[i].SourceSite] < b.PerSite && site[items[i].DestSite] < b.PerSite
	}
	var now time.Duration
	for {
		var left []int
		for _, i := range pending {
			if fits(i) {
				starts[i] = now
				running = append(running, i)
			} else {
				left = append(left, i)
			}
		}
		pending = left
		if len(running) == 0 {
			break
		}
		now = starts[running[0]] + items[running[0]].Expected
		for _, j := range running {
			now = min(now, starts[j]+items[j].Expected)
		}
		running = slices.DeleteFunc(running, func(j int) bool { return starts[j]+items[j].Expected == now })
	}
	return starts
}

// overlapping counts, at each move's start, the moves running then per source, destination,
// site and in all, straight from the intervals: the budgets must hold at every start (the only
// instants where a count grows).
func overBudget(items []Item, b Budgets) string {
	b = b.WithDefaults()
	for i := range items {
		at := items[i].Start
		if !items[i].Kind.Moves() || items[i].Expected == 0 {
			continue
		}
		src, dst, total := map[string]int{}, map[string]int{}, 0
		site := map[string]int{}
		for j := range items {
			it := &items[j]
			if !it.Kind.Moves() || it.Expected == 0 || it.Start > at || it.End() <= at {
				continue
			}
			total++
			src[it.Source]++
			dst[it.Dest]++
			site[it.SourceSite]++
			if it.DestSite != it.SourceSite {
				site[it.DestSite]++
			}
		}
		switch {
		case total > b.Total:
			return fmt.Sprintf("%d moves at %s", total, at)
		case slices.Max(mapValues(src)) > b.PerSource:
			return fmt.Sprintf("per source %v at %s", src, at)
		case slices.Max(mapValues(dst)) > b.PerDest:
			return fmt.Sprintf("per dest %v at %s", dst, at)
		case slices.Max(mapValues(site)) > b.PerSite:
			return fmt.Sprintf("per site %v at %s", site, at)
		}
	}
	return ""
}

func mapValues(m map[string]int) []int {
	out := []int{0}
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// TestScheduleKeepsBudgets: for random moves and budgets, the schedule is exactly the plain
// list schedule, no budget is ever exceeded (checked from the intervals, twice), waves number
// the distinct start instants in time order, and blocked items are left alone.
func TestScheduleKeepsBudgets(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(42, 1))
	for trial := range 2000 {
		items := randomItems(rng, 1+rng.IntN(60))
		b := randomBudgets(rng)
		makespan := Schedule(items, b)
		want := referenceSchedule(items, b)
		var end time.Duration
		for i, it := range items {
			if !it.Kind.Moves() {
				if it.Start != 0 || it.Wave != 0 {
					t.Fatalf("trial %d: a blocked item was scheduled: %+v", trial, it)
				}
				continue
			}
			if it.Start != want[i] {
				t.Fatalf("trial %d, budgets %+v: item %d starts at %s, the plain list schedule at %s", trial, b, i, it.Start, want[i])
			}
			end = max(end, it.End())
		}
		if makespan != end {
			t.Fatalf("trial %d: makespan %s, last end %s", trial, makespan, end)
		}
		if why := overBudget(items, b); why != "" {
			t.Fatalf("trial %d, budgets %+v: over budget: %s", trial, b.WithDefaults(), why)
		}
		if p := Peaks(items); !p.Within(b) {
			t.Fatalf("trial %d: peaks %+v over %+v", trial, p, b.WithDefaults())
		}
		checkWaves(t, items)
		if makespan < Bound(items, b) || Bound(items, b) < lowerBound(items, b) {
			t.Fatalf("trial %d: makespan %s, bound %s, lower bound %s", trial, makespan, Bound(items, b), lowerBound(items, b))
		}
	}
}

// checkWaves: moves that start together share a wave, and waves count up with time from 0.
func checkWaves(t *testing.T, items []Item) {
	t.Helper()
	var moving []Item
	for _, it := range items {
		if it.Kind.Moves() {
			moving = append(moving, it)
		}
	}
	slices.SortStableFunc(moving, func(a, b Item) int { return int(a.Start - b.Start) })
	for i, it := range moving {
		want := 0
		if i > 0 {
			want = moving[i-1].Wave
			if it.Start != moving[i-1].Start {
				want++
			}
		}
		if it.Wave != want {
			t.Fatalf("%s starts at %s in wave %d, want %d", it.Devserver, it.Start, it.Wave, want)
		}
	}
}

// TestScheduleDefaults: zero budgets are the defaults; a move lasts its bytes at the bandwidth.
func TestScheduleDefaults(t *testing.T) {
	t.Parallel()
	if got, want := (Budgets{}).WithDefaults(), (Budgets{2, 2, 4, 5, 1024}); got != want {
		t.Fatalf("defaults %+v, want %+v", got, want)
	}
	if got := (Budgets{PerSource: -1, Total: 9}).WithDefaults(); got.PerSource != 2 || got.Total != 9 {
		t.Fatalf("%+v", got)
	}
	for _, tc := range []struct {
		b     Budgets
		bytes uint64
		want  time.Duration
	}{
		{Budgets{}, 1 << 30, time.Second},
		{Budgets{BandwidthMiBps: 256}, 1 << 30, 4 * time.Second},
		{Budgets{}, 1, time.Nanosecond}, // rounded up: a move is never free
		{Budgets{}, 0, 0},
		{Budgets{BandwidthMiBps: 1}, 1 << 50, 1 << 30 * time.Second},
	} {
		if got := tc.b.Duration(tc.bytes); got != tc.want {
			t.Fatalf("%+v: %d bytes take %s, want %s", tc.b, tc.bytes, got, tc.want)
		}
	}
	// Ten equal moves from one host to ten: two at a time (the per-source default).
	var items []Item
	for i := range 10 {
		items = append(items, Item{Kind: Move, Source: "a", SourceSite: "s", Dest: fmt.Sprintf("b%d", i), DestSite: "t", Expected: time.Second})
	}
	if got := Schedule(items, Budgets{}); got != 5*time.Second {
		t.Fatalf("makespan %s, want 5s", got)
	}
	if p := Peaks(items); p != (Budgets{PerSource: 2, PerDest: 1, PerSite: 2, Total: 2}) {
		t.Fatalf("peaks %+v", p)
	}
}

// TestOrderMostWorkLeftFirst: moves are ordered by the work their busier host has left from
// them on (over what the host runs at once), so the hosts with the most work start first and
// every host ends on its smallest moves.
func TestOrderMostWorkLeftFirst(t *testing.T) {
	t.Parallel()
	var items []Item
	add := func(host, dest string, secs ...int) {
		for _, s := range secs {
			name := fmt.Sprintf("%s-%02d", host, len(items))
			items = append(items, Item{Devserver: name, Kind: Move, Source: host, Dest: cmp.Or(dest, "to-"+name), Expected: time.Duration(s) * time.Second})
		}
	}
	// Sources, two at a time: a has 100 s of work left from its first move, then 68, 36 and 4;
	// b 24 and 8; c 2.
	add("a", "", 64, 64, 64, 8)
	add("b", "", 32, 16)
	add("c", "", 4)
	// d receives e's moves and f's, 80 s of work two at a time: e's have 40-25 s left at d, f's
	// 20-5 s, more than at their sources (20-5 s).
	add("e", "d", 10, 10, 10, 10)
	add("f", "d", 10, 10, 10, 10)
	order(items, Budgets{}.WithDefaults())
	var got []string
	for _, it := range items {
		got = append(got, it.Devserver)
	}
	want := []string{"a-00", "a-01", "e-07", "a-02", "e-08", "e-09", "e-10", "b-04", "f-11", "f-12", "f-13", "b-05", "f-14", "a-03", "c-06"}
	if !slices.Equal(got, want) {
		t.Fatalf("order\n got %v\nwant %v", got, want)
	}
}

// TestScheduleIsFast: 50,000 moves schedule in well under a second (queues and an event heap,
// not a scan of everything pending at each end), in the two worst cases for a scan: every move
// leaves one site whose budget is below Total, and every move goes to one of ten destinations
// under a large total budget, so almost everything pending is blocked at each instant.
func TestScheduleIsFast(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 7))
	for _, tc := range []struct {
		name  string
		b     Budgets
		item  func(i int) Item
		peaks func(p Budgets) bool
	}{
		{"one source site", Budgets{}, func(i int) Item {
			return Item{Source: fmt.Sprintf("h%d", i%250), SourceSite: "s0", Dest: fmt.Sprintf("g%d", rng.IntN(750)), DestSite: fmt.Sprintf("s%d", 1+rng.IntN(3))}
		}, func(p Budgets) bool { return p.PerSite == DefaultPerSite && p.Total == DefaultPerSite }},
		{"ten destinations", Budgets{Total: 500, PerSite: 500}, func(i int) Item {
			return Item{Source: fmt.Sprintf("h%d", i%1000), SourceSite: fmt.Sprintf("s%d", i%4), Dest: fmt.Sprintf("g%d", rng.IntN(10)), DestSite: "t"}
		}, func(p Budgets) bool { return p.PerDest == DefaultPerDest && p.Total == 10*DefaultPerDest }},
	} {
		items := make([]Item, 50000)
		for i := range items {
			items[i] = tc.item(i)
			items[i].Kind, items[i].Expected = Move, time.Duration(1+rng.IntN(128))*time.Second
		}
		start := time.Now()
		Schedule(items, tc.b)
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("%s: 50,000 moves took %s", tc.name, d)
		}
		if p := Peaks(items); !p.Within(tc.b) || !tc.peaks(p) {
			t.Fatalf("%s: peaks %+v", tc.name, p)
		}
	}
}

package drain

import (
	"cmp"
	"slices"
	"time"
)

// Peaks returns the most moves observed running at once, in Budgets' terms: per source host,
// per destination host, per site (either end; once for a move within one site) and in all. It
// reads only the planned intervals [Start, Start+Expected) of the moving items, not how they
// were scheduled, so comparing it with the budgets checks a schedule independently. A move of
// zero duration occupies no time and is left out; BandwidthMiBps is zero.
func Peaks(items []Item) Budgets {
	type edge struct {
		at    time.Duration
		delta int // -1 ends before +1 starts at the same instant: intervals are half-open
		item  int
	}
	var edges []edge
	for i := range items {
		if it := &items[i]; it.Kind.Moves() && it.Expected > 0 {
			edges = append(edges, edge{it.Start, +1, i}, edge{it.End(), -1, i})
		}
	}
	slices.SortFunc(edges, func(a, b edge) int {
		return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.delta, b.delta), cmp.Compare(a.item, b.item))
	})
	src, dst, site := map[string]int{}, map[string]int{}, map[string]int{}
	var peak Budgets
	total := 0
	for _, e := range edges {
		it := &items[e.item]
		src[it.Source] += e.delta
		dst[it.Dest] += e.delta
		site[it.SourceSite] += e.delta
		if it.DestSite != it.SourceSite {
			site[it.DestSite] += e.delta
		}
		total += e.delta
		peak.PerSource = max(peak.PerSource, src[it.Source])
		peak.PerDest = max(peak.PerDest, dst[it.Dest])
		peak.PerSite = max(peak.PerSite, site[it.SourceSite], site[it.DestSite])
		peak.Total = max(peak.Total, total)
	}
	return peak
}

// Within reports whether peaks p stay within budgets b (zero fields of b: the defaults).
func (p Budgets) Within(b Budgets) bool {
	b = b.WithDefaults()
	return p.PerSource <= b.PerSource && p.PerDest <= b.PerDest && p.PerSite <= b.PerSite && p.Total <= b.Total
}

// Bound is the tightest lower bound on the makespan that the budgets give for these moves and
// their destinations: the moves of one source host share PerSource slots, so no schedule ends
// before that host's summed durations over PerSource; likewise per destination host, per site
// (PerSite) and in all (Total: Plan.LowerBound), and never before the longest single move. When
// it is above Plan.LowerBound, the budgets themselves (a host with many large devservers, a
// site's budget below Total) keep any schedule from reaching the plain bound.
func Bound(items []Item, b Budgets) time.Duration {
	b = b.WithDefaults()
	src, dst, site := map[string]time.Duration{}, map[string]time.Duration{}, map[string]time.Duration{}
	var total, longest time.Duration
	for i := range items {
		it := &items[i]
		if !it.Kind.Moves() {
			continue
		}
		src[it.Source] += it.Expected
		dst[it.Dest] += it.Expected
		site[it.SourceSite] += it.Expected
		if it.DestSite != it.SourceSite {
			site[it.DestSite] += it.Expected
		}
		total += it.Expected
		longest = max(longest, it.Expected)
	}
	bound := max(longest, ceilDiv(total, b.Total))
	for _, sum := range src {
		bound = max(bound, ceilDiv(sum, b.PerSource))
	}
	for _, sum := range dst {
		bound = max(bound, ceilDiv(sum, b.PerDest))
	}
	for _, sum := range site {
		bound = max(bound, ceilDiv(sum, b.PerSite))
	}
	return bound
}

// lowerBound is every move's duration over Total slots: the total bytes moved over Total moves
// at the bandwidth each (from the rounded durations, which is what a schedule adds up).
func lowerBound(items []Item, b Budgets) time.Duration {
	var total time.Duration
	for i := range items {
		if items[i].Kind.Moves() {
			total += items[i].Expected
		}
	}
	return ceilDiv(total, b.WithDefaults().Total)
}

func ceilDiv(d time.Duration, n int) time.Duration {
	return (d + time.Duration(n) - 1) / time.Duration(n)
}

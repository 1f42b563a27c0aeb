package drain

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// order sorts the moving items (their Expected set) into execution order, most work left
// first: an item's key is the work its source host has left from it on (its moves largest
// first, their durations from this one to the last, over PerSource) or its destination host
// has (over PerDest), whichever is more; the longer move goes first on a tie. The queue then
// always feeds the hosts with the most work before them, so all hosts finish together near the
// end, on their smallest moves, in parallel.
//
// Why not Lose's order (largest first over the whole drain): binpacking sends consecutive
// devservers of one flavor to the same destination until it is full, so the largest moves
// would queue on a few destinations while the hosts that receive many small devservers wait
// for the end, where their per-destination budget serializes them. Round-robin over source
// hosts (largest first within a host) spreads the sources but not the destinations, and a
// spread in proportion to each host's work (every host's moves evenly over the time it needs)
// leaves the heaviest hosts alone at the end. Measured with `devfleet bench drain --total 500
// --per-site 500` (region drain, 49,067 cold moves), lower bound/makespan: largest first 0.74,
// round-robin over sources 0.75, that spread 0.85, most work left 0.96. With the default
// budgets every order reaches the bound: the total budget (5) is what limits.
//
// Sites are left out of the key: they are few and each has far more moves than its budget, so
// the schedule (which skips a move whose site is full for the next that fits) keeps them busy
// in any order.
func order(items []Item, b Budgets) {
	type keyed struct {
		key time.Duration
		it  *Item
	}
	ks := make([]keyed, len(items))
	bySrc, byDst := map[string][]int{}, map[string][]int{}
	for i := range items {
		ks[i].it = &items[i]
		bySrc[items[i].Source] = append(bySrc[items[i].Source], i)
		byDst[items[i].Dest] = append(byDst[items[i].Dest], i)
	}
	left := func(groups map[string][]int, per int) {
		for _, idx := range groups {
			slices.SortFunc(idx, func(a, b int) int { return larger(&items[a], &items[b]) })
			var rest time.Duration
			for k := len(idx) - 1; k >= 0; k-- {
				i := idx[k]
				rest += items[i].Expected
				ks[i].key = max(ks[i].key, rest/time.Duration(per))
			}
		}
	}
	left(bySrc, b.PerSource)
	left(byDst, b.PerDest)
	slices.SortFunc(ks, func(a, b keyed) int { return cmp.Or(cmp.Compare(b.key, a.key), larger(a.it, b.it)) })
	sorted := make([]Item, len(items))
	for i := range ks {
		sorted[i] = *ks[i].it
	}
	copy(items, sorted)
}

// larger orders items by duration, longest first, then by source host and devserver name (a
// total order: the plan is deterministic).
func larger(a, b *Item) int {
	return cmp.Or(cmp.Compare(b.Expected, a.Expected), strings.Compare(a.Source, b.Source), strings.Compare(a.Devserver, b.Devserver))
}

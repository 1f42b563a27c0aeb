// Package drain plans the emptying of hosts before maintenance: where each devserver goes (the
// capacity what-if, keeping each region's reserve), which cannot go and why, and when each move
// runs under the drain's budgets. It is pure and deterministic (no goroutines, no I/O), so the
// leader's drain controller can plan for admission (a dry run, a refusal) and record the plan
// as it is.
package drain

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/capacity/fit"
	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Plan is a drain's plan.
type Plan struct {
	// Hosts are the drained hosts, sorted (names not in the fleet are left out).
	Hosts []string
	// Items are the moving items in execution order (the order to record their migrations in,
	// which the migration queue follows), then the blocked ones by source host and name.
	Items []Item
	// Shortfall is, per flavor, the devservers with no home (whole-machine ones aside): a drain
	// with a shortfall is refused unless forced.
	Shortfall []capacity.Short
	// Makespan is the simulated end of the last move (list scheduling under the budgets).
	Makespan time.Duration
	// LowerBound is the total bytes moved over Total moves at the bandwidth each: no schedule
	// can beat it (Bound gives a tighter one that also counts the per-host and per-site budgets).
	LowerBound time.Duration
}

// Moving counts the items that move.
func (p *Plan) Moving() int {
	n := 0
	for i := range p.Items {
		if p.Items[i].Kind.Moves() {
			n++
		}
	}
	return n
}

// Waves counts the waves of the schedule.
func (p *Plan) Waves() int {
	w := 0
	for i := range p.Items {
		if p.Items[i].Kind.Moves() {
			w = max(w, p.Items[i].Wave+1)
		}
	}
	return w
}

// MakePlan plans draining hosts (already resolved from hosts/site/region by the caller) of fleet
// f: destinations from the capacity what-if (f.Lose keeping each region's reserve), staying in
// the devserver's own region unless its whole region is drained (then the regions its flavor
// allows: a cold move); waves and times from Schedule under budgets b. A region is drained
// whole when every host it has is in hosts. Containers are not the planner's concern.
//
// Whole-machine devservers cannot move: their items say so. The what-if still finds each one an
// empty host, which keeps a machine aside for its owner's replacement; that host is not offered
// to the other devservers.
func MakePlan(f *capacity.Fleet, hosts []string, b Budgets) Plan {
	b = b.WithDefaults()
	byName := map[string]*v1.Host{}
	for _, r := range f.Regions {
		for _, h := range f.Hosts(r.GetName()) {
			byName[h.GetName()] = h
		}
	}
	var plan Plan
	drained := map[string]bool{}
	for _, name := range hosts {
		if byName[name] != nil && !drained[name] {
			drained[name] = true
			plan.Hosts = append(plan.Hosts, name)
		}
	}
	slices.Sort(plan.Hosts)
	gone := goneOf(f, drained)

	loss := f.Lose(gone, capacity.LossOptions{KeepReserve: true, OwnRegionOnly: true})
	devs := map[string]*v1.Devserver{}
	for _, h := range plan.Hosts {
		for _, d := range f.On(h) {
			devs[d.GetName()] = d
		}
	}
	goneRegion := map[string]bool{}
	for _, r := range gone.Regions {
		goneRegion[r] = true
	}
	var moving, blocked []Item
	for _, m := range loss.Moves {
		it := itemOf(f, devs[m.Devserver], byName)
		if it.Kind == Physical || it.Kind == Stranded {
			blocked = append(blocked, it) // a whole machine (its placement is ignored), or no flavor
			continue
		}
		to := byName[m.To]
		it.Dest, it.DestSite, it.DestRegion = m.To, to.GetSite(), m.ToRegion
		if m.ToRegion != byName[it.Source].GetRegion() {
			it.Kind = ColdMove
		}
		it.Expected = b.Duration(it.Bytes())
		moving = append(moving, it)
	}
	for _, d := range loss.Homeless {
		it := itemOf(f, d, byName)
		if it.Kind == Move {
			it.Kind, it.Blocker = Stranded, strandedWhy(f, f.Flavor(d.GetFlavor()), byName[it.Source].GetRegion(), goneRegion)
		}
		blocked = append(blocked, it)
	}
	plan.Shortfall = shortfall(f, blocked)
	order(moving, b)
	plan.Makespan = Schedule(moving, b)
	plan.LowerBound = lowerBound(moving, b)
	slices.SortFunc(blocked, func(a, b Item) int {
		return cmp.Or(strings.Compare(a.Source, b.Source), strings.Compare(a.Devserver, b.Devserver))
	})
	plan.Items = append(moving, blocked...)
	return plan
}

// goneOf is the what-if of a drain: the regions all of whose hosts are drained go whole (their
// devservers may only leave for other regions), and the other drained hosts go one by one (their
// devservers stay in their region).
func goneOf(f *capacity.Fleet, drained map[string]bool) capacity.Gone {
	var g capacity.Gone
	for _, r := range f.Regions {
		all := f.Hosts(r.GetName())
		var in []string
		for _, h := range all {
			if drained[h.GetName()] {
				in = append(in, h.GetName())
			}
		}
		switch {
		case len(in) == 0:
		case len(in) == len(all):
			g.Regions = append(g.Regions, r.GetName())
		default:
			g.Hosts = append(g.Hosts, in...)
		}
	}
	return g
}

// itemOf describes a devserver of a drained host, before its destination is known: a Move
// unless it cannot move at all (a whole machine, or a flavor that no longer exists).
func itemOf(f *capacity.Fleet, d *v1.Devserver, hosts map[string]*v1.Host) Item {
	src := hosts[d.GetHost()]
	it := Item{
		Devserver: d.GetName(), DevserverID: d.GetId(), Owner: d.GetOwner(), Flavor: d.GetFlavor(),
		Source: d.GetHost(), SourceSite: src.GetSite(), Kind: Move,
	}
	fl := f.Flavor(d.GetFlavor())
	if fl == nil {
		it.Kind, it.Blocker = Stranded, fmt.Sprintf("flavor %s no longer exists: its size is unknown", d.GetFlavor())
		return it
	}
	it.MemoryBytes = uint64(max(fl.GetResources().GetMemoryMib(), 0)) << 20
	it.DiskBytes = uint64(max(fl.GetResources().GetDiskGib(), 0)) << 30
	if fit.Physical(fl) {
		it.Kind, it.Blocker = Physical, fmt.Sprintf("whole machine (flavor %s): cannot move; its owner is told", fl.GetName())
	}
	return it
}

// strandedWhy says why a devserver of flavor fl from region own found no home.
func strandedWhy(f *capacity.Fleet, fl *v1.Flavor, own string, gone map[string]bool) string {
	if !gone[own] {
		if !state.FlavorAllowedIn(fl, own) {
			return fmt.Sprintf("flavor %s is no longer allowed in region %s, and a live move cannot leave it", fl.GetName(), own)
		}
		return fmt.Sprintf("no host of region %s has room for flavor %s while keeping the region's reserve", own, fl.GetName())
	}
	var others []string
	for _, r := range f.Regions {
		if name := r.GetName(); !gone[name] && state.FlavorAllowedIn(fl, name) {
			others = append(others, name)
		}
	}
	switch len(others) {
	case 0:
		return fmt.Sprintf("region %s is drained whole and no region that stays allows flavor %s", own, fl.GetName())
	case 1:
		return fmt.Sprintf("no host of region %s has room for flavor %s while keeping the region's reserve", others[0], fl.GetName())
	}
	return fmt.Sprintf("no host of regions %s has room for flavor %s while keeping their reserves", strings.Join(others, ", "), fl.GetName())
}

// shortfall counts the stranded items per flavor, in the fleet's flavor order (then flavors that
// no longer exist, by name): Lose's shortfall without the whole machines, which never move.
func shortfall(f *capacity.Fleet, blocked []Item) []capacity.Short {
	n := map[string]int{}
	for i := range blocked {
		if blocked[i].Kind == Stranded {
			n[blocked[i].Flavor]++
		}
	}
	var out []capacity.Short
	for _, fl := range f.Flavors {
		if c := n[fl.GetName()]; c > 0 {
			out = append(out, capacity.Short{Flavor: fl.GetName(), Devservers: c})
			delete(n, fl.GetName())
		}
	}
	for _, name := range slices.Sorted(maps.Keys(n)) {
		out = append(out, capacity.Short{Flavor: name, Devservers: n[name]})
	}
	return out
}

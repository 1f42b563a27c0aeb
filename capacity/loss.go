package capacity

import (
	"cmp"
	"container/heap"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/devfleet/devfleet/capacity/fit"
	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Gone is a what-if: the regions, sites and hosts that go away.
type Gone struct {
	Regions []string
	Sites   []string
	Hosts   []string
}

// Empty reports whether nothing goes.
func (g Gone) Empty() bool { return len(g.Regions)+len(g.Sites)+len(g.Hosts) == 0 }

// String reads like "region eu-west, sites fra1 dub1, hosts h1".
func (g Gone) String() string {
	var parts []string
	add := func(one, many string, names []string) {
		switch len(names) {
		case 0:
		case 1:
			parts = append(parts, one+" "+names[0])
		default:
			parts = append(parts, many+" "+strings.Join(names, " "))
		}
	}
	add("region", "regions", g.Regions)
	add("site", "sites", g.Sites)
	add("host", "hosts", g.Hosts)
	return strings.Join(parts, ", ")
}

// LossOptions tunes a loss simulation.
type LossOptions struct {
	// KeepReserve forbids placements that would leave a region with less free room than its
	// reserve (drain admission); without it the reserve may be spent (a real loss).
	KeepReserve bool
	// Scorers rank the hosts; empty means DefaultScorers, as real placement.
	Scorers []Weighted
	// OwnRegionOnly places a devserver only in its own region when that survives: a drain's
	// live moves, which cannot cross regions. Other regions are tried only for devservers whose
	// region goes whole (cold moves). Without it, a devserver that finds no room at home goes
	// to another region its flavor allows, as after a real loss.
	OwnRegionOnly bool
}

// Move is one devserver's new home in a simulation.
type Move struct {
	Devserver string
	Flavor    string
	From      string
	To        string
	ToRegion  string
}

// Short is how many devservers of a flavor found no home.
type Short struct {
	Flavor     string
	Devservers int
}

// Loss is the outcome of a what-if.
type Loss struct {
	Gone Gone
	// Affected counts the devservers on the hosts that go.
	Affected  int
	Moves     []Move
	Homeless  []*v1.Devserver
	Shortfall []Short
}

// OK reports whether every affected devserver found a home.
func (l Loss) OK() bool { return len(l.Homeless) == 0 }

// Lose simulates the loss of g: every devserver on a host that goes is placed again, largest
// first, by the same filters and scorers as real placement (anti-affinity aside), in its own
// region first if that survives, then in the other regions its flavor allows, in name order
// (with OwnRegionOnly, those only when its own region goes).
// Scores depend only on a host, so a heap per flavor and region gives exactly the placements a
// host-by-host scan would.
func (f *Fleet) Lose(g Gone, o LossOptions) Loss {
	goneRegion, goneSite, goneHost := set(g.Regions), set(g.Sites), set(g.Hosts)
	lost := func(h *v1.Host) bool {
		return goneRegion[h.GetRegion()] || goneSite[h.GetSite()] || goneHost[h.GetName()]
	}
	loss := Loss{Gone: g}
	sim := &simulation{
		free:       make([]fit.Amount, len(f.free)),
		takes:      make([]bool, len(f.free)),
		regionFree: map[string]fit.Amount{},
		reserve:    map[string]fit.Amount{},
	}
	var moving []*v1.Devserver
	for _, r := range f.Regions {
		name := r.GetName()
		var survivors []*v1.Host
		for i, h := range f.hosts[name] {
			if lost(h) {
				moving = append(moving, f.onHost[h.GetName()]...)
				continue
			}
			survivors = append(survivors, h)
			if Eligible(h) {
				id := f.ids[name][i]
				sim.free[id], sim.takes[id] = f.free[id], true
				sim.regionFree[name] = sim.regionFree[name].Add(f.free[id])
			}
		}
		sim.reserve[name] = ReserveOf(r, survivors)
	}
	loss.Affected = len(moving)
	f.sortLargestFirst(moving)

	var (
		curFlavor string
		heaps     map[string]*hostHeap
	)
	short := map[string]int{}
	for _, d := range moving {
		fl := f.flavors[d.GetFlavor()]
		if d.GetFlavor() != curFlavor {
			curFlavor, heaps = d.GetFlavor(), map[string]*hostHeap{}
		}
		placed := false
		for _, region := range f.targetsFor(fl, d.GetRegion(), goneRegion, o) {
			hp := heaps[region]
			if hp == nil {
				hp = f.heapFor(fl, region, sim, o.Scorers)
				heaps[region] = hp
			}
			if to := f.take(hp, fl, region, sim, o); to != nil {
				loss.Moves = append(loss.Moves, Move{Devserver: d.GetName(), Flavor: fl.GetName(), From: d.GetHost(), To: to.GetName(), ToRegion: region})
				placed = true
				break
			}
		}
		if !placed {
			loss.Homeless = append(loss.Homeless, d)
			short[d.GetFlavor()]++
		}
	}
	for _, fl := range f.Flavors {
		if n := short[fl.GetName()]; n > 0 {
			loss.Shortfall = append(loss.Shortfall, Short{Flavor: fl.GetName(), Devservers: n})
		}
	}
	return loss
}

// simulation is the running state of one Lose: free room by host number, whether the host may
// take devservers (survives and eligible), and per region the free room and the reserve.
type simulation struct {
	free       []fit.Amount
	takes      []bool
	regionFree map[string]fit.Amount
	reserve    map[string]fit.Amount
}

// take places one devserver of fl on the best host of the region's heap, or returns nil.
func (f *Fleet) take(hp *hostHeap, fl *v1.Flavor, region string, sim *simulation, o LossOptions) *v1.Host {
	for hp.Len() > 0 {
		e := &hp.entries[0]
		need := fit.Need(fl, e.host)
		if fit.Check(fl, e.host, sim.free[e.id]) != fit.None {
			heap.Pop(hp) // free only shrinks: it will not fit this flavor again
			continue
		}
		if o.KeepReserve && !sim.regionFree[region].Sub(need).Covers(sim.reserve[region]) {
			return nil // any host here would break the region's reserve
		}
		sim.free[e.id] = sim.free[e.id].Sub(need)
		sim.regionFree[region] = sim.regionFree[region].Sub(need)
		e.score = score(o.Scorers, f.usable[e.id], sim.free[e.id], need)
		h := e.host
		heap.Fix(hp, 0)
		return h
	}
	return nil
}

// sortLargestFirst orders devservers as larger does, with each one's flavor looked up once.
func (f *Fleet) sortLargestFirst(ds []*v1.Devserver) {
	type keyed struct {
		r *v1.Resources
		d *v1.Devserver
	}
	ks := make([]keyed, len(ds))
	for i, d := range ds {
		ks[i] = keyed{f.flavors[d.GetFlavor()].GetResources(), d}
	}
	slices.SortFunc(ks, func(a, b keyed) int { return compareLarger(a.r, b.r, a.d, b.d) })
	for i := range ks {
		ds[i] = ks[i].d
	}
}

// compareLarger orders devservers largest first (memory, then vCPUs, GPUs, disk), then by
// flavor and name, so that devservers of one flavor are consecutive and the order is
// deterministic.
func compareLarger(ra, rb *v1.Resources, a, b *v1.Devserver) int {
	if c := cmp.Or(
		cmp.Compare(rb.GetMemoryMib(), ra.GetMemoryMib()),
		cmp.Compare(rb.GetVcpus(), ra.GetVcpus()),
		cmp.Compare(rb.GetGpus(), ra.GetGpus()),
		cmp.Compare(rb.GetDiskGib(), ra.GetDiskGib()),
	); c != 0 {
		return c
	}
	return cmp.Or(strings.Compare(a.GetFlavor(), b.GetFlavor()), strings.Compare(a.GetName(), b.GetName()))
}

// targets lists the regions a devserver may go to: its own if it survives, then the other
// regions its flavor allows, in name order.
func (f *Fleet) targets(fl *v1.Flavor, own string, gone map[string]bool) []string {
	var out []string
	if !gone[own] && state.FlavorAllowedIn(fl, own) {
		out = append(out, own)
	}
	for _, r := range f.Regions {
		if name := r.GetName(); name != own && !gone[name] && state.FlavorAllowedIn(fl, name) {
			out = append(out, name)
		}
	}
	return out
}

// targetsFor is targets under the options: with OwnRegionOnly, only the devserver's own region
// while that survives.
func (f *Fleet) targetsFor(fl *v1.Flavor, own string, gone map[string]bool, o LossOptions) []string {
	out := f.targets(fl, own, gone)
	if o.OwnRegionOnly && !gone[own] {
		if len(out) > 0 && out[0] == own {
			return out[:1]
		}
		return nil // its flavor is no longer allowed at home: a live move has nowhere to go
	}
	return out
}

// On returns the devservers on a host, as the state listed them (read-only): what a drain plan
// needs to name the owner and ID of each devserver it moves, which Loss's moves do not carry.
func (f *Fleet) On(host string) []*v1.Devserver { return f.onHost[host] }

func (f *Fleet) heapFor(fl *v1.Flavor, region string, sim *simulation, scorers []Weighted) *hostHeap {
	hp := &hostHeap{}
	for i, h := range f.hosts[region] {
		id := f.ids[region][i]
		if !sim.takes[id] || fit.Check(fl, h, sim.free[id]) != fit.None {
			continue
		}
		need := fit.Of(fl.GetResources())
		if fit.Physical(fl) {
			need = f.usable[id]
		}
		hp.entries = append(hp.entries, hostEntry{host: h, id: id, score: score(scorers, f.usable[id], sim.free[id], need)})
	}
	heap.Init(hp)
	return hp
}

type hostEntry struct {
	host  *v1.Host
	id    int
	score float64
}

// hostHeap keeps the best host first: highest score, then first name, as Place breaks ties.
type hostHeap struct{ entries []hostEntry }

func (h *hostHeap) Len() int { return len(h.entries) }
func (h *hostHeap) Less(i, j int) bool {
	a, b := h.entries[i], h.entries[j]
	if a.score != b.score {
		return a.score > b.score
	}
	return a.host.GetName() < b.host.GetName()
}
func (h *hostHeap) Swap(i, j int) { h.entries[i], h.entries[j] = h.entries[j], h.entries[i] }
func (h *hostHeap) Push(x any)    { h.entries = append(h.entries, x.(hostEntry)) }
func (h *hostHeap) Pop() any {
	e := h.entries[len(h.entries)-1]
	h.entries = h.entries[:len(h.entries)-1]
	return e
}

func set(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// RegionLoss is the N-1 answer for one region or site.
type RegionLoss struct {
	Scope string // "region" or "site"
	Name  string
	Loss  Loss
}

// N1 simulates the loss of each region and each site in turn (a real loss: reserves may be
// spent). Sites are those that have hosts, in name order within their region.
func (f *Fleet) N1() []RegionLoss {
	var out []RegionLoss
	var gones []Gone
	for _, r := range f.Regions {
		out = append(out, RegionLoss{Scope: "region", Name: r.GetName()})
		gones = append(gones, Gone{Regions: []string{r.GetName()}})
	}
	var sites []string
	for s := range f.siteRegion {
		sites = append(sites, s)
	}
	sort.Strings(sites)
	for _, s := range sites {
		out = append(out, RegionLoss{Scope: "site", Name: s})
		gones = append(gones, Gone{Sites: []string{s}})
	}
	for i, l := range f.LoseEach(gones, LossOptions{}) {
		out[i].Loss = l
	}
	return out
}

// LoseEach answers several what-ifs, each on its own, side by side on every CPU: a Fleet is
// read-only and each simulation keeps its own figures.
func (f *Fleet) LoseEach(gones []Gone, o LossOptions) []Loss {
	out := make([]Loss, len(gones))
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(gones)) {
		wg.Go(func() {
			for i := range work {
				out[i] = f.Lose(gones[i], o)
			}
		})
	}
	for i := range gones {
		work <- i
	}
	close(work)
	wg.Wait()
	return out
}

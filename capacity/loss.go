package capacity

import (
	"container/heap"
	"sort"
	"strings"

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
// region if that survives and otherwise in the regions its flavor allows, in name order.
// Scores depend only on a host, so a heap per flavor and region gives exactly the placements a
// host-by-host scan would.
func (f *Fleet) Lose(g Gone, o LossOptions) Loss {
	goneRegion, goneSite, goneHost := set(g.Regions), set(g.Sites), set(g.Hosts)
	lost := func(h *v1.Host) bool {
		return goneRegion[h.GetRegion()] || goneSite[h.GetSite()] || goneHost[h.GetName()]
	}
	loss := Loss{Gone: g}
	free := map[string]fit.Amount{}       // running free resources of surviving eligible hosts
	regionFree := map[string]fit.Amount{} // and their sum per region
	reserve := map[string]fit.Amount{}
	var moving []*v1.Devserver
	for _, r := range f.Regions {
		name := r.GetName()
		var survivors []*v1.Host
		for _, h := range f.hosts[name] {
			if lost(h) {
				moving = append(moving, f.onHost[h.GetName()]...)
				continue
			}
			survivors = append(survivors, h)
			if Eligible(h) {
				free[h.GetName()] = fit.Free(h)
				regionFree[name] = regionFree[name].Add(fit.Free(h))
			}
		}
		reserve[name] = ReserveOf(r, survivors)
	}
	loss.Affected = len(moving)
	sort.Slice(moving, func(i, j int) bool { return f.larger(moving[i], moving[j]) })

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
		for _, region := range f.targets(fl, d.GetRegion(), goneRegion) {
			hp := heaps[region]
			if hp == nil {
				hp = f.heapFor(fl, region, free, lost, o.Scorers)
				heaps[region] = hp
			}
			for hp.Len() > 0 {
				h := hp.entries[0].host
				need := fit.Need(fl, h)
				if fit.Check(fl, h, free[h.GetName()]) != fit.None {
					heap.Pop(hp) // free only shrinks: it will not fit this flavor again
					continue
				}
				if o.KeepReserve && !regionFree[region].Sub(need).Covers(reserve[region]) {
					break // any host here would break the region's reserve
				}
				free[h.GetName()] = free[h.GetName()].Sub(need)
				regionFree[region] = regionFree[region].Sub(need)
				hp.entries[0].score = score(o.Scorers, fit.Usable(h), free[h.GetName()], need)
				heap.Fix(hp, 0)
				loss.Moves = append(loss.Moves, Move{Devserver: d.GetName(), Flavor: fl.GetName(), From: d.GetHost(), To: h.GetName(), ToRegion: region})
				placed = true
				break
			}
			if placed {
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

// larger orders devservers largest first (memory, then vCPUs, GPUs, disk), then by flavor and
// name, so that devservers of one flavor are consecutive and the order is deterministic.
func (f *Fleet) larger(a, b *v1.Devserver) bool {
	ra, rb := f.flavors[a.GetFlavor()].GetResources(), f.flavors[b.GetFlavor()].GetResources()
	switch {
	case ra.GetMemoryMib() != rb.GetMemoryMib():
		return ra.GetMemoryMib() > rb.GetMemoryMib()
	case ra.GetVcpus() != rb.GetVcpus():
		return ra.GetVcpus() > rb.GetVcpus()
	case ra.GetGpus() != rb.GetGpus():
		return ra.GetGpus() > rb.GetGpus()
	case ra.GetDiskGib() != rb.GetDiskGib():
		return ra.GetDiskGib() > rb.GetDiskGib()
	case a.GetFlavor() != b.GetFlavor():
		return a.GetFlavor() < b.GetFlavor()
	}
	return a.GetName() < b.GetName()
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

func (f *Fleet) heapFor(fl *v1.Flavor, region string, free map[string]fit.Amount, lost func(*v1.Host) bool, scorers []Weighted) *hostHeap {
	hp := &hostHeap{}
	for _, h := range f.hosts[region] {
		fr, ok := free[h.GetName()]
		if !ok || lost(h) || fit.Check(fl, h, fr) != fit.None {
			continue
		}
		hp.entries = append(hp.entries, hostEntry{host: h, score: score(scorers, fit.Usable(h), fr, fit.Need(fl, h))})
	}
	heap.Init(hp)
	return hp
}

type hostEntry struct {
	host  *v1.Host
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
	for _, r := range f.Regions {
		out = append(out, RegionLoss{Scope: "region", Name: r.GetName(), Loss: f.Lose(Gone{Regions: []string{r.GetName()}}, LossOptions{})})
	}
	var sites []string
	for s := range f.siteRegion {
		sites = append(sites, s)
	}
	sort.Strings(sites)
	for _, s := range sites {
		out = append(out, RegionLoss{Scope: "site", Name: s, Loss: f.Lose(Gone{Sites: []string{s}}, LossOptions{})})
	}
	return out
}

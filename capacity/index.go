package capacity

import (
	"sync"

	"github.com/devfleet/devfleet/capacity/fit"
	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Index keeps placement's figures for every host, region by region, in step with the state
// (it is a state.Observer), so that a placement reads ready-made figures instead of walking
// and re-deriving the hosts table: on 2,000 hosts a region that walk alone costs more than the
// whole decision may. Index.Place decides exactly as Place over the region's hosts.
type Index struct {
	mu      sync.RWMutex
	regions map[string]*regionHosts
	where   map[string]string // host -> region
}

type regionHosts struct {
	region *v1.Region
	cands  []candidate
	pos    map[string]int // host -> position in cands
	// reserve is ReserveOf(region, hosts), worked out again only after a change that can move
	// it (a host's usable room or eligibility, the region's setting), not after allocations.
	reserve      fit.Amount
	reserveStale bool
}

// NewIndex returns an empty index; hand it to state.Store.Observe to fill and follow it.
func NewIndex() *Index {
	return &Index{regions: map[string]*regionHosts{}, where: map[string]string{}}
}

// Reset implements state.Observer.
func (x *Index) Reset(v *state.View) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.regions, x.where = map[string]*regionHosts{}, map[string]string{}
	for _, r := range v.Regions() {
		x.regionLocked(r.GetName()).region = r
	}
	v.EachHost(x.upsertLocked)
}

// Changed implements state.Observer.
func (x *Index) Changed(_ uint64, changes []state.Change) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, c := range changes {
		switch row := c.Row.(type) {
		case *v1.Host:
			if c.Deleted {
				x.removeLocked(row.GetName())
			} else {
				x.upsertLocked(row)
			}
		case *v1.Region:
			if c.Deleted {
				if r := x.regions[row.GetName()]; r != nil && len(r.cands) == 0 {
					delete(x.regions, row.GetName())
				}
			} else {
				r := x.regionLocked(row.GetName())
				r.region, r.reserveStale = row, true
			}
		}
	}
}

func (x *Index) regionLocked(name string) *regionHosts {
	r := x.regions[name]
	if r == nil {
		r = &regionHosts{pos: map[string]int{}, reserveStale: true}
		x.regions[name] = r
	}
	return r
}

func (x *Index) upsertLocked(h *v1.Host) {
	if old, ok := x.where[h.GetName()]; ok && old != h.GetRegion() {
		x.removeLocked(h.GetName())
	}
	r := x.regionLocked(h.GetRegion())
	c := candidateOf(h)
	i, ok := r.pos[h.GetName()]
	if !ok {
		r.pos[h.GetName()] = len(r.cands)
		r.cands = append(r.cands, c)
		x.where[h.GetName()] = h.GetRegion()
		r.reserveStale = true
		return
	}
	prev := r.cands[i]
	if prev.usable != c.usable || Eligible(prev.host) != Eligible(h) {
		r.reserveStale = true
	}
	r.cands[i] = c
}

func (x *Index) removeLocked(name string) {
	region, ok := x.where[name]
	if !ok {
		return
	}
	delete(x.where, name)
	r := x.regions[region]
	i := r.pos[name]
	last := len(r.cands) - 1
	if i != last {
		r.cands[i] = r.cands[last]
		r.pos[r.cands[i].host.GetName()] = i
	}
	r.cands[last] = candidate{}
	r.cands = r.cands[:last]
	delete(r.pos, name)
	r.reserveStale = true
}

// Reserve is the room a region keeps free (ReserveOf over its hosts), zero for an unknown
// region.
func (x *Index) Reserve(region string) fit.Amount {
	x.mu.RLock()
	r := x.regions[region]
	if r == nil || !r.reserveStale {
		defer x.mu.RUnlock()
		if r == nil {
			return fit.Amount{}
		}
		return r.reserve
	}
	x.mu.RUnlock()
	x.mu.Lock()
	defer x.mu.Unlock()
	if r = x.regions[region]; r == nil {
		return fit.Amount{}
	}
	if r.reserveStale {
		hosts := make([]*v1.Host, len(r.cands))
		for i := range r.cands {
			hosts[i] = r.cands[i].host
		}
		r.reserve, r.reserveStale = ReserveOf(r.region, hosts), false
	}
	return r.reserve
}

// Place answers req over the region's hosts as they are in the index.
func (x *Index) Place(req *Request) Decision {
	x.mu.RLock()
	defer x.mu.RUnlock()
	r := x.regions[req.Region]
	if r == nil {
		return decide(nil, req, nil)
	}
	return decide(r.cands, req, pendingAt(req.Pending, func(host string) (int, bool) { i, ok := r.pos[host]; return i, ok }))
}

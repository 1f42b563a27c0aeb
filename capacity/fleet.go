package capacity

import (
	"sort"

	"github.com/devfleet/devfleet/capacity/fit"
	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Fleet is the placement-relevant state at one raft index, indexed for headroom and loss
// simulations. It is read-only; simulations keep their own running figures.
type Fleet struct {
	Index   uint64
	Regions []*v1.Region
	Flavors []*v1.Flavor

	flavors    map[string]*v1.Flavor
	regions    map[string]*v1.Region
	hosts      map[string][]*v1.Host // by region, in name order
	siteRegion map[string]string
	onHost     map[string][]*v1.Devserver

	// Simulations keep running figures per host in slices indexed by a host number, not in
	// maps keyed by name: ids[region][i] numbers hosts[region][i]; usable and free are by number.
	ids    map[string][]int
	usable []fit.Amount
	free   []fit.Amount
}

// Load builds a Fleet from a state view.
func Load(v *state.View) *Fleet {
	f := newFleet(v.LatestIndex(), v.Regions(), v.Flavors())
	v.EachHost(f.addHost)
	v.EachDevserver(f.addDevserver)
	return f
}

func newFleet(index uint64, regions []*v1.Region, flavors []*v1.Flavor) *Fleet {
	f := &Fleet{
		Index:      index,
		Regions:    regions,
		Flavors:    flavors,
		flavors:    map[string]*v1.Flavor{},
		regions:    map[string]*v1.Region{},
		hosts:      map[string][]*v1.Host{},
		siteRegion: map[string]string{},
		onHost:     map[string][]*v1.Devserver{},
		ids:        map[string][]int{},
	}
	for _, fl := range flavors {
		f.flavors[fl.GetName()] = fl
	}
	for _, r := range regions {
		f.regions[r.GetName()] = r
	}
	return f
}

// addHost adds a host; hosts come in name order.
func (f *Fleet) addHost(h *v1.Host) {
	f.hosts[h.GetRegion()] = append(f.hosts[h.GetRegion()], h)
	f.ids[h.GetRegion()] = append(f.ids[h.GetRegion()], len(f.usable))
	u := fit.Usable(h)
	f.usable = append(f.usable, u)
	f.free = append(f.free, u.Sub(fit.Of(h.GetAllocated())))
	f.siteRegion[h.GetSite()] = h.GetRegion()
}

func (f *Fleet) addDevserver(d *v1.Devserver) {
	if d.GetHost() != "" {
		f.onHost[d.GetHost()] = append(f.onHost[d.GetHost()], d)
	}
}

// Flavor returns a flavor by name, or nil.
func (f *Fleet) Flavor(name string) *v1.Flavor { return f.flavors[name] }

// Region returns a region by name, or nil.
func (f *Fleet) Region(name string) *v1.Region { return f.regions[name] }

// Hosts returns a region's hosts in name order.
func (f *Fleet) Hosts(region string) []*v1.Host { return f.hosts[region] }

// SiteRegion returns the region of a site that has hosts, or "".
func (f *Fleet) SiteRegion(site string) string { return f.siteRegion[site] }

// Eligible reports whether a host may take new devservers at all (whatever the flavor): active
// and not known to be unhealthy.
func Eligible(h *v1.Host) bool {
	return h.GetState() == v1.HostState_HOST_STATE_ACTIVE && h.GetHealth() != v1.HostHealth_HOST_HEALTH_UNHEALTHY
}

// ReserveOf is the room a region keeps free, from its reserve setting and its eligible hosts.
func ReserveOf(r *v1.Region, hosts []*v1.Host) fit.Amount {
	res := r.GetReserve()
	if res.GetFraction() <= 0 && res.GetHosts() <= 0 {
		return fit.Amount{}
	}
	var usable []fit.Amount
	var total fit.Amount
	for _, h := range hosts {
		if Eligible(h) {
			u := fit.Usable(h)
			usable = append(usable, u)
			total = total.Add(u)
		}
	}
	switch {
	case res.GetFraction() > 0:
		frac := func(v int64) int64 { return int64(float64(v)*res.GetFraction() + 0.999999) }
		return fit.Amount{VCPUs: frac(total.VCPUs), MemoryMiB: frac(total.MemoryMiB), DiskGiB: frac(total.DiskGiB), GPUs: frac(total.GPUs)}
	case res.GetHosts() > 0:
		// The N largest hosts, by memory then vCPUs: what losing them would take away.
		sort.Slice(usable, func(i, j int) bool {
			if usable[i].MemoryMiB != usable[j].MemoryMiB {
				return usable[i].MemoryMiB > usable[j].MemoryMiB
			}
			return usable[i].VCPUs > usable[j].VCPUs
		})
		var sum fit.Amount
		for i := 0; i < int(res.GetHosts()) && i < len(usable); i++ {
			sum = sum.Add(usable[i])
		}
		return sum
	}
	return fit.Amount{}
}

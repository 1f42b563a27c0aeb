package capacity

import (
	"sort"

	"github.com/devfleet/devfleet/capacity/fit"
	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Headroom is how many more devservers of one flavor one region takes now.
type Headroom struct {
	Region string
	Flavor string
	// Fits counts how many more fit on the region's active, healthy hosts, host by host.
	Fits int64
	// FitsBeyondReserve is how many fit while the region still keeps its reserve free.
	FitsBeyondReserve int64
	Reserve           fit.Amount
	Free              fit.Amount
}

// Headroom returns one row per flavor allowed in the region, in flavor order.
func (f *Fleet) Headroom(region string) []Headroom {
	r := f.regions[region]
	hosts := f.hosts[region]
	reserve := ReserveOf(r, hosts)
	var free fit.Amount
	for _, h := range hosts {
		if Eligible(h) {
			free = free.Add(fit.Free(h))
		}
	}
	var out []Headroom
	for _, fl := range f.Flavors {
		if !state.FlavorAllowedIn(fl, region) {
			continue
		}
		row := Headroom{Region: region, Flavor: fl.GetName(), Reserve: reserve, Free: free}
		if fit.Physical(fl) {
			row.Fits, row.FitsBeyondReserve = physicalHeadroom(fl, hosts, free, reserve)
		} else {
			need := fit.Of(fl.GetResources())
			for _, h := range hosts {
				if Eligible(h) {
					row.Fits += fit.Free(h).Times(need)
				}
			}
			if free.Covers(reserve) {
				row.FitsBeyondReserve = min(row.Fits, free.Sub(reserve).Times(need))
			}
		}
		out = append(out, row)
	}
	return out
}

// physicalHeadroom counts the empty hosts a physical flavor fits on, and how many of them can be
// handed out, smallest first, before the region's free room drops below its reserve.
func physicalHeadroom(fl *v1.Flavor, hosts []*v1.Host, free, reserve fit.Amount) (fits, beyond int64) {
	var usable []fit.Amount
	for _, h := range hosts {
		if Eligible(h) && fit.Check(fl, h, fit.Free(h)) == fit.None {
			usable = append(usable, fit.Usable(h))
		}
	}
	sort.Slice(usable, func(i, j int) bool { return usable[i].MemoryMiB < usable[j].MemoryMiB })
	for _, u := range usable {
		if free.Sub(u).Covers(reserve) {
			free = free.Sub(u)
			beyond++
		}
	}
	return int64(len(usable)), beyond
}

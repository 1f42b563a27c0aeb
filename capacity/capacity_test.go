package capacity

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/devfleet/devfleet/capacity/fit"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func res(cpus, mem, disk, gpus int64) *v1.Resources {
	return &v1.Resources{Vcpus: cpus, MemoryMib: mem, DiskGib: disk, Gpus: gpus}
}

func host(name, site, region string, cpus, mem, gpus int64) *v1.Host {
	return &v1.Host{
		Name: name, Site: site, Region: region, State: v1.HostState_HOST_STATE_ACTIVE,
		Capacity: res(cpus, mem, 1000, gpus), Overcommit: &v1.Overcommit{Cpu: 1, Memory: 1, Disk: 1},
		Reserved: res(0, 0, 0, 0), Allocated: res(0, 0, 0, 0),
	}
}

func flavor(name string, cpus, mem, gpus int64) *v1.Flavor {
	return &v1.Flavor{Name: name, Resources: res(cpus, mem, 50, gpus), Kind: v1.FlavorKind_FLAVOR_KIND_VM}
}

func withAlloc(h *v1.Host, cpus, mem int64) *v1.Host {
	h.Allocated = res(cpus, mem, 0, 0)
	return h
}

func TestPlaceFiltersAndExplanation(t *testing.T) {
	t.Parallel()
	xl := flavor("xl", 16, 65536, 0)
	gpu := flavor("gpu", 8, 16384, 1)
	cordoned := host("h-cordoned", "eu-1", "eu", 64, 262144, 0)
	cordoned.State = v1.HostState_HOST_STATE_CORDONED
	draining := host("h-draining", "eu-1", "eu", 64, 262144, 0)
	draining.State = v1.HostState_HOST_STATE_DRAINING
	sick := host("h-sick", "eu-1", "eu", 64, 262144, 0)
	sick.Health = v1.HostHealth_HOST_HEALTH_UNHEALTHY
	small := host("h-small", "eu-1", "eu", 64, 32768, 0)
	full := withAlloc(host("h-full", "eu-2", "eu", 64, 262144, 0), 60, 100000)
	half := withAlloc(host("h-half", "eu-2", "eu", 64, 262144, 0), 32, 131072)
	empty := host("h-empty", "eu-2", "eu", 64, 262144, 4)
	hosts := []*v1.Host{cordoned, draining, empty, full, half, sick, small}

	for _, tc := range []struct {
		name    string
		req     Request
		want    string
		explain string
	}{
		{"binpack picks the fullest host that fits", Request{Flavor: xl, Region: "eu"}, "h-half",
			"region eu: 7 hosts; 1 cordoned, 1 draining, 1 unhealthy, 1 lack vCPUs for flavor xl (need 16), 1 lack memory for flavor xl (need 65536 MiB)"},
		{"spread picks the emptiest", Request{Flavor: xl, Region: "eu", Scorers: []Weighted{{SpreadLoad, 1}}}, "h-empty", ""},
		{"GPUs", Request{Flavor: gpu, Region: "eu"}, "h-empty",
			"region eu: 7 hosts; 1 cordoned, 1 draining, 1 unhealthy, 1 lack vCPUs for flavor gpu (need 8), 2 lack GPUs for flavor gpu (need 1)"},
		{"site", Request{Flavor: xl, Region: "eu", Site: "eu-1"}, "",
			"region eu: 7 hosts; 3 in other sites, 1 cordoned, 1 draining, 1 unhealthy, 1 lack memory for flavor xl (need 65536 MiB)"},
		{"anti-affinity by host", Request{Flavor: xl, Region: "eu", Spread: SpreadHosts, Owner: "alice", Avoid: Avoid{Hosts: map[string]bool{"h-half": true}}}, "h-empty", ""},
		{"anti-affinity by site", Request{Flavor: xl, Region: "eu", Spread: SpreadSites, Owner: "alice", Avoid: Avoid{Sites: map[string]bool{"eu-2": true}}}, "",
			"region eu: 7 hosts; 1 cordoned, 1 draining, 1 unhealthy, 3 are in sites that already run a devserver of alice, 1 lack memory for flavor xl (need 65536 MiB)"},
		{"pending placements count", Request{Flavor: xl, Region: "eu", Pending: map[string]fit.Amount{"h-half": {VCPUs: 32}}}, "h-empty", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Place(hosts, &tc.req)
			got := ""
			if d.Host != nil {
				got = d.Host.GetName()
			}
			if got != tc.want {
				t.Fatalf("placed on %q, want %q (%s)", got, tc.want, d.Explanation)
			}
			if tc.explain != "" && d.Explanation.String() != tc.explain {
				t.Fatalf("explanation\n got %s\nwant %s", d.Explanation, tc.explain)
			}
		})
	}
}

func TestPhysicalNeedsAnEmptyHost(t *testing.T) {
	t.Parallel()
	metal := &v1.Flavor{Name: "metal", Resources: res(32, 131072, 500, 0), Kind: v1.FlavorKind_FLAVOR_KIND_PHYSICAL}
	hosts := []*v1.Host{
		withAlloc(host("a", "s", "eu", 64, 262144, 0), 4, 8192),
		host("b", "s", "eu", 16, 262144, 0),
		host("c", "s", "eu", 64, 262144, 0),
	}
	d := Place(hosts, &Request{Flavor: metal, Region: "eu"})
	if d.Host.GetName() != "c" {
		t.Fatalf("placed on %v", d.Host.GetName())
	}
	hosts = hosts[:2]
	d = Place(hosts, &Request{Flavor: metal, Region: "eu"})
	if want := "region eu: 2 hosts; 1 lack vCPUs for flavor metal (need 32), 1 run other devservers (physical flavor metal needs an empty host)"; d.Host != nil || d.Explanation.String() != want {
		t.Fatalf("got %v %q", d.Host, d.Explanation)
	}
}

// fleetOf builds a Fleet directly (Load reads a state view; these tests need none).
func fleetOf(regions []*v1.Region, flavors []*v1.Flavor, hosts []*v1.Host, devs []*v1.Devserver) *Fleet {
	f := newFleet(0, regions, flavors)
	for _, h := range hosts {
		f.addHost(h)
	}
	for _, d := range devs {
		f.addDevserver(d)
	}
	return f
}

func TestHeadroomAndReserve(t *testing.T) {
	t.Parallel()
	small, big := flavor("small", 4, 16384, 0), flavor("big", 16, 65536, 0)
	onlyUS := flavor("us-only", 1, 1024, 0)
	onlyUS.AllowedRegions = []string{"us"}
	eu := &v1.Region{Name: "eu", Reserve: &v1.CapacityReserve{Hosts: 1}}
	hosts := []*v1.Host{
		withAlloc(host("h1", "eu-1", "eu", 32, 131072, 0), 16, 65536), // 16 vCPU, 64 GiB free
		host("h2", "eu-1", "eu", 32, 131072, 0),                       // 32 vCPU, 128 GiB free
	}
	f := fleetOf([]*v1.Region{eu}, []*v1.Flavor{big, small, onlyUS}, hosts, nil)
	got := f.Headroom("eu")
	if len(got) != 2 {
		t.Fatalf("rows %+v; the us-only flavor must be left out", got)
	}
	// big: 1 + 2 = 3 fit; the reserve is one whole host (32 vCPU, 128 GiB), leaving 16 vCPU /
	// 64 GiB: one more big beyond the reserve.
	if got[0].Flavor != "big" || got[0].Fits != 3 || got[0].FitsBeyondReserve != 1 {
		t.Fatalf("big: %+v", got[0])
	}
	// small: 4 + 8 = 12; beyond the reserve 16 vCPU / 64 GiB: 4.
	if got[1].Flavor != "small" || got[1].Fits != 12 || got[1].FitsBeyondReserve != 4 {
		t.Fatalf("small: %+v", got[1])
	}
}

func TestLossHonoursAllowedRegionsAndReserves(t *testing.T) {
	t.Parallel()
	small := flavor("small", 4, 16384, 0)
	euOnly := flavor("eu-only", 4, 16384, 0)
	euOnly.AllowedRegions = []string{"eu"}
	regions := []*v1.Region{{Name: "eu"}, {Name: "us", Reserve: &v1.CapacityReserve{Fraction: 0.5}}}
	hosts := []*v1.Host{
		withAlloc(host("eu-h1", "eu-1", "eu", 16, 65536, 0), 12, 49152),
		host("us-h1", "us-1", "us", 16, 65536, 0),
	}
	devs := []*v1.Devserver{
		{Name: "a", Flavor: "small", Region: "eu", Host: "eu-h1"},
		{Name: "b", Flavor: "small", Region: "eu", Host: "eu-h1"},
		{Name: "c", Flavor: "eu-only", Region: "eu", Host: "eu-h1"},
	}
	f := fleetOf(regions, []*v1.Flavor{euOnly, small}, hosts, devs)
	loss := f.Lose(Gone{Regions: []string{"eu"}}, LossOptions{})
	if loss.Affected != 3 || len(loss.Moves) != 2 || len(loss.Homeless) != 1 || loss.Homeless[0].GetName() != "c" {
		t.Fatalf("loss %+v", loss)
	}
	if !reflect.DeepEqual(loss.Shortfall, []Short{{Flavor: "eu-only", Devservers: 1}}) {
		t.Fatalf("shortfall %+v", loss.Shortfall)
	}
	// Keeping us's reserve (half of 16 vCPU / 64 GiB) leaves room for two smalls: a and b.
	kept := f.Lose(Gone{Regions: []string{"eu"}}, LossOptions{KeepReserve: true})
	if len(kept.Moves) != 2 {
		t.Fatalf("with reserve: %+v", kept)
	}
	// With a bigger reserve only one fits.
	regions[1].Reserve.Fraction = 0.7
	kept = f.Lose(Gone{Regions: []string{"eu"}}, LossOptions{KeepReserve: true})
	if len(kept.Moves) != 1 || len(kept.Homeless) != 2 {
		t.Fatalf("with a 70%% reserve: %+v", kept)
	}
}

// TestLossMatchesHostByHostPlacement checks the heap-based simulation against the plain one on
// random small fleets: placing each devserver in turn with Place on hosts whose allocation is
// updated as it goes must give the same moves, and no host may end up oversubscribed.
func TestLossMatchesHostByHostPlacement(t *testing.T) {
	t.Parallel()
	var withMoves, withHomeless int
	for seed := uint64(0); seed < 300; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		flavors := []*v1.Flavor{flavor("a", 2, 4096, 0), flavor("b", 4, 16384, 0), flavor("c", 8, 32768, 1),
			{Name: "m", Resources: res(8, 16384, 50, 0), Kind: v1.FlavorKind_FLAVOR_KIND_PHYSICAL}}
		if rng.IntN(2) == 0 {
			flavors[1].AllowedRegions = []string{"r0", "r1"}
		}
		var regions []*v1.Region
		var hosts []*v1.Host
		var devs []*v1.Devserver
		for r := 0; r < 3; r++ {
			regions = append(regions, &v1.Region{Name: fmt.Sprintf("r%d", r)})
			for i := 0; i < 1+rng.IntN(4); i++ {
				h := host(fmt.Sprintf("r%d-h%d", r, i), fmt.Sprintf("r%d-s%d", r, i%2), fmt.Sprintf("r%d", r), int64(8+8*rng.IntN(4)), int64(16384*(1+rng.IntN(4))), int64(rng.IntN(2)))
				if rng.IntN(8) == 0 {
					h.State = v1.HostState_HOST_STATE_CORDONED
				}
				// Fill it with random devservers that fit.
				var alloc fit.Amount
				for k := 0; k < rng.IntN(4); k++ {
					fl := flavors[rng.IntN(len(flavors))]
					hh := proto.Clone(h).(*v1.Host)
					hh.Allocated = alloc.Proto()
					if fit.Check(fl, hh, fit.Free(hh)) != fit.None || (fl.GetAllowedRegions() != nil && !contains(fl.GetAllowedRegions(), h.GetRegion())) {
						continue
					}
					alloc = alloc.Add(fit.Need(fl, hh))
					devs = append(devs, &v1.Devserver{Name: fmt.Sprintf("%s-d%d", h.GetName(), k), Flavor: fl.GetName(), Region: h.GetRegion(), Host: h.GetName()})
				}
				h.Allocated = alloc.Proto()
				hosts = append(hosts, h)
			}
		}
		f := fleetOf(regions, flavors, hosts, devs)
		g := Gone{Regions: []string{"r0"}}
		if rng.IntN(2) == 0 {
			g = Gone{Sites: []string{"r1-s0"}, Hosts: []string{"r2-h0"}}
		}
		got := f.Lose(g, LossOptions{})
		want := referenceLoss(f, g)
		if !reflect.DeepEqual(got.Moves, want) && !(len(got.Moves) == 0 && len(want) == 0) {
			t.Fatalf("seed %d: heap simulation\n%+v\nhost-by-host\n%+v", seed, got.Moves, want)
		}
		if got.Affected != len(got.Moves)+len(got.Homeless) {
			t.Fatalf("seed %d: %d affected, %d moved, %d homeless", seed, got.Affected, len(got.Moves), len(got.Homeless))
		}
		if len(got.Moves) > 0 {
			withMoves++
		}
		if len(got.Homeless) > 0 {
			withHomeless++
		}
	}
	// The generator must produce both outcomes, or the comparison proves little.
	if withMoves < 100 || withHomeless < 30 {
		t.Fatalf("only %d fleets with moves and %d with homeless devservers", withMoves, withHomeless)
	}
}

// larger orders devservers as Lose does.
func (f *Fleet) larger(a, b *v1.Devserver) bool {
	return compareLarger(f.flavors[a.GetFlavor()].GetResources(), f.flavors[b.GetFlavor()].GetResources(), a, b) < 0
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// referenceLoss places the affected devservers one by one with Place, updating allocations on
// copies of the hosts, and checks that nothing is oversubscribed.
func referenceLoss(f *Fleet, g Gone) []Move {
	goneRegion, goneSite, goneHost := set(g.Regions), set(g.Sites), set(g.Hosts)
	copies := map[string][]*v1.Host{}
	var moving []*v1.Devserver
	for _, r := range f.Regions {
		for _, h := range f.hosts[r.GetName()] {
			if goneRegion[h.GetRegion()] || goneSite[h.GetSite()] || goneHost[h.GetName()] {
				moving = append(moving, f.onHost[h.GetName()]...)
				continue
			}
			copies[r.GetName()] = append(copies[r.GetName()], proto.Clone(h).(*v1.Host))
		}
	}
	sortDevservers(f, moving)
	var moves []Move
	for _, d := range moving {
		fl := f.flavors[d.GetFlavor()]
		for _, region := range f.targets(fl, d.GetRegion(), goneRegion) {
			dec := Place(copies[region], &Request{Flavor: fl, Region: region})
			if dec.Host == nil {
				continue
			}
			h := dec.Host
			h.Allocated = fit.Of(h.GetAllocated()).Add(fit.Need(fl, h)).Proto()
			if !fit.Usable(h).Covers(fit.Of(h.GetAllocated())) {
				panic("reference oversubscribed " + h.GetName())
			}
			moves = append(moves, Move{Devserver: d.GetName(), Flavor: fl.GetName(), From: d.GetHost(), To: h.GetName(), ToRegion: region})
			break
		}
	}
	return moves
}

func sortDevservers(f *Fleet, ds []*v1.Devserver) {
	for i := 1; i < len(ds); i++ {
		for j := i; j > 0 && f.larger(ds[j], ds[j-1]); j-- {
			ds[j], ds[j-1] = ds[j-1], ds[j]
		}
	}
}

func TestPlaceKeepsTheRegionReserve(t *testing.T) {
	t.Parallel()
	hosts := []*v1.Host{host("h1", "s", "eu", 16, 65536, 0), withAlloc(host("h2", "s", "eu", 16, 65536, 0), 8, 32768)}
	req := &Request{Flavor: flavor("small", 4, 16384, 0), Region: "eu", Reserve: fit.Amount{VCPUs: 16, MemoryMiB: 65536}}
	if d := Place(hosts, req); d.Host.GetName() != "h2" {
		t.Fatalf("placed on %v: %s", d.Host, d.Explanation)
	}
	req.Reserve = fit.Amount{VCPUs: 22, MemoryMiB: 65536}
	d := Place(hosts, req)
	want := "region eu: 2 hosts; the hosts that fit would eat into the region's capacity reserve (24 vCPUs, 98304 MiB free, 22 vCPUs, 65536 MiB reserved)"
	if d.Host != nil || d.Explanation.String() != want {
		t.Fatalf("got %v\n%s\nwant %s", d.Host, d.Explanation, want)
	}
}

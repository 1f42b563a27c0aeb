package drain

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/devfleet/devfleet/capacity"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

const (
	vm    = v1.FlavorKind_FLAVOR_KIND_VM
	metal = v1.FlavorKind_FLAVOR_KIND_PHYSICAL
)

// euUS: region eu (two sites) and us. eu-a runs two smalls, a big and a devserver of a flavor
// allowed only in eu; eu-b has room for the small ones only; eu-m is a whole machine in use.
func euUS(t *testing.T, usHosts ...int64) *testFleet {
	tf := newTestFleet(t).
		region("eu", 0, "eu-1", "eu-2").
		region("us", 0, "us-1").
		flavor("big", 8, 64, 200, vm).
		flavor("eu-only", 2, 8, 50, vm, "eu").
		flavor("metal", 16, 64, 500, metal).
		flavor("small", 2, 8, 50, vm).
		host("eu-a", "eu-1", 32, 128).
		host("eu-b", "eu-2", 16, 32).
		host("eu-m", "eu-1", 16, 64)
	for i, mem := range usHosts {
		tf.host(fmt.Sprintf("us-%c", 'a'+i), "us-1", 64, mem)
	}
	return tf.
		dev("eu-a", "small", "s1", "s2").
		dev("eu-a", "big", "b1").
		dev("eu-a", "eu-only", "e1").
		dev("eu-m", "metal", "m1")
}

func byDevserver(p Plan) map[string]Item {
	m := map[string]Item{}
	for _, it := range p.Items {
		m[it.Devserver] = it
	}
	return m
}

// TestHostDrainStaysInItsRegion: a drained host's devservers move live within their region; one
// with no room there is stranded, not sent to another region that has room (us here).
func TestHostDrainStaysInItsRegion(t *testing.T) {
	t.Parallel()
	f := euUS(t, 256, 256).fleet()
	p := MakePlan(f, []string{"eu-m", "eu-a"}, Budgets{})
	if !slices.Equal(p.Hosts, []string{"eu-a", "eu-m"}) {
		t.Fatalf("hosts %v", p.Hosts)
	}
	items := byDevserver(p)
	for _, name := range []string{"s1", "s2", "e1"} {
		it := items[name]
		if it.Kind != Move || it.Dest != "eu-b" || it.DestSite != "eu-2" || it.DestRegion != "eu" || it.Blocker != "" {
			t.Fatalf("%s: %+v", name, it)
		}
		if it.MemoryBytes != 8<<30 || it.DiskBytes != 50<<30 || it.Expected != 8*time.Second {
			t.Fatalf("%s: a live move copies the memory only: %+v", name, it)
		}
		if it.Owner != "owner-"+name || it.DevserverID == "" || it.Source != "eu-a" || it.SourceSite != "eu-1" {
			t.Fatalf("%s: record fields %+v", name, it)
		}
	}
	if b := items["b1"]; b.Kind != Stranded || b.Dest != "" ||
		b.Blocker != "no host of region eu has room for flavor big while keeping the region's reserve" {
		t.Fatalf("b1 must stay stranded in eu (us has room, but a live move cannot cross regions): %+v", b)
	}
	if m := items["m1"]; m.Kind != Physical || m.Dest != "" || m.Blocker != "whole machine (flavor metal): cannot move; its owner is told" {
		t.Fatalf("m1: %+v", m)
	}
	if !reflect.DeepEqual(p.Shortfall, []capacity.Short{{Flavor: "big", Devservers: 1}}) {
		t.Fatalf("shortfall %+v (the whole machine is not a shortfall)", p.Shortfall)
	}
	// Moving items first, then the blocked ones by source host and name.
	var kinds []ItemKind
	for _, it := range p.Items {
		kinds = append(kinds, it.Kind)
	}
	if !slices.Equal(kinds, []ItemKind{Move, Move, Move, Stranded, Physical}) {
		t.Fatalf("kinds in order %v", kinds)
	}
	// Three 8 s moves from one source host (2 at once) to one destination (2 at once).
	if p.Makespan != 16*time.Second || p.LowerBound != ceilDiv(24*time.Second, DefaultTotal) || p.Waves() != 2 || p.Moving() != 3 {
		t.Fatalf("makespan %s, lower bound %s, waves %d", p.Makespan, p.LowerBound, p.Waves())
	}
}

// TestRegionDrainMovesCold: when a region is drained whole its devservers go cold to the regions
// their flavor allows, copying memory and disk.
func TestRegionDrainMovesCold(t *testing.T) {
	t.Parallel()
	f := euUS(t, 256, 256).fleet()
	p := MakePlan(f, []string{"eu-a", "eu-b", "eu-m"}, Budgets{BandwidthMiBps: 2048})
	items := byDevserver(p)
	for name, want := range map[string]time.Duration{"s1": 29 * time.Second, "s2": 29 * time.Second, "b1": 132 * time.Second} {
		it := items[name]
		if it.Kind != ColdMove || it.DestRegion != "us" || it.DestSite != "us-1" || it.Expected != want {
			t.Fatalf("%s: %+v (want a cold move to us of %s: memory and disk at 2 GiB/s)", name, it, want)
		}
	}
	if e := items["e1"]; e.Kind != Stranded || e.Blocker != "region eu is drained whole and no region that stays allows flavor eu-only" {
		t.Fatalf("e1: %+v", e)
	}
	if m := items["m1"]; m.Kind != Physical {
		t.Fatalf("m1: %+v", m)
	}
	if !reflect.DeepEqual(p.Shortfall, []capacity.Short{{Flavor: "eu-only", Devservers: 1}}) {
		t.Fatalf("shortfall %+v", p.Shortfall)
	}
}

// TestShortfallPerFlavor: the devservers with no home are counted per flavor, in flavor order.
func TestShortfallPerFlavor(t *testing.T) {
	t.Parallel()
	f := euUS(t, 16).dev("eu-a", "small", "s3", "s4").fleet() // us has room for two smalls
	p := MakePlan(f, []string{"eu-a", "eu-b", "eu-m"}, Budgets{})
	want := []capacity.Short{{Flavor: "big", Devservers: 1}, {Flavor: "eu-only", Devservers: 1}, {Flavor: "small", Devservers: 2}}
	if !reflect.DeepEqual(p.Shortfall, want) {
		t.Fatalf("shortfall %+v, want %+v", p.Shortfall, want)
	}
	var stranded []string
	for _, it := range p.Items {
		if it.Kind == Stranded && it.Flavor == "small" {
			stranded = append(stranded, it.Devserver)
			if it.Blocker != "no host of region us has room for flavor small while keeping the region's reserve" {
				t.Fatalf("%s: %q", it.Devserver, it.Blocker)
			}
		}
	}
	if len(stranded) != 2 || p.Moving() != 2 {
		t.Fatalf("stranded smalls %v, moving %d", stranded, p.Moving())
	}
}

// TestPlanKeepsTheReserve: a destination region's reserve is not spent by a drain.
func TestPlanKeepsTheReserve(t *testing.T) {
	t.Parallel()
	tf := newTestFleet(t).region("eu", 0.5, "eu-1").flavor("small", 2, 8, 50, vm).
		host("a", "eu-1", 64, 64).host("b", "eu-1", 64, 64).
		dev("a", "small", "d1", "d2", "d3", "d4", "d5")
	// Without a: 64 GiB usable on b, half of it reserved: four 8 GiB devservers fit.
	p := MakePlan(tf.fleet(), []string{"a"}, Budgets{})
	if p.Moving() != 4 || !reflect.DeepEqual(p.Shortfall, []capacity.Short{{Flavor: "small", Devservers: 1}}) {
		t.Fatalf("moving %d, shortfall %+v", p.Moving(), p.Shortfall)
	}
}

// TestPlanIsDeterministic: the same fleet and hosts (in any order, repeated) give the same plan,
// and names not in the fleet are left out.
func TestPlanIsDeterministic(t *testing.T) {
	t.Parallel()
	f := randomFleet(t, 11).fleet()
	hosts := []string{"r0-h03", "r0-h01", "r0-h07"}
	a := MakePlan(f, hosts, Budgets{})
	again := append([]string{"nope", "r0-h03"}, hosts...)
	slices.Reverse(again)
	b := MakePlan(f, again, Budgets{})
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("two plans differ:\n%+v\n%+v", a, b)
	}
	if !slices.Equal(a.Hosts, []string{"r0-h01", "r0-h03", "r0-h07"}) {
		t.Fatalf("hosts %v", a.Hosts)
	}
	if a.Moving() < 10 || len(a.Shortfall) == 0 {
		t.Fatalf("%d moves, shortfall %v: the fleet proves little", a.Moving(), a.Shortfall)
	}
}

// TestPlanOnRandomFleets: on random fleets, a site drain's moves stay in their region, a region
// drain's go elsewhere, every devserver of the drained hosts has one item, and the schedule
// keeps the budgets and reaches at least the plain lower bound.
func TestPlanOnRandomFleets(t *testing.T) {
	t.Parallel()
	for seed := uint64(0); seed < 4; seed++ {
		tf := randomFleet(t, seed)
		f := tf.fleet()
		for _, scope := range []string{"r0-s0", "r0"} {
			var hosts []string
			devs := 0
			for _, h := range f.Hosts("r0") {
				if scope == "r0" || h.GetSite() == scope {
					hosts = append(hosts, h.GetName())
					devs += len(f.On(h.GetName()))
				}
			}
			b := Budgets{PerSource: 1 + int(seed%3), Total: 3 + int(seed)}
			p := MakePlan(f, hosts, b)
			if len(p.Items) != devs {
				t.Fatalf("seed %d %s: %d items for %d devservers", seed, scope, len(p.Items), devs)
			}
			for _, it := range p.Items {
				switch {
				case it.Kind == Move && (scope == "r0" || it.DestRegion != "r0"):
					t.Fatalf("seed %d %s: live move %+v", seed, scope, it)
				case it.Kind == ColdMove && (scope != "r0" || it.DestRegion == "r0"):
					t.Fatalf("seed %d %s: cold move %+v", seed, scope, it)
				case it.Kind.Moves() && (it.Blocker != "" || it.Dest == ""):
					t.Fatalf("seed %d %s: %+v", seed, scope, it)
				case !it.Kind.Moves() && it.Blocker == "":
					t.Fatalf("seed %d %s: blocked without a reason %+v", seed, scope, it)
				}
			}
			if peaks := Peaks(p.Items); !peaks.Within(b) {
				t.Fatalf("seed %d %s: peaks %+v over budgets %+v", seed, scope, peaks, b.WithDefaults())
			}
			if p.Makespan < p.LowerBound || p.Makespan < Bound(p.Items, b) {
				t.Fatalf("seed %d %s: makespan %s under a bound (%s, %s)", seed, scope, p.Makespan, p.LowerBound, Bound(p.Items, b))
			}
		}
	}
}

// randomFleet: regions r0..r2 of two sites, 8-12 hosts each, filled to about half with a mix of
// flavors (and a whole machine or two).
func randomFleet(t *testing.T, seed uint64) *testFleet {
	rng := rand.New(rand.NewPCG(seed, 3))
	tf := newTestFleet(t)
	for r := range 3 {
		tf.region(fmt.Sprintf("r%d", r), 0.1, fmt.Sprintf("r%d-s0", r), fmt.Sprintf("r%d-s1", r))
	}
	type fl struct {
		name         string
		cpus, mem, n int64
	}
	flavors := []fl{{"xs", 1, 2, 0}, {"s", 2, 8, 0}, {"m", 4, 16, 0}, {"l", 8, 64, 0}}
	for _, x := range flavors {
		tf.flavor(x.name, x.cpus, x.mem, 10*x.mem, vm)
	}
	tf.flavor("metal", 32, 256, 1000, metal)
	for r := range 3 {
		for i := range 8 + rng.IntN(5) {
			name := fmt.Sprintf("r%d-h%02d", r, i)
			tf.host(name, fmt.Sprintf("r%d-s%d", r, i%2), 128, 256)
			if i == 4 && r == 0 {
				tf.dev(name, "metal", name+"-metal")
				continue
			}
			var mem int64
			for k := 0; mem < 128; k++ {
				x := flavors[rng.IntN(len(flavors))]
				mem += x.mem
				tf.dev(name, x.name, fmt.Sprintf("%s-d%d", name, k))
			}
		}
	}
	return tf
}

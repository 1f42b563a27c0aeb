package benchmark

import (
	"cmp"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/capacity/fit"
	"github.com/devfleet/devfleet/controlplane/fsm"
	"github.com/devfleet/devfleet/drain"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// DrainOptions sizes RunDrain's fleet and budgets.
type DrainOptions struct {
	// Hosts and Devservers are those of the drained region (region0, 4 sites); the four other
	// regions get Hosts/2 hosts each, lightly loaded, to take its devservers cold.
	Hosts      int
	Devservers int
	// Runs is how many plans are timed per scope.
	Runs    int
	Budgets drain.Budgets
}

// DrainReport is what RunDrain measured, one entry per scope (a site, then the region).
type DrainReport struct {
	Hosts      int               `json:"hosts"`
	Devservers int               `json:"devservers"`
	LoadTime   time.Duration     `json:"fleet_load_ns"`
	Budgets    drain.Budgets     `json:"budgets"`
	Scopes     []DrainScopeStats `json:"scopes"`
}

// DrainScopeStats is one drain's plan: its size, how long planning took, and the schedule.
type DrainScopeStats struct {
	Scope      string           `json:"scope"`
	Hosts      int              `json:"hosts"`
	Items      int              `json:"items"`
	Live       int              `json:"live"`
	Cold       int              `json:"cold"`
	Physical   int              `json:"physical"`
	Stranded   int              `json:"stranded"`
	Shortfall  []capacity.Short `json:"shortfall"`
	PlanP50    time.Duration    `json:"plan_p50_ns"`
	PlanP99    time.Duration    `json:"plan_p99_ns"`
	Waves      int              `json:"waves"`
	Makespan   time.Duration    `json:"makespan_ns"`
	LowerBound time.Duration    `json:"lower_bound_ns"`
	// Efficiency is LowerBound / Makespan (the target: ≥ 0.8).
	Efficiency float64 `json:"efficiency"`
	// Bound counts the per-host and per-site budgets too (drain.Bound); BoundEfficiency is
	// Bound / Makespan: how close the schedule comes to what the budgets allow at all.
	Bound           time.Duration `json:"bound_ns"`
	BoundEfficiency float64       `json:"bound_efficiency"`
	// RoundRobin and LargestFirst are the makespans of the same moves in other orders, for
	// comparison with the plan's (most work left first): round-robin over source hosts, largest
	// first within a host; and Lose's, largest first over the whole drain.
	RoundRobin   time.Duration `json:"round_robin_makespan_ns"`
	LargestFirst time.Duration `json:"largest_first_makespan_ns"`
	// Peaks are the most moves observed at once, recomputed from the scheduled intervals.
	Peaks       drain.Budgets `json:"peaks"`
	BudgetsKept bool          `json:"budgets_kept"`
}

// Flavor mix of the drained region, per 100 devservers: dev VMs are mostly small; a few large
// ones hold most of the memory, which makes the moves' durations uneven (4 s to 128 s at 1 GiB/s).
var drainMix = []struct {
	flavor *v1.Flavor
	weight int
}{
	{&v1.Flavor{Name: "small", Resources: &v1.Resources{Vcpus: 2, MemoryMib: 4 << 10, DiskGib: 50}}, 40},
	{&v1.Flavor{Name: "standard", Resources: &v1.Resources{Vcpus: 4, MemoryMib: 16 << 10, DiskGib: 100}}, 35},
	{nil, 17}, // medium, from BuildFleet: 8 vCPUs, 32 GiB, 250 GiB
	{&v1.Flavor{Name: "xlarge", Resources: &v1.Resources{Vcpus: 32, MemoryMib: 128 << 10, DiskGib: 1000}}, 6},
	{&v1.Flavor{Name: "gpu", Resources: &v1.Resources{Vcpus: 16, MemoryMib: 96 << 10, DiskGib: 500, Gpus: 1}}, 2},
}

var drainMetal = &v1.Flavor{Name: "metal", Kind: v1.FlavorKind_FLAVOR_KIND_PHYSICAL, Resources: &v1.Resources{Vcpus: 96, MemoryMib: 1 << 20, DiskGib: 2000}}

// BuildDrainFleet is BuildFleet's 5 regions of 4 sites with a drain's fleet on them: region0 has
// o.Hosts hosts (192 vCPUs at 4x, 2 TiB, 4 GPUs; sites interleaved by name) and o.Devservers
// devservers of the flavor mix, with one whole-machine devserver per 200 hosts; regions 1-4
// have o.Hosts/2 hosts each without GPUs, 10 devservers a host. Every region keeps 10% in
// reserve. Flavors are drawn from a seeded generator, so the fleet is the same on every run.
func BuildDrainFleet(o DrainOptions) (*fsm.FSM, error) {
	f, err := BuildFleet(ScaleOptions{})
	if err != nil {
		return nil, err
	}
	b := &batcher{f: f}
	if err := seedDrain(o, f.Store().View().Flavors(), b.add); err != nil {
		return nil, err
	}
	return f, b.flush()
}

func seedDrain(o DrainOptions, existing []*v1.Flavor, add func(*fsmv1.Command) error) error {
	const regions, sitesPerRegion = 5, 4
	for r := range regions {
		if err := add(&fsmv1.Command{Op: &fsmv1.Command_UpdateRegion{UpdateRegion: &fsmv1.UpdateRegion{
			Region:     &v1.Region{Name: fmt.Sprintf("region%d", r), Reserve: &v1.CapacityReserve{Fraction: 0.1}},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"reserve"}},
		}}}); err != nil {
			return err
		}
	}
	mix := slices.Clone(drainMix)
	for i := range mix {
		if mix[i].flavor == nil {
			mix[i].flavor = existing[slices.IndexFunc(existing, func(f *v1.Flavor) bool { return f.GetName() == "medium" })]
			continue
		}
		if err := add(&fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: mix[i].flavor}}}); err != nil {
			return err
		}
	}
	if err := add(&fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: drainMetal}}}); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(5, 8))
	pick := func() *v1.Flavor {
		n := rng.IntN(100)
		for _, m := range mix {
			if n -= m.weight; n < 0 {
				return m.flavor
			}
		}
		return mix[0].flavor
	}
	devs := 0
	addDev := func(h *v1.Host, region string, fl *v1.Flavor) error {
		d := &v1.Devserver{
			Name: fmt.Sprintf("drain-d%06d", devs), Id: fmt.Sprintf("00000000-0000-4000-9000-%012d", devs),
			Owner: fmt.Sprintf("user%d", devs%5000), Flavor: fl.GetName(), Region: region, Host: h.GetName(),
			Lifespan: v1.Lifespan_LIFESPAN_PERMANENT,
		}
		if s := fit.Check(fl, h, fit.Free(h)); s != fit.None {
			return fmt.Errorf("drain bench fleet: host %s cannot take devserver %s: it would %s; ask for fewer devservers a host", h.GetName(), d.GetName(), s.Describe(fl))
		}
		devs++
		h.Allocated = fit.Of(h.GetAllocated()).Add(fit.Need(fl, h)).Proto()
		return add(&fsmv1.Command{Op: &fsmv1.Command_CreateDevserver{CreateDevserver: &fsmv1.CreateDevserver{Devserver: d}}})
	}
	for r := range regions {
		region := fmt.Sprintf("region%d", r)
		n, gpus, perHost := o.Hosts, int64(4), 0
		if r > 0 {
			n, gpus, perHost = o.Hosts/2, 0, 10
		}
		hosts := make([]*v1.Host, n)
		for i := range hosts {
			hosts[i] = &v1.Host{
				Name: fmt.Sprintf("r%d-h%05d", r, i), Site: fmt.Sprintf("r%ds%d", r, i%sitesPerRegion),
				Capacity:   &v1.Resources{Vcpus: 192, MemoryMib: 2 << 20, DiskGib: 30000, Gpus: gpus},
				Overcommit: &v1.Overcommit{Cpu: 4, Memory: 1, Disk: 1}, Allocated: &v1.Resources{},
			}
			// The command gets its own copy: the generator counts allocations on hosts[i].
			if err := add(&fsmv1.Command{Op: &fsmv1.Command_CreateHost{CreateHost: &fsmv1.CreateHost{Host: proto.Clone(hosts[i]).(*v1.Host)}}}); err != nil {
				return err
			}
		}
		if r == 0 {
			// Whole machines first, one per 200 hosts, on hosts of their own.
			metal := min(max(n/200, 1), n, o.Devservers)
			for _, h := range hosts[:metal] {
				if err := addDev(h, region, drainMetal); err != nil {
					return err
				}
			}
			hosts = hosts[metal:]
			perHost = 0
			for i := range o.Devservers - metal {
				if err := addDev(hosts[i%len(hosts)], region, fitting(pick(), mix[0].flavor, hosts[i%len(hosts)])); err != nil {
					return err
				}
			}
		}
		for i := range len(hosts) * perHost {
			if err := addDev(hosts[i%len(hosts)], region, fitting(pick(), mix[0].flavor, hosts[i%len(hosts)])); err != nil {
				return err
			}
		}
	}
	return nil
}

// fitting is fl if it fits on h now, else the fallback (the mix is drawn at random, so a host
// may draw more large ones than it holds).
func fitting(fl, fallback *v1.Flavor, h *v1.Host) *v1.Flavor {
	if fit.Check(fl, h, fit.Free(h)) == fit.None {
		return fl
	}
	return fallback
}

// RunDrain measures the drain planner on a generated fleet (BuildDrainFleet): the plan of a
// site's drain (live moves within the region) and of the whole region's (cold moves to the
// others), each planned o.Runs times from one load of the state. It prints the plan time, the
// schedule's makespan against its lower bounds, and the most moves the schedule runs at once,
// recomputed from the planned intervals, against the budgets.
func RunDrain(o DrainOptions, out io.Writer) (DrainReport, error) {
	o.Runs = max(o.Runs, 1)
	b := o.Budgets.WithDefaults()
	rep := DrainReport{Hosts: o.Hosts, Devservers: o.Devservers, Budgets: b}
	start := time.Now()
	built, err := BuildDrainFleet(o)
	if err != nil {
		return rep, err
	}
	buildTime := time.Since(start)
	start = time.Now()
	fleet := capacity.Load(built.Store().View())
	rep.LoadTime = time.Since(start)
	fmt.Fprintf(out, "fleet: region0 %d hosts, %d devservers; 4 more regions of %d hosts (built in %s, loaded in %s); budgets: %d per source, %d per dest, %d per site, %d in all, %d MiB/s a move\n",
		o.Hosts, o.Devservers, o.Hosts/2, buildTime.Round(time.Millisecond), rep.LoadTime.Round(time.Millisecond), b.PerSource, b.PerDest, b.PerSite, b.Total, b.BandwidthMiBps)
	scopes := []struct{ name, site, region string }{{"site r0s0", "r0s0", ""}, {"region region0", "", "region0"}}
	for _, sc := range scopes {
		var hosts []string
		for _, h := range fleet.Hosts("region0") {
			if sc.region != "" || h.GetSite() == sc.site {
				hosts = append(hosts, h.GetName())
			}
		}
		var lat []time.Duration
		var plan drain.Plan
		for range o.Runs {
			start := time.Now()
			plan = drain.MakePlan(fleet, hosts, b)
			lat = append(lat, time.Since(start))
		}
		slices.Sort(lat)
		st := scopeStats(sc.name, hosts, plan, b)
		st.PlanP50, st.PlanP99 = lat[len(lat)/2], lat[len(lat)*99/100]
		rep.Scopes = append(rep.Scopes, st)
		printScope(out, st, b, o.Runs)
	}
	return rep, nil
}

func scopeStats(name string, hosts []string, plan drain.Plan, b drain.Budgets) DrainScopeStats {
	st := DrainScopeStats{Scope: name, Hosts: len(hosts), Items: len(plan.Items), Shortfall: plan.Shortfall,
		Waves: plan.Waves(), Makespan: plan.Makespan, LowerBound: plan.LowerBound, Bound: drain.Bound(plan.Items, b)}
	var moving []drain.Item
	for _, it := range plan.Items {
		switch it.Kind {
		case drain.Move:
			st.Live++
		case drain.ColdMove:
			st.Cold++
		case drain.Physical:
			st.Physical++
		case drain.Stranded:
			st.Stranded++
		}
		if it.Kind.Moves() {
			moving = append(moving, it)
		}
	}
	if plan.Makespan > 0 {
		st.Efficiency = float64(plan.LowerBound) / float64(plan.Makespan)
		st.BoundEfficiency = float64(st.Bound) / float64(plan.Makespan)
	}
	st.Peaks = drain.Peaks(plan.Items)
	st.BudgetsKept = st.Peaks.Within(b)
	// The same moves in other orders. Lose's: largest first over the whole drain.
	slices.SortStableFunc(moving, func(a, b drain.Item) int { return cmp.Compare(b.Expected, a.Expected) })
	st.LargestFirst = drain.Schedule(moving, b)
	// Round-robin over source hosts: round k takes each host's k-th largest, largest first.
	round, seen := make([]int, len(moving)), map[string]int{}
	for i := range moving {
		round[i] = seen[moving[i].Source]
		seen[moving[i].Source]++
	}
	idx := make([]int, len(moving))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(round[a], round[b]) })
	rr := make([]drain.Item, len(moving))
	for i, j := range idx {
		rr[i] = moving[j]
	}
	st.RoundRobin = drain.Schedule(rr, b)
	return st
}

func printScope(out io.Writer, st DrainScopeStats, b drain.Budgets, runs int) {
	var short []string
	for _, s := range st.Shortfall {
		short = append(short, fmt.Sprintf("%s %d", s.Flavor, s.Devservers))
	}
	fmt.Fprintf(out, "drain %s: %d hosts, %d items: %d live, %d cold, %d physical, %d stranded (shortfall: %s)\n",
		st.Scope, st.Hosts, st.Items, st.Live, st.Cold, st.Physical, st.Stranded, cmp.Or(strings.Join(short, ", "), "none"))
	fmt.Fprintf(out, "  plan: p50 %s, p99 %s over %d runs\n", st.PlanP50.Round(time.Millisecond), st.PlanP99.Round(time.Millisecond), runs)
	fmt.Fprintf(out, "  schedule: %d moves in %d waves; makespan %s, lower bound %s: efficiency %.3f; with the per-host and per-site budgets, bound %s: efficiency %.3f\n",
		st.Live+st.Cold, st.Waves, st.Makespan.Round(time.Second), st.LowerBound.Round(time.Second), st.Efficiency, st.Bound.Round(time.Second), st.BoundEfficiency)
	eff := func(m time.Duration) float64 {
		if m == 0 {
			return 0
		}
		return float64(st.LowerBound) / float64(m)
	}
	fmt.Fprintf(out, "  other orders: round-robin over sources makespan %s, efficiency %.3f; largest first makespan %s, efficiency %.3f\n",
		st.RoundRobin.Round(time.Second), eff(st.RoundRobin), st.LargestFirst.Round(time.Second), eff(st.LargestFirst))
	verdict := "kept"
	if !st.BudgetsKept {
		verdict = "EXCEEDED"
	}
	fmt.Fprintf(out, "  budgets (max observed/budget): per source %d/%d, per dest %d/%d, per site %d/%d, total %d/%d: %s\n",
		st.Peaks.PerSource, b.PerSource, st.Peaks.PerDest, b.PerDest, st.Peaks.PerSite, b.PerSite, st.Peaks.Total, b.Total, verdict)
}

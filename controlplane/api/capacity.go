package api

import (
	"context"
	"maps"
	"sync"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/capacity/fit"
	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/state"
	"github.com/devfleet/devfleet/controlplane/validate"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// pendingPlacements holds what placements proposed on this leader take until they apply.
type pendingPlacements struct {
	mu     sync.Mutex
	byHost map[string]fit.Amount
}

func (p *pendingPlacements) add(host string, a fit.Amount) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.byHost[host] = p.byHost[host].Add(a)
}

func (p *pendingPlacements) remove(host string, a fit.Amount) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if left := p.byHost[host].Sub(a); left.IsZero() {
		delete(p.byHost, host)
	} else {
		p.byHost[host] = left
	}
}

// snapshot copies the pending placements (nil when there are none): a placement reads it once
// per host, so it must not take the lock each time.
func (p *pendingPlacements) snapshot() map[string]fit.Amount {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.byHost) == 0 {
		return nil
	}
	return maps.Clone(p.byHost)
}

// placementAttempts bounds how often a write is placed again after the FSM found its host full.
const placementAttempts = 4

// proposePlaced places something with decide, holds the room it takes on the chosen host as
// pending while the command build makes for that host is proposed (so concurrent placements
// see it), and places again, a few times, when the FSM finds the host filled up meanwhile (it
// checks the fit again). A decision without a host is refused by refuse.
func proposePlaced[T any](ctx context.Context, s *Server, decide func() (capacity.Decision, *v1.Flavor, error),
	refuse func(capacity.Decision) error, build func(host string) *fsmv1.Command) (T, error) {
	var zero T
	for attempt := 1; ; attempt++ {
		d, flavor, err := decide()
		if err != nil {
			return zero, err
		}
		if d.Host == nil {
			return zero, refuse(d)
		}
		host, need := d.Host.GetName(), fit.Need(flavor, d.Host)
		s.pending.add(host, need)
		out, err := proposeAs[T](ctx, s, build(host))
		s.pending.remove(host, need)
		if apierror.HasCode(err, apierror.CodeNoRoom) && attempt < placementAttempts {
			continue
		}
		return out, err
	}
}

// placeArgs is a placement question as the API receives it.
type placeArgs struct {
	flavor, region, site, owner string
	spread                      v1.Spread
	// field prefix for errors: "" for PlaceDevserver, "devserver." for CreateDevserver.
	prefix string
}

// place checks a placement question against the state and answers it. An unknown flavor,
// region or site is NotFound; a flavor that fits no host of the fleet at all is
// FailedPrecondition. A region without room is not an error here: the decision says why.
func (s *Server) place(v *state.View, a placeArgs) (capacity.Decision, *v1.Flavor, error) {
	if err := validate.Name(a.prefix+"flavor", a.flavor); err != nil {
		return capacity.Decision{}, nil, err
	}
	if err := validate.Name(a.prefix+"region", a.region); err != nil {
		return capacity.Decision{}, nil, err
	}
	if err := validate.OptionalName("site", a.site); err != nil {
		return capacity.Decision{}, nil, err
	}
	if _, ok := v1.Spread_name[int32(a.spread)]; !ok {
		return capacity.Decision{}, nil, apierror.Invalid("spread", "unknown spread %d", a.spread)
	}
	if a.spread != v1.Spread_SPREAD_NONE {
		if err := validate.User(a.prefix+"owner", a.owner); err != nil {
			return capacity.Decision{}, nil, err
		}
	}
	flavor, err := v.GetFlavor(a.flavor)
	if err != nil {
		return capacity.Decision{}, nil, err
	}
	region, err := v.GetRegion(a.region)
	if err != nil {
		return capacity.Decision{}, nil, err
	}
	if a.site != "" {
		site, err := v.GetSite(a.site)
		if err != nil {
			return capacity.Decision{}, nil, err
		}
		if site.GetRegion() != a.region {
			return capacity.Decision{}, nil, apierror.Invalid("site", "site %q is in region %q, not %q", a.site, site.GetRegion(), a.region)
		}
	}
	if !state.FlavorAllowedIn(flavor, a.region) {
		return capacity.Decision{}, nil, apierror.Blocked("flavor %q is not allowed in region %q", a.flavor, a.region)
	}
	req := &capacity.Request{
		Flavor:  flavor,
		Region:  region.GetName(),
		Site:    a.site,
		Spread:  capacity.Spread(a.spread),
		Owner:   a.owner,
		Pending: s.pending.snapshot(),
		Reserve: s.hosts.Reserve(a.region),
	}
	if a.spread != v1.Spread_SPREAD_NONE {
		req.Avoid = capacity.AvoidFor(v, a.owner)
	}
	d := s.hosts.Place(req)
	// Only a refusal pays for the fleet-wide scan that tells "no room now" from "never".
	if d.Host == nil && !fitsSomewhere(v, flavor) {
		return capacity.Decision{}, nil, apierror.Blocked("flavor %q fits no host of the fleet, even an empty one: it needs %d vCPUs, %d MiB memory, %d GiB disk, %d GPUs",
			a.flavor, flavor.GetResources().GetVcpus(), flavor.GetResources().GetMemoryMib(), flavor.GetResources().GetDiskGib(), flavor.GetResources().GetGpus())
	}
	return d, flavor, nil
}

// fitsSomewhere reports whether any host of the fleet, emptied, could take the flavor.
func fitsSomewhere(v *state.View, f *v1.Flavor) bool {
	want := fit.Of(f.GetResources())
	found := false
	v.EachHost(func(h *v1.Host) {
		found = found || fit.Usable(h).Covers(want)
	})
	return found
}

func placementOf(d capacity.Decision, index uint64) *v1.Placement {
	p := &v1.Placement{
		Score:       d.Score,
		Candidates:  int32(d.Candidates),
		Explanation: d.Explanation.String(),
		Index:       index,
	}
	if d.Host != nil {
		p.Host, p.Site = d.Host.GetName(), d.Host.GetSite()
	}
	for _, r := range d.Explanation.Rejected {
		p.Rejected = append(p.Rejected, &v1.Rejection{Reason: r.Reason, Hosts: int32(r.Hosts)})
	}
	return p
}

// PlaceDevserver answers where CreateDevserver would put a devserver now.
func (s *Server) PlaceDevserver(_ context.Context, req *v1.PlaceDevserverRequest) (*v1.Placement, error) {
	v := s.store.View()
	d, _, err := s.place(v, placeArgs{flavor: req.GetFlavor(), region: req.GetRegion(), site: req.GetSite(), owner: req.GetOwner(), spread: req.GetSpread()})
	if err != nil {
		return nil, err
	}
	return placementOf(d, v.LatestIndex()), nil
}

// GetCapacityReport returns headroom per region and flavor and the N-1 check of every region
// and site.
func (s *Server) GetCapacityReport(_ context.Context, req *v1.GetCapacityReportRequest) (*v1.CapacityReport, error) {
	v := s.store.View()
	if err := regionFilter(v, req.GetRegion()); err != nil {
		return nil, err
	}
	fleet := capacity.Load(v)
	rep := &v1.CapacityReport{Index: fleet.Index}
	for _, r := range fleet.Regions {
		if req.GetRegion() != "" && r.GetName() != req.GetRegion() {
			continue
		}
		rep.Regions = append(rep.Regions, regionCapacity(fleet, r))
	}
	for _, l := range fleet.N1() {
		rep.Losses = append(rep.Losses, &v1.LossSummary{
			Scope: l.Scope, Name: l.Name, Ok: l.Loss.OK(), Affected: int32(l.Loss.Affected),
			Homeless: int32(len(l.Loss.Homeless)), Shortfall: shortfallOf(l.Loss),
		})
	}
	return rep, nil
}

func regionCapacity(fleet *capacity.Fleet, r *v1.Region) *v1.RegionCapacity {
	hosts := fleet.Hosts(r.GetName())
	rc := &v1.RegionCapacity{Region: r.GetName(), Hosts: int32(len(hosts)), ReserveSetting: r.GetReserve()}
	var usable, free fit.Amount
	for _, h := range hosts {
		if capacity.Eligible(h) {
			rc.EligibleHosts++
			usable, free = usable.Add(fit.Usable(h)), free.Add(fit.Free(h))
		}
	}
	rc.Usable, rc.Free = usable.Proto(), free.Proto()
	rc.Reserve = capacity.ReserveOf(r, hosts).Proto()
	for _, h := range fleet.Headroom(r.GetName()) {
		rc.Flavors = append(rc.Flavors, &v1.FlavorHeadroom{Flavor: h.Flavor, Fits: h.Fits, FitsBeyondReserve: h.FitsBeyondReserve})
	}
	return rc
}

func shortfallOf(l capacity.Loss) []*v1.FlavorShortfall {
	var out []*v1.FlavorShortfall
	for _, s := range l.Shortfall {
		out = append(out, &v1.FlavorShortfall{Flavor: s.Flavor, Devservers: int32(s.Devservers)})
	}
	return out
}

// SimulateLoss answers what happens if the given regions, sites and hosts go.
func (s *Server) SimulateLoss(_ context.Context, req *v1.SimulateLossRequest) (*v1.LossReport, error) {
	if len(req.GetRegions())+len(req.GetSites())+len(req.GetHosts()) == 0 {
		return nil, apierror.Invalid("regions", "name at least one region, site or host to lose")
	}
	v := s.store.View()
	for _, list := range []struct {
		field string
		names []string
		get   func(string) error
	}{
		{"regions", req.GetRegions(), func(n string) error { _, err := v.GetRegion(n); return err }},
		{"sites", req.GetSites(), func(n string) error { _, err := v.GetSite(n); return err }},
		{"hosts", req.GetHosts(), func(n string) error { _, err := v.GetHost(n); return err }},
	} {
		for _, n := range list.names {
			if err := validate.Name(list.field, n); err != nil {
				return nil, err
			}
			if err := list.get(n); err != nil {
				return nil, err
			}
		}
	}
	fleet := capacity.Load(v)
	loss := fleet.Lose(capacity.Gone{Regions: req.GetRegions(), Sites: req.GetSites(), Hosts: req.GetHosts()},
		capacity.LossOptions{KeepReserve: req.GetKeepReserve()})
	rep := &v1.LossReport{Index: fleet.Index, Gone: loss.Gone.String(), Ok: loss.OK(), Affected: int32(loss.Affected), Shortfall: shortfallOf(loss)}
	for _, m := range loss.Moves {
		rep.Moves = append(rep.Moves, &v1.Move{Devserver: m.Devserver, Flavor: m.Flavor, FromHost: m.From, ToHost: m.To, ToRegion: m.ToRegion})
	}
	for _, d := range loss.Homeless {
		rep.Homeless = append(rep.Homeless, d.GetName())
	}
	return rep, nil
}

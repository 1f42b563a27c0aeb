package api

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/state"
	"github.com/devfleet/devfleet/controlplane/validate"
	"github.com/devfleet/devfleet/drain"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// mayDrain checks that the caller is an operator: a drain moves other people's devservers.
func (s *Server) mayDrain(ctx context.Context) (string, error) {
	who, err := caller(ctx)
	if err != nil {
		return "", err
	}
	if !slices.Contains(s.cfg.Operators, who) {
		return "", &apierror.Error{Kind: apierror.PermissionDenied, Field: AsHeader,
			Reason: who + " is not an operator (devfleetd --operators): only operators drain hosts"}
	}
	return who, nil
}

// StartDrain plans a drain on the leader's state and, unless it is a dry run, records it: its
// hosts are cordoned in the same raft entry, so a refused drain cordons nothing.
func (s *Server) StartDrain(ctx context.Context, req *v1.StartDrainRequest) (*v1.StartDrainResponse, error) {
	targets := 0
	for _, set := range []bool{len(req.GetHosts()) > 0, req.GetSite() != "", req.GetRegion() != ""} {
		if set {
			targets++
		}
	}
	switch targets {
	case 0:
		return nil, apierror.Invalid("hosts", "name what to drain: hosts, a site or a region")
	case 1:
	default:
		return nil, apierror.Invalid("hosts", "give one of hosts, site and region, not several")
	}
	for i, h := range req.GetHosts() {
		if err := validate.Name("hosts["+strconv.Itoa(i)+"]", h); err != nil {
			return nil, err
		}
	}
	if err := validate.OptionalName("site", req.GetSite()); err != nil {
		return nil, err
	}
	if err := validate.OptionalName("region", req.GetRegion()); err != nil {
		return nil, err
	}
	if strings.TrimSpace(req.GetReason()) == "" {
		return nil, apierror.Invalid("reason", "say why (it goes to the owners and the timeline)")
	}
	if err := validate.Reason("reason", req.GetReason()); err != nil {
		return nil, err
	}
	if dl := req.GetDeadline(); dl != nil {
		if err := dl.CheckValid(); err != nil {
			return nil, apierror.Invalid("deadline", "%v", err)
		}
		if !dl.AsTime().After(time.Now()) {
			return nil, apierror.Invalid("deadline", "%s is in the past", dl.AsTime().UTC().Format(time.RFC3339))
		}
	}
	if _, ok := v1.DeadlineAction_name[int32(req.GetDeadlineAction())]; !ok {
		return nil, apierror.Invalid("deadline_action", "unknown action %d", req.GetDeadlineAction())
	}
	who, err := s.mayDrain(ctx)
	if err != nil {
		return nil, err
	}
	v := s.store.View()
	hosts, err := drainTargets(v, req)
	if err != nil {
		return nil, err
	}
	for _, h := range hosts {
		if d := v.DrainOn(h); d != nil {
			return nil, apierror.Blocked("host %q is already being drained by drain %s (%s)", h, d.GetId(), d.GetReason())
		}
	}
	plan := drain.MakePlan(capacity.Load(v), hosts, drain.BudgetsOf(req.GetBudgets()))
	resp := &v1.StartDrainResponse{Makespan: durationpb.New(plan.Makespan), LowerBound: durationpb.New(plan.LowerBound)}
	for _, sh := range plan.Shortfall {
		resp.Shortfall = append(resp.Shortfall, &v1.FlavorShortfall{Flavor: sh.Flavor, Devservers: int32(sh.Devservers)})
	}
	items := planItems(plan)
	resp.Plan = items
	if req.GetDryRun() {
		return resp, nil
	}
	if len(plan.Shortfall) > 0 && !req.GetForce() {
		var parts []string
		for _, sh := range plan.Shortfall {
			parts = append(parts, strconv.Itoa(sh.Devservers)+" of flavor "+sh.Flavor)
		}
		return nil, apierror.Blocked("capacity has no home for %s while keeping each region's reserve; add capacity, drain fewer hosts, or --force (they are stranded)",
			strings.Join(parts, ", "))
	}
	d := &v1.Drain{Id: uuid.NewString(), Hosts: hosts, Site: req.GetSite(), Region: req.GetRegion(), Reason: req.GetReason(),
		RequestedBy: who, Deadline: req.GetDeadline(), DeadlineAction: req.GetDeadlineAction(), Budgets: req.GetBudgets(),
		Force: req.GetForce(), Priority: state.DefaultPriority(v1.MigrationReason_MIGRATION_REASON_MAINTENANCE)}
	resp.Drain, err = proposeAs[*v1.Drain](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_StartDrain{StartDrain: &fsmv1.StartDrain{Drain: d, Items: items}}})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// drainTargets resolves what a drain asks for into host names, sorted.
func drainTargets(v *state.View, req *v1.StartDrainRequest) ([]string, error) {
	var hosts []string
	switch {
	case req.GetSite() != "":
		if _, err := v.GetSite(req.GetSite()); err != nil {
			return nil, err
		}
		for _, h := range v.HostsAt(req.GetSite()) {
			hosts = append(hosts, h.GetName())
		}
	case req.GetRegion() != "":
		if _, err := v.GetRegion(req.GetRegion()); err != nil {
			return nil, err
		}
		for _, h := range v.HostsIn(req.GetRegion()) {
			hosts = append(hosts, h.GetName())
		}
	default:
		for _, name := range req.GetHosts() {
			if _, err := v.GetHost(name); err != nil {
				return nil, err
			}
			hosts = append(hosts, name)
		}
	}
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	if len(hosts) == 0 {
		return nil, apierror.Blocked("there is no host to drain in %s", strings.TrimSpace(req.GetSite()+req.GetRegion()))
	}
	return hosts, nil
}

// planItems is a plan as the drain's items.
func planItems(p drain.Plan) []*v1.DrainItem {
	out := make([]*v1.DrainItem, 0, len(p.Items))
	for _, it := range p.Items {
		kind := v1.DrainItemKind_DRAIN_ITEM_KIND_LIVE
		switch it.Kind {
		case drain.ColdMove:
			kind = v1.DrainItemKind_DRAIN_ITEM_KIND_COLD
		case drain.Physical:
			kind = v1.DrainItemKind_DRAIN_ITEM_KIND_PHYSICAL
		case drain.Stranded:
			kind = v1.DrainItemKind_DRAIN_ITEM_KIND_STRANDED
		}
		out = append(out, &v1.DrainItem{Devserver: it.Devserver, DevserverId: it.DevserverID, Owner: it.Owner, Flavor: it.Flavor,
			SourceHost: it.Source, DestHost: it.Dest, DestRegion: it.DestRegion, Kind: kind, Blocker: it.Blocker,
			Wave: uint32(it.Wave), Expected: durationpb.New(it.Expected), MemoryBytes: it.MemoryBytes})
	}
	return out
}

func (s *Server) GetDrain(_ context.Context, req *v1.GetDrainRequest) (*v1.Drain, error) {
	if req.GetId() == "" {
		return nil, apierror.Invalid("id", "must not be empty")
	}
	return s.store.View().GetDrain(req.GetId())
}

func (s *Server) ListDrains(_ context.Context, req *v1.ListDrainsRequest) (*v1.ListDrainsResponse, error) {
	ds := s.store.View().Drains()
	if req.GetActive() {
		ds = slices.DeleteFunc(ds, func(d *v1.Drain) bool { return state.DrainFinal(d.GetState()) })
	}
	slices.SortFunc(ds, func(a, b *v1.Drain) int { return int(int64(a.GetCreateIndex()) - int64(b.GetCreateIndex())) })
	return &v1.ListDrainsResponse{Drains: ds}, nil
}

// ListDrainItems returns a drain's items; a moving one carries its migration's phase and
// progress, read at the same index.
func (s *Server) ListDrainItems(_ context.Context, req *v1.ListDrainItemsRequest) (*v1.ListDrainItemsResponse, error) {
	if req.GetId() == "" {
		return nil, apierror.Invalid("id", "must not be empty")
	}
	if _, ok := v1.DrainItemState_name[int32(req.GetState())]; !ok {
		return nil, apierror.Invalid("state", "unknown state %d", req.GetState())
	}
	v := s.store.View()
	if _, err := v.GetDrain(req.GetId()); err != nil {
		return nil, err
	}
	var out []*v1.DrainItem
	for _, it := range v.DrainItems(req.GetId()) {
		if req.GetState() != v1.DrainItemState_DRAIN_ITEM_STATE_UNSPECIFIED && it.GetState() != req.GetState() {
			continue
		}
		if it.GetState() == v1.DrainItemState_DRAIN_ITEM_STATE_MOVING {
			if m, err := v.GetMigration(it.GetMigrationId()); err == nil {
				it = proto.Clone(it).(*v1.DrainItem) // the stored item is shared
				it.MigrationPhase, it.Progress = m.GetPhase(), m.GetProgress()
			}
		}
		out = append(out, it)
	}
	return &v1.ListDrainItemsResponse{Items: out}, nil
}

func (s *Server) ListDrainEvents(_ context.Context, req *v1.ListDrainEventsRequest) (*v1.ListDrainEventsResponse, error) {
	if req.GetId() == "" {
		return nil, apierror.Invalid("id", "must not be empty")
	}
	v := s.store.View()
	if _, err := v.GetDrain(req.GetId()); err != nil {
		return nil, err
	}
	return &v1.ListDrainEventsResponse{Events: v.DrainEvents(req.GetId())}, nil
}

func (s *Server) CancelDrain(ctx context.Context, req *v1.CancelDrainRequest) (*v1.Drain, error) {
	if req.GetId() == "" {
		return nil, apierror.Invalid("id", "must not be empty")
	}
	if _, err := s.mayDrain(ctx); err != nil {
		return nil, err
	}
	return proposeAs[*v1.Drain](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_RequestDrainCancel{RequestDrainCancel: &fsmv1.RequestDrainCancel{
		Id: req.GetId(), AbortInFlight: req.GetAbortInFlight(), Uncordon: req.GetUncordon()}}})
}

func (s *Server) ExtendDrain(ctx context.Context, req *v1.ExtendDrainRequest) (*v1.Drain, error) {
	if req.GetId() == "" {
		return nil, apierror.Invalid("id", "must not be empty")
	}
	if err := req.GetBy().CheckValid(); err != nil || req.GetBy().AsDuration() <= 0 {
		return nil, apierror.Invalid("by", "must be a positive duration")
	}
	if _, err := s.mayDrain(ctx); err != nil {
		return nil, err
	}
	return proposeAs[*v1.Drain](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_ExtendDrain{ExtendDrain: &fsmv1.ExtendDrain{Id: req.GetId(), By: req.GetBy()}}})
}

// ListBanners derives the banners of a region from the drains and decommissions that have not
// ended: what is under maintenance, why, since when and until when.
func (s *Server) ListBanners(_ context.Context, req *v1.ListBannersRequest) (*v1.ListBannersResponse, error) {
	v := s.store.View()
	if err := regionFilter(v, req.GetRegion()); err != nil {
		return nil, err
	}
	regionsOf := func(hosts []string) []string {
		var out []string
		for _, name := range hosts {
			if h, err := v.GetHost(name); err == nil && !slices.Contains(out, h.GetRegion()) {
				out = append(out, h.GetRegion())
			}
		}
		slices.Sort(out)
		return out
	}
	var out []*v1.Banner
	add := func(kind, id string, hosts []string, text string, start, end *timestamppb.Timestamp) {
		for _, r := range regionsOf(hosts) {
			if req.GetRegion() == "" || r == req.GetRegion() {
				out = append(out, &v1.Banner{Region: r, Kind: kind, Id: id, Hosts: hosts, Text: text, StartTime: start, EndTime: end})
			}
		}
	}
	for _, d := range v.Drains() {
		if !state.DrainFinal(d.GetState()) {
			add("drain", d.GetId(), d.GetHosts(), "maintenance on "+strings.Join(d.GetHosts(), ", ")+": "+d.GetReason()+
				"; devservers there move to other hosts", d.GetCreateTime(), d.GetDeadline())
		}
	}
	for _, d := range v.Decoms() {
		if !state.DecomFinal(d.GetState()) {
			start := d.GetCreateTime()
			if d.GetAnnounceUntil() != nil {
				start = d.GetAnnounceUntil()
			}
			add("decom", d.GetId(), d.GetHosts(), strings.Join(d.GetHosts(), ", ")+" leave the fleet: "+d.GetReason()+
				"; devservers there move to other hosts", start, nil)
		}
	}
	return &v1.ListBannersResponse{Banners: out}, nil
}

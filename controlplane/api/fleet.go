package api

import (
	"context"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/state"
	"github.com/devfleet/devfleet/controlplane/validate"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Bounds on a temporary devserver's life.
const (
	MinDevserverLifetime = time.Hour
	MaxDevserverLifetime = 365 * 24 * time.Hour
)

func deleted(index uint64) *v1.DeleteResponse { return &v1.DeleteResponse{Index: index} }

func (s *Server) proposeDelete(ctx context.Context, cmd *fsmv1.Command) (*v1.DeleteResponse, error) {
	_, res, err := s.propose(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return deleted(res.Index), nil
}

// mask returns the paths of an update after checking them against what may change.
func mask(m *fieldmaskpb.FieldMask, allowed, defaults []string) (*fieldmaskpb.FieldMask, error) {
	paths, err := validate.UpdatePaths("update_mask", m, allowed, defaults)
	if err != nil {
		return nil, err
	}
	return &fieldmaskpb.FieldMask{Paths: paths}, nil
}

// Regions

func (s *Server) CreateRegion(ctx context.Context, req *v1.CreateRegionRequest) (*v1.Region, error) {
	r := state.NewRegion(req.GetRegion())
	if err := validate.Region("region", r); err != nil {
		return nil, err
	}
	return proposeAs[*v1.Region](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_CreateRegion{CreateRegion: &fsmv1.CreateRegion{Region: r}}})
}

func (s *Server) GetRegion(_ context.Context, req *v1.GetRegionRequest) (*v1.Region, error) {
	if err := validate.Name("name", req.GetName()); err != nil {
		return nil, err
	}
	return s.store.View().GetRegion(req.GetName())
}

func (s *Server) ListRegions(_ context.Context, req *v1.ListRegionsRequest) (*v1.ListRegionsResponse, error) {
	p, err := state.ParsePage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	rows, next := s.store.View().ListRegions(p)
	return &v1.ListRegionsResponse{Regions: rows, NextPageToken: next}, nil
}

func (s *Server) UpdateRegion(ctx context.Context, req *v1.UpdateRegionRequest) (*v1.Region, error) {
	if err := validate.Name("region.name", req.GetRegion().GetName()); err != nil {
		return nil, err
	}
	m, err := mask(req.GetUpdateMask(), validate.RegionUpdatable, validate.RegionUpdatable)
	if err != nil {
		return nil, err
	}
	for _, p := range m.GetPaths() {
		switch p {
		case "description":
			err = validate.Text("region.description", req.GetRegion().GetDescription(), validate.MaxDescLen)
		case "reserve":
			err = validate.Reserve("region.reserve", req.GetRegion().GetReserve())
		}
		if err != nil {
			return nil, err
		}
	}
	return proposeAs[*v1.Region](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_UpdateRegion{UpdateRegion: &fsmv1.UpdateRegion{Region: req.GetRegion(), UpdateMask: m}}})
}

func (s *Server) DeleteRegion(ctx context.Context, req *v1.DeleteRegionRequest) (*v1.DeleteResponse, error) {
	if err := validate.Name("name", req.GetName()); err != nil {
		return nil, err
	}
	return s.proposeDelete(ctx, &fsmv1.Command{Op: &fsmv1.Command_DeleteRegion{DeleteRegion: &fsmv1.DeleteRegion{Name: req.GetName()}}})
}

// Sites

func (s *Server) CreateSite(ctx context.Context, req *v1.CreateSiteRequest) (*v1.Site, error) {
	site := state.NewSite(req.GetSite())
	if err := validate.Site("site", site); err != nil {
		return nil, err
	}
	return proposeAs[*v1.Site](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_CreateSite{CreateSite: &fsmv1.CreateSite{Site: site}}})
}

func (s *Server) GetSite(_ context.Context, req *v1.GetSiteRequest) (*v1.Site, error) {
	if err := validate.Name("name", req.GetName()); err != nil {
		return nil, err
	}
	return s.store.View().GetSite(req.GetName())
}

// regionFilter checks a request's optional region filter: empty, or a region that exists.
func regionFilter(v *state.View, region string) error {
	if region == "" {
		return nil
	}
	if err := validate.OptionalName("region", region); err != nil {
		return err
	}
	_, err := v.GetRegion(region)
	return err
}

func (s *Server) ListSites(_ context.Context, req *v1.ListSitesRequest) (*v1.ListSitesResponse, error) {
	if err := validate.OptionalName("region", req.GetRegion()); err != nil {
		return nil, err
	}
	p, err := state.ParsePage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	v := s.store.View()
	if err := regionFilter(v, req.GetRegion()); err != nil {
		return nil, err
	}
	rows, next := v.ListSites(req.GetRegion(), p)
	return &v1.ListSitesResponse{Sites: rows, NextPageToken: next}, nil
}

func (s *Server) UpdateSite(ctx context.Context, req *v1.UpdateSiteRequest) (*v1.Site, error) {
	if err := validate.Name("site.name", req.GetSite().GetName()); err != nil {
		return nil, err
	}
	m, err := mask(req.GetUpdateMask(), validate.SiteUpdatable, validate.SiteUpdatable)
	if err != nil {
		return nil, err
	}
	if err := validate.Text("site.description", req.GetSite().GetDescription(), validate.MaxDescLen); err != nil {
		return nil, err
	}
	return proposeAs[*v1.Site](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_UpdateSite{UpdateSite: &fsmv1.UpdateSite{Site: req.GetSite(), UpdateMask: m}}})
}

func (s *Server) DeleteSite(ctx context.Context, req *v1.DeleteSiteRequest) (*v1.DeleteResponse, error) {
	if err := validate.Name("name", req.GetName()); err != nil {
		return nil, err
	}
	return s.proposeDelete(ctx, &fsmv1.Command{Op: &fsmv1.Command_DeleteSite{DeleteSite: &fsmv1.DeleteSite{Name: req.GetName()}}})
}

// Hosts

func (s *Server) CreateHost(ctx context.Context, req *v1.CreateHostRequest) (*v1.Host, error) {
	h := state.NewHost(req.GetHost())
	// What can be checked without the host first, so that bad input never dials anything.
	if err := validate.Name("host.name", h.GetName()); err != nil {
		return nil, err
	}
	if err := validate.Name("host.site", h.GetSite()); err != nil {
		return nil, err
	}
	if err := validate.LibvirtURI("host.libvirt_uri", h.GetLibvirtUri()); err != nil {
		return nil, err
	}
	out, err := s.createHost(ctx, h)
	if err != nil && h.GetLibvirtUri() != "" && s.cfg.Hypervisors != nil {
		// Do not keep dialing a host that was not recorded (unless it is recorded already).
		if cur, gerr := s.store.View().GetHost(h.GetName()); gerr != nil || cur.GetLibvirtUri() != h.GetLibvirtUri() {
			s.cfg.Hypervisors.Forget(h.GetName(), h.GetLibvirtUri())
		}
	}
	return out, err
}

func (s *Server) createHost(ctx context.Context, h *v1.Host) (*v1.Host, error) {
	if err := s.checkLibvirt(ctx, h); err != nil {
		return nil, err
	}
	if err := validate.Host("host", h); err != nil {
		return nil, err
	}
	return proposeAs[*v1.Host](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_CreateHost{CreateHost: &fsmv1.CreateHost{Host: h}}})
}

func (s *Server) GetHost(_ context.Context, req *v1.GetHostRequest) (*v1.Host, error) {
	if err := validate.Name("name", req.GetName()); err != nil {
		return nil, err
	}
	return s.store.View().GetHost(req.GetName())
}

func (s *Server) ListHosts(_ context.Context, req *v1.ListHostsRequest) (*v1.ListHostsResponse, error) {
	if err := validate.OptionalName("region", req.GetRegion()); err != nil {
		return nil, err
	}
	if err := validate.OptionalName("site", req.GetSite()); err != nil {
		return nil, err
	}
	if _, ok := v1.HostState_name[int32(req.GetState())]; !ok {
		return nil, apierror.Invalid("state", "unknown host state %d", req.GetState())
	}
	p, err := state.ParsePage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	v := s.store.View()
	if err := refsExist(v, req.GetRegion(), req.GetSite(), ""); err != nil {
		return nil, err
	}
	rows, next := v.ListHosts(state.HostFilter{Region: req.GetRegion(), Site: req.GetSite(), State: req.GetState()}, p)
	return &v1.ListHostsResponse{Hosts: rows, NextPageToken: next}, nil
}

// refsExist makes a filter on a missing region, site or host a NotFound rather than an empty
// list, so that a typo does not read as "nothing there".
func refsExist(v *state.View, region, site, host string) error {
	if region != "" {
		if _, err := v.GetRegion(region); err != nil {
			return err
		}
	}
	if site != "" {
		if _, err := v.GetSite(site); err != nil {
			return err
		}
	}
	if host != "" {
		if _, err := v.GetHost(host); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) UpdateHost(ctx context.Context, req *v1.UpdateHostRequest) (*v1.Host, error) {
	in := req.GetHost()
	if err := validate.Name("host.name", in.GetName()); err != nil {
		return nil, err
	}
	m, err := mask(req.GetUpdateMask(), validate.HostUpdatable, validate.HostUpdatable)
	if err != nil {
		return nil, err
	}
	for _, p := range m.GetPaths() {
		switch p {
		case "capacity":
			err = validate.Resources("host.capacity", in.GetCapacity(), true)
		case "reserved":
			err = validate.Resources("host.reserved", in.GetReserved(), false)
		case "overcommit":
			err = validate.Overcommit("host.overcommit", in.GetOvercommit())
		case "labels":
			err = validate.Labels("host.labels", in.GetLabels())
		case "libvirt_uri":
			err = validate.LibvirtURI("host.libvirt_uri", in.GetLibvirtUri())
		}
		if err != nil {
			return nil, err
		}
	}
	return proposeAs[*v1.Host](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_UpdateHost{UpdateHost: &fsmv1.UpdateHost{Host: in, UpdateMask: m}}})
}

func (s *Server) DeleteHost(ctx context.Context, req *v1.DeleteHostRequest) (*v1.DeleteResponse, error) {
	if err := validate.Name("name", req.GetName()); err != nil {
		return nil, err
	}
	return s.proposeDelete(ctx, &fsmv1.Command{Op: &fsmv1.Command_DeleteHost{DeleteHost: &fsmv1.DeleteHost{Name: req.GetName()}}})
}

func (s *Server) CordonHost(ctx context.Context, req *v1.CordonHostRequest) (*v1.Host, error) {
	if err := validate.Name("name", req.GetName()); err != nil {
		return nil, err
	}
	if err := validate.Reason("reason", req.GetReason()); err != nil {
		return nil, err
	}
	return proposeAs[*v1.Host](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_CordonHost{CordonHost: &fsmv1.CordonHost{Name: req.GetName(), Reason: req.GetReason()}}})
}

func (s *Server) UncordonHost(ctx context.Context, req *v1.UncordonHostRequest) (*v1.Host, error) {
	if err := validate.Name("name", req.GetName()); err != nil {
		return nil, err
	}
	if err := validate.Text("reason", req.GetReason(), validate.MaxReasonLen); err != nil {
		return nil, err
	}
	return proposeAs[*v1.Host](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_UncordonHost{UncordonHost: &fsmv1.UncordonHost{Name: req.GetName(), Reason: req.GetReason()}}})
}

// Flavors

func (s *Server) CreateFlavor(ctx context.Context, req *v1.CreateFlavorRequest) (*v1.Flavor, error) {
	f := state.NewFlavor(req.GetFlavor())
	if err := validate.Flavor("flavor", f); err != nil {
		return nil, err
	}
	return proposeAs[*v1.Flavor](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: f}}})
}

func (s *Server) GetFlavor(_ context.Context, req *v1.GetFlavorRequest) (*v1.Flavor, error) {
	if err := validate.Name("name", req.GetName()); err != nil {
		return nil, err
	}
	return s.store.View().GetFlavor(req.GetName())
}

func (s *Server) ListFlavors(_ context.Context, req *v1.ListFlavorsRequest) (*v1.ListFlavorsResponse, error) {
	p, err := state.ParsePage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	rows, next := s.store.View().ListFlavors(p)
	return &v1.ListFlavorsResponse{Flavors: rows, NextPageToken: next}, nil
}

func (s *Server) UpdateFlavor(ctx context.Context, req *v1.UpdateFlavorRequest) (*v1.Flavor, error) {
	in := req.GetFlavor()
	if err := validate.Name("flavor.name", in.GetName()); err != nil {
		return nil, err
	}
	m, err := mask(req.GetUpdateMask(), validate.FlavorUpdatable, validate.FlavorDefault)
	if err != nil {
		return nil, err
	}
	for _, p := range m.GetPaths() {
		switch p {
		case "description":
			err = validate.Text("flavor.description", in.GetDescription(), validate.MaxDescLen)
		case "resources":
			err = validate.Resources("flavor.resources", in.GetResources(), true)
		case "allowed_regions":
			err = validate.Regions("flavor.allowed_regions", in.GetAllowedRegions())
		}
		if err != nil {
			return nil, err
		}
	}
	return proposeAs[*v1.Flavor](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_UpdateFlavor{UpdateFlavor: &fsmv1.UpdateFlavor{Flavor: in, UpdateMask: m}}})
}

func (s *Server) DeleteFlavor(ctx context.Context, req *v1.DeleteFlavorRequest) (*v1.DeleteResponse, error) {
	if err := validate.Name("name", req.GetName()); err != nil {
		return nil, err
	}
	return s.proposeDelete(ctx, &fsmv1.Command{Op: &fsmv1.Command_DeleteFlavor{DeleteFlavor: &fsmv1.DeleteFlavor{Name: req.GetName()}}})
}

// Devservers

// CreateDevserver records a devserver. The leader stamps its ID and, for a temporary one, its
// expiry (from expires_in, relative to the leader's clock).
func (s *Server) CreateDevserver(ctx context.Context, req *v1.CreateDevserverRequest) (*v1.Devserver, error) {
	d := state.NewDevserver(req.GetDevserver())
	d.Id = uuid.NewString()
	if err := stampLifespan(d, req, time.Now()); err != nil {
		return nil, err
	}
	if err := validate.Devserver("devserver", d); err != nil {
		return nil, err
	}
	if d.GetHost() != "" {
		if req.GetSite() != "" || req.GetSpread() != v1.Spread_SPREAD_NONE {
			return nil, apierror.Invalid("site", "site and spread guide placement; leave them out when devserver.host is given")
		}
		return proposeAs[*v1.Devserver](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_CreateDevserver{CreateDevserver: &fsmv1.CreateDevserver{Devserver: d}}})
	}
	return s.placeAndCreate(ctx, d, req)
}

// placeAndCreate places a devserver through capacity and records it on the chosen host. The
// placement is held as pending until the command applies, so concurrent creates see it; if the
// host filled up meanwhile (the FSM checks the fit again), it places again, a few times.
func (s *Server) placeAndCreate(ctx context.Context, d *v1.Devserver, req *v1.CreateDevserverRequest) (*v1.Devserver, error) {
	return proposePlaced[*v1.Devserver](ctx, s,
		func() (capacity.Decision, *v1.Flavor, error) {
			return s.place(s.store.View(), placeArgs{
				flavor: d.GetFlavor(), region: d.GetRegion(), site: req.GetSite(), owner: d.GetOwner(), spread: req.GetSpread(), prefix: "devserver.",
			})
		},
		func(dec capacity.Decision) error {
			return apierror.Blocked("no room for flavor %s: %s", d.GetFlavor(), dec.Explanation)
		},
		func(host string) *fsmv1.Command {
			placed := proto.Clone(d).(*v1.Devserver)
			placed.Host = host
			return &fsmv1.Command{Op: &fsmv1.Command_CreateDevserver{CreateDevserver: &fsmv1.CreateDevserver{Devserver: placed}}}
		})
}

// stampLifespan resolves a create request's lifespan: an explicit lifespan, or temporary when
// an expiry is given. A devserver never gets a lifespan its creator did not ask for.
func stampLifespan(d *v1.Devserver, req *v1.CreateDevserverRequest, now time.Time) error {
	in := req.GetExpiresIn()
	if in != nil {
		if err := in.CheckValid(); err != nil {
			return apierror.Invalid("expires_in", "%v", err)
		}
		if d.GetExpireTime() != nil {
			return apierror.Invalid("expires_in", "give expires_in or devserver.expire_time, not both")
		}
	}
	if d.Lifespan == v1.Lifespan_LIFESPAN_UNSPECIFIED {
		if in == nil && d.GetExpireTime() == nil {
			return apierror.Invalid("devserver.lifespan", "choose LIFESPAN_PERMANENT, or give expires_in for a temporary devserver")
		}
		d.Lifespan = v1.Lifespan_LIFESPAN_TEMPORARY
	}
	if d.Lifespan != v1.Lifespan_LIFESPAN_TEMPORARY {
		if in != nil {
			return apierror.Invalid("expires_in", "must be empty for a permanent devserver")
		}
		return nil
	}
	if in != nil {
		d.ExpireTime = timestamppb.New(now.Add(in.AsDuration()))
	}
	if d.GetExpireTime() == nil {
		return apierror.Invalid("expires_in", "a temporary devserver needs expires_in or devserver.expire_time")
	}
	life := d.GetExpireTime().AsTime().Sub(now)
	if life < MinDevserverLifetime || life > MaxDevserverLifetime {
		return apierror.Invalid("expires_in", "a devserver must live between %s and %s, got %s", MinDevserverLifetime, MaxDevserverLifetime, life.Round(time.Second))
	}
	return nil
}

func (s *Server) GetDevserver(_ context.Context, req *v1.GetDevserverRequest) (*v1.Devserver, error) {
	if err := validate.Name("name", req.GetName()); err != nil {
		return nil, err
	}
	return s.store.View().GetDevserver(req.GetName())
}

func (s *Server) ListDevservers(_ context.Context, req *v1.ListDevserversRequest) (*v1.ListDevserversResponse, error) {
	for _, f := range []struct{ field, v string }{{"region", req.GetRegion()}, {"site", req.GetSite()}, {"host", req.GetHost()}} {
		if err := validate.OptionalName(f.field, f.v); err != nil {
			return nil, err
		}
	}
	if req.GetOwner() != "" {
		if err := validate.User("owner", req.GetOwner()); err != nil {
			return nil, err
		}
	}
	p, err := state.ParsePage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	v := s.store.View()
	if err := refsExist(v, req.GetRegion(), req.GetSite(), req.GetHost()); err != nil {
		return nil, err
	}
	rows, next := v.ListDevservers(state.DevserverFilter{Region: req.GetRegion(), Site: req.GetSite(), Host: req.GetHost(), Owner: req.GetOwner()}, p)
	return &v1.ListDevserversResponse{Devservers: rows, NextPageToken: next}, nil
}

func (s *Server) UpdateDevserver(ctx context.Context, req *v1.UpdateDevserverRequest) (*v1.Devserver, error) {
	in := req.GetDevserver()
	if err := validate.Name("devserver.name", in.GetName()); err != nil {
		return nil, err
	}
	m, err := mask(req.GetUpdateMask(), validate.DevserverUpdatable, validate.DevserverUpdatable)
	if err != nil {
		return nil, err
	}
	for _, p := range m.GetPaths() {
		switch p {
		case "sharers":
			for _, sh := range in.GetSharers() {
				if err := validate.User("devserver.sharers", sh); err != nil {
					return nil, err
				}
			}
		case "expire_time":
			if in.GetExpireTime() == nil {
				continue
			}
			if err := in.GetExpireTime().CheckValid(); err != nil {
				return nil, apierror.Invalid("devserver.expire_time", "%v", err)
			}
			// The same bound as at creation, counted from now: an extension cannot make a
			// temporary devserver outlive what a new one may.
			life := time.Until(in.GetExpireTime().AsTime())
			if life <= 0 || life > MaxDevserverLifetime {
				return nil, apierror.Invalid("devserver.expire_time", "must be in the future and at most %s from now, got %s", MaxDevserverLifetime, life.Round(time.Second))
			}
		}
	}
	return proposeAs[*v1.Devserver](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_UpdateDevserver{UpdateDevserver: &fsmv1.UpdateDevserver{
		Devserver: in, UpdateMask: m, ExpectedModifyIndex: req.GetExpectedModifyIndex()}}})
}

func (s *Server) DeleteDevserver(ctx context.Context, req *v1.DeleteDevserverRequest) (*v1.DeleteResponse, error) {
	if err := validate.Name("name", req.GetName()); err != nil {
		return nil, err
	}
	return s.proposeDelete(ctx, &fsmv1.Command{Op: &fsmv1.Command_DeleteDevserver{DeleteDevserver: &fsmv1.DeleteDevserver{Name: req.GetName()}}})
}

func (s *Server) StopDevserver(ctx context.Context, req *v1.StopDevserverRequest) (*v1.Devserver, error) {
	return s.setPower(ctx, req.GetName(), v1.Power_POWER_OFF)
}

func (s *Server) StartDevserver(ctx context.Context, req *v1.StartDevserverRequest) (*v1.Devserver, error) {
	return s.setPower(ctx, req.GetName(), v1.Power_POWER_ON)
}

// setPower records what the owner wants; the provisioner shuts the guest down or starts it.
func (s *Server) setPower(ctx context.Context, name string, p v1.Power) (*v1.Devserver, error) {
	if err := validate.Name("name", name); err != nil {
		return nil, err
	}
	return proposeAs[*v1.Devserver](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_UpdateDevserver{UpdateDevserver: &fsmv1.UpdateDevserver{
		Devserver:  &v1.Devserver{Name: name, Power: p},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"power"}},
	}}})
}

func (s *Server) ListNotices(_ context.Context, req *v1.ListNoticesRequest) (*v1.ListNoticesResponse, error) {
	if err := validate.User("owner", req.GetOwner()); err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	if limit < 0 || limit > state.MaxNoticesPerOwner {
		return nil, apierror.Invalid("limit", "must be between 0 and %d, got %d", state.MaxNoticesPerOwner, limit)
	}
	if limit == 0 {
		limit = state.MaxNoticesPerOwner
	}
	ns := s.store.View().NoticesOf(req.GetOwner())
	return &v1.ListNoticesResponse{Notices: ns[:min(limit, len(ns))]}, nil
}

package api

import (
	"context"
	"slices"

	"github.com/google/uuid"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/state"
	"github.com/devfleet/devfleet/controlplane/validate"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func (s *Server) CreateProfile(ctx context.Context, req *v1.CreateProfileRequest) (*v1.ContainerProfile, error) {
	if req.GetProfile() == nil {
		return nil, apierror.Invalid("profile", "must be set")
	}
	return proposeAs[*v1.ContainerProfile](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_CreateProfile{CreateProfile: &fsmv1.CreateProfile{Profile: req.GetProfile()}}})
}

func (s *Server) ListProfiles(context.Context, *v1.ListProfilesRequest) (*v1.ListProfilesResponse, error) {
	return &v1.ListProfilesResponse{Profiles: s.store.View().Profiles()}, nil
}

func (s *Server) DeleteProfile(ctx context.Context, req *v1.DeleteProfileRequest) (*v1.ContainerProfile, error) {
	if err := validate.Name("name", req.GetName()); err != nil {
		return nil, err
	}
	return proposeAs[*v1.ContainerProfile](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_DeleteProfile{DeleteProfile: &fsmv1.DeleteProfile{Name: req.GetName()}}})
}

func (s *Server) SetPool(ctx context.Context, req *v1.SetPoolRequest) (*v1.ContainerPool, error) {
	return proposeAs[*v1.ContainerPool](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_SetPool{SetPool: &fsmv1.SetPool{Pool: &v1.ContainerPool{
		Region: req.GetRegion(), Profile: req.GetProfile(), Target: req.GetTarget()}}}})
}

func (s *Server) ListPools(context.Context, *v1.ListPoolsRequest) (*v1.ListPoolsResponse, error) {
	v := s.store.View()
	out := &v1.ListPoolsResponse{}
	for _, p := range v.Pools() {
		st := &v1.PoolStatus{Pool: p}
		for _, c := range v.ContainersIn(p.GetRegion(), p.GetProfile()) {
			switch {
			case c.GetClaimedBy() != "":
				st.Claimed++
			case state.Warm(c):
				st.Warm++
			case c.GetState() == v1.ContainerState_CONTAINER_STATE_PROVISIONING:
				st.Warming++
			}
		}
		out.Pools = append(out.Pools, st)
	}
	return out, nil
}

// ClaimContainer hands over the pool's oldest warm container, or, when the pool has none,
// places and records a new one for the claim.
func (s *Server) ClaimContainer(ctx context.Context, req *v1.ClaimContainerRequest) (*v1.ClaimContainerResponse, error) {
	if err := validate.Name("profile", req.GetProfile()); err != nil {
		return nil, err
	}
	if err := validate.Name("region", req.GetRegion()); err != nil {
		return nil, err
	}
	if err := validate.User("owner", req.GetOwner()); err != nil {
		return nil, err
	}
	v := s.store.View()
	profile, err := v.GetProfile(req.GetProfile())
	if err != nil {
		return nil, err
	}
	if _, err := v.GetRegion(req.GetRegion()); err != nil {
		return nil, err
	}
	const attempts = 4
	for range attempts {
		name := s.pickWarm(s.store.View(), req.GetRegion(), req.GetProfile())
		if name == "" {
			break
		}
		c, err := proposeAs[*v1.Container](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_ClaimContainer{ClaimContainer: &fsmv1.ClaimContainer{Name: name, Owner: req.GetOwner()}}})
		s.doneClaiming(name)
		if err == nil {
			return &v1.ClaimContainerResponse{Container: c, PoolHit: true}, nil
		}
		if apierror.KindOf(err) != apierror.FailedPrecondition {
			return nil, err
		}
		// Released or reaped meanwhile: take the next one.
	}
	c, err := s.createContainer(ctx, profile, req.GetRegion(), req.GetOwner())
	if err != nil {
		return nil, err
	}
	return &v1.ClaimContainerResponse{Container: c}, nil
}

// pickWarm reserves the oldest warm container of a pool that no other claim is handing over, on
// a host that takes work (one being drained hands out no containers).
func (s *Server) pickWarm(v *state.View, region, profile string) string {
	warm := slices.DeleteFunc(v.ContainersIn(region, profile), func(c *v1.Container) bool {
		h, err := v.GetHost(c.GetHost())
		return !state.Warm(c) || err != nil || h.GetState() != v1.HostState_HOST_STATE_ACTIVE
	})
	slices.SortFunc(warm, func(a, b *v1.Container) int { return int(int64(a.GetCreateIndex()) - int64(b.GetCreateIndex())) })
	s.claimingMu.Lock()
	defer s.claimingMu.Unlock()
	for _, c := range warm {
		if !s.claiming[c.GetName()] {
			s.claiming[c.GetName()] = true
			return c.GetName()
		}
	}
	return ""
}

func (s *Server) doneClaiming(name string) {
	s.claimingMu.Lock()
	defer s.claimingMu.Unlock()
	delete(s.claiming, name)
}

// createContainer places a container of the profile in the region (spreading containers over
// hosts) and records it, for owner or, with owner empty, warm for the pool.
func (s *Server) createContainer(ctx context.Context, p *v1.ContainerProfile, region, owner string) (*v1.Container, error) {
	f := state.ProfileFlavor(p)
	return proposePlaced[*v1.Container](ctx, s,
		func() (capacity.Decision, *v1.Flavor, error) {
			return s.hosts.Place(&capacity.Request{Flavor: f, Region: region, Pending: s.pending.snapshot(),
				Scorers: []capacity.Weighted{{Scorer: capacity.SpreadLoad, Weight: 1}}}), f, nil
		},
		func(d capacity.Decision) error {
			return apierror.Blocked("no room for a container of profile %s: %s", p.GetName(), d.Explanation)
		},
		func(host string) *fsmv1.Command {
			id := uuid.NewString()
			return &fsmv1.Command{Op: &fsmv1.Command_CreateContainer{CreateContainer: &fsmv1.CreateContainer{Container: &v1.Container{
				Name: state.ContainerName(id), Id: id, Profile: p.GetName(), Region: region, Host: host, ClaimedBy: owner}}}}
		})
}

func (s *Server) ReleaseContainer(ctx context.Context, req *v1.ReleaseContainerRequest) (*v1.Container, error) {
	if err := validate.Name("name", req.GetName()); err != nil {
		return nil, err
	}
	return proposeAs[*v1.Container](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_ReleaseContainer{ReleaseContainer: &fsmv1.ReleaseContainer{
		Name: req.GetName(), Reason: "released by its owner"}}})
}

func (s *Server) GetContainer(_ context.Context, req *v1.GetContainerRequest) (*v1.Container, error) {
	if err := validate.Name("name", req.GetName()); err != nil {
		return nil, err
	}
	return s.store.View().GetContainer(req.GetName())
}

func (s *Server) ListContainers(_ context.Context, req *v1.ListContainersRequest) (*v1.ListContainersResponse, error) {
	for _, f := range []struct{ field, v string }{{"region", req.GetRegion()}, {"profile", req.GetProfile()}} {
		if err := validate.OptionalName(f.field, f.v); err != nil {
			return nil, err
		}
	}
	if req.GetClaimedBy() != "" {
		if err := validate.User("claimed_by", req.GetClaimedBy()); err != nil {
			return nil, err
		}
	}
	out := &v1.ListContainersResponse{}
	for _, c := range s.store.View().Containers() {
		if (req.GetRegion() == "" || c.GetRegion() == req.GetRegion()) && (req.GetProfile() == "" || c.GetProfile() == req.GetProfile()) &&
			(req.GetClaimedBy() == "" || c.GetClaimedBy() == req.GetClaimedBy()) {
			out.Containers = append(out.Containers, c)
		}
	}
	return out, nil
}

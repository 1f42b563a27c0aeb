package api

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/metadata"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/state"
	"github.com/devfleet/devfleet/controlplane/validate"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// AsHeader is the request metadata that says who calls, until authentication lands.
const AsHeader = "devfleet-as"

// caller returns who the request says it comes from, or PermissionDenied when it says nothing.
func caller(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	as := md.Get(AsHeader)
	if len(as) == 0 || as[0] == "" {
		return "", &apierror.Error{Kind: apierror.PermissionDenied, Field: AsHeader,
			Reason: "say who you are (devfleet --as USER): only a devserver's owner, a sharer or an operator may move it"}
	}
	if err := validate.User(AsHeader, as[0]); err != nil {
		return "", err
	}
	return as[0], nil
}

// mayMove checks that who may move d: its owner, a sharer, or an operator.
func (s *Server) mayMove(who string, d *v1.Devserver) error {
	if who == d.GetOwner() || slices.Contains(d.GetSharers(), who) || slices.Contains(s.cfg.Operators, who) {
		return nil
	}
	return &apierror.Error{Kind: apierror.PermissionDenied, Field: AsHeader,
		Reason: who + " is not the owner of devserver " + d.GetName() + ", a sharer of it, or an operator"}
}

// MigrateDevserver records a move; the leader's migration controller runs it. A move within the
// region, keeping the flavor, is live unless cold is asked; another flavor (a resize) or region
// is cold.
func (s *Server) MigrateDevserver(ctx context.Context, req *v1.MigrateDevserverRequest) (*v1.Migration, error) {
	if err := validate.Name("name", req.GetName()); err != nil {
		return nil, err
	}
	for _, f := range [][2]string{{"to_host", req.GetToHost()}, {"region", req.GetRegion()}, {"flavor", req.GetFlavor()}} {
		if err := validate.OptionalName(f[0], f[1]); err != nil {
			return nil, err
		}
	}
	if nb := req.GetNotBefore(); nb != nil {
		if err := nb.CheckValid(); err != nil {
			return nil, apierror.Invalid("not_before", "%v", err)
		}
		if nb.AsTime().After(time.Now().Add(maxNotBefore)) {
			return nil, apierror.Invalid("not_before", "is more than %d days ahead", int(maxNotBefore.Hours()/24))
		}
	}
	reason := req.GetReason()
	if reason == v1.MigrationReason_MIGRATION_REASON_UNSPECIFIED {
		reason = v1.MigrationReason_MIGRATION_REASON_USER
	}
	if _, ok := v1.MigrationReason_name[int32(reason)]; !ok {
		return nil, apierror.Invalid("reason", "unknown reason %d", reason)
	}
	who, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var d *v1.Devserver
	// read returns the devserver as it is now, if who may move it, and the flavor it moves to.
	read := func() (*v1.Flavor, error) {
		v := s.store.View()
		var err error
		if d, err = v.GetDevserver(req.GetName()); err != nil {
			return nil, err
		}
		if err := s.mayMove(who, d); err != nil {
			return nil, err
		}
		return v.GetFlavor(cmp.Or(req.GetFlavor(), d.GetFlavor()))
	}
	build := func(dest string) *fsmv1.Command {
		return &fsmv1.Command{Op: &fsmv1.Command_CreateMigration{CreateMigration: &fsmv1.CreateMigration{Migration: &v1.Migration{
			Id: uuid.NewString(), Devserver: d.GetName(), DevserverId: d.GetId(), DestHost: dest, Reason: reason,
			Priority: req.GetPriority(), Policy: req.GetPolicy(), RequestedBy: who, Cold: req.GetCold(),
			DestFlavor: req.GetFlavor(), DestRegion: req.GetRegion(), NotBefore: req.GetNotBefore()}}}}
	}
	if req.GetToHost() != "" {
		if _, err := read(); err != nil {
			return nil, err
		}
		return proposeAs[*v1.Migration](ctx, s, build(req.GetToHost()))
	}
	if req.GetFlavor() != "" && req.GetRegion() == "" {
		// A resize stays on its host when that has room for the new flavor.
		if _, err := read(); err != nil {
			return nil, err
		}
		m, err := proposeAs[*v1.Migration](ctx, s, build(d.GetHost()))
		if !apierror.HasCode(err, apierror.CodeNoRoom) {
			return m, err
		}
	}
	// No destination given: capacity picks one in the region it moves to, away from its host.
	return proposePlaced[*v1.Migration](ctx, s,
		func() (capacity.Decision, *v1.Flavor, error) {
			f, err := read()
			if err != nil {
				return capacity.Decision{}, nil, err
			}
			region := cmp.Or(req.GetRegion(), d.GetRegion())
			if _, err := s.store.View().GetRegion(region); err != nil {
				return capacity.Decision{}, nil, err
			}
			return s.hosts.Place(&capacity.Request{Flavor: f, Region: region, Pending: s.pending.snapshot(),
				Spread: capacity.SpreadHosts, Owner: d.GetOwner(), Avoid: capacity.Avoid{Hosts: map[string]bool{d.GetHost(): true}}}), f, nil
		},
		func(dec capacity.Decision) error {
			return apierror.Blocked("no host can take devserver %s: %s", d.GetName(), dec.Explanation)
		},
		build)
}

// maxNotBefore bounds how far ahead a move may be booked.
const maxNotBefore = 30 * 24 * time.Hour

func (s *Server) GetMigration(_ context.Context, req *v1.GetMigrationRequest) (*v1.Migration, error) {
	if req.GetId() == "" {
		return nil, apierror.Invalid("id", "must not be empty")
	}
	return s.store.View().GetMigration(req.GetId())
}

func (s *Server) ListMigrations(_ context.Context, req *v1.ListMigrationsRequest) (*v1.ListMigrationsResponse, error) {
	if err := validate.OptionalName("devserver", req.GetDevserver()); err != nil {
		return nil, err
	}
	v := s.store.View()
	ms := v.Migrations()
	if req.GetDevserver() != "" {
		ms = v.MigrationsOf(req.GetDevserver())
	}
	if req.GetActive() {
		ms = slices.DeleteFunc(ms, func(m *v1.Migration) bool { return state.Final(m.GetPhase()) })
	}
	slices.SortFunc(ms, func(a, b *v1.Migration) int { return int(int64(a.GetCreateIndex()) - int64(b.GetCreateIndex())) })
	return &v1.ListMigrationsResponse{Migrations: ms}, nil
}

// AbortMigration asks the controller to stop a migration; who may move the devserver may abort.
func (s *Server) AbortMigration(ctx context.Context, req *v1.AbortMigrationRequest) (*v1.Migration, error) {
	if req.GetId() == "" {
		return nil, apierror.Invalid("id", "must not be empty")
	}
	who, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	v := s.store.View()
	m, err := v.GetMigration(req.GetId())
	if err != nil {
		return nil, err
	}
	if d, err := v.GetDevserver(m.GetDevserver()); err == nil {
		if err := s.mayMove(who, d); err != nil {
			return nil, err
		}
	}
	return proposeAs[*v1.Migration](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_RequestMigrationAbort{RequestMigrationAbort: &fsmv1.RequestMigrationAbort{Id: req.GetId()}}})
}

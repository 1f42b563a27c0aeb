package api

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/state"
	"github.com/devfleet/devfleet/controlplane/validate"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// DefaultAnnounce is how long owners are warned before a decommission moves anything.
const DefaultAnnounce = 72 * time.Hour

// StartDecom records a decommission of a host or a site; the leader's Decominator runs it.
func (s *Server) StartDecom(ctx context.Context, req *v1.StartDecomRequest) (*v1.Decom, error) {
	switch {
	case req.GetHost() == "" && req.GetSite() == "":
		return nil, apierror.Invalid("host", "name a host, or a site")
	case req.GetHost() != "" && req.GetSite() != "":
		return nil, apierror.Invalid("host", "give a host or a site, not both")
	case strings.TrimSpace(req.GetReason()) == "":
		return nil, apierror.Invalid("reason", "say why (owners and the record see it)")
	case req.GetNow() && req.GetAnnounce() != nil:
		return nil, apierror.Invalid("announce", "an announce period and now exclude each other")
	}
	if err := validate.OptionalName("host", req.GetHost()); err != nil {
		return nil, err
	}
	if err := validate.OptionalName("site", req.GetSite()); err != nil {
		return nil, err
	}
	if err := validate.Reason("reason", req.GetReason()); err != nil {
		return nil, err
	}
	announce := DefaultAnnounce
	if a := req.GetAnnounce(); a != nil {
		if err := a.CheckValid(); err != nil || a.AsDuration() < 0 {
			return nil, apierror.Invalid("announce", "must be a duration of 0 or more")
		}
		announce = a.AsDuration()
	}
	who, err := s.mayDrain(ctx)
	if err != nil {
		return nil, err
	}
	v := s.store.View()
	var hosts []string
	if req.GetSite() != "" {
		if _, err := v.GetSite(req.GetSite()); err != nil {
			return nil, err
		}
		for _, h := range v.HostsAt(req.GetSite()) {
			if h.GetState() != v1.HostState_HOST_STATE_RETIRED {
				hosts = append(hosts, h.GetName())
			}
		}
		if len(hosts) == 0 {
			return nil, apierror.Blocked("site %q has no host left to decommission", req.GetSite())
		}
	} else {
		hosts = []string{req.GetHost()}
	}
	d := &v1.Decom{Id: uuid.NewString(), Hosts: hosts, Site: req.GetSite(), Reason: req.GetReason(), RequestedBy: who}
	if !req.GetNow() && announce > 0 {
		d.AnnounceUntil = timestamppb.New(time.Now().Add(announce))
	}
	return proposeAs[*v1.Decom](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_StartDecom{StartDecom: &fsmv1.StartDecom{Decom: d}}})
}

func (s *Server) GetDecom(_ context.Context, req *v1.GetDecomRequest) (*v1.Decom, error) {
	if req.GetId() == "" {
		return nil, apierror.Invalid("id", "must not be empty")
	}
	return s.store.View().GetDecom(req.GetId())
}

func (s *Server) ListDecoms(_ context.Context, req *v1.ListDecomsRequest) (*v1.ListDecomsResponse, error) {
	ds := s.store.View().Decoms()
	if req.GetActive() {
		ds = slices.DeleteFunc(ds, func(d *v1.Decom) bool { return state.DecomFinal(d.GetState()) })
	}
	slices.SortFunc(ds, func(a, b *v1.Decom) int { return int(int64(a.GetCreateIndex()) - int64(b.GetCreateIndex())) })
	return &v1.ListDecomsResponse{Decoms: ds}, nil
}

func (s *Server) AbortDecom(ctx context.Context, req *v1.AbortDecomRequest) (*v1.Decom, error) {
	if req.GetId() == "" {
		return nil, apierror.Invalid("id", "must not be empty")
	}
	if _, err := s.mayDrain(ctx); err != nil {
		return nil, err
	}
	return proposeAs[*v1.Decom](ctx, s, &fsmv1.Command{Op: &fsmv1.Command_RequestDecomAbort{RequestDecomAbort: &fsmv1.RequestDecomAbort{Id: req.GetId()}}})
}

// ListDeadLetters returns the notifications the leader could not deliver, oldest first.
func (s *Server) ListDeadLetters(_ context.Context, _ *v1.ListDeadLettersRequest) (*v1.ListDeadLettersResponse, error) {
	return &v1.ListDeadLettersResponse{DeadLetters: s.store.View().DeadLetters()}, nil
}

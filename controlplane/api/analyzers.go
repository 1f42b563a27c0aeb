package api

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/devfleet/devfleet/controlplane/analyzer"
	"github.com/devfleet/devfleet/controlplane/apierror"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// analyzeTimeout bounds one analysis, chained ones included.
const analyzeTimeout = 30 * time.Second

// source is this node's state and history as an analyzer source.
func (s *Server) source() (*analyzer.Live, error) {
	if s.cfg.Events == nil {
		return nil, &apierror.Error{Kind: apierror.Unavailable, Reason: "this node keeps no event history"}
	}
	return analyzer.NewLive(s.store, s.cfg.Events, nil).WithFeed(s.cfg.Feed), nil
}

func (s *Server) analyzers() (*analyzer.Registry, error) {
	if s.cfg.Analyzers == nil {
		return nil, &apierror.Error{Kind: apierror.Unavailable, Reason: "this node runs no analyzers"}
	}
	return s.cfg.Analyzers, nil
}

// ListAnalyzers implements AnalyzerService.
func (s *Server) ListAnalyzers(context.Context, *v1.ListAnalyzersRequest) (*v1.ListAnalyzersResponse, error) {
	reg, err := s.analyzers()
	if err != nil {
		return nil, err
	}
	return &v1.ListAnalyzersResponse{Analyzers: reg.Infos()}, nil
}

// RunAnalyzer implements AnalyzerService: on this node's state and history (a follower's may
// lag the leader's by a few entries).
func (s *Server) RunAnalyzer(ctx context.Context, req *v1.RunAnalyzerRequest) (*v1.AnalysisReport, error) {
	reg, err := s.analyzers()
	if err != nil {
		return nil, err
	}
	if req.GetName() == "" {
		return nil, apierror.Invalid("name", "name an analyzer (devfleet analyze list)")
	}
	src, err := s.source()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, analyzeTimeout)
	defer cancel()
	r, err := reg.Run(ctx, src, req.GetName(), req.GetInputs())
	if err != nil {
		return nil, analysisError(req.GetName(), err)
	}
	return r, nil
}

// analysisError keeps the API's own errors (bad input, not found) and says the rest failed in
// the analyzer.
func analysisError(name string, err error) error {
	var ae *apierror.Error
	switch {
	case errors.As(err, &ae):
		return err
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "analyzer %s ran longer than %s", name, analyzeTimeout)
	}
	if st := watchError(err); st != err {
		return st
	}
	return status.Errorf(codes.Internal, "analyzer %s failed: %v", name, err)
}

// Record implements AnalyzerService: the state at since, then the events since.
func (s *Server) Record(req *v1.RecordRequest, stream grpc.ServerStreamingServer[v1.RecordingChunk]) error {
	if req.GetSince() == nil {
		return apierror.Invalid("since", "say where the recording starts")
	}
	if err := req.GetSince().CheckValid(); err != nil {
		return apierror.Invalid("since", "%v", err)
	}
	since := req.GetSince().AsTime()
	if since.After(time.Now()) {
		return apierror.Invalid("since", "is in the future")
	}
	src, err := s.source()
	if err != nil {
		return err
	}
	if err := src.Record(stream.Context(), since, s.cfg.Self.ID, stream.Send); err != nil {
		return analysisError("record", err)
	}
	return nil
}

// ListAlerts implements AlertService.
func (s *Server) ListAlerts(_ context.Context, req *v1.ListAlertsRequest) (*v1.ListAlertsResponse, error) {
	return &v1.ListAlertsResponse{Alerts: s.store.View().Alerts(req.GetAll())}, nil
}

// GetAlert implements AlertService.
func (s *Server) GetAlert(_ context.Context, req *v1.GetAlertRequest) (*v1.Alert, error) {
	if req.GetId() == "" {
		return nil, apierror.Invalid("id", "must not be empty")
	}
	a := s.store.View().Alert(req.GetId())
	if a == nil {
		return nil, apierror.Missing("alert", req.GetId())
	}
	return a, nil
}

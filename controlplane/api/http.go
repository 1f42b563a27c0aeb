package api

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/devfleet/devfleet/proto/apidoc"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// JSON is how devfleet writes API objects as JSON, over REST and in `-o json`: proto field
// names, so that scripts use the same names as the .proto files.
var JSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false}

// HTTPHandler serves REST (the gateway, dialing this node's own gRPC address so that every call
// takes the same path), /metrics, /healthz, /readyz and /openapi.json.
func (s *Server) HTTPHandler(ctx context.Context, grpcAddr string, gatherer prometheus.Gatherer) (http.Handler, error) {
	gw := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			MarshalOptions:   JSON,
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}),
	)
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if err := v1.RegisterFleetServiceHandlerFromEndpoint(ctx, gw, grpcAddr, opts); err != nil {
		return nil, err
	}
	if err := v1.RegisterClusterServiceHandlerFromEndpoint(ctx, gw, grpcAddr, opts); err != nil {
		return nil, err
	}
	if err := v1.RegisterCapacityServiceHandlerFromEndpoint(ctx, gw, grpcAddr, opts); err != nil {
		return nil, err
	}
	if err := v1.RegisterContainerServiceHandlerFromEndpoint(ctx, gw, grpcAddr, opts); err != nil {
		return nil, err
	}
	if err := v1.RegisterMigrationServiceHandlerFromEndpoint(ctx, gw, grpcAddr, opts); err != nil {
		return nil, err
	}
	if err := v1.RegisterDrainServiceHandlerFromEndpoint(ctx, gw, grpcAddr, opts); err != nil {
		return nil, err
	}
	if err := v1.RegisterDecomServiceHandlerFromEndpoint(ctx, gw, grpcAddr, opts); err != nil {
		return nil, err
	}
	if err := v1.RegisterNotificationServiceHandlerFromEndpoint(ctx, gw, grpcAddr, opts); err != nil {
		return nil, err
	}
	if err := v1.RegisterEventServiceHandlerFromEndpoint(ctx, gw, grpcAddr, opts); err != nil {
		return nil, err
	}
	if err := v1.RegisterAnalyzerServiceHandlerFromEndpoint(ctx, gw, grpcAddr, opts); err != nil {
		return nil, err
	}
	if err := v1.RegisterAlertServiceHandlerFromEndpoint(ctx, gw, grpcAddr, opts); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", gw)
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "node_id": s.raft.ID()})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(apidoc.OpenAPI)
	})
	return mux, nil
}

// readyz says whether this node can serve API calls now: it knows a leader (and, if it is the
// leader, has established leadership). Load balancers route on it.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	leader, _ := s.raft.Leader()
	body := map[string]any{"node_id": s.raft.ID(), "leader_id": leader, "applied_index": s.raft.FSM().AppliedIndex()}
	switch {
	case leader == "":
		body["status"] = "no leader known"
		writeJSON(w, http.StatusServiceUnavailable, body)
	case leader == s.raft.ID() && !s.cfg.Ready():
		body["status"] = "establishing leadership"
		writeJSON(w, http.StatusServiceUnavailable, body)
	default:
		body["status"] = "ready"
		writeJSON(w, http.StatusOK, body)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

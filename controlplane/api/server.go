// Package api serves devfleet's gRPC services (FleetService, ClusterService). Handlers are
// thin: validate, build a command, propose it, map the result. One interceptor routes every
// call: writes and consistent reads run on the leader (a follower forwards them), stale reads
// and node-local calls run where they land. REST is the grpc-gateway in http.go, over the same
// gRPC server, so both paths share validation, routing, errors and metrics.
package api

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/capacity/fit"
	"github.com/devfleet/devfleet/controlplane/analyzer"
	"github.com/devfleet/devfleet/controlplane/eventlog"
	"github.com/devfleet/devfleet/controlplane/fsm"
	"github.com/devfleet/devfleet/controlplane/raftnode"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Raft is what the API needs of the raft node (*raftnode.Node implements it).
type Raft interface {
	ID() string
	IsLeader() bool
	Leader() (id, addr string)
	Propose(ctx context.Context, cmd *fsmv1.Command) (fsm.Result, error)
	VerifyLeader(ctx context.Context) error
	Members(ctx context.Context) ([]raftnode.Member, error)
	AddMember(ctx context.Context, id, addr string, voter bool) error
	RemoveMember(ctx context.Context, id string) (uint64, error)
	TransferLeadership(ctx context.Context, id string) (string, error)
	Stats() map[string]string
	Restore(ctx context.Context, r io.Reader, size int64) error
	FSM() *fsm.FSM
}

// Self is this node's identity and addresses, as announced to the cluster.
type Self struct {
	ID       string
	RaftAddr string
	GRPCAddr string
	HTTPAddr string
}

// Config wires a Server.
type Config struct {
	Raft Raft
	// Ready reports whether this node, as leader, has established leadership.
	Ready   func() bool
	Self    Self
	Version string
	Logger  *slog.Logger
	// Registry receives the API metrics; nil means none.
	Registry prometheus.Registerer
	// LeaderWait bounds how long a call waits for a leader to be known (default 5s).
	LeaderWait time.Duration
	// Hypervisors reaches hosts' libvirt to check them at registration; nil refuses hosts with
	// a libvirt URI.
	Hypervisors Hypervisors
	// AllowFakeHypervisors accepts hosts with fake:// (in-memory) URIs: --dev and tests only.
	AllowFakeHypervisors bool
	// Hosts is placement's host index; nil makes one. The leader's controllers share it.
	Hosts *capacity.Index
	// Operators may move any devserver (until authentication lands, callers name themselves).
	Operators []string
	// Events is this node's event history, which Watch serves; nil serves none.
	Events *eventlog.Log
	// Analyzers are the analyzers RunAnalyzer runs; nil runs none.
	Analyzers *analyzer.Registry
	// Feed writes Events; analyses wait for it to catch up with the state (nil: they do not).
	Feed analyzer.Feed
}

// Server implements the gRPC services.
type Server struct {
	v1.UnsafeFleetServiceServer
	v1.UnsafeClusterServiceServer
	v1.UnsafeCapacityServiceServer
	v1.UnsafeContainerServiceServer
	v1.UnsafeMigrationServiceServer
	v1.UnsafeDrainServiceServer
	v1.UnsafeDecomServiceServer
	v1.UnsafeNotificationServiceServer
	v1.UnsafeEventServiceServer
	v1.UnsafeAnalyzerServiceServer
	v1.UnsafeAlertServiceServer

	cfg     Config
	raft    Raft
	store   *state.Store
	log     *slog.Logger
	metrics *metrics

	connsMu sync.Mutex
	conns   map[string]*grpc.ClientConn

	// pending holds placements proposed and not yet applied, so that concurrent creates on the
	// leader do not all pick the same last slot.
	pending pendingPlacements
	// claiming holds the warm containers that claims on this leader are handing over, so that
	// concurrent claims pick different ones.
	claimingMu sync.Mutex
	claiming   map[string]bool
	// hosts is placement's index of the hosts, kept in step with the store.
	hosts *capacity.Index
	// encoded holds the events this node's Watch streams send, each encoded once.
	encoded encodedCache
}

// New returns a Server. Register it on a grpc.Server created with its ServerOptions.
func New(cfg Config) *Server {
	if cfg.LeaderWait == 0 {
		cfg.LeaderWait = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:     cfg,
		raft:    cfg.Raft,
		store:   cfg.Raft.FSM().Store(),
		log:     cfg.Logger,
		metrics: newMetrics(cfg.Registry),
		conns:   map[string]*grpc.ClientConn{},
		pending: pendingPlacements{byHost: map[string]fit.Amount{}},
		hosts:   cfg.Hosts,

		claiming: map[string]bool{},
	}
	if s.hosts == nil {
		s.hosts = capacity.NewIndex()
		s.store.Observe(s.hosts)
	}
	return s
}

// ServerOptions returns the interceptors every devfleet gRPC server needs: metrics outermost,
// then error mapping, then routing to the leader; and the codec: the standard proto codec, which
// also sends the events of Watch streams as they were encoded once for every stream (see
// watchcodec.go; without it they are marshalled for each stream).
func (s *Server) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(s.metrics.unary, errorsUnary, s.routeUnary),
		grpc.ChainStreamInterceptor(s.metrics.stream, errorsStream),
		grpc.MaxRecvMsgSize(8 << 20),
		grpc.ForceServerCodecV2(newServerCodec()),
	}
}

// Register adds both services to g.
func (s *Server) Register(g *grpc.Server) {
	v1.RegisterFleetServiceServer(g, s)
	v1.RegisterClusterServiceServer(g, s)
	v1.RegisterCapacityServiceServer(g, s)
	v1.RegisterContainerServiceServer(g, s)
	v1.RegisterMigrationServiceServer(g, s)
	v1.RegisterDrainServiceServer(g, s)
	v1.RegisterDecomServiceServer(g, s)
	v1.RegisterNotificationServiceServer(g, s)
	v1.RegisterEventServiceServer(g, s)
	v1.RegisterAnalyzerServiceServer(g, s)
	v1.RegisterAlertServiceServer(g, s)
}

// Close releases the connections used for forwarding.
func (s *Server) Close() {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	for addr, c := range s.conns {
		_ = c.Close()
		delete(s.conns, addr)
	}
}

// propose sends a command to raft and returns the value its handler produced.
func (s *Server) propose(ctx context.Context, cmd *fsmv1.Command) (any, fsm.Result, error) {
	res, err := s.raft.Propose(ctx, cmd)
	if err != nil {
		return nil, res, err
	}
	return res.Value, res, res.Err
}

// proposeAs proposes cmd and returns its value as a T.
func proposeAs[T any](ctx context.Context, s *Server, cmd *fsmv1.Command) (T, error) {
	var zero T
	v, _, err := s.propose(ctx, cmd)
	if err != nil {
		return zero, err
	}
	out, _ := v.(T)
	return out, nil
}

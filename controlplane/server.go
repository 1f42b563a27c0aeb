// Package controlplane wires one devfleet node: the state machine, the raft node, the leader
// lifecycle with its controllers, and the gRPC and HTTP servers. cmd/devfleetd and the test
// clusters both start nodes through Start.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/alerts"
	"github.com/devfleet/devfleet/controlplane/analyzer"
	"github.com/devfleet/devfleet/controlplane/analyzer/builtin"
	"github.com/devfleet/devfleet/controlplane/api"
	"github.com/devfleet/devfleet/controlplane/capacitywatch"
	"github.com/devfleet/devfleet/controlplane/eventlog"
	"github.com/devfleet/devfleet/controlplane/feed"
	"github.com/devfleet/devfleet/controlplane/fsm"
	"github.com/devfleet/devfleet/controlplane/hypervisor"
	"github.com/devfleet/devfleet/controlplane/leader"
	"github.com/devfleet/devfleet/controlplane/noticefeed"
	"github.com/devfleet/devfleet/controlplane/raftnode"
	"github.com/devfleet/devfleet/controlplane/state"
	"github.com/devfleet/devfleet/decom"
	"github.com/devfleet/devfleet/drain"
	"github.com/devfleet/devfleet/migrate"
	"github.com/devfleet/devfleet/notify"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
	"github.com/devfleet/devfleet/provisioner"
)

// Version is the build's version, reported by GetStatus.
var Version = "dev"

// Config is everything a node needs to start.
type Config struct {
	NodeID  string
	DataDir string
	// RaftAddr is the raft listen address; RaftAdvertise what peers dial (default RaftAddr).
	RaftAddr      string
	RaftAdvertise string
	// GRPCAddr and HTTPAddr are listen addresses; port 0 picks a free port.
	GRPCAddr string
	HTTPAddr string
	// Bootstrap starts a new cluster with this node as its only member (ignored with state).
	Bootstrap bool
	// Join lists gRPC addresses of existing members to join through (ignored with state).
	Join []string
	// Raft tunes raft; NodeID, DataDir and addresses are filled from the fields above.
	Raft raftnode.Config
	// Controllers run on the leader, started in this order after the leader's barrier (after
	// devfleet's own: capacity gauges, provisioner).
	Controllers []leader.Controller
	Logger      *slog.Logger
	// AllowFakeHypervisors accepts hosts with fake:// libvirt URIs, served in memory: for --dev
	// and tests, never production.
	AllowFakeHypervisors bool
	// Hypervisor tunes the libvirt connections (ping interval, backoff); AllowFake and Logger
	// are set from the fields above.
	Hypervisor hypervisor.Options
	// Provisioner tunes the provisioner; Store, Raft, Hypervisors, Placer, Logger and Registry
	// are set by Start.
	Provisioner provisioner.Config
	// EvacuateAfter is how long a host may be unreachable before it is fenced and evacuated
	// (0: drain.DefaultEvacuateAfter; negative: never); EvacuateBrake the share of a site's hosts
	// unhealthy at once above which evacuations there pause (0: drain.DefaultBrake).
	EvacuateAfter time.Duration
	EvacuateBrake float64
	// Events bounds the node's event history (eventlog defaults: 7 days, 1 GiB).
	Events eventlog.Options
	// Alerts tunes the leader's alert conditions (zero fields: the alerts package's defaults;
	// a negative Interval turns alerts off).
	Alerts AlertOptions
	// NotifySinks receive owners' notices and drain events from the leader (webhooks).
	NotifySinks []notify.Sink
	// Operators may move any devserver (callers name themselves until authentication lands).
	Operators []string
	// MigrationLimits bound the migrations that run at once (zero fields: defaults).
	MigrationLimits migrate.Limits
}

// Server is a running node.
type Server struct {
	cfg       Config
	log       *slog.Logger
	node      *raftnode.Node
	lifecycle *leader.Lifecycle
	hv        *hypervisor.Connector
	api       *api.Server
	grpc      *grpc.Server
	http      *http.Server
	registry  *prometheus.Registry
	grpcAddr  string
	httpAddr  string
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	stopOnce  sync.Once
	// events is the node's event history, which feed writes from the state's changes.
	events *eventlog.Log
	feed   *feed.Feed
}

// Events is the node's event history.
func (s *Server) Events() *eventlog.Log { return s.events }

// closeEvents stops the feed once the state no longer changes, then closes the history.
func (s *Server) closeEvents() {
	if s.feed != nil {
		s.feed.Close()
	}
	if s.events != nil {
		_ = s.events.Close()
	}
}

// Start opens the node's state and starts serving. The node joins or bootstraps in the
// background; Stop undoes everything.
func Start(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger.With("node", cfg.NodeID)
	grpcLis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("grpc listen on %s: %w", cfg.GRPCAddr, err)
	}
	httpLis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		grpcLis.Close()
		return nil, fmt.Errorf("http listen on %s: %w", cfg.HTTPAddr, err)
	}
	s := &Server{cfg: cfg, log: log, grpcAddr: grpcLis.Addr().String(), httpAddr: httpLis.Addr().String()}
	ok := false
	defer func() {
		if !ok {
			grpcLis.Close()
			httpLis.Close()
			if s.node != nil {
				_ = s.node.Shutdown()
			}
			s.closeEvents()
		}
	}()

	s.registry = prometheus.NewRegistry()
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	rc := cfg.Raft
	rc.NodeID, rc.DataDir, rc.BindAddr, rc.AdvertiseAddr = cfg.NodeID, cfg.DataDir, cfg.RaftAddr, cfg.RaftAdvertise
	rc.Logger = log
	rc.Metrics = raftnode.NewMetrics(s.registry)
	hasState, err := raftnode.HasState(rc)
	if err != nil {
		return nil, fmt.Errorf("read raft state in %s: %w", cfg.DataDir, err)
	}
	st := state.New()
	ev := cfg.Events
	ev.Logger, ev.Registry = log, s.registry
	if s.events, err = eventlog.Open(filepath.Join(cfg.DataDir, "events.db"), ev); err != nil {
		return nil, fmt.Errorf("open the event history in %s: %w", cfg.DataDir, err)
	}
	s.feed = feed.New(s.events, log)
	s.feed.Start()
	st.ObserveAll(s.feed) // before raft replays: every change of the replay reaches the feed
	f := fsm.New(st, log, fsm.NewMetrics(s.registry))
	if s.node, err = raftnode.Open(rc, f); err != nil {
		return nil, err
	}
	switch {
	case hasState:
		log.Info("resuming from existing raft state", "data_dir", cfg.DataDir)
	case cfg.Bootstrap:
		if err := s.node.Bootstrap(); err != nil {
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
		log.Info("bootstrapped a new cluster")
	}

	hvOpts := cfg.Hypervisor
	hvOpts.AllowFake, hvOpts.Logger = cfg.AllowFakeHypervisors, log
	s.hv = hypervisor.NewConnector(hvOpts)
	hosts := capacity.NewIndex()
	f.Store().Observe(hosts)

	s.lifecycle = leader.New(s.node, log)
	capacityWatch := capacitywatch.New(f.Store(), s.registry, log)
	s.lifecycle.Register(capacityWatch)
	pc := cfg.Provisioner
	pc.Store, pc.Raft, pc.Hypervisors, pc.Placer, pc.Logger, pc.Registry = f.Store(), s.node, s.hv, hosts, log, s.registry
	s.lifecycle.Register(provisioner.New(pc))
	s.lifecycle.Register(migrate.New(migrate.Config{Store: f.Store(), Raft: s.node, Leader: s.node, Hypervisors: s.hv,
		Limits: cfg.MigrationLimits, Placer: hosts, Logger: log, ShutdownGrace: pc.ShutdownGrace}))
	s.lifecycle.Register(decom.New(decom.Config{Store: f.Store(), Raft: s.node, Hypervisors: s.hv, Logger: log}))
	s.lifecycle.Register(drain.New(drain.Config{Store: f.Store(), Raft: s.node, Placer: hosts, Node: cfg.NodeID, Logger: log}))
	if cfg.EvacuateAfter >= 0 {
		s.lifecycle.Register(drain.NewEvacuation(drain.EvacuatorConfig{Store: f.Store(), Raft: s.node, Hypervisors: s.hv, Logger: log,
			After: cfg.EvacuateAfter, Brake: cfg.EvacuateBrake}))
	}
	if len(cfg.NotifySinks) > 0 {
		n, err := notify.New(notify.Config{Sinks: cfg.NotifySinks, Logger: log, Registry: s.registry,
			OnDeadLetter: func(dl notify.DeadLetter) {
				log.Error("notification not delivered; given up", "sink", dl.Sink, "message", dl.Message.ID, "attempts", dl.Attempts, "error", dl.LastError)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				res, err := s.node.Propose(ctx, &fsmv1.Command{Op: &fsmv1.Command_RecordDeadLetter{RecordDeadLetter: &fsmv1.RecordDeadLetter{DeadLetter: &v1.DeadLetter{
					Sink: dl.Sink, MessageId: dl.Message.ID, Kind: dl.Message.Kind, Subject: dl.Message.Subject, Owner: dl.Message.Owner,
					Text: dl.Message.Text, Attempts: uint32(dl.Attempts), LastError: dl.LastError, Time: timestamppb.New(dl.Time)}}}})
				if err == nil {
					err = res.Err
				}
				if err != nil {
					log.Warn("recording a dead letter failed", "message", dl.Message.ID, "error", err)
				}
			}})
		if err != nil {
			return nil, err
		}
		s.lifecycle.Register(n)
		s.lifecycle.Register(&noticefeed.Feed{Store: f.Store(), Queue: n, Logger: log})
	}
	analyzers := builtin.Registry()
	if cfg.Alerts.Interval >= 0 {
		s.lifecycle.Register(alerts.New(alerts.Config{Store: f.Store(), Raft: s.node, Analyzers: analyzers,
			Source: analyzer.NewLive(f.Store(), s.events, nil).WithFeed(s.feed), Capacity: capacityWatch, Logger: log,
			Interval: cfg.Alerts.Interval, DrainStall: cfg.Alerts.DrainStall, HostUnreachable: cfg.Alerts.HostUnreachable}))
	}
	for _, c := range cfg.Controllers {
		s.lifecycle.Register(c)
	}
	s.api = api.New(api.Config{
		Raft:                 s.node,
		Ready:                s.lifecycle.Ready,
		Self:                 s.Self(),
		Version:              Version,
		Logger:               log,
		Registry:             s.registry,
		Hypervisors:          s.hv,
		AllowFakeHypervisors: cfg.AllowFakeHypervisors,
		Hosts:                hosts,
		Operators:            cfg.Operators,
		Analyzers:            analyzers,
		Feed:                 s.feed,
		Events:               s.events,
	})
	s.grpc = grpc.NewServer(s.api.ServerOptions()...)
	s.api.Register(s.grpc)

	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	handler, err := s.api.HTTPHandler(ctx, s.grpcAddr, s.registry)
	if err != nil {
		cancel()
		return nil, err
	}
	s.http = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}

	s.goRun(func() { s.lifecycle.Run(ctx, s.node.LeadershipChanges()) })
	s.goRun(func() {
		if err := s.grpc.Serve(grpcLis); err != nil {
			log.Error("grpc server stopped", "error", err)
		}
	})
	s.goRun(func() {
		if err := s.http.Serve(httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "error", err)
		}
	})
	s.goRun(func() { s.announce(ctx, !hasState && len(cfg.Join) > 0) })
	ok = true
	log.Info("devfleetd node started", "raft", s.node.Address(), "grpc", s.grpcAddr, "http", s.httpAddr)
	return s, nil
}

func (s *Server) goRun(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Self is this node's identity and addresses.
func (s *Server) Self() api.Self {
	return api.Self{ID: s.cfg.NodeID, RaftAddr: s.node.Address(), GRPCAddr: s.grpcAddr, HTTPAddr: s.httpAddr}
}

// GRPCAddr is the address the gRPC API listens on.
func (s *Server) GRPCAddr() string { return s.grpcAddr }

// HTTPAddr is the address REST and metrics listen on.
func (s *Server) HTTPAddr() string { return s.httpAddr }

// Node is the raft node, for tests and benchmarks.
func (s *Server) Node() *raftnode.Node { return s.node }

// Ready reports whether this node leads and has established leadership.
func (s *Server) Ready() bool { return s.lifecycle.Ready() }

// Hypervisors is the node's connector to the hosts' libvirt: tests inject faults into its
// in-memory hosts (Connector.Fake).
func (s *Server) Hypervisors() *hypervisor.Connector { return s.hv }

// Registry holds the node's metrics.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// announce makes sure the cluster knows this node's API addresses. A new node with join
// addresses first joins through them; afterwards (and on every node) the loop re-announces
// whenever the recorded addresses differ from this node's, for example after a restart on new
// ports. A node outside the raft configuration (removed) never announces itself.
func (s *Server) announce(ctx context.Context, join bool) {
	self := s.Self()
	req := &v1.JoinMemberRequest{NodeId: self.ID, RaftAddress: self.RaftAddr, GrpcAddress: self.GRPCAddr, HttpAddress: self.HTTPAddr}
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		var err error
		if join {
			err = s.joinThrough(ctx, req)
			if err == nil {
				join = false
				s.log.Info("joined the cluster")
			}
		} else if s.needsAnnounce(ctx, self) {
			err = s.callJoin(ctx, s.grpcAddr, req)
		}
		wait := 2 * time.Second
		if join || !s.announced(self) {
			wait = 100 * time.Millisecond // until settled, check often: followers forward through this record
		}
		if err != nil {
			s.log.Warn("announcing this node failed; retrying", "error", err, "retry_in", backoff)
			wait, backoff = backoff, min(2*backoff, 5*time.Second)
		} else {
			backoff = 200 * time.Millisecond
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

// announced reports whether the replicated state holds this node's current addresses.
func (s *Server) announced(self api.Self) bool {
	rec := s.node.FSM().Store().View().GetNode(self.ID)
	return rec != nil && rec.GetRaftAddress() == self.RaftAddr && rec.GetGrpcAddress() == self.GRPCAddr && rec.GetHttpAddress() == self.HTTPAddr
}

func (s *Server) needsAnnounce(ctx context.Context, self api.Self) bool {
	if leaderID, _ := s.node.Leader(); leaderID == "" || s.announced(self) {
		return false
	}
	members, err := s.node.Members(ctx)
	if err != nil {
		return false
	}
	for _, m := range members {
		if m.ID == self.ID {
			return true
		}
	}
	return false
}

func (s *Server) joinThrough(ctx context.Context, req *v1.JoinMemberRequest) error {
	var errs []error
	for _, addr := range s.cfg.Join {
		err := s.callJoin(ctx, addr, req)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	return errors.Join(errs...)
}

func (s *Server) callJoin(ctx context.Context, addr string, req *v1.JoinMemberRequest) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = v1.NewClusterServiceClient(conn).JoinMember(ctx, req)
	return err
}

// Stop shuts the node down gracefully: a leader first hands leadership to another voter so the
// cluster does not wait out an election timeout, then the servers drain, the controllers stop
// and raft closes its stores.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if s.node.IsLeader() {
			if members, err := s.node.Members(context.Background()); err == nil && countVoters(members) > 1 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if to, err := s.node.TransferLeadership(ctx, ""); err == nil {
					s.log.Info("handed leadership over before stopping", "new_leader", to)
				}
				cancel()
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.http.Shutdown(ctx)
		cancel()
		stopped := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			s.grpc.Stop()
		}
		s.cancel()
		s.wg.Wait()
		s.api.Close()
		_ = s.hv.Close()
		if err := s.node.Shutdown(); err != nil {
			s.log.Warn("raft shutdown", "error", err)
		}
		s.closeEvents()
		s.log.Info("devfleetd node stopped")
	})
}

// Kill stops the node abruptly, as a crash would: no leadership hand-over, no draining. The
// data dir keeps what was fsync'd. For tests of failover.
func (s *Server) Kill() {
	s.stopOnce.Do(func() {
		s.grpc.Stop()
		_ = s.http.Close()
		s.cancel()
		_ = s.node.Shutdown()
		s.wg.Wait()
		s.api.Close()
		_ = s.hv.Close()
		s.closeEvents()
	})
}

func countVoters(members []raftnode.Member) int {
	n := 0
	for _, m := range members {
		if m.Voter {
			n++
		}
	}
	return n
}

// AlertOptions tunes the leader's alert conditions (see package alerts).
type AlertOptions struct {
	// Interval between evaluations (negative: no alerts).
	Interval time.Duration
	// DrainStall: a drain without progress this long opens an alert.
	DrainStall time.Duration
	// HostUnreachable: a host unreachable this long opens an alert.
	HostUnreachable time.Duration
}

package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/raftnode"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// route says where a method runs.
type route int

const (
	// routeLeader: writes, and reads that did not ask for stale data.
	routeLeader route = iota
	// routeRead: a read; on the leader unless the request sets stale.
	routeRead
	// routeLocal: about this node itself.
	routeLocal
)

const (
	// forwardedHeader marks a call a follower forwarded, so that it is never forwarded twice.
	forwardedHeader = "devfleet-forwarded-by"
	// notLeaderReason marks an Unavailable error for a command that was not appended: the
	// forwarder may retry it safely on the new leader.
	notLeaderReason = "NOT_LEADER"
)

type method struct {
	route    route
	response protoreflect.MessageType
}

// methods maps every unary method to its route and response type, from the service descriptors.
var methods = func() map[string]method {
	out := map[string]method{}
	for _, sd := range []protoreflect.ServiceDescriptor{
		v1.File_devfleet_v1_fleet_proto.Services().ByName("FleetService"),
		v1.File_devfleet_v1_cluster_proto.Services().ByName("ClusterService"),
		v1.File_devfleet_v1_capacity_proto.Services().ByName("CapacityService"),
		v1.File_devfleet_v1_container_proto.Services().ByName("ContainerService"),
		v1.File_devfleet_v1_migration_proto.Services().ByName("MigrationService"),
		v1.File_devfleet_v1_drain_proto.Services().ByName("DrainService"),
		v1.File_devfleet_v1_decom_proto.Services().ByName("DecomService"),
		v1.File_devfleet_v1_notify_proto.Services().ByName("NotificationService"),
		v1.File_devfleet_v1_analyzer_proto.Services().ByName("AlertService"),
	} {
		for i := 0; i < sd.Methods().Len(); i++ {
			md := sd.Methods().Get(i)
			if md.IsStreamingClient() || md.IsStreamingServer() {
				continue
			}
			mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
			if err != nil {
				panic(err)
			}
			name := string(md.Name())
			r := routeLeader
			switch {
			case name == "GetStatus":
				r = routeLocal
			case strings.HasPrefix(name, "Get"), strings.HasPrefix(name, "List"), sd.Name() == "CapacityService":
				r = routeRead // CapacityService only answers questions
			}
			out[fmt.Sprintf("/%s/%s", sd.FullName(), name)] = method{route: r, response: mt}
		}
	}
	return out
}()

type staleReader interface{ GetStale() bool }

// routeUnary runs a call here or forwards it to the leader.
func (s *Server) routeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	m, ok := methods[info.FullMethod]
	if !ok || m.route == routeLocal {
		return handler(ctx, req)
	}
	if m.route == routeRead {
		if sr, ok := req.(staleReader); ok && sr.GetStale() {
			return handler(ctx, req)
		}
	}
	forwarded := len(metadata.ValueFromIncomingContext(ctx, forwardedHeader)) > 0
	deadline := time.Now().Add(s.cfg.LeaderWait)
	for {
		if s.raft.IsLeader() {
			resp, err := s.onLeader(ctx, m, req, handler)
			if !errors.Is(err, raftnode.ErrNotLeader) {
				return resp, err
			}
		}
		if forwarded {
			// The forwarder will find the new leader; a second hop could loop.
			return nil, notLeader(s.raft.ID())
		}
		resp, err := s.forward(ctx, info.FullMethod, m, req)
		if errors.Is(err, errBecameLeader) {
			continue
		}
		// Safe to retry: the leader refused before appending, or was never reached. Wait for the
		// election that a dead leader triggers, within LeaderWait.
		if (isNotLeader(err) || errors.Is(err, errLeaderUnreachable)) && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		return resp, err
	}
}

// onLeader serves a call on the leader: a consistent read first proves leadership to a quorum
// (after the leader's barrier, so its state holds every acknowledged write).
func (s *Server) onLeader(ctx context.Context, m method, req any, handler grpc.UnaryHandler) (any, error) {
	if m.route == routeRead {
		if err := s.consistent(ctx); err != nil {
			return nil, err
		}
	}
	return handler(ctx, req)
}

func (s *Server) consistent(ctx context.Context) error {
	deadline := time.Now().Add(s.cfg.LeaderWait)
	for !s.cfg.Ready() {
		if !s.raft.IsLeader() {
			return raftnode.ErrNotLeader
		}
		if time.Now().After(deadline) {
			return apierror.NoLeader("the new leader is still catching up; retry, or read with stale")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return s.raft.VerifyLeader(ctx)
}

// forward sends the call to the leader and returns its answer unchanged.
func (s *Server) forward(ctx context.Context, fullMethod string, m method, req any) (any, error) {
	conn, err := s.leaderConn(ctx)
	if err != nil {
		return nil, err
	}
	addr := conn.Target()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	resp := m.response.New().Interface()
	err = conn.Invoke(outgoing(ctx, s.raft.ID()), fullMethod, req, resp)
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable && !isNotLeader(err) && !refusal(st) {
		return nil, status.Errorf(codes.Unavailable, "forwarding to the leader at %s: %s", addr, st.Message())
	}
	return resp, err
}

// errLeaderUnreachable means no connection to the leader could be made, so the call was not
// sent: retrying it elsewhere is safe.
var errLeaderUnreachable = apierror.NoLeader("cannot connect to the leader")

// connect waits until conn is ready to carry a call, up to timeout. False means the call would
// fail without being sent.
func connect(ctx context.Context, conn *grpc.ClientConn, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn.Connect()
	for {
		st := conn.GetState()
		switch st {
		case connectivity.Ready:
			return true
		case connectivity.TransientFailure, connectivity.Shutdown:
			return false
		}
		if !conn.WaitForStateChange(ctx, st) {
			return false
		}
	}
}

// errBecameLeader tells the router to serve the call here after all.
var errBecameLeader = errors.New("this node became the leader")

// leaderConn returns a ready connection to the leader's gRPC API. errLeaderUnreachable means
// no connection could be made, so nothing was sent.
func (s *Server) leaderConn(ctx context.Context) (*grpc.ClientConn, error) {
	addr, err := s.leaderAddr(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := s.conn(addr)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "cannot reach the leader at %s: %v", addr, err)
	}
	if !connect(ctx, conn, 2*time.Second) {
		return nil, fmt.Errorf("%w: %s", errLeaderUnreachable, addr)
	}
	return conn, nil
}

// leaderAddr returns the leader's gRPC address, waiting up to LeaderWait for one to be known.
func (s *Server) leaderAddr(ctx context.Context) (string, error) {
	deadline := time.Now().Add(s.cfg.LeaderWait)
	for {
		id, _ := s.raft.Leader()
		if id == s.raft.ID() {
			return "", errBecameLeader
		}
		if id != "" {
			if n := s.store.View().GetNode(id); n != nil && n.GetGrpcAddress() != "" {
				return n.GetGrpcAddress(), nil
			}
		}
		if time.Now().After(deadline) {
			if id == "" {
				return "", apierror.NoLeader("no raft leader: the cluster has no quorum or is electing one (waited %s)", s.cfg.LeaderWait)
			}
			return "", apierror.NoLeader("leader %s has not announced its API address yet (waited %s)", id, s.cfg.LeaderWait)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Server) conn(addr string) (*grpc.ClientConn, error) {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	if c, ok := s.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second,
		}, MinConnectTimeout: 2 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)),
	)
	if err != nil {
		return nil, err
	}
	s.conns[addr] = c
	return c, nil
}

// outgoing carries the caller's metadata to the leader and marks the call as forwarded.
func outgoing(ctx context.Context, self string) context.Context {
	md := metadata.MD{}
	if in, ok := metadata.FromIncomingContext(ctx); ok {
		for k, v := range in {
			if strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") || k == "content-type" || k == "user-agent" {
				continue
			}
			md[k] = v
		}
	}
	md.Set(forwardedHeader, self)
	return metadata.NewOutgoingContext(ctx, md)
}

func notLeader(self string) error {
	st := status.New(codes.Unavailable, fmt.Sprintf("node %s is no longer the leader; retry", self))
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: notLeaderReason, Domain: apierror.Domain}); err == nil {
		st = d
	}
	return st.Err()
}

// refusal reports an Unavailable status that the leader's API answered on purpose (a typed
// refusal carrying devfleet's ErrorInfo, such as a host's libvirt that cannot be reached), as
// opposed to a failure of the forwarded call on its way: it goes back unchanged.
func refusal(st *status.Status) bool {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == apierror.Domain && info.GetReason() != notLeaderReason {
			return true
		}
	}
	return false
}

func isNotLeader(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == notLeaderReason {
			return true
		}
	}
	return false
}

// errorsUnary turns every error into a gRPC status with the right code.
func errorsUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	return resp, toStatus(err)
}

func errorsStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return toStatus(handler(srv, ss))
}

func toStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raftnode.ErrNotLeader):
		return notLeader("this node")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded; a write may still be applied: "+err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return apierror.ToStatus(err)
}

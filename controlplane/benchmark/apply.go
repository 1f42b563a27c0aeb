package benchmark

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/devfleet/devfleet/controlplane"
	"github.com/devfleet/devfleet/controlplane/raftnode"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Cluster is a three-node devfleet cluster on loopback with fsync'd bbolt logs, started for a
// benchmark.
type Cluster struct {
	nodes []*controlplane.Server
}

// StartCluster starts three nodes with their data in dir; rc tunes raft (zero: defaults). The
// nodes accept in-memory (fake://) hosts, so that benchmarks drive the provisioner without
// libvirt.
func StartCluster(dir string, rc raftnode.Config) (*Cluster, error) {
	c := &Cluster{}
	log := slog.New(slog.DiscardHandler)
	for i := 0; i < 3; i++ {
		d, err := mkdir(dir, fmt.Sprintf("node%d", i))
		if err != nil {
			return nil, err
		}
		cfg := controlplane.Config{
			NodeID: fmt.Sprintf("b%d", i), DataDir: d,
			RaftAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
			Bootstrap: i == 0, Logger: log, Raft: rc, AllowFakeHypervisors: true,
		}
		if i > 0 {
			cfg.Join = []string{c.nodes[0].GRPCAddr()}
		}
		s, err := controlplane.Start(cfg)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.nodes = append(c.nodes, s)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		l := c.Leader()
		if l != nil {
			if m, err := l.Node().Members(context.Background()); err == nil && len(m) == 3 && allAnnounced(l) {
				return c, nil
			}
		}
		if time.Now().After(deadline) {
			c.Close()
			return nil, fmt.Errorf("benchmark cluster did not form within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func allAnnounced(l *controlplane.Server) bool {
	return len(l.Node().FSM().Store().View().Nodes()) == 3
}

// Leader returns the ready leader or nil.
func (c *Cluster) Leader() *controlplane.Server {
	for _, n := range c.nodes {
		if n.Node().IsLeader() && n.Ready() {
			return n
		}
	}
	return nil
}

// Close stops every node.
func (c *Cluster) Close() {
	for _, n := range c.nodes {
		n.Stop()
	}
}

// Seed creates what the benchmark's writes refer to.
func (c *Cluster) Seed(ctx context.Context) error {
	conn, err := grpc.NewClient(c.Leader().GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	fleet := v1.NewFleetServiceClient(conn)
	if _, err := fleet.CreateRegion(ctx, &v1.CreateRegionRequest{Region: &v1.Region{Name: "bench"}}); err != nil {
		return err
	}
	if _, err := fleet.CreateSite(ctx, &v1.CreateSiteRequest{Site: &v1.Site{Name: "bench-1", Region: "bench"}}); err != nil {
		return err
	}
	if _, err = fleet.CreateFlavor(ctx, &v1.CreateFlavorRequest{Flavor: &v1.Flavor{Name: "small", Resources: &v1.Resources{Vcpus: 4, MemoryMib: 16384, DiskGib: 100}}}); err != nil {
		return err
	}
	// Big enough for every run: each host takes 10,000 small devservers.
	for i := 0; i < BenchHosts; i++ {
		if _, err := fleet.CreateHost(ctx, &v1.CreateHostRequest{Host: &v1.Host{
			Name: benchHost(i), Site: "bench-1",
			Capacity:   &v1.Resources{Vcpus: 4096, MemoryMib: 64 << 20, DiskGib: 1 << 20},
			Overcommit: &v1.Overcommit{Cpu: 10},
		}}); err != nil {
			return err
		}
	}
	return nil
}

// BenchHosts is how many hosts Seed creates in region bench.
const BenchHosts = 64

func benchHost(i int) string { return fmt.Sprintf("bench-h%02d", i) }

var runSeq atomic.Int64

// Run drives devserver creations through the leader's gRPC API from clients goroutines for d.
// Every write is acknowledged only after its raft entry committed and applied on the leader.
func (c *Cluster) Run(ctx context.Context, clients int, d time.Duration) (Result, error) {
	leader := c.Leader()
	if leader == nil {
		return Result{}, fmt.Errorf("no leader")
	}
	batchesBefore, cmdsBefore := batchCounts(leader)
	r, err := Drive(ctx, leader.GRPCAddr(), clients, d)
	if err != nil {
		return r, err
	}
	batchesAfter, cmdsAfter := batchCounts(leader)
	if b := batchesAfter - batchesBefore; b > 0 {
		r.AvgBatch = (cmdsAfter - cmdsBefore) / b
	}
	return r, nil
}

// Drive creates devservers (flavor small, region bench, as Seed makes them) through the gRPC
// API at addr from clients goroutines for d, and measures each acknowledged write. Each client
// names its host (an operator's pinned create: validation, fit check and allocation on apply,
// no placement search); see DrivePlacements for creates that place.
func Drive(ctx context.Context, addr string, clients int, d time.Duration) (Result, error) {
	write, closeConns, err := devserverCreates(addr, clients)
	if err != nil {
		return Result{}, err
	}
	defer closeConns()
	return closedLoop(ctx, "devfleet", clients, d, write), nil
}

// devserverCreates returns Drive's write: client creates a devserver, pinned to a host of its
// own, through the gRPC API at addr; closeConns closes its connections.
func devserverCreates(addr string, clients int) (write func(ctx context.Context, client, seq int) error, closeConns func(), err error) {
	// A few HTTP/2 connections, as separate client processes would open.
	conns := make([]*grpc.ClientConn, 0, min(clients, 8))
	closeConns = func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for range cap(conns) {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			closeConns()
			return nil, nil, err
		}
		conns = append(conns, conn)
	}
	prefix := fmt.Sprintf("p%d-r%d", os.Getpid(), runSeq.Add(1))
	fleets := make([]v1.FleetServiceClient, len(conns))
	for i, conn := range conns {
		fleets[i] = v1.NewFleetServiceClient(conn)
	}
	var made atomic.Int64 // names stay unique when the write is used for several runs
	return func(ctx context.Context, client, _ int) error {
		_, err := fleets[client%len(fleets)].CreateDevserver(ctx, &v1.CreateDevserverRequest{Devserver: &v1.Devserver{
			Name:  fmt.Sprintf("%s-c%d-d%d", prefix, client, made.Add(1)),
			Owner: "bench", Flavor: "small", Region: "bench", Lifespan: v1.Lifespan_LIFESPAN_PERMANENT,
			Host: benchHost(client % BenchHosts),
		}})
		return err
	}, closeConns, nil
}

// batchCounts reads how many raft entries the leader proposed and how many commands they held.
func batchCounts(s *controlplane.Server) (entries, commands float64) {
	mfs, err := s.Registry().Gather()
	if err != nil {
		return 0, 0
	}
	for _, mf := range mfs {
		if mf.GetName() == "devfleet_raft_proposal_batch_commands" {
			h := mf.GetMetric()[0].GetHistogram()
			return float64(h.GetSampleCount()), h.GetSampleSum()
		}
	}
	return 0, 0
}

// ApplyOptions configures RunApply.
type ApplyOptions struct {
	Dir      string
	Clients  []int
	Duration time.Duration
	// SkipBare leaves out the bare raft reference.
	SkipBare bool
}

// ApplyReport is what RunApply measured.
type ApplyReport struct {
	FsyncPerSec float64  `json:"fsync_per_sec"`
	Devfleet    []Result `json:"devfleet"`
	Bare        []Result `json:"bare_raft,omitempty"`
}

// RunApply measures the disk's fsync rate, then devfleet's write path and the bare raft stack
// at each client count, printing rows to out as it goes.
func RunApply(ctx context.Context, o ApplyOptions, out io.Writer) (ApplyReport, error) {
	var rep ApplyReport
	var err error
	if rep.FsyncPerSec, err = FsyncRate(o.Dir, 2*time.Second); err != nil {
		return rep, err
	}
	fmt.Fprintf(out, "disk: %.0f fsync/s (4 KiB write + fsync) in %s\n", rep.FsyncPerSec, o.Dir)

	c, err := StartCluster(o.Dir+"/devfleet", raftnode.Config{})
	if err != nil {
		return rep, err
	}
	defer c.Close()
	if err := c.Seed(ctx); err != nil {
		return rep, err
	}
	if _, err := c.Run(ctx, 16, time.Second); err != nil { // warm up
		return rep, err
	}
	fmt.Fprintln(out, "devfleet: 3 nodes on loopback, bbolt logs fsync'd, CreateDevserver (host given) over gRPC to the leader")
	for _, n := range o.Clients {
		r, err := c.Run(ctx, n, o.Duration)
		if err != nil {
			return rep, err
		}
		rep.Devfleet = append(rep.Devfleet, r)
		fmt.Fprintln(out, r)
	}
	c.Close()
	if o.SkipBare {
		return rep, nil
	}
	b, err := StartBareStack(o.Dir + "/bare")
	if err != nil {
		return rep, err
	}
	defer b.Close()
	fmt.Fprintln(out, "bare raft: 3 hashicorp/raft nodes, raft-boltdb/v2, no-op FSM, 256-byte entries, one entry per write, no gRPC")
	for _, n := range o.Clients {
		r := b.Run(ctx, n, o.Duration)
		rep.Bare = append(rep.Bare, r)
		fmt.Fprintln(out, r)
	}
	for i, n := range o.Clients {
		if rep.Bare[i].PerSec > 0 {
			fmt.Fprintf(out, "clients %4d: devfleet / bare raft = %.1fx writes/s\n", n, rep.Devfleet[i].PerSec/rep.Bare[i].PerSec)
		}
	}
	return rep, nil
}

package benchmark

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/backup"
	"github.com/devfleet/devfleet/controlplane/raftnode"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// CapacityReport is what RunCapacity measured.
type CapacityReport struct {
	Hosts        int           `json:"hosts"`
	Devservers   int           `json:"devservers"`
	Placements   int           `json:"placements"`
	PlaceP50     time.Duration `json:"place_p50_ns"`
	PlaceP99     time.Duration `json:"place_p99_ns"`
	LoadTime     time.Duration `json:"fleet_load_ns"`
	N1Regions    time.Duration `json:"n1_regions_ns"`
	N1All        time.Duration `json:"n1_regions_and_sites_ns"`
	RSS          int64         `json:"rss_bytes"`
	RegionLossOK int           `json:"regions_surviving_loss"`
}

// RunCapacity measures placement decisions and the N-1 check on a generated fleet (BuildFleet):
// single decisions as the API makes them (the leader's host index, filters, scores),
// and the loss of every region (and site) simulated from a fresh load of the state.
func RunCapacity(o ScaleOptions, out io.Writer) (CapacityReport, error) {
	rep := CapacityReport{Hosts: o.Hosts, Devservers: o.Devservers}
	f, err := BuildFleet(o)
	if err != nil {
		return rep, err
	}
	v := f.Store().View()
	medium, err := v.GetFlavor("medium")
	if err != nil {
		return rep, err
	}
	regions := v.Regions()
	idx := capacity.NewIndex()
	f.Store().Observe(idx)
	rng := rand.New(rand.NewPCG(1, 2))
	var lat []time.Duration
	for i := 0; i < 2000; i++ {
		region := regions[rng.IntN(len(regions))]
		start := time.Now()
		d := idx.Place(&capacity.Request{Flavor: medium, Region: region.GetName(), Reserve: idx.Reserve(region.GetName())})
		lat = append(lat, time.Since(start))
		if d.Host == nil {
			return rep, fmt.Errorf("benchmark fleet is full: %s", d.Explanation)
		}
	}
	slices.Sort(lat)
	rep.Placements = len(lat)
	rep.PlaceP50, rep.PlaceP99 = lat[len(lat)/2], lat[len(lat)*99/100]
	fmt.Fprintf(out, "placement decision (%d hosts, %d devservers, %d regions): p50 %s, p99 %s over %d decisions\n",
		o.Hosts, o.Devservers, len(regions), rep.PlaceP50.Round(time.Microsecond), rep.PlaceP99.Round(time.Microsecond), rep.Placements)

	start := time.Now()
	fleet := capacity.Load(v)
	rep.LoadTime = time.Since(start)
	start = time.Now()
	var gones []capacity.Gone
	for _, r := range fleet.Regions {
		gones = append(gones, capacity.Gone{Regions: []string{r.GetName()}})
	}
	for _, l := range fleet.LoseEach(gones, capacity.LossOptions{}) {
		if l.OK() {
			rep.RegionLossOK++
		}
	}
	rep.N1Regions = time.Since(start)
	start = time.Now()
	all := fleet.N1()
	rep.N1All = time.Since(start)
	debug.FreeOSMemory()
	rep.RSS = rss()
	fmt.Fprintf(out, "N-1: load the fleet %s; lose each of %d regions %s (%d survivable); regions and %d sites %s; RSS %d MiB\n",
		rep.LoadTime.Round(time.Millisecond), len(fleet.Regions), rep.N1Regions.Round(time.Millisecond), rep.RegionLossOK,
		len(all)-len(fleet.Regions), rep.N1All.Round(time.Millisecond), rep.RSS>>20)
	return rep, nil
}

// PlaceOptions configures RunPlace.
type PlaceOptions struct {
	Dir        string
	Clients    []int
	Duration   time.Duration
	Hosts      int
	Devservers int
}

// RunPlace measures placed creates committed through raft: a 3-node cluster is loaded with a
// generated fleet (restored from a snapshot archive, as an operator would), then clients create
// devservers without naming a host, so the leader places each one through capacity.
func RunPlace(ctx context.Context, o PlaceOptions, out io.Writer) ([]Result, error) {
	f, err := BuildFleet(ScaleOptions{Hosts: o.Hosts, Devservers: o.Devservers})
	if err != nil {
		return nil, err
	}
	var archive bytes.Buffer
	v := f.Store().View()
	if err := backup.Write(&archive, v, backup.Header{Index: v.LatestIndex(), NodeID: "bench"}); err != nil {
		return nil, err
	}
	c, err := StartCluster(o.Dir, raftnode.Config{})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	conn, err := grpc.NewClient(c.Leader().GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	up, err := v1.NewClusterServiceClient(conn).RestoreSnapshot(ctx)
	if err != nil {
		return nil, err
	}
	for data := archive.Bytes(); len(data) > 0; {
		n := min(len(data), 1<<20)
		if err := up.Send(&v1.SnapshotChunk{Data: data[:n]}); err != nil {
			break
		}
		data = data[n:]
	}
	if _, err := up.CloseAndRecv(); err != nil {
		return nil, fmt.Errorf("restore the benchmark fleet: %w", err)
	}
	fmt.Fprintf(out, "devfleet: 3 nodes on loopback; %d hosts, %d devservers restored; CreateDevserver without a host (placed by the leader)\n", o.Hosts, o.Devservers)
	regions := v.Regions()
	var results []Result
	for _, n := range o.Clients {
		prefix := fmt.Sprintf("place-r%d", runSeq.Add(1))
		fleet := v1.NewFleetServiceClient(conn)
		r := closedLoop(ctx, "placed", n, o.Duration, func(ctx context.Context, client, seq int) error {
			_, err := fleet.CreateDevserver(ctx, &v1.CreateDevserverRequest{
				Devserver: &v1.Devserver{
					Name:  fmt.Sprintf("%s-c%d-d%d", prefix, client, seq),
					Owner: "bench", Flavor: "medium", Region: regions[(client+seq)%len(regions)].GetName(),
				},
				ExpiresIn: durationpb.New(72 * time.Hour),
			})
			return err
		})
		results = append(results, r)
		fmt.Fprintln(out, r)
	}
	return results, nil
}

package benchmark

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/devfleet/devfleet/controlplane/raftnode"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// benchFleet is a 3-node benchmark cluster in dir, a connection to its leader, and one region
// with one site made through the API; close stops it all.
type benchFleet struct {
	c     *Cluster
	conn  *grpc.ClientConn
	fleet v1.FleetServiceClient
	site  string
}

func startBenchFleet(ctx context.Context, dir, region, site string) (*benchFleet, error) {
	c, err := StartCluster(dir, raftnode.Config{})
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(c.Leader().GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.Close()
		return nil, err
	}
	b := &benchFleet{c: c, conn: conn, fleet: v1.NewFleetServiceClient(conn), site: site}
	if _, err := b.fleet.CreateRegion(ctx, &v1.CreateRegionRequest{Region: &v1.Region{Name: region}}); err != nil {
		b.close()
		return nil, fmt.Errorf("set up the benchmark fleet: %w", err)
	}
	if _, err := b.fleet.CreateSite(ctx, &v1.CreateSiteRequest{Site: &v1.Site{Name: site, Region: region}}); err != nil {
		b.close()
		return nil, fmt.Errorf("set up the benchmark fleet: %w", err)
	}
	return b, nil
}

func (b *benchFleet) close() {
	b.conn.Close()
	b.c.Close()
}

// host adds a host to the site: libvirt at uri (a fake:// one is made of the capacity).
func (b *benchFleet) host(ctx context.Context, name, uri string, capacity *v1.Resources, overcommit *v1.Overcommit) error {
	_, err := b.fleet.CreateHost(ctx, &v1.CreateHostRequest{Host: &v1.Host{Name: name, Site: b.site, LibvirtUri: uri,
		Capacity: capacity, Overcommit: overcommit}})
	if err != nil {
		return fmt.Errorf("set up the benchmark fleet: host %s: %w", name, err)
	}
	return nil
}

// fakeHost adds an in-memory host of cpus vCPUs and mib MiB.
func (b *benchFleet) fakeHost(ctx context.Context, name string, cpus, mib int64) error {
	return b.host(ctx, name, fmt.Sprintf("fake://%s?cpus=%d&memory_mib=%d", name, cpus, mib),
		&v1.Resources{Vcpus: cpus, MemoryMib: mib, DiskGib: 1000}, nil)
}

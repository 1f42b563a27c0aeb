package main

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// demoRegions is the --dev fleet: three regions of two sites, three hosts a site.
var demoRegions = []struct {
	name  string
	sites []string
}{
	{"us-east", []string{"ash1", "ash2"}},
	{"eu-west", []string{"fra1", "dub1"}},
	{"ap-south", []string{"sin1", "bom1"}},
}

var demoFlavors = []*v1.Flavor{
	{Name: "small", Resources: &v1.Resources{Vcpus: 4, MemoryMib: 16384, DiskGib: 100}, Description: "everyday development"},
	{Name: "medium", Resources: &v1.Resources{Vcpus: 8, MemoryMib: 32768, DiskGib: 250}, Description: "large builds"},
	{Name: "large", Resources: &v1.Resources{Vcpus: 16, MemoryMib: 65536, DiskGib: 500}, Description: "full-stack work"},
	{Name: "gpu", Resources: &v1.Resources{Vcpus: 16, MemoryMib: 131072, DiskGib: 500, Gpus: 1}, Description: "ML work"},
	{Name: "metal", Resources: &v1.Resources{Vcpus: 32, MemoryMib: 131072, DiskGib: 1000}, Kind: v1.FlavorKind_FLAVOR_KIND_PHYSICAL, Description: "a whole machine (at least this big)"},
}

// seedDemoFleet creates the demo fleet through the API, as an operator would. Objects that
// already exist are left alone.
func seedDemoFleet(ctx context.Context, addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	fleet := v1.NewFleetServiceClient(conn)
	ok := func(_ any, err error) error {
		if status.Code(err) == codes.AlreadyExists {
			return nil
		}
		return err
	}
	// Wait for leadership: the first writes may arrive before the election ends.
	for {
		_, err := fleet.ListRegions(ctx, &v1.ListRegionsRequest{})
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not ready: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	for _, f := range demoFlavors {
		if err := ok(fleet.CreateFlavor(ctx, &v1.CreateFlavorRequest{Flavor: f})); err != nil {
			return err
		}
	}
	for _, r := range demoRegions {
		if err := ok(fleet.CreateRegion(ctx, &v1.CreateRegionRequest{Region: &v1.Region{Name: r.name}})); err != nil {
			return err
		}
		for _, site := range r.sites {
			if err := ok(fleet.CreateSite(ctx, &v1.CreateSiteRequest{Site: &v1.Site{Name: site, Region: r.name}})); err != nil {
				return err
			}
			for i := 1; i <= 3; i++ {
				h := &v1.Host{
					Name: fmt.Sprintf("%s-h%d", site, i), Site: site,
					Capacity:   &v1.Resources{Vcpus: 64, MemoryMib: 262144, DiskGib: 4000},
					Overcommit: &v1.Overcommit{Cpu: 2},
					Reserved:   &v1.Resources{Vcpus: 2, MemoryMib: 8192, DiskGib: 100},
					Labels:     map[string]string{"rack": fmt.Sprintf("r%d", i)},
					// An in-memory hypervisor of the host's size: the provisioner runs the
					// demo devservers' guests there.
					LibvirtUri: fmt.Sprintf("fake://%s-h%d?cpus=64&memory_mib=262144", site, i),
				}
				if i == 3 {
					h.Capacity.Gpus = 4
					h.Labels["gpu"] = "a100"
				}
				if err := ok(fleet.CreateHost(ctx, &v1.CreateHostRequest{Host: h})); err != nil {
					return err
				}
			}
		}
	}
	devservers := []struct {
		name, owner, flavor, region, host string
		expires                           time.Duration
	}{
		{"alice-dev", "alice", "medium", "us-east", "ash1-h1", 0},
		{"bob-dev", "bob", "small", "eu-west", "fra1-h1", 72 * time.Hour},
		{"carol-ml", "carol", "gpu", "ap-south", "sin1-h3", 0},
	}
	for _, d := range devservers {
		req := &v1.CreateDevserverRequest{Devserver: &v1.Devserver{
			Name: d.name, Owner: d.owner, Flavor: d.flavor, Region: d.region, Host: d.host,
			Lifespan: v1.Lifespan_LIFESPAN_PERMANENT,
		}}
		if d.expires > 0 {
			req.Devserver.Lifespan = v1.Lifespan_LIFESPAN_TEMPORARY
			req.ExpiresIn = durationpb.New(d.expires)
		}
		if err := ok(fleet.CreateDevserver(ctx, req)); err != nil {
			return err
		}
	}
	// A container profile with a warm pool, so that `devfleet container claim --profile www
	// --region eu-west` is a pool hit.
	containers := v1.NewContainerServiceClient(conn)
	if err := ok(containers.CreateProfile(ctx, &v1.CreateProfileRequest{Profile: &v1.ContainerProfile{
		Name: "www", Vcpus: 1, MemoryMib: 128, Description: "web development"}})); err != nil {
		return err
	}
	return ok(containers.SetPool(ctx, &v1.SetPoolRequest{Region: "eu-west", Profile: "www", Target: 2}))
}

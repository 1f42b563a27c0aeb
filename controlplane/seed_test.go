package controlplane_test

import (
	"context"
	"testing"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// seedRegion creates a region and its sites.
func seedRegion(t testing.TB, ctx context.Context, fleet v1.FleetServiceClient, region string, sites ...string) {
	t.Helper()
	if _, err := fleet.CreateRegion(ctx, &v1.CreateRegionRequest{Region: &v1.Region{Name: region}}); err != nil {
		t.Fatal(err)
	}
	for _, s := range sites {
		if _, err := fleet.CreateSite(ctx, &v1.CreateSiteRequest{Site: &v1.Site{Name: s, Region: region}}); err != nil {
			t.Fatal(err)
		}
	}
}

// seedFakeHosts creates in-memory hosts (fake://NAME) of 16 vCPUs, 64 GiB and 100 GiB of disk in
// a site: the hosts most tests start from.
func seedFakeHosts(t testing.TB, ctx context.Context, fleet v1.FleetServiceClient, site string, hosts ...string) {
	t.Helper()
	for _, h := range hosts {
		if _, err := fleet.CreateHost(ctx, &v1.CreateHostRequest{Host: &v1.Host{Name: h, Site: site, LibvirtUri: "fake://" + h,
			Capacity: &v1.Resources{Vcpus: 16, MemoryMib: 65536, DiskGib: 100}}}); err != nil {
			t.Fatal(err)
		}
	}
}

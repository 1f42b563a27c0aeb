package controlplane_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/capacity/fit"
	"github.com/devfleet/devfleet/controlplane/clustertest"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// seedCapacityFleet makes regions eu (2 sites, 3 hosts) and us (1 host), flavors small and xl.
func seedCapacityFleet(t *testing.T, ctx context.Context, fleet v1.FleetServiceClient) {
	t.Helper()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []string{"eu", "us"} {
		must(fleet.CreateRegion(ctx, &v1.CreateRegionRequest{Region: &v1.Region{Name: r}}))
	}
	for _, s := range [][2]string{{"eu-1", "eu"}, {"eu-2", "eu"}, {"us-1", "us"}} {
		must(fleet.CreateSite(ctx, &v1.CreateSiteRequest{Site: &v1.Site{Name: s[0], Region: s[1]}}))
	}
	for _, h := range []struct {
		name, site string
		cpus, mem  int64
	}{{"eu-h1", "eu-1", 16, 65536}, {"eu-h2", "eu-1", 16, 65536}, {"eu-h3", "eu-2", 16, 65536}, {"us-h1", "us-1", 32, 131072}} {
		must(fleet.CreateHost(ctx, &v1.CreateHostRequest{Host: &v1.Host{Name: h.name, Site: h.site, Capacity: &v1.Resources{Vcpus: h.cpus, MemoryMib: h.mem, DiskGib: 1000}}}))
	}
	must(fleet.CreateFlavor(ctx, &v1.CreateFlavorRequest{Flavor: &v1.Flavor{Name: "small", Resources: &v1.Resources{Vcpus: 4, MemoryMib: 16384, DiskGib: 100}}}))
	must(fleet.CreateFlavor(ctx, &v1.CreateFlavorRequest{Flavor: &v1.Flavor{Name: "xl", Resources: &v1.Resources{Vcpus: 16, MemoryMib: 65536, DiskGib: 100}}}))
	must(fleet.CreateFlavor(ctx, &v1.CreateFlavorRequest{Flavor: &v1.Flavor{Name: "huge", Resources: &v1.Resources{Vcpus: 64, MemoryMib: 65536, DiskGib: 100}}}))
}

func create(ctx context.Context, fleet v1.FleetServiceClient, name, flavor, region string) (*v1.Devserver, error) {
	return fleet.CreateDevserver(ctx, &v1.CreateDevserverRequest{
		Devserver: &v1.Devserver{Name: name, Owner: "alice", Flavor: flavor, Region: region},
		ExpiresIn: durationpb.New(72 * time.Hour),
	})
}

func TestCreatePlacesAndCapacityAnswers(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, 1, clustertest.Options{})
	ctx := ctxT(t, 30*time.Second)
	n := c.Nodes[0]
	fleet, capa := n.Fleet(), v1.NewCapacityServiceClient(n.Conn())
	seedCapacityFleet(t, ctx, fleet)

	// Binpack: the first xl takes a whole eu host, the second another; small ones fill one host.
	d, err := create(ctx, fleet, "d1", "xl", "eu")
	if err != nil || d.GetHost() == "" || d.GetSite() == "" {
		t.Fatalf("placed create: %v %v", d, err)
	}
	p, err := capa.PlaceDevserver(ctx, &v1.PlaceDevserverRequest{Flavor: "small", Region: "eu"})
	if err != nil || p.GetHost() == "" || p.GetCandidates() != 2 {
		t.Fatalf("dry run: %v %v", p, err)
	}
	for i := 0; i < 4; i++ {
		if d, err := create(ctx, fleet, fmt.Sprintf("s%d", i), "small", "eu"); err != nil || d.GetHost() != p.GetHost() {
			t.Fatalf("small %d: on %v (dry run said %s): %v", i, d.GetHost(), p.GetHost(), err)
		}
	}
	if _, err := create(ctx, fleet, "d2", "xl", "eu"); err != nil {
		t.Fatal(err)
	}
	// eu is full for xl now: refused with the explanation.
	_, err = create(ctx, fleet, "d3", "xl", "eu")
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "region eu: 3 hosts; 3 lack vCPUs for flavor xl (need 16)") {
		t.Fatalf("full region: %v", err)
	}
	p, err = capa.PlaceDevserver(ctx, &v1.PlaceDevserverRequest{Flavor: "xl", Region: "eu"})
	if err != nil || p.GetHost() != "" || p.GetExplanation() != "region eu: 3 hosts; 3 lack vCPUs for flavor xl (need 16)" {
		t.Fatalf("dry run on a full region: %v %v", p, err)
	}

	// Losing eu: us takes the two xl? No: us-h1 has 32 vCPUs: two xl, or one xl and four small.
	loss, err := capa.SimulateLoss(ctx, &v1.SimulateLossRequest{Regions: []string{"eu"}})
	if err != nil {
		t.Fatal(err)
	}
	if loss.GetAffected() != 6 || loss.GetOk() || len(loss.GetMoves()) != 2 || loss.GetGone() != "region eu" {
		t.Fatalf("lose eu: %v", loss)
	}
	if got := loss.GetShortfall(); len(got) != 1 || got[0].GetFlavor() != "small" || got[0].GetDevservers() != 4 {
		t.Fatalf("shortfall: %v", got)
	}
	rep, err := capa.GetCapacityReport(ctx, &v1.GetCapacityReportRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.GetRegions()) != 2 || len(rep.GetLosses()) != 5 {
		t.Fatalf("report: %v", rep)
	}
	us := rep.GetRegions()[1]
	if us.GetRegion() != "us" || us.GetFlavors()[0].GetFlavor() != "huge" || us.GetFlavors()[1].GetFits() != 8 || us.GetFlavors()[2].GetFits() != 2 {
		t.Fatalf("us headroom: %v", us)
	}

	// Extending cannot outlive what a new devserver may.
	_, err = fleet.UpdateDevserver(ctx, &v1.UpdateDevserverRequest{
		Devserver:  &v1.Devserver{Name: "d1", ExpireTime: timestamppb.New(time.Now().Add(400 * 24 * time.Hour))},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"expire_time"}},
	})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "devserver.expire_time: must be in the future and at most") {
		t.Fatalf("extending past a year: %v", err)
	}

	// Bad input.
	for _, tc := range []struct {
		err  error
		code codes.Code
		msg  string
	}{
		{func() error { _, err := capa.SimulateLoss(ctx, &v1.SimulateLossRequest{}); return err }(), codes.InvalidArgument, "regions: name at least one"},
		{func() error {
			_, err := capa.SimulateLoss(ctx, &v1.SimulateLossRequest{Sites: []string{"mars-1"}})
			return err
		}(), codes.NotFound, `site "mars-1" not found`},
		{func() error {
			_, err := capa.PlaceDevserver(ctx, &v1.PlaceDevserverRequest{Flavor: "nope", Region: "eu"})
			return err
		}(), codes.NotFound, `flavor "nope" not found`},
		{func() error {
			_, err := capa.PlaceDevserver(ctx, &v1.PlaceDevserverRequest{Flavor: "small", Region: "mars"})
			return err
		}(), codes.NotFound, `region "mars" not found`},
		{func() error {
			_, err := capa.PlaceDevserver(ctx, &v1.PlaceDevserverRequest{Flavor: "huge", Region: "eu"})
			return err
		}(), codes.FailedPrecondition, `flavor "huge" fits no host of the fleet`},
		{func() error {
			_, err := capa.GetCapacityReport(ctx, &v1.GetCapacityReportRequest{Region: "mars"})
			return err
		}(), codes.NotFound, `region "mars" not found`},
		{func() error { _, err := create(ctx, fleet, "h9", "huge", "eu"); return err }(), codes.FailedPrecondition, `fits no host`},
	} {
		if status.Code(tc.err) != tc.code || !strings.Contains(status.Convert(tc.err).Message(), tc.msg) {
			t.Errorf("got %v, want %v containing %q", tc.err, tc.code, tc.msg)
		}
	}
}

// TestConcurrentCreatesNeverOversubscribe races many placed creates for the last slots: every
// acknowledged devserver has room, the rest are refused with an explanation, and no host is
// oversubscribed.
func TestConcurrentCreatesNeverOversubscribe(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, 3, clustertest.Options{})
	ctx := ctxT(t, 60*time.Second)
	seedCapacityFleet(t, ctx, c.Nodes[0].Fleet())
	// eu: 3 hosts × 4 small = 12 slots; 30 writers through every node race for them.
	var wg sync.WaitGroup
	var mu sync.Mutex
	created, refused := 0, 0
	for i := 0; i < 30; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := create(ctx, c.Nodes[i%3].Fleet(), fmt.Sprintf("r%d", i), "small", "eu")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created++
			case status.Code(err) == codes.FailedPrecondition:
				refused++
			default:
				t.Errorf("create %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if created != 12 || refused != 18 {
		t.Fatalf("%d created, %d refused; want 12 and 18", created, refused)
	}
	l := c.WaitLeader()
	v := l.Server.Node().FSM().Store().View()
	if err := v.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
	for _, h := range v.HostsIn("eu") {
		if got := fit.Of(h.GetAllocated()); got.VCPUs != 16 {
			t.Errorf("host %s allocated %+v, want full", h.GetName(), got)
		}
	}
}

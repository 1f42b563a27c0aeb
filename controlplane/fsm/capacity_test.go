package fsm

import (
	"testing"

	"github.com/devfleet/devfleet/capacity/fit"
	"github.com/devfleet/devfleet/controlplane/apierror"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// TestAllocationFollowsDevservers checks that a host's allocation is kept with its devservers,
// that a placement that no longer fits is refused at apply time, and that capacity cannot
// shrink under running devservers.
func TestAllocationFollowsDevservers(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok(cRegion("eu"))
	h.ok(cSite("eu-1", "eu"))
	h.ok(&fsmv1.Command{Op: &fsmv1.Command_CreateHost{CreateHost: &fsmv1.CreateHost{Host: &v1.Host{
		Name: "h1", Site: "eu-1", Capacity: res(16, 65536, 1000, 1), Overcommit: &v1.Overcommit{Cpu: 2},
		Reserved: res(0, 1024, 0, 0),
	}}}})
	h.ok(cFlavor("small", 8, 16384))
	h.ok(&fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: &v1.Flavor{
		Name: "metal", Resources: res(8, 16384, 100, 0), Kind: v1.FlavorKind_FLAVOR_KIND_PHYSICAL,
	}}}})
	host := func() *v1.Host {
		got, err := h.fsm.Store().View().GetHost("h1")
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	// 32 vCPUs (16 × 2) and 64512 MiB usable: three small devservers fit, a fourth does not.
	for _, d := range []string{"d1", "d2", "d3"} {
		h.ok(cDevserver(d, "alice", "small", "eu", "h1", "id-"+d))
	}
	if got := fit.Of(host().GetAllocated()); got != (fit.Amount{VCPUs: 24, MemoryMiB: 49152, DiskGiB: 300}) {
		t.Fatalf("allocated %+v", got)
	}
	r := h.apply(cDevserver("d4", "alice", "small", "eu", "h1", "id-d4"))
	if apierror.KindOf(r.Err) != apierror.FailedPrecondition || r.Err.Error() != `host "h1" has no room for it: its free resources lack memory for flavor small (need 16384 MiB)` {
		t.Fatalf("fourth devserver: %v", r.Err)
	}
	// A physical devserver needs an empty host.
	if r := h.apply(cDevserver("m1", "bob", "metal", "eu", "h1", "id-m1")); apierror.KindOf(r.Err) != apierror.FailedPrecondition {
		t.Fatalf("physical on a busy host: %v", r.Err)
	}
	// Capacity cannot shrink under the devservers.
	shrink := &fsmv1.Command{Op: &fsmv1.Command_UpdateHost{UpdateHost: &fsmv1.UpdateHost{
		Host: &v1.Host{Name: "h1", Capacity: res(8, 65536, 1000, 1)}, UpdateMask: mask("capacity"),
	}}}
	if r := h.apply(shrink); apierror.KindOf(r.Err) != apierror.FailedPrecondition {
		t.Fatalf("shrinking under devservers: %v", r.Err)
	}
	for _, d := range []string{"d1", "d2", "d3"} {
		h.ok(deleteCmd("devserver", d))
	}
	if got := host().GetAllocated(); !fit.Of(got).IsZero() {
		t.Fatalf("allocated after deletes: %v", got)
	}
	// On the empty host the physical devserver takes everything.
	h.ok(cDevserver("m1", "bob", "metal", "eu", "h1", "id-m1"))
	if got := fit.Of(host().GetAllocated()); got != fit.Usable(host()) {
		t.Fatalf("physical allocation %+v, want the whole usable host %+v", got, fit.Usable(host()))
	}
	if r := h.apply(cDevserver("d5", "alice", "small", "eu", "h1", "id-d5")); apierror.KindOf(r.Err) != apierror.FailedPrecondition {
		t.Fatalf("VM beside a physical devserver: %v", r.Err)
	}
	if err := h.fsm.Store().View().CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

func TestReserveAndAllowedRegions(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok(cRegion("eu"))
	h.ok(cRegion("us"))
	r := h.ok(&fsmv1.Command{Op: &fsmv1.Command_UpdateRegion{UpdateRegion: &fsmv1.UpdateRegion{
		Region: &v1.Region{Name: "eu", Reserve: &v1.CapacityReserve{Fraction: 0.2}}, UpdateMask: mask("reserve"),
	}}}).(*v1.Region)
	if r.GetReserve().GetFraction() != 0.2 {
		t.Fatalf("reserve: %v", r)
	}
	for _, bad := range []*v1.CapacityReserve{{Fraction: 0.95}, {Fraction: 0.1, Hosts: 2}, {Hosts: -1}} {
		res := h.apply(&fsmv1.Command{Op: &fsmv1.Command_UpdateRegion{UpdateRegion: &fsmv1.UpdateRegion{
			Region: &v1.Region{Name: "eu", Reserve: bad}, UpdateMask: mask("reserve"),
		}}})
		if apierror.KindOf(res.Err) != apierror.InvalidArgument {
			t.Fatalf("reserve %v: %v", bad, res.Err)
		}
	}
	euOnly := &fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: &v1.Flavor{
		Name: "eu-gpu", Resources: res(4, 8192, 10, 0), AllowedRegions: []string{"eu"},
	}}}}
	h.ok(euOnly)
	if res := h.apply(cDevserver("d1", "alice", "eu-gpu", "us", "", "id-1")); apierror.KindOf(res.Err) != apierror.FailedPrecondition {
		t.Fatalf("devserver outside its flavor's regions: %v", res.Err)
	}
	h.ok(cDevserver("d1", "alice", "eu-gpu", "eu", "", "id-1"))
	narrow := &fsmv1.Command{Op: &fsmv1.Command_UpdateFlavor{UpdateFlavor: &fsmv1.UpdateFlavor{
		Flavor: &v1.Flavor{Name: "eu-gpu", AllowedRegions: []string{"us"}}, UpdateMask: mask("allowed_regions"),
	}}}
	if res := h.apply(narrow); apierror.KindOf(res.Err) != apierror.FailedPrecondition {
		t.Fatalf("leaving out a region in use: %v", res.Err)
	}
	if res := h.apply(deleteCmd("region", "eu")); apierror.KindOf(res.Err) != apierror.FailedPrecondition {
		t.Fatalf("deleting a region a flavor names: %v", res.Err)
	}
	missing := &fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: &v1.Flavor{
		Name: "x", Resources: res(1, 1024, 0, 0), AllowedRegions: []string{"mars"},
	}}}}
	if res := h.apply(missing); apierror.KindOf(res.Err) != apierror.NotFound {
		t.Fatalf("allowed region that does not exist: %v", res.Err)
	}
}

package cli

import (
	"context"
	"net"
	"reflect"
	"sync"
	"testing"

	"google.golang.org/grpc"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// repairServer is a FleetService that keeps what CreateFlavor was sent and serves one flavor
// with the notify-only policy. (The in-process cluster's server does not keep flavor.repair
// yet, so the CLI's side is checked against this.)
type repairServer struct {
	v1.UnimplementedFleetServiceServer
	mu      sync.Mutex
	created []*v1.Flavor
}

var petFlavor = &v1.Flavor{Name: "pet", Kind: v1.FlavorKind_FLAVOR_KIND_VM, Resources: &v1.Resources{Vcpus: 2}, Repair: v1.RepairPolicy_REPAIR_POLICY_NOTIFY_ONLY}

func (s *repairServer) CreateFlavor(_ context.Context, req *v1.CreateFlavorRequest) (*v1.Flavor, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.created = append(s.created, req.GetFlavor())
	return req.GetFlavor(), nil
}

func (s *repairServer) GetFlavor(context.Context, *v1.GetFlavorRequest) (*v1.Flavor, error) {
	return petFlavor, nil
}

func (s *repairServer) ListFlavors(context.Context, *v1.ListFlavorsRequest) (*v1.ListFlavorsResponse, error) {
	return &v1.ListFlavorsResponse{Flavors: []*v1.Flavor{petFlavor}}, nil
}

func TestFlavorRepair(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	fake := &repairServer{}
	v1.RegisterFleetServiceServer(srv, fake)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	f := &testFleet{t: t, addr: ln.Addr().String()}

	add := []string{"flavor", "add", "pet", "--cpus", "2", "--memory-mib", "1024", "--disk-gib", "10"}
	f.ok(append(add, "--repair", "notify-only")...)
	f.ok(append(add, "--repair", "recreate")...)
	f.ok(add...)
	if out := decode[map[string]any](t, f.ok(append([]string{"-o", "json"}, append(add, "--repair=notify-only")...)...)); out["repair"] != "REPAIR_POLICY_NOTIFY_ONLY" {
		t.Errorf("flavor add --repair notify-only -o json = %v", out)
	}
	var sent []v1.RepairPolicy
	fake.mu.Lock()
	for _, fl := range fake.created {
		sent = append(sent, fl.GetRepair())
	}
	fake.mu.Unlock()
	want := []v1.RepairPolicy{v1.RepairPolicy_REPAIR_POLICY_NOTIFY_ONLY, v1.RepairPolicy_REPAIR_POLICY_RECREATE, v1.RepairPolicy_REPAIR_POLICY_RECREATE, v1.RepairPolicy_REPAIR_POLICY_NOTIFY_ONLY}
	if !reflect.DeepEqual(sent, want) {
		t.Errorf("flavor add sent repair %v, want %v", sent, want)
	}

	if got := keyValues(t, f.ok("flavor", "show", "pet"))["repair"]; got != "notify-only" {
		t.Errorf("flavor show: repair %q, want notify-only", got)
	}
	wantRows := [][]string{
		{"NAME", "KIND", "CPUS", "MEMORY_MIB", "DISK_GIB", "GPUS", "ALLOWED_REGIONS", "REPAIR", "DESCRIPTION"},
		{"pet", "vm", "2", "0", "0", "0", "any", "notify-only", "-"},
	}
	if got := rows(f.ok("flavor", "list")); !reflect.DeepEqual(got, wantRows) {
		t.Errorf("flavor list:\n got %q\nwant %q", got, wantRows)
	}
}

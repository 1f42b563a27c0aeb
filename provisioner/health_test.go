package provisioner

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/fsm/fsmtest"
	"github.com/devfleet/devfleet/controlplane/hypervisor"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Only what changed is reported: reachability, its reason, or a last-seen time gone stale;
// hosts whose first attempt still runs, or that are no longer (or never were) that URI, are not.
func TestHealthReportsOnlyChanges(t *testing.T) {
	t.Parallel()
	raft, st := fsmtest.New(nil)
	raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_CreateRegion{CreateRegion: &fsmv1.CreateRegion{Region: &v1.Region{Name: "eu"}}}})
	raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_CreateSite{CreateSite: &fsmv1.CreateSite{Site: &v1.Site{Name: "eu-1", Region: "eu"}}}})
	for _, h := range []string{"a", "b", "c"} {
		raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_CreateHost{CreateHost: &fsmv1.CreateHost{Host: &v1.Host{Name: h, Site: "eu-1",
			LibvirtUri: "fake://" + h, Capacity: &v1.Resources{Vcpus: 8, MemoryMib: 8192, DiskGib: 10}}}}})
	}
	seen := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	raft.Must(t, &fsmv1.Command{Op: &fsmv1.Command_ReportHostHealth{ReportHostHealth: &fsmv1.ReportHostHealth{Reports: []*fsmv1.HostHealthReport{
		{Host: "a", Health: v1.HostHealth_HOST_HEALTH_HEALTHY, LastSeenTime: timestamppb.New(seen)},
	}}}})
	known := []hypervisor.Health{
		{Host: "a", URI: "fake://a", Reachable: true, Since: seen, LastSeen: seen.Add(10 * time.Second)},   // fresh enough: nothing
		{Host: "b", URI: "fake://b", Reachable: false, Since: seen, Err: errors.New("connection refused")}, // unknown -> unhealthy
		{Host: "c", URI: "fake://c"}, // first attempt runs
		{Host: "c", URI: "fake://old", Reachable: true, Since: seen, LastSeen: seen},     // not its URI
		{Host: "gone", URI: "fake://gone", Reachable: true, Since: seen, LastSeen: seen}, // not a host
	}
	got := healthReports(st.View(), known)
	if len(got) != 1 || got[0].GetHost() != "b" || got[0].GetHealth() != v1.HostHealth_HOST_HEALTH_UNHEALTHY || got[0].GetReason() != "connection refused" {
		t.Fatalf("reports: %v", got)
	}
	known[0].LastSeen = seen.Add(lastSeenEvery)
	if got := healthReports(st.View(), known[:1]); len(got) != 1 || !got[0].GetLastSeenTime().AsTime().Equal(seen.Add(lastSeenEvery)) {
		t.Fatalf("a stale last-seen time was not reported: %v", got)
	}
}

package controlplane_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/api"
	"github.com/devfleet/devfleet/controlplane/clustertest"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// The migration API: who may move a devserver, bad input, and abort requests. The moves
// themselves are the migration controller's (migrate/).
func TestMigrationAPI(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, 1, clustertest.Options{})
	ctx := ctxT(t, 30*time.Second)
	n := c.Nodes[0]
	fleet, migrations := n.Fleet(), v1.NewMigrationServiceClient(n.Conn())
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	seedRegion(t, ctx, fleet, "eu", "eu-1")
	seedFakeHosts(t, ctx, fleet, "eu-1", "m1", "m2")
	must(fleet.CreateFlavor(ctx, &v1.CreateFlavorRequest{Flavor: &v1.Flavor{Name: "small", Resources: &v1.Resources{Vcpus: 2, MemoryMib: 4096, DiskGib: 10}}}))
	must(fleet.CreateFlavor(ctx, &v1.CreateFlavorRequest{Flavor: &v1.Flavor{Name: "no-room", Resources: &v1.Resources{Vcpus: 4, MemoryMib: 4096, DiskGib: 5}}}))
	must(fleet.CreateDevserver(ctx, &v1.CreateDevserverRequest{Devserver: &v1.Devserver{Name: "d1", Owner: "alice", Sharers: []string{"bob"},
		Flavor: "small", Region: "eu", Host: "m1"}, ExpiresIn: durationpb.New(72 * time.Hour)}))
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, err := fleet.GetDevserver(ctx, &v1.GetDevserverRequest{Name: "d1"})
		if err == nil && d.GetState() == v1.DevserverState_DEVSERVER_STATE_RUNNING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("d1 not running: %v %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	as := func(user string) context.Context { return metadata.AppendToOutgoingContext(ctx, api.AsHeader, user) }
	for _, tc := range []struct {
		name string
		ctx  context.Context
		req  *v1.MigrateDevserverRequest
		code codes.Code
	}{
		{"nobody says who", ctx, &v1.MigrateDevserverRequest{Name: "d1"}, codes.PermissionDenied},
		{"a stranger", as("mallory"), &v1.MigrateDevserverRequest{Name: "d1"}, codes.PermissionDenied},
		{"unknown devserver", as("alice"), &v1.MigrateDevserverRequest{Name: "nope"}, codes.NotFound},
		{"unknown host", as("alice"), &v1.MigrateDevserverRequest{Name: "d1", ToHost: "nope"}, codes.NotFound},
		{"to itself", as("alice"), &v1.MigrateDevserverRequest{Name: "d1", ToHost: "m1"}, codes.FailedPrecondition},
		{"bad name", as("alice"), &v1.MigrateDevserverRequest{Name: "D 1"}, codes.InvalidArgument},
		{"unknown region", as("alice"), &v1.MigrateDevserverRequest{Name: "d1", Region: "mars"}, codes.NotFound},
		{"unknown flavor", as("alice"), &v1.MigrateDevserverRequest{Name: "d1", Flavor: "nope"}, codes.NotFound},
		{"a flavor with a smaller disk", as("alice"), &v1.MigrateDevserverRequest{Name: "d1", Flavor: "no-room"}, codes.FailedPrecondition},
		{"bad region name", as("alice"), &v1.MigrateDevserverRequest{Name: "d1", Region: "Mars!"}, codes.InvalidArgument},
		{"booked too far ahead", as("alice"), &v1.MigrateDevserverRequest{Name: "d1", Cold: true,
			NotBefore: timestamppb.New(time.Now().Add(60 * 24 * time.Hour))}, codes.InvalidArgument},
	} {
		if _, err := migrations.MigrateDevserver(tc.ctx, tc.req); status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.code)
		}
	}
	// A sharer may move it; capacity picks the other host.
	m, err := migrations.MigrateDevserver(as("bob"), &v1.MigrateDevserverRequest{Name: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	if m.GetDestHost() != "m2" || m.GetSourceHost() != "m1" || m.GetRequestedBy() != "bob" || m.GetReason() != v1.MigrationReason_MIGRATION_REASON_USER {
		t.Fatalf("migration: %v", m)
	}
	if _, err := migrations.MigrateDevserver(as("alice"), &v1.MigrateDevserverRequest{Name: "d1"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a second move at once: %v", err)
	}
	if _, err := migrations.AbortMigration(as("mallory"), &v1.AbortMigrationRequest{Id: m.GetId()}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("abort by a stranger: %v", err)
	}
	if _, err := migrations.AbortMigration(as("alice"), &v1.AbortMigrationRequest{Id: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("abort of an unknown migration: %v", err)
	}
	got, err := migrations.AbortMigration(as("alice"), &v1.AbortMigrationRequest{Id: m.GetId()})
	if err != nil || !got.GetAbortRequested() {
		t.Fatalf("abort: %v %v", got, err)
	}
	list, err := migrations.ListMigrations(ctx, &v1.ListMigrationsRequest{Devserver: "d1", Active: true})
	if err != nil || len(list.GetMigrations()) != 1 {
		t.Fatalf("list: %v %v", list, err)
	}
}

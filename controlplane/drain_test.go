package controlplane_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/api"
	"github.com/devfleet/devfleet/controlplane/clustertest"
	"github.com/devfleet/devfleet/notify"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// TestDrainAPI drives drains and a decommission over gRPC and REST: the refusals (each with its
// status and nothing cordoned), a dry run, a drain to its end, banners, and a host retired.
func TestDrainAPI(t *testing.T) {
	t.Parallel()
	sink := notify.NewRecorder("rec")
	sink.FailNext(1000, &notify.Error{Permanent: true, Err: errors.New("410 Gone")}) // every delivery a dead letter
	c := clustertest.New(t, 1, clustertest.Options{Operators: []string{"ops"}, NotifySinks: []notify.Sink{sink}})
	ctx := ctxT(t, 60*time.Second)
	n := c.Nodes[0]
	fleet, drains, decoms := n.Fleet(), v1.NewDrainServiceClient(n.Conn()), v1.NewDecomServiceClient(n.Conn())
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	seedRegion(t, ctx, fleet, "eu", "eu-1")
	seedFakeHosts(t, ctx, fleet, "eu-1", "m1", "m2")
	must(fleet.CreateFlavor(ctx, &v1.CreateFlavorRequest{Flavor: &v1.Flavor{Name: "small", Resources: &v1.Resources{Vcpus: 2, MemoryMib: 4096}}}))
	must(fleet.CreateDevserver(ctx, &v1.CreateDevserverRequest{Devserver: &v1.Devserver{Name: "d1", Owner: "alice", Flavor: "small", Region: "eu", Host: "m1",
		Lifespan: v1.Lifespan_LIFESPAN_PERMANENT}}))
	waitUntil(t, "d1 running", func() bool {
		d, err := fleet.GetDevserver(ctx, &v1.GetDevserverRequest{Name: "d1"})
		return err == nil && d.GetState() == v1.DevserverState_DEVSERVER_STATE_RUNNING
	})
	as := func(user string) context.Context { return metadata.AppendToOutgoingContext(ctx, api.AsHeader, user) }
	ops := as("ops")
	for _, tc := range []struct {
		name string
		ctx  context.Context
		req  *v1.StartDrainRequest
		code codes.Code
	}{
		{"nobody says who", ctx, &v1.StartDrainRequest{Hosts: []string{"m1"}, Reason: "x"}, codes.PermissionDenied},
		{"not an operator", as("alice"), &v1.StartDrainRequest{Hosts: []string{"m1"}, Reason: "x"}, codes.PermissionDenied},
		{"no target", ops, &v1.StartDrainRequest{Reason: "x"}, codes.InvalidArgument},
		{"two kinds of target", ops, &v1.StartDrainRequest{Hosts: []string{"m1"}, Site: "eu-1", Reason: "x"}, codes.InvalidArgument},
		{"unknown host", ops, &v1.StartDrainRequest{Hosts: []string{"m1", "m9"}, Reason: "x"}, codes.NotFound},
		{"unknown site", ops, &v1.StartDrainRequest{Site: "mars-1", Reason: "x"}, codes.NotFound},
		{"no reason", ops, &v1.StartDrainRequest{Hosts: []string{"m1"}}, codes.InvalidArgument},
		{"deadline in the past", ops, &v1.StartDrainRequest{Hosts: []string{"m1"}, Reason: "x", Deadline: timestamppb.New(time.Now().Add(-time.Hour))}, codes.InvalidArgument},
		{"no home for d1", ops, &v1.StartDrainRequest{Hosts: []string{"m1", "m2"}, Reason: "x"}, codes.FailedPrecondition},
	} {
		if _, err := drains.StartDrain(tc.ctx, tc.req); status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.code)
		}
	}
	for _, h := range []string{"m1", "m2"} { // nothing was cordoned by the refusals
		if host, _ := fleet.GetHost(ctx, &v1.GetHostRequest{Name: h}); host.GetState() != v1.HostState_HOST_STATE_ACTIVE {
			t.Fatalf("%s is %s after refused drains", h, host.GetState())
		}
	}
	dry, err := drains.StartDrain(ops, &v1.StartDrainRequest{Hosts: []string{"m1"}, Reason: "disk swap", DryRun: true})
	if err != nil || dry.GetDrain() != nil || len(dry.GetPlan()) != 1 || dry.GetPlan()[0].GetDestHost() != "m2" {
		t.Fatalf("dry run: %v, %v", dry, err)
	}
	resp, err := drains.StartDrain(ops, &v1.StartDrainRequest{Hosts: []string{"m1"}, Reason: "disk swap"})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetDrain().GetId()
	_, err = drains.StartDrain(ops, &v1.StartDrainRequest{Hosts: []string{"m1"}, Reason: "again"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), id) {
		t.Fatalf("a second drain of m1: %v, want FailedPrecondition naming %s", err, id)
	}
	body := restGet(t, "http://"+n.Server.HTTPAddr()+"/v1/banners?region=eu", http.StatusOK)
	if !strings.Contains(body, id) || !strings.Contains(body, "disk swap") {
		t.Fatalf("banners: %s", body)
	}
	waitUntil(t, "the drain's end", func() bool {
		d, err := drains.GetDrain(ctx, &v1.GetDrainRequest{Id: id})
		return err == nil && d.GetState() == v1.DrainState_DRAIN_STATE_SUCCEEDED
	})
	if _, err := drains.CancelDrain(ops, &v1.CancelDrainRequest{Id: id}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("cancelling an ended drain: %v", err)
	}
	if _, err := drains.CancelDrain(ops, &v1.CancelDrainRequest{Id: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("cancelling an unknown drain: %v", err)
	}
	restGet(t, "http://"+n.Server.HTTPAddr()+"/v1/drains/nope", http.StatusNotFound)
	waitUntil(t, "the drain's events recorded as dead letters", func() bool {
		body := restGet(t, "http://"+n.Server.HTTPAddr()+"/v1/dead-letters", http.StatusOK)
		body = strings.ReplaceAll(body, `": "`, `":"`)
		return strings.Contains(body, `"kind":"drain.started"`) && strings.Contains(body, `"kind":"drain.finished"`) && strings.Contains(body, "410 Gone")
	})

	// Decommission m1 (drained, empty now): every step, then retired.
	if _, err := decoms.StartDecom(ops, &v1.StartDecomRequest{Host: "m1", Now: true}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a decommission without a reason: %v", err)
	}
	dc, err := decoms.StartDecom(ops, &v1.StartDecomRequest{Host: "m1", Reason: "end of life", Now: true})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "m1 retired", func() bool {
		d, err := decoms.GetDecom(ctx, &v1.GetDecomRequest{Id: dc.GetId()})
		return err == nil && d.GetState() == v1.DecomState_DECOM_STATE_SUCCEEDED
	})
	if host, _ := fleet.GetHost(ctx, &v1.GetHostRequest{Name: "m1"}); host.GetState() != v1.HostState_HOST_STATE_RETIRED {
		t.Fatalf("m1 is %s", host.GetState())
	}
	if _, err := decoms.AbortDecom(ops, &v1.AbortDecomRequest{Id: dc.GetId()}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("aborting an ended decommission: %v", err)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func restGet(t *testing.T, url string, want int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("GET %s: %d %s, want %d", url, resp.StatusCode, body, want)
	}
	return string(body)
}

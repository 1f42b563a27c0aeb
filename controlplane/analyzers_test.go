package controlplane_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/clustertest"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// TestAnalyzerAPIRefusals: bad input to the analyzers and alerts, over gRPC and REST, is refused
// with the right code and names the field.
func TestAnalyzerAPIRefusals(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, 1, clustertest.Options{})
	ctx := ctxT(t, 30*time.Second)
	n := c.Nodes[0]
	an, al := v1.NewAnalyzerServiceClient(n.Conn()), v1.NewAlertServiceClient(n.Conn())
	list, err := an.ListAnalyzers(ctx, &v1.ListAnalyzersRequest{})
	if err != nil || len(list.GetAnalyzers()) != 6 {
		t.Fatalf("ListAnalyzers: %v, %v", list, err)
	}
	for _, tc := range []struct {
		name string
		req  *v1.RunAnalyzerRequest
		code codes.Code
		says string
	}{
		{"no name", &v1.RunAnalyzerRequest{}, codes.InvalidArgument, "name"},
		{"unknown analyzer", &v1.RunAnalyzerRequest{Name: "astrology"}, codes.NotFound, "astrology"},
		{"missing input", &v1.RunAnalyzerRequest{Name: "doctor"}, codes.InvalidArgument, "inputs.devserver"},
		{"mistyped input", &v1.RunAnalyzerRequest{Name: "drain-stuck", Inputs: map[string]string{"drain": "d", "stall": "soon"}}, codes.InvalidArgument, "inputs.stall"},
		{"unknown input", &v1.RunAnalyzerRequest{Name: "doctor", Inputs: map[string]string{"devserver": "x", "mood": "bad"}}, codes.InvalidArgument, "inputs.mood"},
		{"unknown devserver", &v1.RunAnalyzerRequest{Name: "doctor", Inputs: map[string]string{"devserver": "nope"}}, codes.NotFound, "nope"},
	} {
		_, err := an.RunAnalyzer(ctx, tc.req)
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v, want %s naming %q", tc.name, err, tc.code, tc.says)
		}
	}
	stream, err := an.Record(ctx, &v1.RecordRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "since") {
		t.Errorf("Record without since: %v", err)
	}
	stream, err = an.Record(ctx, &v1.RecordRequest{Since: timestamppb.New(time.Now().Add(time.Hour))})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("Record from the future: %v", err)
	}
	if _, err := al.GetAlert(ctx, &v1.GetAlertRequest{Id: "a-999"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetAlert of an unknown alert: %v", err)
	}

	base := "http://" + n.Server.HTTPAddr()
	resp, err := http.Post(base+"/v1/analyzers/drain-stuck:run", "application/json", strings.NewReader(`{"inputs": {"drain": "d", "stall": "soon"}}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "inputs.stall") {
		t.Errorf("REST run with a mistyped input: %d %s", resp.StatusCode, body)
	}
	restGet(t, base+"/v1/alerts", http.StatusOK)
	restGet(t, base+"/v1/alerts/a-999", http.StatusNotFound)
	if body := restGet(t, base+"/v1/analyzers", http.StatusOK); !strings.Contains(body, "capacity-risk") {
		t.Errorf("GET /v1/analyzers: %s", body)
	}
}

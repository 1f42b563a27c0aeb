package controlplane_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/devfleet/devfleet/controlplane/clustertest"
)

type restCall struct {
	method, path, body string
	code               int
	// contains is a substring the response body must hold.
	contains string
}

// TestREST drives the gateway on a follower of a 3-node cluster: writes are forwarded, errors
// carry the gRPC message with the right HTTP code, and the operational endpoints answer.
func TestREST(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, 3, clustertest.Options{})
	base := "http://" + c.Followers()[0].Server.HTTPAddr()
	for _, tc := range []restCall{
		{"POST", "/v1/regions", `{"name":"eu"}`, 200, `"name":"eu"`},
		{"POST", "/v1/regions", `{"name":"eu"}`, 409, `region \"eu\" already exists`},
		{"POST", "/v1/regions", `{"name":"EU West"}`, 400, `region.name: \"EU West\" must be lower-case`},
		{"POST", "/v1/regions", `{"nmae":"x"}`, 400, `unknown field`},
		{"POST", "/v1/sites", `{"name":"eu-1","region":"mars"}`, 404, `region \"mars\" not found`},
		{"POST", "/v1/sites", `{"name":"eu-1","region":"eu"}`, 200, `"region":"eu"`},
		{"POST", "/v1/hosts", `{"name":"h1","site":"eu-1","capacity":{"vcpus":-4,"memory_mib":1024}}`, 400, `host.capacity.vcpus: must not be negative`},
		{"POST", "/v1/hosts", `{"name":"h1","site":"eu-1","capacity":{"vcpus":64,"memory_mib":262144},"labels":{"rack":"r1"}}`, 200, `"state":"HOST_STATE_ACTIVE"`},
		{"POST", "/v1/hosts/h1:cordon", `{}`, 400, `reason: must not be empty`},
		{"POST", "/v1/hosts/h1:cordon", `{"reason":"psu"}`, 200, `"state":"HOST_STATE_CORDONED"`},
		{"PATCH", "/v1/hosts/h1", `{"labels":{"rack":"r2"}}`, 200, `"rack":"r2"`},
		{"PATCH", "/v1/hosts/h1?update_mask=state", `{"state":"HOST_STATE_ACTIVE"}`, 400, `path \"state\" cannot be updated`},
		{"GET", "/v1/hosts?region=eu&state=HOST_STATE_CORDONED", "", 200, `"name":"h1"`},
		{"GET", "/v1/hosts?page_token=garbage", "", 400, `page_token`},
		{"GET", "/v1/hosts/h9", "", 404, `host \"h9\" not found`},
		{"GET", "/v1/hosts?region=mars", "", 404, `region \"mars\" not found`},
		{"DELETE", "/v1/sites/eu-1", "", 400, `site \"eu-1\" still has 1 host (h1)`},
		{"GET", "/v1/cluster/members", "", 200, `"suffrage":"SUFFRAGE_VOTER"`},
		{"GET", "/v1/cluster/status?stale=true", "", 200, `"state":"RAFT_STATE_FOLLOWER"`},
		{"GET", "/healthz", "", 200, `"status":"ok"`},
		{"GET", "/readyz", "", 200, `"status":"ready"`},
		{"GET", "/openapi.json", "", 200, `"/v1/hosts/{name}:cordon"`},
		{"GET", "/metrics", "", 200, `devfleet_api_requests_total{code="AlreadyExists",method="/devfleet.v1.FleetService/CreateRegion"} 1`},
		{"GET", "/metrics", "", 200, `devfleet_raft_state{state="Follower"} 1`},
	} {
		req, err := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		compact := strings.NewReplacer(`": "`, `":"`, `", "`, `","`).Replace(string(body))
		if resp.StatusCode != tc.code || !strings.Contains(compact, tc.contains) {
			t.Errorf("%s %s: %d %s\nwant %d containing %s", tc.method, tc.path, resp.StatusCode, body, tc.code, tc.contains)
		}
		if resp.StatusCode >= 400 && tc.path != "/readyz" {
			var e struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal(body, &e); err != nil || e.Message == "" {
				t.Errorf("%s %s: error body is not {code, message}: %s", tc.method, tc.path, body)
			}
		}
	}
}

package benchmark

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// ClaimOptions configures RunClaim.
type ClaimOptions struct {
	Dir     string
	Claims  int
	Clients int
	// Hosts are in-memory hosts of 128 vCPUs and 256 GiB.
	Hosts int
}

// ClaimReport is what RunClaim measured.
type ClaimReport struct {
	Claims   int           `json:"claims"`
	Clients  int           `json:"clients"`
	Hits     int           `json:"pool_hits"`
	Errors   int           `json:"errors"`
	FillTime time.Duration `json:"pool_fill_ns"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	P50      time.Duration `json:"p50_ns"`
	P99      time.Duration `json:"p99_ns"`
	P999     time.Duration `json:"p999_ns"`
}

// RunClaim measures container claims from a warm pool on a 3-node loopback cluster whose hosts
// are in-memory hypervisors: the pool is filled to Claims warm containers by the provisioner
// (the time is printed), then Clients claim them concurrently through the API, each claim timed
// from the call to the answer.
func RunClaim(ctx context.Context, o ClaimOptions, out io.Writer) (ClaimReport, error) {
	rep := ClaimReport{Claims: o.Claims, Clients: o.Clients}
	b, err := startBenchFleet(ctx, o.Dir, "bench", "bench-1")
	if err != nil {
		return rep, err
	}
	defer b.close()
	containers := v1.NewContainerServiceClient(b.conn)
	if _, err := containers.CreateProfile(ctx, &v1.CreateProfileRequest{Profile: &v1.ContainerProfile{Name: "www", Vcpus: 1, MemoryMib: 512}}); err != nil {
		return rep, err
	}
	for i := 1; i <= o.Hosts; i++ {
		if err := b.fakeHost(ctx, fmt.Sprintf("bench-h%d", i), 128, 262144); err != nil {
			return rep, err
		}
	}
	start := time.Now()
	if _, err := containers.SetPool(ctx, &v1.SetPoolRequest{Region: "bench", Profile: "www", Target: int32(o.Claims)}); err != nil {
		return rep, err
	}
	for {
		pools, err := containers.ListPools(ctx, &v1.ListPoolsRequest{})
		if err != nil {
			return rep, err
		}
		if len(pools.GetPools()) == 1 && int(pools.GetPools()[0].GetWarm()) >= o.Claims {
			break
		}
		if time.Since(start) > 5*time.Minute {
			return rep, fmt.Errorf("the pool did not fill within 5m: %v", pools.GetPools())
		}
		time.Sleep(20 * time.Millisecond)
	}
	rep.FillTime = time.Since(start)
	fmt.Fprintf(out, "devfleet: 3 nodes on loopback, %d in-memory hosts; pool bench/www filled with %d warm containers in %s\n",
		o.Hosts, o.Claims, rep.FillTime.Round(time.Millisecond))

	var lat Latencies
	var next, hits, errs atomic.Int64
	var wg sync.WaitGroup
	start = time.Now()
	for cl := 0; cl < o.Clients; cl++ {
		wg.Go(func() {
			for n := next.Add(1); n <= int64(o.Claims); n = next.Add(1) {
				t := time.Now()
				resp, err := containers.ClaimContainer(ctx, &v1.ClaimContainerRequest{Profile: "www", Region: "bench", Owner: fmt.Sprintf("dev%d", n)})
				lat.Add(time.Since(t))
				switch {
				case err != nil:
					errs.Add(1)
				case resp.GetPoolHit():
					hits.Add(1)
				}
			}
		})
	}
	wg.Wait()
	rep.Elapsed = time.Since(start)
	sum := lat.Summarize("claim", o.Clients, int(errs.Load()), rep.Elapsed)
	rep.Hits, rep.Errors, rep.P50, rep.P99 = int(hits.Load()), int(errs.Load()), sum.P50, sum.P99
	rep.P999 = sum.P999
	fmt.Fprintf(out, "claim      clients %4d  %6d claims  %6.0f claims/s  p50 %7.2f ms  p99 %7.2f ms  p99.9 %7.2f ms  pool hits %d  errors %d\n",
		o.Clients, o.Claims, float64(o.Claims)/rep.Elapsed.Seconds(), ms(rep.P50), ms(rep.P99), ms(rep.P999), rep.Hits, rep.Errors)
	return rep, nil
}

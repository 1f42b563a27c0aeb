package controlplane_test

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/devfleet/devfleet/controlplane/clustertest"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

type regInput struct {
	write bool
	value string
}

// register models a region's description: reads return the last written value.
var register = porcupine.Model{
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(regInput)
		if in.write {
			return true, in.value
		}
		return output.(string) == state.(string), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(regInput)
		if in.write {
			return "write " + in.value
		}
		return "read -> " + output.(string)
	},
}

// TestLinearizableAcrossLeaderKill has clients on every node write and (consistently) read one
// region's description while the leader is killed, and checks the history with porcupine: every
// read returns the latest acknowledged write, across forwarding and failover. A write that
// failed may or may not have happened, so it is left open to the end of the history.
func TestLinearizableAcrossLeaderKill(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, 3, clustertest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l := c.WaitLeader()
	if _, err := l.Fleet().CreateRegion(ctx, &v1.CreateRegionRequest{Region: &v1.Region{Name: "eu"}}); err != nil {
		t.Fatal(err)
	}
	clients := make([]v1.FleetServiceClient, len(c.Nodes))
	for i, n := range c.Nodes {
		clients[i] = n.Fleet()
	}

	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	var (
		mu      sync.Mutex
		history []porcupine.Operation
		wg      sync.WaitGroup
	)
	stop := make(chan struct{})
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			target := w
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				fleet := clients[target%len(clients)]
				op := porcupine.Operation{ClientId: w, Call: now()}
				cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
				if i%2 == 0 {
					value := fmt.Sprintf("w%d-%d", w, i)
					op.Input = regInput{write: true, value: value}
					_, err := fleet.UpdateRegion(cctx, &v1.UpdateRegionRequest{Region: &v1.Region{Name: "eu", Description: value}})
					op.Output, op.Return = "", now()
					if err != nil {
						op.Return = math.MaxInt64 // outcome unknown: may take effect any time later
						target++
					}
				} else {
					r, err := fleet.GetRegion(cctx, &v1.GetRegionRequest{Name: "eu"})
					ccancel()
					if err != nil {
						target++
						continue
					}
					op.Input, op.Output, op.Return = regInput{}, r.GetDescription(), now()
				}
				ccancel()
				mu.Lock()
				history = append(history, op)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(700 * time.Millisecond)
	for i, n := range c.Nodes {
		if n == l {
			c.Kill(i)
		}
	}
	c.WaitLeader()
	time.Sleep(700 * time.Millisecond)
	close(stop)
	wg.Wait()

	if len(history) < 50 {
		t.Fatalf("only %d operations recorded", len(history))
	}
	res := porcupine.CheckOperationsTimeout(register, history, 30*time.Second)
	switch res {
	case porcupine.Illegal:
		t.Fatalf("history of %d operations is not linearizable", len(history))
	case porcupine.Unknown:
		t.Logf("linearizability check timed out on %d operations (inconclusive)", len(history))
	default:
		t.Logf("%d operations across a leader kill: linearizable", len(history))
	}
}

package fsm

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
)

// BenchmarkApplyCreateDevserver measures applying CreateDevserver commands in batches of 32
// (one raft entry each) on a store that already holds 50,000 devservers.
func BenchmarkApplyCreateDevserver(b *testing.B) {
	h := newHarness(&testing.T{})
	h.t = nil
	f := h.fsm
	idx := uint64(0)
	apply := func(cmds []*fsmv1.Command) {
		idx++
		data, err := EncodeBatch(cmds)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range f.Apply(&raft.Log{Index: idx, Data: data}).([]Result) {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
	}
	apply([]*fsmv1.Command{cRegion("eu")})
	apply([]*fsmv1.Command{cFlavor("small", 4, 8192)})
	n := 0
	batch := func() []*fsmv1.Command {
		cmds := make([]*fsmv1.Command, 32)
		for i := range cmds {
			n++
			cmds[i] = cDevserver(fmt.Sprintf("r1-c%d-d%d", n%64, n), "bench", "small", "eu", "", fmt.Sprintf("%08x-aaaa-bbbb-cccc-%012d", n*2654435761%(1<<32), n))
		}
		return cmds
	}
	for i := 0; i < 50000/32; i++ {
		apply(batch())
	}
	b.ResetTimer()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		apply(batch())
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*32), "ns/command")
}

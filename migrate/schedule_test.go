package migrate

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func mig(id, src, dst, by string, prio int32, phase v1.MigrationPhase, index uint64) *v1.Migration {
	return &v1.Migration{Id: id, SourceHost: src, DestHost: dst, RequestedBy: by, Priority: prio, Phase: phase, CreateIndex: index}
}

const (
	pending = v1.MigrationPhase_MIGRATION_PHASE_PENDING
	runs    = v1.MigrationPhase_MIGRATION_PHASE_RUNNING
	done    = v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED
)

// siteOf: hosts a* are in site A, b* in site B.
func siteOf(h string) string { return h[:1] }

func ids(ms []*v1.Migration) string {
	s := ""
	for _, m := range ms {
		s += m.GetId() + " "
	}
	return s
}

func TestScheduleOrderAndLimits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		all  []*v1.Migration
		l    Limits
		want string
	}{
		{"priority first, then age", []*v1.Migration{
			mig("user", "a1", "b1", "bob", 100, pending, 1),
			mig("maint", "a2", "b2", "ops", 200, pending, 2),
			mig("evac", "a3", "b3", "ops", 300, pending, 3),
		}, Limits{}, "evac maint user "},
		{"per source host", []*v1.Migration{
			mig("r1", "a1", "b1", "x", 1, runs, 1),
			mig("p1", "a1", "b2", "x", 1, pending, 2),
			mig("p2", "a1", "b3", "x", 1, pending, 3),
			mig("p3", "a2", "b3", "x", 1, pending, 4),
		}, Limits{}, "p1 p3 "},
		{"per destination host", []*v1.Migration{
			mig("p1", "a1", "b1", "x", 1, pending, 1),
			mig("p2", "a2", "b1", "x", 1, pending, 2),
			mig("p3", "a3", "b1", "x", 1, pending, 3),
		}, Limits{}, "p1 p2 "},
		{"per site counts both ends", []*v1.Migration{
			mig("p1", "a1", "b1", "x", 1, pending, 1),
			mig("p2", "a2", "b2", "x", 1, pending, 2),
			mig("p3", "a3", "a4", "x", 1, pending, 3),
		}, Limits{PerSite: 2}, "p1 p2 "},
		{"cluster-wide", []*v1.Migration{
			mig("r1", "a1", "b1", "x", 1, runs, 1),
			mig("d1", "a9", "b9", "x", 1, done, 1), // ended: holds no slot
			mig("p1", "a2", "b2", "x", 1, pending, 2),
			mig("p2", "a3", "b3", "x", 1, pending, 3),
		}, Limits{Cluster: 2}, "p1 "},
		{"requesters take turns within a priority", []*v1.Migration{
			mig("d1-1", "a1", "b1", "drain-1", 200, pending, 1),
			mig("d1-2", "a2", "b2", "drain-1", 200, pending, 2),
			mig("d1-3", "a3", "b3", "drain-1", 200, pending, 3),
			mig("d2-1", "a4", "b4", "drain-2", 200, pending, 4),
			mig("d2-2", "a5", "b5", "drain-2", 200, pending, 5),
		}, Limits{Cluster: 4, PerSite: 10}, "d1-1 d2-1 d1-2 d2-2 "},
		{"an abort request is never started", []*v1.Migration{
			{Id: "p1", SourceHost: "a1", DestHost: "b1", Phase: pending, AbortRequested: true},
		}, Limits{}, ""},
		{"one asked to start later waits; one whose time came goes", []*v1.Migration{
			{Id: "later", SourceHost: "a1", DestHost: "b1", Phase: pending, CreateIndex: 1, NotBefore: timestamppb.New(time.Now().Add(time.Hour))},
			{Id: "due", SourceHost: "a2", DestHost: "b2", Phase: pending, CreateIndex: 2, NotBefore: timestamppb.New(time.Now().Add(-time.Second))},
		}, Limits{}, "due "},
	} {
		if got := ids(Schedule(tc.all, tc.l, siteOf, time.Now())); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// Under random arrivals and endings, what runs never exceeds a limit, and a free slot is never
// left unused while a pending migration could take it.
func TestScheduleNeverExceedsLimits(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 5))
	l := Limits{PerSource: 2, PerDest: 2, PerSite: 3, Cluster: 5}
	hosts := []string{"a1", "a2", "a3", "b1", "b2", "b3", "c1"}
	var all []*v1.Migration
	for step := 0; step < 2000; step++ {
		switch rng.IntN(3) {
		case 0, 1:
			src, dst := hosts[rng.IntN(len(hosts))], hosts[rng.IntN(len(hosts))]
			if src != dst {
				all = append(all, mig(fmt.Sprint(step), src, dst, fmt.Sprint("g", rng.IntN(3)), int32(rng.IntN(3)*100), pending, uint64(step)))
			}
		default:
			for _, m := range all {
				if running(m) && rng.IntN(2) == 0 {
					m.Phase = done
				}
			}
		}
		for _, m := range Schedule(all, l, siteOf, time.Now()) {
			m.Phase = runs
		}
		src, dst, site, total := map[string]int{}, map[string]int{}, map[string]int{}, 0
		for _, m := range all {
			if !running(m) {
				continue
			}
			src[m.SourceHost]++
			dst[m.DestHost]++
			site[siteOf(m.SourceHost)]++
			if siteOf(m.DestHost) != siteOf(m.SourceHost) {
				site[siteOf(m.DestHost)]++
			}
			total++
		}
		for h, n := range src {
			if n > l.PerSource {
				t.Fatalf("step %d: %d leaving %s", step, n, h)
			}
		}
		for h, n := range dst {
			if n > l.PerDest {
				t.Fatalf("step %d: %d arriving at %s", step, n, h)
			}
		}
		for s, n := range site {
			if n > l.PerSite {
				t.Fatalf("step %d: %d at site %s", step, n, s)
			}
		}
		if total > l.Cluster {
			t.Fatalf("step %d: %d running", step, total)
		}
		if again := Schedule(all, l, siteOf, time.Now()); len(again) != 0 {
			t.Fatalf("step %d: a second pass still starts %s: slots were left unused", step, ids(again))
		}
	}
}

package benchmark

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/devfleet/devfleet/controlplane/api"
	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// MigrateOptions configures RunMigrate.
type MigrateOptions struct {
	Dir string
	// Migrations is how many devservers are moved in each of the two runs.
	Migrations int
}

// MigrateReport is what RunMigrate measured.
type MigrateReport struct {
	Migrations int `json:"migrations"`
	// Overhead is from the migration being recorded to libvirt's migrate call being issued
	// (the record turning running), with nothing else queued: scheduling, the target check and
	// three raft writes.
	OverheadP50 time.Duration `json:"overhead_p50_ns"`
	OverheadP99 time.Duration `json:"overhead_p99_ns"`
	// Dispatch is from a migration ending to the next queued one's migrate call, with every
	// migration queued at once behind the per-source limit.
	DispatchP50 time.Duration `json:"dispatch_p50_ns"`
	DispatchP99 time.Duration `json:"dispatch_p99_ns"`
}

// RunMigrate measures the migration controller's own costs on a 3-node loopback cluster with
// two in-memory hosts (64 MiB diskless guests, so the moves themselves take a few
// milliseconds): first one move at a time, then all queued at once. Times come from the
// leader's stamps in the records (create, start, end), not from polling.
func RunMigrate(ctx context.Context, o MigrateOptions, out io.Writer) (MigrateReport, error) {
	rep := MigrateReport{Migrations: o.Migrations}
	b, err := startBenchFleet(ctx, o.Dir, "bench", "bench-1")
	if err != nil {
		return rep, err
	}
	defer b.close()
	fleet, migrations := b.fleet, v1.NewMigrationServiceClient(b.conn)
	if _, err := fleet.CreateFlavor(ctx, &v1.CreateFlavorRequest{Flavor: &v1.Flavor{Name: "mini", Resources: &v1.Resources{Vcpus: 1, MemoryMib: 64}}}); err != nil {
		return rep, err
	}
	for _, h := range []string{"bench-h1", "bench-h2"} {
		if err := b.fakeHost(ctx, h, 1024, 1<<20); err != nil {
			return rep, err
		}
	}
	for i := range o.Migrations {
		if _, err := fleet.CreateDevserver(ctx, &v1.CreateDevserverRequest{Devserver: &v1.Devserver{Name: fmt.Sprintf("mv-%d", i), Owner: "bench",
			Flavor: "mini", Region: "bench", Host: "bench-h1", Lifespan: v1.Lifespan_LIFESPAN_PERMANENT}}); err != nil {
			return rep, err
		}
	}
	store := b.c.Leader().Node().FSM().Store()
	if err := waitUntil(ctx, time.Minute, func() bool {
		for i := range o.Migrations {
			if d, err := store.View().GetDevserver(fmt.Sprintf("mv-%d", i)); err != nil || d.GetState() != v1.DevserverState_DEVSERVER_STATE_RUNNING {
				return false
			}
		}
		return true
	}); err != nil {
		return rep, fmt.Errorf("devservers not running: %w", err)
	}
	as := metadata.AppendToOutgoingContext(ctx, api.AsHeader, "bench")
	migrate := func(name, to string) (string, error) {
		m, err := migrations.MigrateDevserver(as, &v1.MigrateDevserverRequest{Name: name, ToHost: to})
		return m.GetId(), err
	}
	ended := func(ids []string) func() bool {
		return func() bool {
			for _, id := range ids {
				if m, err := store.View().GetMigration(id); err != nil || !state.Final(m.GetPhase()) {
					return false
				}
			}
			return true
		}
	}

	// One at a time: the overhead before libvirt is called.
	var overhead []time.Duration
	for i := range o.Migrations {
		id, err := migrate(fmt.Sprintf("mv-%d", i), "bench-h2")
		if err != nil {
			return rep, err
		}
		if err := waitUntil(ctx, time.Minute, ended([]string{id})); err != nil {
			return rep, err
		}
		m, _ := store.View().GetMigration(id)
		if m.GetPhase() != v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED {
			return rep, fmt.Errorf("migration %s: %s %s", id, m.GetPhase(), m.GetFailureReason())
		}
		overhead = append(overhead, m.GetStartTime().AsTime().Sub(m.GetCreateTime().AsTime()))
	}
	// All at once, back: each waits for a slot (2 leaving a host).
	var ids []string
	for i := range o.Migrations {
		id, err := migrate(fmt.Sprintf("mv-%d", i), "bench-h1")
		if err != nil {
			return rep, err
		}
		ids = append(ids, id)
	}
	if err := waitUntil(ctx, 5*time.Minute, ended(ids)); err != nil {
		return rep, err
	}
	var ms []*v1.Migration
	for _, id := range ids {
		m, _ := store.View().GetMigration(id)
		ms = append(ms, m)
	}
	// With two slots (2 leaving bench-h2, 2 arriving at bench-h1), the k-th migration to start
	// took the slot freed by the (k-2)-th to end.
	var starts, ends []time.Time
	for _, m := range ms {
		starts, ends = append(starts, m.GetStartTime().AsTime()), append(ends, m.GetEndTime().AsTime())
	}
	slices.SortFunc(starts, time.Time.Compare)
	slices.SortFunc(ends, time.Time.Compare)
	var dispatch []time.Duration
	for k := 2; k < len(starts); k++ {
		dispatch = append(dispatch, starts[k].Sub(ends[k-2]))
	}
	q := func(ds []time.Duration, p float64) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[min(len(s)-1, int(p*float64(len(s))))]
	}
	rep.OverheadP50, rep.OverheadP99 = q(overhead, 0.5), q(overhead, 0.99)
	rep.DispatchP50, rep.DispatchP99 = q(dispatch, 0.5), q(dispatch, 0.99)
	fmt.Fprintf(out, "devfleet: 3 nodes on loopback, 2 in-memory hosts; %d migrations one at a time, then %d queued at once (2 per source host)\n", o.Migrations, o.Migrations)
	fmt.Fprintf(out, "recorded -> libvirt migrate call: p50 %s, p99 %s\n", rep.OverheadP50.Round(10*time.Microsecond), rep.OverheadP99.Round(10*time.Microsecond))
	fmt.Fprintf(out, "slot freed -> next queued migration's call: p50 %s, p99 %s (%d measured)\n", rep.DispatchP50.Round(10*time.Microsecond), rep.DispatchP99.Round(10*time.Microsecond), len(dispatch))
	return rep, nil
}

// waitUntil polls cond every few milliseconds until it holds or timeout passes.
func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not done within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

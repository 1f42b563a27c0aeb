package drain

import (
	"fmt"
	"testing"

	"github.com/devfleet/devfleet/capacity"
	"github.com/devfleet/devfleet/controlplane/fsm/fsmtest"
	"github.com/devfleet/devfleet/controlplane/state"
	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// testFleet builds a small state through the FSM's commands (no raft), as the controllers'
// tests do, so that plans are made on fleets the state machine accepted.
type testFleet struct {
	t          *testing.T
	a          *fsmtest.Applier
	st         *state.Store
	siteRegion map[string]string
	hostRegion map[string]string
	devs       int
}

func newTestFleet(t *testing.T) *testFleet {
	a, st := fsmtest.New(nil)
	return &testFleet{t: t, a: a, st: st, siteRegion: map[string]string{}, hostRegion: map[string]string{}}
}

func (tf *testFleet) region(name string, reserveFraction float64, sites ...string) *testFleet {
	r := &v1.Region{Name: name}
	if reserveFraction > 0 {
		r.Reserve = &v1.CapacityReserve{Fraction: reserveFraction}
	}
	tf.a.Must(tf.t, &fsmv1.Command{Op: &fsmv1.Command_CreateRegion{CreateRegion: &fsmv1.CreateRegion{Region: r}}})
	for _, s := range sites {
		tf.a.Must(tf.t, &fsmv1.Command{Op: &fsmv1.Command_CreateSite{CreateSite: &fsmv1.CreateSite{Site: &v1.Site{Name: s, Region: name}}}})
		tf.siteRegion[s] = name
	}
	return tf
}

func (tf *testFleet) flavor(name string, cpus, memGiB, diskGiB int64, kind v1.FlavorKind, allowed ...string) *testFleet {
	tf.a.Must(tf.t, &fsmv1.Command{Op: &fsmv1.Command_CreateFlavor{CreateFlavor: &fsmv1.CreateFlavor{Flavor: &v1.Flavor{
		Name: name, Resources: &v1.Resources{Vcpus: cpus, MemoryMib: memGiB << 10, DiskGib: diskGiB}, Kind: kind, AllowedRegions: allowed,
	}}}})
	return tf
}

func (tf *testFleet) host(name, site string, cpus, memGiB int64) *testFleet {
	tf.a.Must(tf.t, &fsmv1.Command{Op: &fsmv1.Command_CreateHost{CreateHost: &fsmv1.CreateHost{Host: &v1.Host{
		Name: name, Site: site, Capacity: &v1.Resources{Vcpus: cpus, MemoryMib: memGiB << 10, DiskGib: 10000},
	}}}})
	tf.hostRegion[name] = tf.siteRegion[site]
	return tf
}

// dev puts devservers of a flavor on a host, named by the prefix and a number.
func (tf *testFleet) dev(host, flavor string, names ...string) *testFleet {
	for _, name := range names {
		tf.devs++
		tf.a.Must(tf.t, &fsmv1.Command{Op: &fsmv1.Command_CreateDevserver{CreateDevserver: &fsmv1.CreateDevserver{Devserver: &v1.Devserver{
			Name: name, Id: fmt.Sprintf("00000000-0000-4000-8000-%012d", tf.devs), Owner: "owner-" + name,
			Flavor: flavor, Region: tf.hostRegion[host], Host: host, Lifespan: v1.Lifespan_LIFESPAN_PERMANENT,
		}}}})
	}
	return tf
}

func (tf *testFleet) fleet() *capacity.Fleet { return capacity.Load(tf.st.View()) }

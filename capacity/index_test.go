package capacity

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/devfleet/devfleet/capacity/fit"
	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// TestIndexDecidesAsAFullScan drives a real store through random host, region and devserver
// changes (and a snapshot restore) and checks after every step that the index, fed only by the
// store's change notifications, decides and reserves exactly as Place and ReserveOf over a
// fresh read of the region's hosts.
func TestIndexDecidesAsAFullScan(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 11))
	st := state.New()
	idx := NewIndex()
	st.Observe(idx)
	index := uint64(0)
	write := func(fn func(w *state.WriteTxn) error) {
		index++
		w := st.Begin(index, time.Unix(1_700_000_000, 0))
		if err := fn(w); err != nil {
			w.Abort()
			return
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	regions := []string{"eu", "us"}
	flavors := []*v1.Flavor{flavor("s", 2, 4096, 0), flavor("l", 16, 65536, 0), flavor("g", 8, 16384, 1)}
	metal := &v1.Flavor{Name: "metal", Resources: res(16, 65536, 100, 0), Kind: v1.FlavorKind_FLAVOR_KIND_PHYSICAL}
	flavors = append(flavors, metal)
	write(func(w *state.WriteTxn) error {
		for _, r := range regions {
			if _, err := w.CreateRegion(&v1.Region{Name: r}); err != nil {
				return err
			}
			for s := 1; s <= 2; s++ {
				if _, err := w.CreateSite(&v1.Site{Name: fmt.Sprintf("%s-%d", r, s), Region: r}); err != nil {
					return err
				}
			}
		}
		for _, f := range flavors {
			if _, err := w.CreateFlavor(f); err != nil {
				return err
			}
		}
		return nil
	})
	check := func(step int) {
		t.Helper()
		v := st.View()
		for _, r := range regions {
			region, _ := v.GetRegion(r)
			hosts := v.HostsIn(r)
			if got, want := idx.Reserve(r), ReserveOf(region, hosts); got != want {
				t.Fatalf("step %d: region %s: index reserve %+v, full scan %+v", step, r, got, want)
			}
			for _, f := range flavors {
				req := &Request{Flavor: f, Region: r, Reserve: ReserveOf(region, hosts),
					Pending: map[string]fit.Amount{fmt.Sprintf("h%02d", step%30): {VCPUs: 8, MemoryMiB: 32768}, "h-gone": {VCPUs: 1}}}
				got, want := idx.Place(req), Place(hosts, req)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("step %d: region %s flavor %s:\nindex     %+v\nfull scan %+v", step, r, f.GetName(), got, want)
				}
			}
		}
	}
	hostName := func() string { return fmt.Sprintf("h%02d", rng.IntN(30)) }
	for step := 0; step < 600; step++ {
		switch op := rng.IntN(10); {
		case op < 3:
			r := regions[rng.IntN(len(regions))]
			write(func(w *state.WriteTxn) error {
				_, err := w.CreateHost(&v1.Host{Name: hostName(), Site: fmt.Sprintf("%s-%d", r, 1+rng.IntN(2)),
					Capacity: res(int64(16+16*rng.IntN(4)), int64(65536*(1+rng.IntN(4))), 1000, int64(rng.IntN(2)))})
				return err
			})
		case op < 6:
			f := flavors[rng.IntN(len(flavors))]
			r := regions[rng.IntN(len(regions))]
			d := Place(st.View().HostsIn(r), &Request{Flavor: f, Region: r})
			if d.Host == nil {
				continue
			}
			write(func(w *state.WriteTxn) error {
				_, err := w.CreateDevserver(&v1.Devserver{Name: fmt.Sprintf("d%d", step), Id: fmt.Sprint(step), Owner: "alice",
					Flavor: f.GetName(), Region: r, Host: d.Host.GetName(), Lifespan: v1.Lifespan_LIFESPAN_PERMANENT})
				return err
			})
		case op < 7:
			ds := st.View().DevserversOf("alice")
			if len(ds) == 0 {
				continue
			}
			write(func(w *state.WriteTxn) error {
				_, err := w.DeleteDevserver(ds[rng.IntN(len(ds))].GetName())
				return err
			})
		case op < 8:
			name := hostName()
			write(func(w *state.WriteTxn) error {
				if rng.IntN(2) == 0 {
					_, err := w.CordonHost(name, "test")
					return err
				}
				_, err := w.UncordonHost(name, "test")
				return err
			})
		case op < 9:
			name := hostName()
			write(func(w *state.WriteTxn) error { return w.DeleteHost(name) })
		default:
			r := regions[rng.IntN(len(regions))]
			reserve := &v1.CapacityReserve{}
			if rng.IntN(2) == 0 {
				reserve.Fraction = 0.25
			} else {
				reserve.Hosts = int32(rng.IntN(3))
			}
			write(func(w *state.WriteTxn) error {
				_, err := w.UpdateRegion(&v1.Region{Name: r, Reserve: reserve}, []string{"reserve"})
				return err
			})
		}
		check(step)
		if step == 300 {
			var buf bytes.Buffer
			if err := st.View().Persist(&buf); err != nil {
				t.Fatal(err)
			}
			restored, err := state.Restore(&buf)
			if err != nil {
				t.Fatal(err)
			}
			st.ReplaceWith(state.New()) // an empty store: the index must forget everything...
			check(step)
			st.ReplaceWith(restored) // ...and then learn it all back
			check(step)
		}
	}
}

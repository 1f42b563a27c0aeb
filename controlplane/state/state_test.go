package state

import (
	"fmt"
	"testing"
	"time"

	"github.com/devfleet/devfleet/controlplane/apierror"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func fill(t *testing.T, s *Store) {
	t.Helper()
	idx := uint64(0)
	do := func(f func(w *WriteTxn) error) {
		t.Helper()
		idx++
		w := s.Begin(idx, time.Unix(int64(idx), 0))
		if err := f(w); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []string{"eu", "us"} {
		do(func(w *WriteTxn) error { _, err := w.CreateRegion(&v1.Region{Name: r}); return err })
		for i := 1; i <= 2; i++ {
			site := fmt.Sprintf("%s-%d", r, i)
			do(func(w *WriteTxn) error { _, err := w.CreateSite(&v1.Site{Name: site, Region: r}); return err })
			for j := 0; j < 5; j++ {
				do(func(w *WriteTxn) error {
					_, err := w.CreateHost(&v1.Host{Name: fmt.Sprintf("%s-h%d", site, j), Site: site, Capacity: &v1.Resources{Vcpus: 8, MemoryMib: 1024}})
					return err
				})
			}
		}
	}
	do(func(w *WriteTxn) error { _, err := w.CordonHost("eu-1-h3", "fan"); return err })
}

func TestListHostsPagesAndFilters(t *testing.T) {
	t.Parallel()
	s := New()
	fill(t, s)
	v := s.View()
	for _, tc := range []struct {
		filter HostFilter
		want   int
	}{
		{HostFilter{}, 20},
		{HostFilter{Region: "eu"}, 10},
		{HostFilter{Site: "us-2"}, 5},
		{HostFilter{Region: "us", Site: "eu-1"}, 0},
		{HostFilter{State: v1.HostState_HOST_STATE_CORDONED}, 1},
		{HostFilter{Region: "eu", State: v1.HostState_HOST_STATE_ACTIVE}, 9},
	} {
		for _, size := range []int{1, 3, 100} {
			var names []string
			p := Page{Size: size}
			for pages := 0; ; pages++ {
				if pages > 25 {
					t.Fatalf("%+v size %d: paging does not end", tc.filter, size)
				}
				hosts, next := v.ListHosts(tc.filter, p)
				if len(hosts) > size {
					t.Fatalf("page of %d rows, size %d", len(hosts), size)
				}
				for _, h := range hosts {
					names = append(names, h.GetName())
				}
				if next == "" {
					break
				}
				var err error
				if p, err = ParsePage(int32(size), next); err != nil {
					t.Fatal(err)
				}
			}
			if len(names) != tc.want {
				t.Fatalf("%+v size %d: %d hosts, want %d: %v", tc.filter, size, len(names), tc.want, names)
			}
			for i := 1; i < len(names); i++ {
				if names[i-1] >= names[i] {
					t.Fatalf("%+v: not in name order: %v", tc.filter, names)
				}
			}
		}
	}
}

func TestParsePage(t *testing.T) {
	t.Parallel()
	if _, err := ParsePage(-1, ""); apierror.KindOf(err) != apierror.InvalidArgument {
		t.Fatalf("negative size: %v", err)
	}
	if _, err := ParsePage(10, "garbage!"); apierror.KindOf(err) != apierror.InvalidArgument {
		t.Fatalf("bad token: %v", err)
	}
	if p, _ := ParsePage(0, ""); p.Size != DefaultPageSize {
		t.Fatalf("default size %d", p.Size)
	}
	if p, _ := ParsePage(5000, ""); p.Size != MaxPageSize {
		t.Fatalf("capped size %d", p.Size)
	}
}

func TestBlockerMessagesNameTheBlockers(t *testing.T) {
	t.Parallel()
	s := New()
	fill(t, s)
	w := s.Begin(1000, time.Unix(1000, 0))
	defer w.Abort()
	err := w.DeleteSite("eu-1")
	want := `site "eu-1" still has 5 hosts (eu-1-h0, eu-1-h1, eu-1-h2, eu-1-h3, eu-1-h4); delete them first`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	if err := w.DeleteRegion("us"); err == nil || err.Error() != `region "us" still has 2 sites (us-1, us-2); delete them first` {
		t.Fatalf("got %v", err)
	}
}

func TestWatchTableWakesOnChange(t *testing.T) {
	t.Parallel()
	s := New()
	fill(t, s)
	ch := s.View().WatchTable(TableHosts)
	w := s.Begin(500, time.Unix(500, 0))
	if _, err := w.CordonHost("us-1-h0", "psu"); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not fire")
	}
	if got := s.View().Index(TableHosts); got != 500 {
		t.Fatalf("hosts index = %d", got)
	}
}

package validate

import (
	"errors"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/devfleet/devfleet/controlplane/apierror"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func TestName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"eu-west", true}, {"h1.fra2", true}, {"a", true}, {"0", true},
		{"", false}, {"-a", false}, {"a-", false}, {"A", false}, {"a b", false}, {"a_b", false},
		{"a..b", false}, {strings.Repeat("a", 63), true}, {strings.Repeat("a", 64), false}, {"é", false},
	} {
		err := Name("x.name", tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("Name(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if err != nil && (apierror.KindOf(err) != apierror.InvalidArgument || !strings.HasPrefix(err.Error(), "x.name: ")) {
			t.Errorf("Name(%q) error %q does not name the field", tc.in, err)
		}
	}
}

func TestHost(t *testing.T) {
	t.Parallel()
	valid := func() *v1.Host {
		return &v1.Host{Name: "h1", Site: "s1", Capacity: &v1.Resources{Vcpus: 8, MemoryMib: 1024}}
	}
	for _, tc := range []struct {
		name  string
		edit  func(h *v1.Host)
		field string
	}{
		{"valid", func(*v1.Host) {}, ""},
		{"no site", func(h *v1.Host) { h.Site = "" }, "host.site"},
		{"nan overcommit", func(h *v1.Host) { h.Overcommit = &v1.Overcommit{Memory: math.NaN()} }, "host.overcommit.memory"},
		{"too many gpus", func(h *v1.Host) { h.Capacity.Gpus = 65 }, "host.capacity.gpus"},
		{"bad label key", func(h *v1.Host) { h.Labels = map[string]string{"-x": "y"} }, "host.labels"},
		{"control char in label", func(h *v1.Host) { h.Labels = map[string]string{"x": "a\nb"} }, "host.labels[x]"},
		{"ssh uri ok", func(h *v1.Host) { h.LibvirtUri = "qemu+ssh://root@h1/system" }, ""},
		{"unix uri ok", func(h *v1.Host) { h.LibvirtUri = "qemu+unix:///system?socket=/run/x.sock" }, ""},
		{"http uri", func(h *v1.Host) { h.LibvirtUri = "http://h1/" }, "host.libvirt_uri"},
	} {
		h := valid()
		tc.edit(h)
		err := Host("host", h)
		var e *apierror.Error
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.field != "" && (!errors.As(err, &e) || e.Field != tc.field):
			t.Errorf("%s: error %v, want field %s", tc.name, err, tc.field)
		}
	}
}

func TestUpdatePaths(t *testing.T) {
	t.Parallel()
	got, err := UpdatePaths("update_mask", nil, HostUpdatable, HostUpdatable)
	if err != nil || len(got) != len(HostUpdatable) {
		t.Fatalf("empty mask: %v %v", got, err)
	}
	got, err = UpdatePaths("update_mask", &fieldmaskpb.FieldMask{Paths: []string{"labels", "labels"}}, HostUpdatable, nil)
	if err != nil || len(got) != 1 {
		t.Fatalf("duplicate path: %v %v", got, err)
	}
	if _, err := UpdatePaths("update_mask", &fieldmaskpb.FieldMask{Paths: []string{"state"}}, HostUpdatable, nil); err == nil ||
		!strings.Contains(err.Error(), `"state" cannot be updated`) {
		t.Fatalf("bad path: %v", err)
	}
}

func FuzzValidateHost(f *testing.F) {
	f.Add("h1", "s1", int64(8), int64(1024), int64(0), int64(0), 1.0, "rack", "r1", "qemu:///system")
	f.Add("", "", int64(-1), int64(1<<50), int64(-5), int64(99), math.NaN(), "", "\x00", "::")
	f.Fuzz(func(t *testing.T, name, site string, cpus, mem, disk, gpus int64, oc float64, lk, lv, uri string) {
		h := &v1.Host{
			Name: name, Site: site, Capacity: &v1.Resources{Vcpus: cpus, MemoryMib: mem, DiskGib: disk, Gpus: gpus},
			Overcommit: &v1.Overcommit{Cpu: oc}, Labels: map[string]string{lk: lv}, LibvirtUri: uri,
		}
		err := Host("host", h)
		if err != nil {
			var e *apierror.Error
			if !errors.As(err, &e) || e.Kind != apierror.InvalidArgument || !strings.HasPrefix(e.Field, "host") {
				t.Fatalf("error %v is not an InvalidArgument naming a host field", err)
			}
			return
		}
		if cpus <= 0 || cpus > MaxVCPUs || mem <= 0 || mem > MaxMemoryMiB || disk < 0 || gpus < 0 || gpus > MaxGPUs {
			t.Fatalf("accepted capacity %d/%d/%d/%d", cpus, mem, disk, gpus)
		}
		if oc != 0 && !(oc >= 1 && oc <= MaxOvercommit) {
			t.Fatalf("accepted overcommit %v", oc)
		}
		if !nameRE.MatchString(name) || !nameRE.MatchString(site) {
			t.Fatalf("accepted names %q %q", name, site)
		}
	})
}

func FuzzValidateDevserver(f *testing.F) {
	f.Add("d1", "alice", "bob", "small", "eu", "", int32(2))
	f.Add("", "", "", "", "", "..", int32(-1))
	f.Fuzz(func(t *testing.T, name, owner, sharer, flavor, region, host string, lifespan int32) {
		d := &v1.Devserver{Name: name, Owner: owner, Sharers: []string{sharer}, Flavor: flavor, Region: region, Host: host, Lifespan: v1.Lifespan(lifespan)}
		err := Devserver("devserver", d)
		if err != nil {
			var e *apierror.Error
			if !errors.As(err, &e) || e.Kind != apierror.InvalidArgument || !strings.HasPrefix(e.Field, "devserver") {
				t.Fatalf("error %v is not an InvalidArgument naming a devserver field", err)
			}
			return
		}
		if d.Lifespan != v1.Lifespan_LIFESPAN_PERMANENT || sharer == owner || !userRE.MatchString(owner) || !nameRE.MatchString(name) {
			t.Fatalf("accepted %v", d)
		}
	})
}

package cli

import (
	"reflect"
	"testing"
)

func TestRegionReserveAndFlavorRegions(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.seed("fra1-h1")
	f.ok("region", "add", "us")

	for _, tc := range []struct {
		args          []string
		print, stored string
	}{
		{[]string{"--reserve-fraction", "0.1", "--description", "Europe west"}, "region eu updated; reserve 10%\n", "10%"},
		{[]string{"--reserve-fraction", "0.07"}, "region eu updated; reserve 7%\n", "7%"},
		{[]string{"--reserve-hosts", "2"}, "region eu updated; reserve 2 hosts\n", "2 hosts"},
		// Only the fields given change: the reserve stays.
		{[]string{"--description", "Europe"}, "region eu updated; reserve 2 hosts\n", "2 hosts"},
		{[]string{"--no-reserve"}, "region eu updated; reserve none\n", "-"},
	} {
		if got := f.ok(append([]string{"region", "update", "eu"}, tc.args...)...); got != tc.print {
			t.Errorf("region update %v printed %q, want %q", tc.args, got, tc.print)
		}
		if got := keyValues(t, f.ok("region", "show", "eu"))["reserve"]; got != tc.stored {
			t.Errorf("after region update %v: reserve %q, want %q", tc.args, got, tc.stored)
		}
	}
	f.ok("region", "update", "eu", "--reserve-hosts", "1")
	if r := keyValues(t, f.ok("region", "show", "eu")); r["description"] != "Europe" || r["reserve"] != "1 host" {
		t.Errorf("region show = %v", r)
	}
	f.ok("region", "update", "us", "--reserve-fraction", "0.25")
	if got, want := rows(f.ok("region", "list")), [][]string{{"NAME", "RESERVE", "DESCRIPTION"}, {"eu", "1", "host", "Europe"}, {"us", "25%", "-"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("region list: got %q, want %q", got, want)
	}
	if r := decode[map[string]any](t, f.ok("-o", "json", "region", "update", "us", "--reserve-hosts", "3")); !reflect.DeepEqual(r["reserve"], map[string]any{"hosts": 3.0}) {
		t.Errorf("region update -o json = %v", r)
	}
	f.fail(1, []string{"region", "update", "eu", "--reserve-fraction", "1.5"}, "region.reserve.fraction", "between 0 and 0.9", "(InvalidArgument)")
	f.fail(1, []string{"region", "update", "mars", "--no-reserve"}, `region "mars" not found (NotFound)`)

	// Flavors: any region unless limited.
	if got, want := f.ok("flavor", "add", "xl", "--cpus", "16", "--memory-mib", "65536", "--disk-gib", "100", "--allowed-regions", "eu"),
		"flavor xl created (vm: vcpus=16 memory_mib=65536 disk_gib=100 gpus=0; regions eu)\n"; got != want {
		t.Errorf("flavor add printed %q, want %q", got, want)
	}
	f.ok("flavor", "add", "small", "--cpus", "4", "--memory-mib", "16384", "--disk-gib", "100")
	wantFlavors := [][]string{
		{"NAME", "KIND", "CPUS", "MEMORY_MIB", "DISK_GIB", "GPUS", "ALLOWED_REGIONS", "REPAIR", "DESCRIPTION"},
		{"small", "vm", "4", "16384", "100", "0", "any", "recreate", "-"},
		{"xl", "vm", "16", "65536", "100", "0", "eu", "recreate", "-"},
	}
	if got := rows(f.ok("flavor", "list")); !reflect.DeepEqual(got, wantFlavors) {
		t.Errorf("flavor list:\n got %q\nwant %q", got, wantFlavors)
	}
	for _, tc := range []struct {
		args          []string
		print, stored string
	}{
		{[]string{"--allowed-regions", "eu,us"}, "flavor xl updated; regions eu,us\n", "eu,us"},
		{[]string{"--description", "a whole host's worth"}, "flavor xl updated; regions eu,us\n", "eu,us"},
		{[]string{"--any-region"}, "flavor xl updated; regions any\n", "any"},
		{[]string{"--allowed-regions", "us", "--allowed-regions", "eu"}, "flavor xl updated; regions us,eu\n", "us,eu"},
	} {
		if got := f.ok(append([]string{"flavor", "update", "xl"}, tc.args...)...); got != tc.print {
			t.Errorf("flavor update %v printed %q, want %q", tc.args, got, tc.print)
		}
		if got := keyValues(t, f.ok("flavor", "show", "xl"))["allowed_regions"]; got != tc.stored {
			t.Errorf("after flavor update %v: allowed_regions %q, want %q", tc.args, got, tc.stored)
		}
	}
	if fl := keyValues(t, f.ok("flavor", "show", "xl")); fl["description"] != "a whole host's worth" {
		t.Errorf("flavor show = %v", fl)
	}
	if fl := decode[map[string]any](t, f.ok("-o", "json", "flavor", "update", "xl", "--allowed-regions", "eu")); !reflect.DeepEqual(fl["allowed_regions"], []any{"eu"}) {
		t.Errorf("flavor update -o json = %v", fl)
	}
	f.fail(1, []string{"flavor", "update", "xl", "--allowed-regions", "mars"}, `region "mars" not found (NotFound)`)
	f.fail(1, []string{"flavor", "add", "gpu", "--cpus", "1", "--memory-mib", "1", "--disk-gib", "1", "--allowed-regions", "eu,eu"}, `"eu" is listed twice`, "(InvalidArgument)")
	// A devserver in us pins us in the list.
	f.ok("region", "update", "us", "--no-reserve")
	f.ok("site", "add", "nyc1", "--region", "us")
	f.ok("host", "add", "nyc1-h1", "--site", "nyc1", "--cpus", "32", "--memory-mib", "131072", "--disk-gib", "2000")
	f.ok("devserver", "create", "us-dev", "--owner", "bob", "--flavor", "small", "--region", "us", "--permanent")
	f.fail(1, []string{"flavor", "update", "small", "--allowed-regions", "eu"}, `flavor "small" has 1 devserver (us-dev) in regions the new list leaves out`, "(FailedPrecondition)")
}

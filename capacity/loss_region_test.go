package capacity

import (
	"reflect"
	"testing"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// TestLossOwnRegionOnly: a drained host's devservers stay in their region (a live move cannot
// cross regions) when OwnRegionOnly asks, and go elsewhere only when their region goes whole.
func TestLossOwnRegionOnly(t *testing.T) {
	t.Parallel()
	small, big := flavor("small", 4, 16384, 0), flavor("big", 16, 65536, 0)
	regions := []*v1.Region{{Name: "eu"}, {Name: "us"}}
	hosts := []*v1.Host{
		withAlloc(host("eu-h1", "eu-1", "eu", 32, 131072, 0), 20, 81920),
		host("eu-h2", "eu-1", "eu", 8, 32768, 0), // room for one small, never for a big
		host("us-h1", "us-1", "us", 64, 262144, 0),
	}
	devs := []*v1.Devserver{
		{Name: "a", Flavor: "small", Region: "eu", Host: "eu-h1"},
		{Name: "b", Flavor: "big", Region: "eu", Host: "eu-h1"},
	}
	f := fleetOf(regions, []*v1.Flavor{big, small}, hosts, devs)
	drain := Gone{Hosts: []string{"eu-h1"}}

	// By default (a real loss) the big one that has no room at home goes to us.
	loss := f.Lose(drain, LossOptions{})
	want := []Move{
		{Devserver: "b", Flavor: "big", From: "eu-h1", To: "us-h1", ToRegion: "us"},
		{Devserver: "a", Flavor: "small", From: "eu-h1", To: "eu-h2", ToRegion: "eu"},
	}
	if !reflect.DeepEqual(loss.Moves, want) || len(loss.Homeless) != 0 {
		t.Fatalf("default: moves %+v, homeless %v", loss.Moves, loss.Homeless)
	}

	// A drain's live moves: the big one has nowhere to go.
	loss = f.Lose(drain, LossOptions{OwnRegionOnly: true})
	if !reflect.DeepEqual(loss.Moves, want[1:]) || len(loss.Homeless) != 1 || loss.Homeless[0].GetName() != "b" {
		t.Fatalf("own region only: moves %+v, homeless %v", loss.Moves, loss.Homeless)
	}
	if !reflect.DeepEqual(loss.Shortfall, []Short{{Flavor: "big", Devservers: 1}}) {
		t.Fatalf("own region only: shortfall %+v", loss.Shortfall)
	}

	// The whole region goes: other regions are the only homes, option or not.
	whole := f.Lose(Gone{Regions: []string{"eu"}}, LossOptions{OwnRegionOnly: true})
	if len(whole.Moves) != 2 || !whole.OK() || whole.Moves[0].ToRegion != "us" || whole.Moves[1].ToRegion != "us" {
		t.Fatalf("region gone: %+v", whole)
	}

	// A flavor no longer allowed at home: no live move is possible.
	small.AllowedRegions = []string{"us"}
	loss = f.Lose(drain, LossOptions{OwnRegionOnly: true})
	if len(loss.Moves) != 0 || len(loss.Homeless) != 2 {
		t.Fatalf("flavor not allowed at home: %+v", loss)
	}
}

func TestFleetOn(t *testing.T) {
	t.Parallel()
	devs := []*v1.Devserver{
		{Name: "a", Flavor: "small", Region: "eu", Host: "h1"},
		{Name: "b", Flavor: "small", Region: "eu", Host: "h2"},
		{Name: "c", Flavor: "small", Region: "eu", Host: "h1"},
		{Name: "unplaced", Flavor: "small", Region: "eu"},
	}
	f := fleetOf([]*v1.Region{{Name: "eu"}}, []*v1.Flavor{flavor("small", 1, 1024, 0)},
		[]*v1.Host{host("h1", "eu-1", "eu", 8, 8192, 0), host("h2", "eu-1", "eu", 8, 8192, 0)}, devs)
	if got := f.On("h1"); len(got) != 2 || got[0].GetName() != "a" || got[1].GetName() != "c" {
		t.Fatalf("on h1: %v", got)
	}
	if got := f.On("nowhere"); len(got) != 0 {
		t.Fatalf("on an unknown host: %v", got)
	}
}

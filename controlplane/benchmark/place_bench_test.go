package benchmark

import (
	"testing"

	"github.com/devfleet/devfleet/capacity"
)

// BenchmarkPlaceDecision is one placement decision on the 10,000-host fleet, as the API makes it.
func BenchmarkPlaceDecision(b *testing.B) {
	f, err := BuildFleet(ScaleOptions{Hosts: 10000, Devservers: 100000})
	if err != nil {
		b.Fatal(err)
	}
	v := f.Store().View()
	medium, _ := v.GetFlavor("medium")
	region := v.Regions()[0]
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		hosts := v.HostsIn(region.GetName())
		d := capacity.Place(hosts, &capacity.Request{Flavor: medium, Region: region.GetName(), Reserve: capacity.ReserveOf(region, hosts)})
		if d.Host == nil {
			b.Fatal("full")
		}
	}
}

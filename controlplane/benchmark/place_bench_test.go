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
	region := v.Regions()[0].GetName()
	idx := capacity.NewIndex()
	f.Store().Observe(idx)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := idx.Place(&capacity.Request{Flavor: medium, Region: region, Reserve: idx.Reserve(region)})
		if d.Host == nil {
			b.Fatal("full")
		}
	}
}

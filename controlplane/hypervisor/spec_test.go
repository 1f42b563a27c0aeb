package hypervisor

import (
	"strings"
	"testing"
)

func TestDomainSpecValidate(t *testing.T) {
	ok := DomainSpec{Name: "ds-1", VCPUs: 2, MemoryMiB: 4096, Metadata: Metadata{Kind: InstanceDevserver, ID: "ds-1"}}
	tests := []struct {
		name   string
		change func(*DomainSpec)
		want   string // "" for valid
	}{
		{"valid", func(*DomainSpec) {}, ""},
		{"valid with uuid and disk", func(s *DomainSpec) { s.UUID = "0b5c3a5e-6a9b-4c1e-9f0e-2a3b4c5d6e7f"; s.DiskGiB = 50 }, ""},
		{"dots, dashes and underscores inside", func(s *DomainSpec) { s.Name = "a.b_c-d" }, ""},
		{"no name", func(s *DomainSpec) { s.Name = "" }, "name is required"},
		{"name with slash", func(s *DomainSpec) { s.Name = "../etc" }, "want letters"},
		{"name starting with a dash", func(s *DomainSpec) { s.Name = "-x" }, "want letters"},
		{"name with space", func(s *DomainSpec) { s.Name = "a b" }, "want letters"},
		{"long name", func(s *DomainSpec) { s.Name = strings.Repeat("a", 65) }, "longer than 64"},
		{"bad uuid", func(s *DomainSpec) { s.UUID = "nope" }, "uuid"},
		{"no vcpus", func(s *DomainSpec) { s.VCPUs = 0 }, "vcpus"},
		{"too many vcpus", func(s *DomainSpec) { s.VCPUs = 256 }, "vcpus"},
		{"tiny memory", func(s *DomainSpec) { s.MemoryMiB = 8 }, "memory"},
		{"negative disk", func(s *DomainSpec) { s.DiskGiB = -1 }, "disk"},
		{"existing volume", func(s *DomainSpec) { s.DiskGiB = 2; s.ExistingVolume = true }, ""},
		{"existing volume without a disk", func(s *DomainSpec) { s.ExistingVolume = true }, "existing volume"},
		{"no metadata", func(s *DomainSpec) { s.Metadata = Metadata{} }, "kind is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ok
			tt.change(&s)
			err := s.Validate()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
}

package hypervisor

import (
	"strings"
	"testing"
)

func TestMetadataRoundTrip(t *testing.T) {
	for _, m := range []Metadata{
		{Kind: InstanceDevserver, ID: "ds-1", Owner: "alice", Flavor: "small"},
		{Kind: InstanceContainer, ID: "ct-9", Profile: "ios"},
		{Kind: InstanceDevserver, ID: `a<b>&"c'`, Owner: "ünïcødé"},
		{Kind: InstanceDevserver, ID: "ds-2", Term: 12, Index: 1 << 40},
		{Kind: InstanceDevserver, ID: "ds-3", Index: 5},
	} {
		s, err := MarshalMetadata(m)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(s, `<devfleet:instance xmlns:devfleet="`+MetadataNamespace+`">`) {
			t.Errorf("element = %s, want a devfleet:instance with its namespace declared", s)
		}
		got, ok, err := ParseMetadata(s)
		if err != nil || !ok || got != m {
			t.Errorf("ParseMetadata(%s) = %+v, %v, %v; want %+v", s, got, ok, err, m)
		}
	}
}

func TestParseMetadata(t *testing.T) {
	want := Metadata{Kind: InstanceDevserver, ID: "ds-1", Owner: "bob", Flavor: "large"}
	tests := []struct {
		name   string
		in     string
		want   Metadata
		wantOK bool
	}{
		{
			name:   "as DomainGetMetadata returns it: namespace stripped",
			in:     "<instance>\n  <kind>devserver</kind>\n  <id>ds-1</id>\n  <owner>bob</owner>\n  <flavor>large</flavor>\n</instance>",
			want:   want,
			wantOK: true,
		},
		{
			name: "in a domain, another prefix and other applications' metadata",
			in: `<domain><name>x</name><metadata>
			  <app:instance xmlns:app="urn:other:app"><app:id>nope</app:id></app:instance>
			  <df:instance xmlns:df="urn:devfleet:domain:1"><df:kind>devserver</df:kind><df:id>ds-1</df:id>
			    <df:owner>bob</df:owner><df:flavor>large</df:flavor></df:instance>
			</metadata></domain>`,
			want:   want,
			wantOK: true,
		},
		{
			name: "default namespace",
			in: `<instance xmlns="urn:devfleet:domain:1"><kind>devserver</kind><id>ds-1</id><owner>bob</owner>` +
				`<flavor>large</flavor></instance>`,
			want:   want,
			wantOK: true,
		},
		{
			name:   "with the fence stamp, as DomainGetMetadata returns it (libvirt indents it)",
			in:     "<instance>\n  <kind>devserver</kind>\n  <id>ds-1</id>\n  <owner>bob</owner>\n  <flavor>large</flavor>\n  <term>\n 3 </term>\n  <index>77</index>\n</instance>",
			want:   Metadata{Kind: InstanceDevserver, ID: "ds-1", Owner: "bob", Flavor: "large", Term: 3, Index: 77},
			wantOK: true,
		},
		{name: "no devfleet element", in: `<domain><name>x</name><metadata/></domain>`},
		{name: "a nested namespace-less instance is not ours", in: `<domain><instance><id>x</id></instance></domain>`},
		{name: "other namespace", in: `<i:instance xmlns:i="urn:devfleet:domain:2"><i:id>x</i:id></i:instance>`},
		{name: "empty", in: ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := ParseMetadata(tt.in)
			if err != nil || ok != tt.wantOK || got != tt.want {
				t.Errorf("ParseMetadata = %+v, %v, %v; want %+v, %v, nil", got, ok, err, tt.want, tt.wantOK)
			}
		})
	}
	if _, _, err := ParseMetadata(`<instance><id>x</i`); err == nil {
		t.Error("ParseMetadata of broken XML: no error")
	}
	if _, _, err := ParseMetadata(`<instance><id>x</id><term>-1</term></instance>`); err == nil {
		t.Error("ParseMetadata of a negative term: no error")
	}
	// An old element (no stamp) reads as term and index 0, and is not written with them.
	s, _ := MarshalMetadata(want)
	if strings.Contains(s, "term") || strings.Contains(s, "index") {
		t.Errorf("a zero stamp is written: %s", s)
	}
}

func TestFenceNewer(t *testing.T) {
	for _, tt := range []struct {
		a, b Fence
		want bool
	}{
		{Fence{2, 1}, Fence{1, 100}, true}, // a later term wins whatever the index
		{Fence{1, 100}, Fence{2, 1}, false},
		{Fence{3, 8}, Fence{3, 7}, true},
		{Fence{3, 7}, Fence{3, 8}, false},
		{Fence{3, 7}, Fence{3, 7}, false},
		{Fence{0, 1}, Fence{}, true},
		{Fence{}, Fence{}, false},
	} {
		if got := tt.a.Newer(tt.b); got != tt.want {
			t.Errorf("%+v.Newer(%+v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
	m := Metadata{Kind: InstanceDevserver, ID: "x", Term: 4, Index: 9}
	if m.Fence() != (Fence{Term: 4, Index: 9}) {
		t.Errorf("Fence() = %+v", m.Fence())
	}
}

func FuzzParseMetadata(f *testing.F) {
	s, _ := MarshalMetadata(Metadata{Kind: InstanceContainer, ID: "ct-1", Owner: "o", Profile: "www"})
	f.Add(s)
	f.Add("<instance><kind>devserver</kind><id>x</id></instance>")
	f.Add(`<domain><metadata><d:instance xmlns:d="urn:devfleet:domain:1"/></metadata></domain>`)
	f.Add("<instance><kind>devserver</kind><id>x</id><term>3</term><index>18446744073709551615</index></instance>")
	f.Fuzz(func(t *testing.T, in string) {
		m, ok, err := ParseMetadata(in)
		if err != nil || !ok {
			return
		}
		// What parses must survive a round trip unchanged.
		out, err := MarshalMetadata(m)
		if err != nil {
			t.Fatalf("MarshalMetadata(%+v): %v", m, err)
		}
		back, ok, err := ParseMetadata(out)
		if err != nil || !ok {
			t.Fatalf("ParseMetadata(%q) = %v, %v", out, ok, err)
		}
		if back != m && validUTF8XML(m) {
			t.Fatalf("round trip of %+v gave %+v", m, back)
		}
	})
}

// validUTF8XML reports whether every field survives XML text encoding (encoding/xml replaces
// characters XML cannot carry, such as most control characters).
func validUTF8XML(m Metadata) bool {
	for _, s := range []string{string(m.Kind), m.ID, m.Owner, m.Flavor, m.Profile} {
		for _, r := range s {
			if r == '\uFFFD' || r < 0x20 && r != '\t' && r != '\n' || r == '\r' {
				return false
			}
		}
	}
	return true
}

func TestMetadataValidate(t *testing.T) {
	for _, tt := range []struct {
		m    Metadata
		want string
	}{
		{Metadata{Kind: InstanceDevserver, ID: "x"}, ""},
		{Metadata{Kind: InstanceContainer, ID: "x"}, ""},
		{Metadata{ID: "x"}, "kind is required"},
		{Metadata{Kind: "vm", ID: "x"}, `kind "vm"`},
		{Metadata{Kind: InstanceDevserver}, "id is required"},
	} {
		err := tt.m.Validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tt.m, err, tt.want)
		}
	}
}

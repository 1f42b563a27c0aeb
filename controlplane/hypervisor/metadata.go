package hypervisor

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
)

// MetadataNamespace is the XML namespace of devfleet's element in a domain's <metadata>. libvirt
// keys custom metadata by namespace URI; the trailing version changes only with an incompatible
// change of the element.
const MetadataNamespace = "urn:devfleet:domain:1"

// metadataPrefix is the namespace prefix the element is written with.
const metadataPrefix = "devfleet"

// InstanceKind says what a domain is in devfleet's model.
type InstanceKind string

// Instance kinds.
const (
	InstanceDevserver InstanceKind = "devserver"
	InstanceContainer InstanceKind = "container"
)

// Metadata is devfleet's record inside a domain, so that what runs on a host can be matched
// with the replicated state (after a leader change, a lost reply, a migration) by ID rather than
// by name.
type Metadata struct {
	// Kind is devserver or container.
	Kind InstanceKind
	// ID is the devserver's or container's ID in devfleet's state.
	ID string
	// Owner is the developer who owns (or claimed) it; empty for an unclaimed warm container.
	Owner string
	// Flavor is a devserver's flavor.
	Flavor string
	// Profile is a container's profile (ios, android, www, jupyter, ...).
	Profile string
	// Term and Index are the raft term and index of the control-plane decision that made or
	// last moved the domain, so a later leader can tell a deposed leader's late work from its
	// own (see Fence). Zero in domains made before the stamp existed.
	Term  uint64
	Index uint64
}

// Fence is the stamp of the control-plane decision that made or last moved a domain: the raft
// term and index it was committed at. A deposed leader may still be finishing a move when its
// successor decides another, and both leave domains behind; the one with the newer stamp is the
// decision that stands.
type Fence struct {
	Term, Index uint64
}

// Fence returns m's stamp.
func (m Metadata) Fence() Fence { return Fence{Term: m.Term, Index: m.Index} }

// Newer reports whether f comes after other: a later term, or the same term and a later index
// (raft orders a leader's entries by index within its term).
func (f Fence) Newer(other Fence) bool {
	return f.Term > other.Term || f.Term == other.Term && f.Index > other.Index
}

// IsZero reports whether m is empty (the domain carries no devfleet metadata).
func (m Metadata) IsZero() bool { return m == Metadata{} }

// Validate checks that m can identify a domain.
func (m Metadata) Validate() error {
	switch m.Kind {
	case InstanceDevserver, InstanceContainer:
	case "":
		return errors.New("metadata: kind is required")
	default:
		return fmt.Errorf("metadata: kind %q: want %q or %q", m.Kind, InstanceDevserver, InstanceContainer)
	}
	if m.ID == "" {
		return errors.New("metadata: id is required")
	}
	return nil
}

// metadataOut is the element as written: encoding/xml writes prefixed names literally, so the
// element and its children carry the devfleet: prefix that the xmlns attribute declares.
type metadataOut struct {
	XMLName xml.Name `xml:"devfleet:instance"`
	NS      string   `xml:"xmlns:devfleet,attr"`
	Kind    string   `xml:"devfleet:kind"`
	ID      string   `xml:"devfleet:id"`
	Owner   string   `xml:"devfleet:owner,omitempty"`
	Flavor  string   `xml:"devfleet:flavor,omitempty"`
	Profile string   `xml:"devfleet:profile,omitempty"`
	Term    uint64   `xml:"devfleet:term,omitempty"`
	Index   uint64   `xml:"devfleet:index,omitempty"`
}

// metadataIn is the element as read. Children match by local name, whatever their namespace:
// the element comes back in our namespace (any prefix) in a domain's XML, and in no namespace
// from libvirt's DomainGetMetadata, which strips it. A missing term or index (a domain made
// before the fence stamp) reads as 0.
type metadataIn struct {
	Kind    string `xml:"kind"`
	ID      string `xml:"id"`
	Owner   string `xml:"owner"`
	Flavor  string `xml:"flavor"`
	Profile string `xml:"profile"`
	Term    uint64 `xml:"term"`
	Index   uint64 `xml:"index"`
}

// MarshalMetadata returns m as the XML element that goes into a domain's <metadata>.
func MarshalMetadata(m Metadata) (string, error) {
	b, err := xml.Marshal(metadataOut{
		NS: MetadataNamespace, Kind: string(m.Kind), ID: m.ID,
		Owner: m.Owner, Flavor: m.Flavor, Profile: m.Profile, Term: m.Term, Index: m.Index,
	})
	if err != nil {
		return "", fmt.Errorf("marshal metadata: %w", err)
	}
	return string(b), nil
}

// ParseMetadata finds devfleet's element in s (a domain's XML, the inside of its <metadata>, or
// the element itself) and decodes it. ok is false when s holds no devfleet element. The element
// is <instance> in devfleet's namespace, or a root <instance> in no namespace, which is how
// libvirt's DomainGetMetadata returns it.
func ParseMetadata(s string) (m Metadata, ok bool, err error) {
	dec := xml.NewDecoder(bytes.NewReader([]byte(s)))
	opened := 0 // elements seen so far: a namespace-less <instance> counts only as the root
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return Metadata{}, false, nil
		}
		if err != nil {
			return Metadata{}, false, fmt.Errorf("parse metadata: %w", err)
		}
		start, isStart := tok.(xml.StartElement)
		if !isStart {
			continue
		}
		ours := start.Name.Space == MetadataNamespace || start.Name.Space == "" && opened == 0
		opened++
		if !ours || start.Name.Local != "instance" {
			continue
		}
		var in metadataIn
		if err := dec.DecodeElement(&in, &start); err != nil {
			return Metadata{}, false, fmt.Errorf("parse metadata: %w", err)
		}
		return Metadata{
			Kind: InstanceKind(in.Kind), ID: in.ID, Owner: in.Owner, Flavor: in.Flavor, Profile: in.Profile,
			Term: in.Term, Index: in.Index,
		}, true, nil
	}
}

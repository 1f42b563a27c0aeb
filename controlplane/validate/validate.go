// Package validate checks the shape of API objects before they become commands, and again in
// the FSM, so that bad input never reaches the state. It knows nothing of the current state:
// references (does the site exist?) are checked when a command applies.
package validate

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/devfleet/devfleet/controlplane/apierror"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Limits on what a fleet can plausibly hold; above them a value is a typo, not a machine.
const (
	MaxVCPUs      = 4096
	MaxMemoryMiB  = 64 << 20 // 64 TiB
	MaxDiskGiB    = 1 << 20  // 1 PiB
	MaxGPUs       = 64
	MaxOvercommit = 16.0
	MaxLabels     = 64
	MaxReasonLen  = 1024
	MaxDescLen    = 1024
	MaxSharers    = 64
	maxNameLen    = 63
)

var (
	nameRE     = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)
	userRE     = regexp.MustCompile(`^[a-z_][a-z0-9_.-]*$`)
	labelKeyRE = regexp.MustCompile(`^[a-z0-9A-Z]([a-zA-Z0-9._/-]*[a-zA-Z0-9])?$`)
	nodeIDRE   = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9._-]*[a-zA-Z0-9])?$`)
)

// Name checks an object name: lower-case letters, digits, '-' and '.', starting and ending with
// a letter or digit, at most 63 characters, so it is safe in URLs, logs and libvirt domain names.
func Name(field, s string) error {
	switch {
	case s == "":
		return apierror.Invalid(field, "must not be empty")
	case len(s) > maxNameLen:
		return apierror.Invalid(field, "must be at most %d characters, got %d", maxNameLen, len(s))
	case !nameRE.MatchString(s):
		return apierror.Invalid(field, "%q must be lower-case letters, digits, '-' or '.', starting and ending with a letter or digit", s)
	case strings.Contains(s, ".."):
		return apierror.Invalid(field, "%q must not contain '..'", s)
	}
	return nil
}

// OptionalName is Name for a reference that may be left empty.
func OptionalName(field, s string) error {
	if s == "" {
		return nil
	}
	return Name(field, s)
}

// User checks a user name (owner, sharer).
func User(field, s string) error {
	switch {
	case s == "":
		return apierror.Invalid(field, "must not be empty")
	case len(s) > 32:
		return apierror.Invalid(field, "must be at most 32 characters, got %d", len(s))
	case !userRE.MatchString(s):
		return apierror.Invalid(field, "%q must be a user name: lower-case letters, digits, '_', '.' or '-', not starting with a digit", s)
	}
	return nil
}

// NodeID checks a raft node ID.
func NodeID(field, s string) error {
	switch {
	case s == "":
		return apierror.Invalid(field, "must not be empty")
	case len(s) > maxNameLen:
		return apierror.Invalid(field, "must be at most %d characters, got %d", maxNameLen, len(s))
	case !nodeIDRE.MatchString(s):
		return apierror.Invalid(field, "%q must be letters, digits, '-', '_' or '.'", s)
	}
	return nil
}

// Text checks free text (reasons, descriptions): valid UTF-8, printable, bounded.
func Text(field, s string, max int) error {
	if len(s) > max {
		return apierror.Invalid(field, "must be at most %d bytes, got %d", max, len(s))
	}
	if !utf8.ValidString(s) {
		return apierror.Invalid(field, "must be valid UTF-8")
	}
	for _, r := range s {
		if !unicode.IsPrint(r) && r != ' ' {
			return apierror.Invalid(field, "must not contain control characters")
		}
	}
	return nil
}

// Reason checks a required reason (cordon, drain).
func Reason(field, s string) error {
	if strings.TrimSpace(s) == "" {
		return apierror.Invalid(field, "must not be empty: say why, for the people and tools that look later")
	}
	return Text(field, s, MaxReasonLen)
}

// Resources checks an amount of compute. requireCompute demands vCPUs and memory (a host's
// capacity, a flavor); a reserve may be zero.
func Resources(field string, r *v1.Resources, requireCompute bool) error {
	if r == nil {
		if requireCompute {
			return apierror.Invalid(field, "must be set")
		}
		return nil
	}
	type bound struct {
		name string
		v    int64
		max  int64
		need bool
	}
	for _, b := range []bound{
		{"vcpus", r.GetVcpus(), MaxVCPUs, requireCompute},
		{"memory_mib", r.GetMemoryMib(), MaxMemoryMiB, requireCompute},
		{"disk_gib", r.GetDiskGib(), MaxDiskGiB, false},
		{"gpus", r.GetGpus(), MaxGPUs, false},
	} {
		f := field + "." + b.name
		switch {
		case b.v < 0:
			return apierror.Invalid(f, "must not be negative, got %d", b.v)
		case b.v > b.max:
			return apierror.Invalid(f, "must be at most %d, got %d", b.max, b.v)
		case b.need && b.v == 0:
			return apierror.Invalid(f, "must be positive")
		}
	}
	return nil
}

// Overcommit checks overcommit ratios: 0 (meaning 1.0) or between 1 and 16.
func Overcommit(field string, o *v1.Overcommit) error {
	if o == nil {
		return nil
	}
	for _, r := range []struct {
		name string
		v    float64
	}{{"cpu", o.GetCpu()}, {"memory", o.GetMemory()}, {"disk", o.GetDisk()}} {
		if r.v == 0 {
			continue
		}
		if !(r.v >= 1 && r.v <= MaxOvercommit) { // also rejects NaN
			return apierror.Invalid(field+"."+r.name, "must be between 1 and %g (or 0 for none), got %g", MaxOvercommit, r.v)
		}
	}
	return nil
}

// Labels checks host labels.
func Labels(field string, labels map[string]string) error {
	if len(labels) > MaxLabels {
		return apierror.Invalid(field, "must have at most %d labels, got %d", MaxLabels, len(labels))
	}
	for k, v := range labels {
		if len(k) == 0 || len(k) > maxNameLen || !labelKeyRE.MatchString(k) {
			return apierror.Invalid(field, "label key %q must be 1-%d letters, digits, '.', '_', '/' or '-', starting and ending with a letter or digit", k, maxNameLen)
		}
		if err := Text(fmt.Sprintf("%s[%s]", field, k), v, 253); err != nil {
			return err
		}
	}
	return nil
}

// LibvirtSchemes are the URI schemes a host's libvirt_uri may use.
var LibvirtSchemes = map[string]bool{
	"qemu": true, "qemu+unix": true, "qemu+tcp": true, "qemu+tls": true, "qemu+ssh": true,
	"test": true, "fake": true,
}

// LibvirtURI checks a libvirt connection URI; empty means the host is not driven by libvirt.
func LibvirtURI(field, s string) error {
	if s == "" {
		return nil
	}
	if len(s) > 1024 {
		return apierror.Invalid(field, "must be at most 1024 bytes")
	}
	u, err := url.Parse(s)
	if err != nil {
		return apierror.Invalid(field, "%q is not a URI: %v", s, err)
	}
	if !LibvirtSchemes[u.Scheme] {
		return apierror.Invalid(field, "scheme %q is not a libvirt driver devfleet supports (qemu, qemu+unix, qemu+tcp, qemu+tls, qemu+ssh, test, fake)", u.Scheme)
	}
	return nil
}

// Address checks a host:port network address.
func Address(field, s string) error {
	if s == "" {
		return apierror.Invalid(field, "must not be empty")
	}
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return apierror.Invalid(field, "%q must be host:port", s)
	}
	return nil
}

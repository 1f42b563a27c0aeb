package hypervisor

import (
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// Limits of a DomainSpec: what a TCG/KVM pc guest and a sane flavor allow.
const (
	maxNameLen   = 64
	maxVCPUs     = 255
	minMemoryMiB = 16
	maxMemoryMiB = 16 << 20 // 16 TiB
	maxDiskGiB   = 64 << 10 // 64 TiB
)

// DomainSpec is what DefineAndStart makes: the provisioner derives it from a flavor or a
// container profile.
type DomainSpec struct {
	// Name is the libvirt domain name, unique on the host: letters, digits, '.', '_' and '-',
	// starting with a letter or digit, at most 64 bytes. It also names the domain's volume.
	Name string
	// UUID is the domain's UUID; empty lets libvirt choose one. Setting it (the devserver's ID
	// is a good choice) keeps it stable across hosts when the domain migrates.
	UUID string
	// VCPUs and MemoryMiB size the guest.
	VCPUs     int64
	MemoryMiB int64
	// DiskGiB, when > 0, gives the guest a volume of that size (sparse) in the host's devfleet
	// storage pool, which it boots from; 0 makes a diskless guest that network-boots.
	DiskGiB int64
	// ExistingVolume makes DefineAndStart use the volume <Name>.<format> that the host's
	// devfleet pool already holds instead of creating one: the guest's disk copied there by a
	// cold move (CopyVolume). Its capacity must be at least DiskGiB GiB (else
	// KindFailedPrecondition; a missing volume is KindNotFound), and a failed DefineAndStart
	// leaves it where it is, since it may be the only copy of the guest's disk. Requires
	// DiskGiB > 0.
	ExistingVolume bool
	// Metadata is written into the domain and read back by Lookup and List; required.
	Metadata Metadata
}

// Validate reports what is wrong with s, if anything.
func (s DomainSpec) Validate() error {
	if err := validateName(s.Name); err != nil {
		return err
	}
	if s.UUID != "" {
		if _, err := uuid.Parse(s.UUID); err != nil {
			return fmt.Errorf("uuid %q: %w", s.UUID, err)
		}
	}
	if s.VCPUs < 1 || s.VCPUs > maxVCPUs {
		return fmt.Errorf("vcpus is %d, want 1..%d", s.VCPUs, maxVCPUs)
	}
	if s.MemoryMiB < minMemoryMiB || s.MemoryMiB > maxMemoryMiB {
		return fmt.Errorf("memory is %d MiB, want %d..%d", s.MemoryMiB, minMemoryMiB, maxMemoryMiB)
	}
	if s.DiskGiB < 0 || s.DiskGiB > maxDiskGiB {
		return fmt.Errorf("disk is %d GiB, want 0..%d", s.DiskGiB, maxDiskGiB)
	}
	if s.ExistingVolume && s.DiskGiB == 0 {
		return errors.New("an existing volume needs a disk size (DiskGiB > 0)")
	}
	return s.Metadata.Validate()
}

// validateName checks a domain name: it goes into file names (volume, serial log), so it is
// kept to a safe alphabet.
func validateName(name string) error {
	if name == "" {
		return errors.New("name is required")
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("name %q is longer than %d bytes", name, maxNameLen)
	}
	for i, r := range name {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || r != '.' && r != '_' && r != '-') {
			return fmt.Errorf("name %q: want letters, digits, '.', '_' and '-', starting with a letter or digit", name)
		}
	}
	return nil
}

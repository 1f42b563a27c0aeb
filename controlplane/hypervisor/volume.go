package hypervisor

import "fmt"

// maxVolumeBytes is the largest volume PrepareVolume makes: DomainSpec's largest disk.
const maxVolumeBytes = uint64(maxDiskGiB) << 30

// Volume is a volume of a host's devfleet storage pool.
type Volume struct {
	// Name is the volume's name in the pool. DefineAndStart names a domain's volume
	// <domain>.<format> (ConnOptions.VolumeFormat; raw on in-memory hosts); DomainVolumes tells
	// it for a given domain.
	Name string
	// Capacity is the volume's size in bytes as the guest sees it, not what it takes on the
	// host: volumes are sparse.
	Capacity uint64
	// Format is the volume's format, "raw" or "qcow2". Empty in PrepareVolume means the host's
	// (ConnOptions.VolumeFormat).
	Format string
}

// validate checks a volume that PrepareVolume is asked to make.
func (v Volume) validate() error {
	if err := validateVolumeName(v.Name); err != nil {
		return err
	}
	switch {
	case v.Capacity == 0:
		return fmt.Errorf("volume %s: capacity is 0", v.Name)
	case v.Capacity > maxVolumeBytes:
		return fmt.Errorf("volume %s: capacity %d bytes is over %d GiB", v.Name, v.Capacity, maxDiskGiB)
	case v.Format != "raw" && v.Format != "qcow2":
		return fmt.Errorf("volume %s: format %q, want raw or qcow2", v.Name, v.Format)
	}
	return nil
}

// validateVolumeName checks a volume name: a file name in the pool's directory, so the same
// safe alphabet as domain names (validateName, which also refuses "." and "..").
func validateVolumeName(name string) error {
	if err := validateName(name); err != nil {
		return fmt.Errorf("volume %w", err)
	}
	return nil
}

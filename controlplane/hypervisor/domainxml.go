package hypervisor

import (
	"fmt"
	"math"
	"path"

	"libvirt.org/go/libvirtxml"
)

// layout is where a host keeps what DefineAndStart makes besides the domain: the storage pool
// of its volumes and the directory of its serial logs (paths as the daemon sees them).
type layout struct {
	// pool is the storage pool's name; volumes are made in it.
	pool string
	// volumeFormat is the volumes' format ("raw" or "qcow2").
	volumeFormat string
	// serialDir, when set, gets each guest's serial output in <name>.serial.log.
	serialDir string
}

// volumeName is the name of the domain's volume in the pool.
func (l layout) volumeName(domain string) string { return domain + "." + l.volumeFormat }

// buildDomain returns the libvirt definition of spec: a QEMU TCG guest (<domain type='qemu'>,
// no KVM needed) with ACPI for graceful shutdown, no video, no balloon and no USB, booting from
// its volume when it has one and from the network otherwise, its serial port to a file.
func buildDomain(spec DomainSpec, l layout) (*libvirtxml.Domain, error) {
	meta, err := MarshalMetadata(spec.Metadata)
	if err != nil {
		return nil, err
	}
	noUSB := uint(0)
	d := &libvirtxml.Domain{
		Type:     "qemu",
		Name:     spec.Name,
		UUID:     spec.UUID,
		Metadata: &libvirtxml.DomainMetadata{XML: meta},
		Memory:   &libvirtxml.DomainMemory{Value: uint(spec.MemoryMiB), Unit: "MiB"},
		VCPU:     &libvirtxml.DomainVCPU{Value: uint(spec.VCPUs)},
		OS: &libvirtxml.DomainOS{
			Type: &libvirtxml.DomainOSType{Arch: "x86_64", Machine: "pc", Type: "hvm"},
		},
		Features:   &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}},
		OnPoweroff: "destroy",
		OnReboot:   "restart",
		OnCrash:    "destroy",
		Devices: &libvirtxml.DomainDeviceList{
			Controllers: []libvirtxml.DomainController{{Type: "usb", Index: &noUSB, Model: "none"}},
			MemBalloon:  &libvirtxml.DomainMemBalloon{Model: "none"},
		},
	}
	if spec.DiskGiB > 0 {
		d.OS.BootDevices = append(d.OS.BootDevices, libvirtxml.DomainBootDevice{Dev: "hd"})
		d.Devices.Disks = []libvirtxml.DomainDisk{{
			Device: "disk",
			Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: l.volumeFormat},
			Source: &libvirtxml.DomainDiskSource{
				Volume: &libvirtxml.DomainDiskSourceVolume{Pool: l.pool, Volume: l.volumeName(spec.Name)},
			},
			Target: &libvirtxml.DomainDiskTarget{Dev: "vda", Bus: "virtio"},
		}}
	}
	d.OS.BootDevices = append(d.OS.BootDevices, libvirtxml.DomainBootDevice{Dev: "network"})
	if l.serialDir != "" {
		port := uint(0)
		d.Devices.Serials = []libvirtxml.DomainSerial{{
			Source: &libvirtxml.DomainChardevSource{File: &libvirtxml.DomainChardevSourceFile{
				Path: path.Join(l.serialDir, spec.Name+".serial.log"), Append: "on",
			}},
			Target: &libvirtxml.DomainSerialTarget{Port: &port},
		}}
	}
	return d, nil
}

// domainXML is buildDomain marshalled.
func domainXML(spec DomainSpec, l layout) (string, error) {
	d, err := buildDomain(spec, l)
	if err != nil {
		return "", err
	}
	s, err := d.Marshal()
	if err != nil {
		return "", fmt.Errorf("marshal domain %s: %w", spec.Name, err)
	}
	return s, nil
}

// volumeXML is the definition of a sparse volume of size bytes.
func volumeXML(name string, size uint64, format string) (string, error) {
	v := libvirtxml.StorageVolume{
		Name:       name,
		Capacity:   &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: size},
		Allocation: &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: 0},
		Target:     &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: format}},
	}
	s, err := v.Marshal()
	if err != nil {
		return "", fmt.Errorf("marshal volume %s: %w", name, err)
	}
	return s, nil
}

// poolXML is the definition of a directory pool at dir.
func poolXML(name, dir string) (string, error) {
	p := libvirtxml.StoragePool{Type: "dir", Name: name, Target: &libvirtxml.StoragePoolTarget{Path: dir}}
	s, err := p.Marshal()
	if err != nil {
		return "", fmt.Errorf("marshal pool %s: %w", name, err)
	}
	return s, nil
}

// volumesIn returns the volumes of pool that the domain definition xml uses as disks.
func volumesIn(xml, pool string) ([]string, error) {
	var d libvirtxml.Domain
	if err := d.Unmarshal(xml); err != nil {
		return nil, fmt.Errorf("parse domain xml: %w", err)
	}
	if d.Devices == nil {
		return nil, nil
	}
	var vols []string
	for _, disk := range d.Devices.Disks {
		if disk.Source != nil && disk.Source.Volume != nil && disk.Source.Volume.Pool == pool {
			vols = append(vols, disk.Source.Volume.Volume)
		}
	}
	return vols, nil
}

// parseVolume reads a volume's definition (StorageVolGetXMLDesc) as a Volume.
func parseVolume(xml string) (Volume, error) {
	var v libvirtxml.StorageVolume
	if err := v.Unmarshal(xml); err != nil {
		return Volume{}, fmt.Errorf("parse volume xml: %w", err)
	}
	out := Volume{Name: v.Name}
	if v.Target != nil && v.Target.Format != nil {
		out.Format = v.Target.Format.Type
	}
	if v.Capacity == nil {
		return Volume{}, fmt.Errorf("volume %s: no capacity", v.Name)
	}
	size, err := sizeBytes(v.Capacity.Value, v.Capacity.Unit)
	if err != nil {
		return Volume{}, fmt.Errorf("volume %s: %w", v.Name, err)
	}
	out.Capacity = size
	return out, nil
}

// sizeBytes converts a libvirt scaled size (libvirt reports volumes in bytes) to bytes.
func sizeBytes(v uint64, unit string) (uint64, error) {
	var shift uint
	switch unit {
	case "", "b", "B", "bytes":
	case "KiB", "K", "k":
		shift = 10
	case "MiB", "M":
		shift = 20
	case "GiB", "G":
		shift = 30
	case "TiB", "T":
		shift = 40
	default:
		return 0, fmt.Errorf("size unit %q", unit)
	}
	if v > math.MaxUint64>>shift {
		return 0, fmt.Errorf("size %d %s overflows", v, unit)
	}
	return v << shift, nil
}

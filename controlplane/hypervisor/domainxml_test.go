package hypervisor

import (
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"
)

func TestBuildDomainXML(t *testing.T) {
	meta := Metadata{Kind: InstanceDevserver, ID: "ds-42", Owner: "alice", Flavor: "large"}
	tests := []struct {
		name      string
		spec      DomainSpec
		layout    layout
		wantBoot  []string
		wantDisk  string // volume name, "" for diskless
		wantSer   string // serial log path, "" for none
		wantUUID  string
		wantMiB   uint
		wantVCPUs uint
	}{
		{
			name:      "diskless network boot",
			spec:      DomainSpec{Name: "ds-42", VCPUs: 1, MemoryMiB: 128, Metadata: meta},
			layout:    layout{pool: "devfleet", volumeFormat: "raw", serialDir: "/var/log/libvirt/qemu"},
			wantBoot:  []string{"network"},
			wantSer:   "/var/log/libvirt/qemu/ds-42.serial.log",
			wantMiB:   128,
			wantVCPUs: 1,
		},
		{
			name: "disk from the pool, boots from it first",
			spec: DomainSpec{Name: "big.one", UUID: "0b5c3a5e-6a9b-4c1e-9f0e-2a3b4c5d6e7f", VCPUs: 8,
				MemoryMiB: 16384, DiskGiB: 100, Metadata: meta},
			layout:    layout{pool: "fleetpool", volumeFormat: "qcow2", serialDir: "/logs"},
			wantBoot:  []string{"hd", "network"},
			wantDisk:  "big.one.qcow2",
			wantSer:   "/logs/big.one.serial.log",
			wantUUID:  "0b5c3a5e-6a9b-4c1e-9f0e-2a3b4c5d6e7f",
			wantMiB:   16384,
			wantVCPUs: 8,
		},
		{
			name: "container without serial port",
			spec: DomainSpec{Name: "c1", VCPUs: 2, MemoryMiB: 2048,
				Metadata: Metadata{Kind: InstanceContainer, ID: "ct-1", Profile: "jupyter"}},
			layout:    layout{pool: "devfleet", volumeFormat: "raw"},
			wantBoot:  []string{"network"},
			wantMiB:   2048,
			wantVCPUs: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := domainXML(tt.spec, tt.layout)
			if err != nil {
				t.Fatal(err)
			}
			var d libvirtxml.Domain
			if err := d.Unmarshal(s); err != nil {
				t.Fatalf("libvirtxml cannot parse what we built: %v\n%s", err, s)
			}
			if d.Type != "qemu" {
				t.Errorf("type = %q, want qemu (TCG)", d.Type)
			}
			if d.Name != tt.spec.Name || d.UUID != tt.wantUUID {
				t.Errorf("name, uuid = %q, %q; want %q, %q", d.Name, d.UUID, tt.spec.Name, tt.wantUUID)
			}
			if d.Memory == nil || d.Memory.Value != tt.wantMiB || d.Memory.Unit != "MiB" {
				t.Errorf("memory = %+v, want %d MiB", d.Memory, tt.wantMiB)
			}
			if d.VCPU == nil || d.VCPU.Value != tt.wantVCPUs {
				t.Errorf("vcpu = %+v, want %d", d.VCPU, tt.wantVCPUs)
			}
			var boot []string
			for _, b := range d.OS.BootDevices {
				boot = append(boot, b.Dev)
			}
			if strings.Join(boot, ",") != strings.Join(tt.wantBoot, ",") {
				t.Errorf("boot = %v, want %v", boot, tt.wantBoot)
			}
			if d.OS.Type == nil || d.OS.Type.Type != "hvm" || d.OS.Type.Arch != "x86_64" {
				t.Errorf("os type = %+v, want hvm x86_64", d.OS.Type)
			}
			if d.Features == nil || d.Features.ACPI == nil {
				t.Error("no ACPI: graceful shutdown would not work")
			}
			dev := d.Devices
			if len(dev.Videos) != 0 || len(dev.Graphics) != 0 || len(dev.Interfaces) != 0 {
				t.Errorf("unexpected devices: %d videos, %d graphics, %d interfaces", len(dev.Videos), len(dev.Graphics), len(dev.Interfaces))
			}
			if dev.MemBalloon == nil || dev.MemBalloon.Model != "none" {
				t.Errorf("memballoon = %+v, want model none", dev.MemBalloon)
			}
			switch {
			case tt.wantDisk == "" && len(dev.Disks) != 0:
				t.Errorf("disks = %+v, want none", dev.Disks)
			case tt.wantDisk != "":
				if len(dev.Disks) != 1 {
					t.Fatalf("disks = %+v, want one", dev.Disks)
				}
				disk := dev.Disks[0]
				if v := disk.Source.Volume; v == nil || v.Pool != tt.layout.pool || v.Volume != tt.wantDisk {
					t.Errorf("disk source = %+v, want %s/%s", disk.Source.Volume, tt.layout.pool, tt.wantDisk)
				}
				if disk.Driver == nil || disk.Driver.Type != tt.layout.volumeFormat {
					t.Errorf("disk driver = %+v, want type %s", disk.Driver, tt.layout.volumeFormat)
				}
				vols, err := volumesIn(s, tt.layout.pool)
				if err != nil || len(vols) != 1 || vols[0] != tt.wantDisk {
					t.Errorf("volumesIn = %v, %v; want [%s]", vols, err, tt.wantDisk)
				}
			}
			switch {
			case tt.wantSer == "" && len(dev.Serials) != 0:
				t.Errorf("serials = %+v, want none", dev.Serials)
			case tt.wantSer != "":
				if len(dev.Serials) != 1 || dev.Serials[0].Source.File == nil || dev.Serials[0].Source.File.Path != tt.wantSer {
					t.Errorf("serials = %+v, want a file at %s", dev.Serials, tt.wantSer)
				}
			}
			if d.Metadata == nil {
				t.Fatal("no metadata")
			}
			got, ok, err := ParseMetadata(d.Metadata.XML)
			if err != nil || !ok || got != tt.spec.Metadata {
				t.Errorf("metadata round trip = %+v, %v, %v; want %+v", got, ok, err, tt.spec.Metadata)
			}
			// The whole document carries it too (what DomainGetXMLDesc returns).
			if got, ok, _ := ParseMetadata(s); !ok || got != tt.spec.Metadata {
				t.Errorf("metadata from the whole document = %+v, %v", got, ok)
			}
		})
	}
}

func TestVolumeAndPoolXML(t *testing.T) {
	s, err := volumeXML("d1.raw", 20<<30, "raw")
	if err != nil {
		t.Fatal(err)
	}
	var v libvirtxml.StorageVolume
	if err := v.Unmarshal(s); err != nil {
		t.Fatal(err)
	}
	if v.Name != "d1.raw" || v.Capacity.Value != 20<<30 || v.Capacity.Unit != "bytes" || v.Allocation.Value != 0 ||
		v.Target.Format.Type != "raw" {
		t.Errorf("volume = %s", s)
	}
	if got, err := parseVolume(s); err != nil || got != (Volume{Name: "d1.raw", Capacity: 20 << 30, Format: "raw"}) {
		t.Errorf("parseVolume(volumeXML) = %+v, %v", got, err)
	}
	// What libvirt 9.0 returns for a volume of a directory pool (vol-dumpxml), and other units.
	got, err := parseVolume(`<volume type='file'><name>g1.qcow2</name><key>/var/lib/libvirt/devfleet/g1.qcow2</key>
	  <capacity unit='bytes'>134217728</capacity><allocation unit='bytes'>67764224</allocation>
	  <target><path>/var/lib/libvirt/devfleet/g1.qcow2</path><format type='qcow2'/></target></volume>`)
	if err != nil || got != (Volume{Name: "g1.qcow2", Capacity: 128 << 20, Format: "qcow2"}) {
		t.Errorf("parseVolume(libvirt's) = %+v, %v", got, err)
	}
	if got, err := parseVolume(`<volume><name>v</name><capacity unit='GiB'>3</capacity></volume>`); err != nil || got.Capacity != 3<<30 {
		t.Errorf("parseVolume(GiB) = %+v, %v", got, err)
	}
	for _, bad := range []string{`<volume><name>v</name></volume>`, `<volume><name>v</name><capacity unit='parsecs'>3</capacity></volume>`,
		`<volume><name>v</name><capacity unit='TiB'>18446744073709551615</capacity></volume>`, `<volume`} {
		if got, err := parseVolume(bad); err == nil {
			t.Errorf("parseVolume(%s) = %+v, want an error", bad, got)
		}
	}
	s, err = poolXML("devfleet", "/var/lib/libvirt/devfleet")
	if err != nil {
		t.Fatal(err)
	}
	var p libvirtxml.StoragePool
	if err := p.Unmarshal(s); err != nil {
		t.Fatal(err)
	}
	if p.Type != "dir" || p.Name != "devfleet" || p.Target.Path != "/var/lib/libvirt/devfleet" {
		t.Errorf("pool = %s", s)
	}
}

func TestVolumesInIgnoresOtherPools(t *testing.T) {
	doc := `<domain type='qemu'><name>x</name><devices>
	  <disk type='volume' device='disk'><source pool='devfleet' volume='x.raw'/><target dev='vda'/></disk>
	  <disk type='volume' device='disk'><source pool='other' volume='data.raw'/><target dev='vdb'/></disk>
	  <disk type='file' device='cdrom'><source file='/iso/boot.iso'/><target dev='hdc'/></disk>
	</devices></domain>`
	vols, err := volumesIn(doc, "devfleet")
	if err != nil || len(vols) != 1 || vols[0] != "x.raw" {
		t.Errorf("volumesIn = %v, %v; want [x.raw]", vols, err)
	}
}

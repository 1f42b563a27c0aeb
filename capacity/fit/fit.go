// Package fit is the resource arithmetic of placement: what a host can give (capacity times
// overcommit, minus its reserve), what a flavor needs there, and whether it fits. The FSM uses it
// to check a placement again when it applies, and package capacity to choose one, so the two
// never disagree.
package fit

import (
	"fmt"
	"math"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Amount is an amount of compute in placement units.
type Amount struct {
	VCPUs     int64
	MemoryMiB int64
	DiskGiB   int64
	GPUs      int64
}

// Of converts API resources.
func Of(r *v1.Resources) Amount {
	return Amount{VCPUs: r.GetVcpus(), MemoryMiB: r.GetMemoryMib(), DiskGiB: r.GetDiskGib(), GPUs: r.GetGpus()}
}

// Proto converts back to API resources.
func (a Amount) Proto() *v1.Resources {
	return &v1.Resources{Vcpus: a.VCPUs, MemoryMib: a.MemoryMiB, DiskGib: a.DiskGiB, Gpus: a.GPUs}
}

// Add returns a+b.
func (a Amount) Add(b Amount) Amount {
	return Amount{a.VCPUs + b.VCPUs, a.MemoryMiB + b.MemoryMiB, a.DiskGiB + b.DiskGiB, a.GPUs + b.GPUs}
}

// Sub returns a-b.
func (a Amount) Sub(b Amount) Amount {
	return Amount{a.VCPUs - b.VCPUs, a.MemoryMiB - b.MemoryMiB, a.DiskGiB - b.DiskGiB, a.GPUs - b.GPUs}
}

// IsZero reports whether every dimension is zero.
func (a Amount) IsZero() bool { return a == Amount{} }

// Covers reports whether a holds b in every dimension.
func (a Amount) Covers(b Amount) bool {
	return a.VCPUs >= b.VCPUs && a.MemoryMiB >= b.MemoryMiB && a.DiskGiB >= b.DiskGiB && a.GPUs >= b.GPUs
}

// Times returns how many whole b fit in a (b's zero dimensions do not limit).
func (a Amount) Times(b Amount) int64 {
	n := int64(math.MaxInt64)
	for _, d := range [][2]int64{{a.VCPUs, b.VCPUs}, {a.MemoryMiB, b.MemoryMiB}, {a.DiskGiB, b.DiskGiB}, {a.GPUs, b.GPUs}} {
		if d[1] > 0 {
			n = min(n, max(d[0], 0)/d[1])
		}
	}
	if n == math.MaxInt64 {
		return 0 // a flavor that needs nothing is not a flavor
	}
	return n
}

// Usable is what placement may hand out on a host: capacity times the overcommit ratio (GPUs
// are never overcommitted), minus what the host keeps for itself.
func Usable(h *v1.Host) Amount {
	c, o, r := h.GetCapacity(), h.GetOvercommit(), h.GetReserved()
	scale := func(v int64, ratio float64) int64 {
		if ratio <= 1 {
			return v
		}
		return int64(math.Floor(float64(v) * ratio))
	}
	return Amount{
		VCPUs:     scale(c.GetVcpus(), o.GetCpu()) - r.GetVcpus(),
		MemoryMiB: scale(c.GetMemoryMib(), o.GetMemory()) - r.GetMemoryMib(),
		DiskGiB:   scale(c.GetDiskGib(), o.GetDisk()) - r.GetDiskGib(),
		GPUs:      c.GetGpus() - r.GetGpus(),
	}
}

// Free is what is left on a host after its devservers.
func Free(h *v1.Host) Amount { return Usable(h).Sub(Of(h.GetAllocated())) }

// Physical reports whether a flavor takes a whole host.
func Physical(f *v1.Flavor) bool { return f.GetKind() == v1.FlavorKind_FLAVOR_KIND_PHYSICAL }

// Need is what a devserver of flavor f takes on host h: the flavor's resources for a VM, the
// whole usable host for a physical devserver.
func Need(f *v1.Flavor, h *v1.Host) Amount {
	if Physical(f) {
		return Usable(h)
	}
	return Of(f.GetResources())
}

// Shortage names the first reason a flavor does not fit a host.
type Shortage int

// Shortages, in the order they are checked.
const (
	None Shortage = iota
	VCPUs
	Memory
	Disk
	GPUs
	// Occupied: a physical flavor needs an empty host.
	Occupied
)

// Check tells whether a devserver of flavor f fits on host h now, given free (normally
// Free(h); placement simulations pass their own running figure), and if not, why.
func Check(f *v1.Flavor, h *v1.Host, free Amount) Shortage {
	want := Of(f.GetResources())
	if Physical(f) {
		// The machine itself must be big enough, and nothing else may run on it.
		usable := Usable(h)
		if s := first(usable, want); s != None {
			return s
		}
		if free != usable {
			return Occupied
		}
		return None
	}
	return first(free, want)
}

func first(have, want Amount) Shortage {
	switch {
	case have.VCPUs < want.VCPUs:
		return VCPUs
	case have.MemoryMiB < want.MemoryMiB:
		return Memory
	case have.DiskGiB < want.DiskGiB:
		return Disk
	case have.GPUs < want.GPUs:
		return GPUs
	}
	return None
}

// Describe says what a shortage means for flavor f, for explanations: "lack memory for flavor
// xl (need 65536 MiB)".
func (s Shortage) Describe(f *v1.Flavor) string {
	r := f.GetResources()
	switch s {
	case VCPUs:
		return fmt.Sprintf("lack vCPUs for flavor %s (need %d)", f.GetName(), r.GetVcpus())
	case Memory:
		return fmt.Sprintf("lack memory for flavor %s (need %d MiB)", f.GetName(), r.GetMemoryMib())
	case Disk:
		return fmt.Sprintf("lack disk for flavor %s (need %d GiB)", f.GetName(), r.GetDiskGib())
	case GPUs:
		return fmt.Sprintf("lack GPUs for flavor %s (need %d)", f.GetName(), r.GetGpus())
	case Occupied:
		return fmt.Sprintf("run other devservers (physical flavor %s needs an empty host)", f.GetName())
	}
	return "fit"
}

package drain

import "time"

// ItemKind says how a devserver leaves a drained host. The values are DrainItemKind's in the
// API (devfleet.v1), so a kind converts as is.
type ItemKind int

// Item kinds.
const (
	// Move is a live move to another host of the devserver's region.
	Move ItemKind = iota + 1
	// ColdMove goes to another region (shut down, copy, start there): its own region is drained
	// whole, and a live move cannot cross regions.
	ColdMove
	// Physical is a whole-machine devserver: it cannot move; its owner is told.
	Physical
	// Stranded found no host with room.
	Stranded
)

func (k ItemKind) String() string {
	switch k {
	case Move:
		return "live"
	case ColdMove:
		return "cold"
	case Physical:
		return "physical"
	case Stranded:
		return "stranded"
	}
	return "unknown"
}

// Moves reports whether items of this kind move (and so take a place in the schedule).
func (k ItemKind) Moves() bool { return k == Move || k == ColdMove }

// Item is one devserver of a drained host: where it goes and when, or why it cannot.
type Item struct {
	Devserver, DevserverID, Owner, Flavor string
	Source, SourceSite                    string
	// Dest, DestSite and DestRegion are empty when the devserver does not move.
	Dest, DestSite, DestRegion string
	Kind                       ItemKind
	// MemoryBytes is the flavor's memory: what a live move copies.
	MemoryBytes uint64
	// DiskBytes is the flavor's disk: what a cold move copies besides (its memory image).
	DiskBytes uint64
	// Wave is the 0-based batch the move starts in, under the budgets, in plan order: moves that
	// start at the same simulated instant share a wave, and waves grow with time. Zero, like
	// Start and Expected, for an item that does not move.
	Wave int
	// Start is the planned start, from the drain's start; Expected is the move's expected
	// duration: its copied bytes at the budgets' bandwidth.
	Start, Expected time.Duration
	// Blocker says why it cannot move ("" when it can).
	Blocker string
}

// Bytes is what the move copies: the memory of a live move, memory and disk for a cold one,
// nothing for an item that does not move.
func (it *Item) Bytes() uint64 {
	switch it.Kind {
	case Move:
		return it.MemoryBytes
	case ColdMove:
		return it.MemoryBytes + it.DiskBytes
	}
	return 0
}

// End is when the move is planned to end.
func (it *Item) End() time.Duration { return it.Start + it.Expected }

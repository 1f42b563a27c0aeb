package eventlog

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Position is an event's place in the feed, (raft index, n). As a starting point it means
// "after this event": a consumer resumes from the last event it handled. The zero Position is
// "from the oldest retained event"; raft indexes start at 1, so no event has it.
type Position struct {
	Index uint64
	N     uint32
}

// Less orders positions as the feed does.
func (p Position) Less(q Position) bool {
	return p.Index < q.Index || (p.Index == q.Index && p.N < q.N)
}

// IsZero reports whether p is the zero Position ("from the oldest").
func (p Position) IsZero() bool { return p == Position{} }

func (p Position) String() string { return fmt.Sprintf("%d/%d", p.Index, p.N) }

// before is the greatest position less than p, so that reading after it starts at p. For any
// event position (index >= 1) it is non-zero, which keeps "from the oldest" apart from "from
// exactly this event".
func before(p Position) Position {
	if p.N > 0 {
		return Position{p.Index, p.N - 1}
	}
	return Position{p.Index - 1, math.MaxUint32}
}

// origin is where "from the oldest" starts given the cut: a non-zero position, so that a
// consumer that has looked once is held to what it has seen, and a later cut past it is a gap.
func origin(cut Position) Position { return maxPos(cut, Position{0, math.MaxUint32}) }

func maxPos(a, b Position) Position {
	if a.Less(b) {
		return b
	}
	return a
}

// posKey is an event's key in the events bucket: big-endian so that bbolt's byte order is the
// feed's order.
func posKey(p Position) []byte {
	k := make([]byte, 12)
	binary.BigEndian.PutUint64(k, p.Index)
	binary.BigEndian.PutUint32(k[8:], p.N)
	return k
}

func keyPos(k []byte) Position {
	return Position{binary.BigEndian.Uint64(k), binary.BigEndian.Uint32(k[8:])}
}

// timeKey is a time-index key: the watermark (flipped sign bit, so that negative nanoseconds
// sort first) then the position where the watermark reached it.
func timeKey(ns int64, p Position) []byte {
	k := make([]byte, 8, 20)
	binary.BigEndian.PutUint64(k, uint64(ns)^(1<<63))
	return append(k, posKey(p)...)
}

func timeKeyNs(k []byte) int64 { return int64(binary.BigEndian.Uint64(k) ^ (1 << 63)) }

func timeKeyPos(k []byte) Position { return keyPos(k[8:]) }

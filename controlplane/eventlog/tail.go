package eventlog

import (
	"sort"

	devfleetv1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// The tail keeps the newest events in memory so that live subscribers (all of them, usually)
// take new events without a bbolt transaction or a decode each. Bounded in count and bytes.
const (
	tailMaxEvents = 4096
	tailMaxBytes  = 16 << 20
)

type tailEntry struct {
	pos Position
	ev  *devfleetv1.Event
	// raw is ev's encoding as stored: subscribers pass it on (see Delivery). Its length is
	// what the entry counts against tailMaxBytes.
	raw []byte
}

// tail holds, in order, every event appended after before. Guarded by Log.mu.
type tail struct {
	entries []tailEntry // live from start on
	start   int
	bytes   int
	before  Position
	// maxEvents is tailMaxEvents but in tests.
	maxEvents int
}

func (t *tail) push(e tailEntry) {
	t.entries = append(t.entries, e)
	t.bytes += len(e.raw)
	for len(t.entries)-t.start > t.maxEvents || t.bytes > tailMaxBytes {
		old := t.entries[t.start]
		t.before, t.bytes = old.pos, t.bytes-len(old.raw)
		t.entries[t.start] = tailEntry{}
		t.start++
	}
	if t.start > len(t.entries)/2 && t.start >= 1024 {
		t.entries = append(make([]tailEntry, 0, 2*(len(t.entries)-t.start)), t.entries[t.start:]...)
		t.start = 0
	}
}

// covers reports whether every event after p that was appended is in the tail.
func (t *tail) covers(p Position) bool { return !p.Less(t.before) }

// after returns up to limit matching events after p, the position of the last event looked at
// (p if none) and whether it looked at the newest. p must be covered.
func (t *tail) after(p Position, m matcher, limit int) (out []Delivery, next Position, atEnd bool) {
	live := t.entries[t.start:]
	i := sort.Search(len(live), func(i int) bool { return p.Less(live[i].pos) })
	next = p
	for ; i < len(live) && len(out) < limit; i++ {
		e := live[i]
		next = e.pos
		if m.match(e.ev.GetTopic(), e.ev.GetKey()) {
			out = append(out, Delivery{Event: e.ev, Encoded: e.raw})
		}
	}
	return out, next, i == len(live)
}

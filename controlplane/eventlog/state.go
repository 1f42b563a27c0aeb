package eventlog

import (
	"encoding/binary"
	"fmt"
	"math"

	"go.etcd.io/bbolt"
)

var (
	bucketEvents = []byte("events")
	bucketTimes  = []byte("times")
	bucketMeta   = []byte("meta")
	keyState     = []byte("state")
)

const stateVersion = 1

// noTime marks a watermark or floor that no event has set yet.
const noTime = math.MinInt64

// state is what the log keeps beside the events, rewritten in every write transaction so that
// it always agrees with them.
type state struct {
	// last is the newest position appended (or declared by Restored): Append takes only what
	// comes after it.
	last Position
	// mark is the time watermark: the latest event time stamped so far.
	mark int64
	// bytes is the sum of the stored values' sizes, for MaxBytes.
	bytes int64
	// cut is the newest position deleted or declared missing: a reader positioned before it
	// would miss events, so it gets a TooOldError.
	cut Position
	// floor is the latest event time among what was cut: FromTime(t) with t <= floor cannot
	// tell where t starts.
	floor int64
}

func emptyState() state { return state{mark: noTime, floor: noTime} }

func (s state) encode() []byte {
	b := make([]byte, 1+12+8+8+12+8)
	b[0] = stateVersion
	copy(b[1:], posKey(s.last))
	binary.BigEndian.PutUint64(b[13:], uint64(s.mark))
	binary.BigEndian.PutUint64(b[21:], uint64(s.bytes))
	copy(b[29:], posKey(s.cut))
	binary.BigEndian.PutUint64(b[41:], uint64(s.floor))
	return b
}

func decodeState(b []byte) (state, error) {
	if len(b) != 49 || b[0] != stateVersion {
		return state{}, fmt.Errorf("event log state: %d bytes (want 49, version %d): not written by this version", len(b), stateVersion)
	}
	return state{
		last:  keyPos(b[1:13]),
		mark:  int64(binary.BigEndian.Uint64(b[13:])),
		bytes: int64(binary.BigEndian.Uint64(b[21:])),
		cut:   keyPos(b[29:41]),
		floor: int64(binary.BigEndian.Uint64(b[41:])),
	}, nil
}

func loadState(tx *bbolt.Tx) (state, error) {
	b := tx.Bucket(bucketMeta).Get(keyState)
	if b == nil {
		if k, _ := tx.Bucket(bucketEvents).Cursor().First(); k != nil {
			return state{}, fmt.Errorf("event log state: missing while events are stored")
		}
		return emptyState(), nil
	}
	return decodeState(b)
}

// putState rewrites the state record, and the key index's marker with it: every write
// transaction maintains the key index.
func putState(tx *bbolt.Tx, s state) error {
	if err := tx.Bucket(bucketMeta).Put(keyState, s.encode()); err != nil {
		return err
	}
	return putKeyMarker(tx)
}

// firstAfter is the oldest stored event after p (ok false: none).
func firstAfter(tx *bbolt.Tx, p Position) (Position, bool) {
	c := tx.Bucket(bucketEvents).Cursor()
	k, _ := c.Seek(posKey(p))
	if k != nil && keyPos(k) == p {
		k, _ = c.Next()
	}
	if k == nil {
		return Position{}, false
	}
	return keyPos(k), true
}

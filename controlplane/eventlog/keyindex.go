package eventlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/bbolt"
)

// The key index: one empty-valued key per stored event, (topic, key, index, n), so that the
// events of one object are adjacent and in feed order. Append writes it in its transaction and
// retention deletes from it in its own, so it always agrees with the events bucket.
var (
	bucketKeys = []byte("keys")
	// keyMarker (in meta) says the key index is complete: keyIndexVersion then a copy of the
	// state record it agrees with. Every write transaction rewrites both, so a file last written
	// by a version that did not maintain the index (older, or after a downgrade) has a missing
	// or stale marker, and Open rebuilds the index.
	keyMarker = []byte("keys")
)

const keyIndexVersion = 1

// maxLiteralKey bounds the topic and key stored as they are in a key-index key; a longer pair
// is stored as a hash (see keyPrefix).
const maxLiteralKey = 512

// buildChunk bounds the keys one transaction of an index build inserts.
const buildChunk = 1 << 16

var empty = []byte{}

// keyPrefix is what every key-index key of an object starts with:
//
//	0 · uvarint len(topic) · topic · uvarint len(key) · key
//
// (the lengths make it unambiguous: no other object's prefix starts with it), or, for a topic
// and key longer than maxLiteralKey together,
//
//	1 · the first 16 bytes of SHA-256(uvarint len(topic) · topic · key)
//
// which readers check against the event's own topic and key.
func keyPrefix(topic, key string) []byte {
	if len(topic)+len(key) <= maxLiteralKey {
		b := make([]byte, 0, 1+2*binary.MaxVarintLen16+len(topic)+len(key)+12)
		b = append(b, 0)
		b = binary.AppendUvarint(b, uint64(len(topic)))
		b = append(b, topic...)
		b = binary.AppendUvarint(b, uint64(len(key)))
		return append(b, key...)
	}
	h := sha256.New()
	h.Write(binary.AppendUvarint(nil, uint64(len(topic))))
	h.Write([]byte(topic))
	h.Write([]byte(key))
	b := make([]byte, 1, 1+16+12)
	b[0] = 1
	return append(b, h.Sum(nil)[:16]...)
}

// indexKey is the key-index key of the object's event at p.
func indexKey(prefix []byte, p Position) []byte {
	k := make([]byte, len(prefix)+12)
	copy(k, prefix)
	binary.BigEndian.PutUint64(k[len(prefix):], p.Index)
	binary.BigEndian.PutUint32(k[len(prefix)+8:], p.N)
	return k
}

// indexPos is the position of a key-index key under prefix (ok false: another object's).
func indexPos(k, prefix []byte) (Position, bool) {
	if len(k) != len(prefix)+12 || !bytes.HasPrefix(k, prefix) {
		return Position{}, false
	}
	return keyPos(k[len(prefix):]), true
}

// rawKeyPrefix is the key-index prefix of a stored event at p, read without decoding it.
func rawKeyPrefix(p Position, v []byte) ([]byte, error) {
	topic, key, err := rawTopicKey(v)
	if err != nil {
		return nil, fmt.Errorf("event at index %d n %d: %w", p.Index, p.N, err)
	}
	return keyPrefix(string(topic), string(key)), nil
}

// rawIndexKey is the key-index key of a stored event at p, read without decoding it.
func rawIndexKey(p Position, v []byte) ([]byte, error) {
	prefix, err := rawKeyPrefix(p, v)
	if err != nil {
		return nil, err
	}
	return indexKey(prefix, p), nil
}

// keyIndexValid reports whether the key index agrees with the state record.
func keyIndexValid(tx *bbolt.Tx) bool {
	meta := tx.Bucket(bucketMeta)
	mk := meta.Get(keyMarker)
	return tx.Bucket(bucketKeys) != nil && len(mk) > 0 && mk[0] == keyIndexVersion && bytes.Equal(mk[1:], meta.Get(keyState))
}

// putKeyMarker records that the key index agrees with the state record as it is now.
func putKeyMarker(tx *bbolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	return meta.Put(keyMarker, append([]byte{keyIndexVersion}, meta.Get(keyState)...))
}

// ensureKeyIndex builds the key index when the file has none, or one that a version not
// maintaining it may have let fall out of step (see keyMarker). It runs in Open, before anything
// else can write. It reads every stored event's topic and key (not the rest), sorts the index
// keys (about 60 bytes of memory per event) and inserts them in order, chunk (buildChunk)
// per transaction, so that each transaction only appends to the right edge of the tree. A crash
// midway leaves no marker, and the next Open starts over. It returns how many events it
// indexed, or -1 when the index was already there.
func ensureKeyIndex(db *bbolt.DB, chunk int) (int, error) {
	var valid bool
	if err := db.View(func(tx *bbolt.Tx) error { valid = keyIndexValid(tx); return nil }); err != nil {
		return 0, err
	}
	if valid {
		return -1, nil
	}
	err := db.Update(func(tx *bbolt.Tx) error {
		if err := tx.Bucket(bucketMeta).Delete(keyMarker); err != nil {
			return err
		}
		if tx.Bucket(bucketKeys) != nil {
			if err := tx.DeleteBucket(bucketKeys); err != nil {
				return err
			}
		}
		_, err := tx.CreateBucket(bucketKeys)
		return err
	})
	if err != nil {
		return 0, err
	}
	// All the keys, packed in one buffer.
	var buf []byte
	var spans [][2]int
	err = db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			ik, err := rawIndexKey(keyPos(k), v)
			if err != nil {
				return err
			}
			spans = append(spans, [2]int{len(buf), len(buf) + len(ik)})
			buf = append(buf, ik...)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	slices.SortFunc(spans, func(a, b [2]int) int { return bytes.Compare(buf[a[0]:a[1]], buf[b[0]:b[1]]) })
	for i := 0; ; i += chunk {
		end := min(i+chunk, len(spans))
		err := db.Update(func(tx *bbolt.Tx) error {
			kb := tx.Bucket(bucketKeys)
			kb.FillPercent = fillPercent
			for _, s := range spans[i:end] {
				if err := kb.Put(buf[s[0]:s[1]], empty); err != nil {
					return err
				}
			}
			if end < len(spans) {
				return nil
			}
			return putKeyMarker(tx)
		})
		if err != nil {
			return 0, err
		}
		if end == len(spans) {
			return len(spans), nil
		}
	}
}

// openKeyIndex ensures the key index at Open, and logs a build.
func (l *Log) openKeyIndex(path string, chunk int) error {
	start := time.Now()
	n, err := ensureKeyIndex(l.db, chunk)
	if err != nil {
		return fmt.Errorf("build the key index: %w", err)
	}
	if n > 0 {
		l.log.Info("event log: built the key index (the file was written by a version without it)",
			"path", path, "events", n, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

package fsm

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
)

// entryFormat is the first byte of every raft log entry devfleet writes, so that the format can
// change later without guessing.
const entryFormat byte = 1

// ErrEmptyEntry is returned for a log entry with no bytes.
var ErrEmptyEntry = errors.New("fsm: empty log entry")

// EncodeBatch encodes commands into one raft log entry.
func EncodeBatch(cmds []*fsmv1.Command) ([]byte, error) {
	b := &fsmv1.Batch{Commands: cmds}
	buf := make([]byte, 1, 1+proto.Size(b))
	buf[0] = entryFormat
	return proto.MarshalOptions{Deterministic: true}.MarshalAppend(buf, b)
}

// DecodeBatch decodes a raft log entry. It never panics on any input.
func DecodeBatch(data []byte) (*fsmv1.Batch, error) {
	if len(data) == 0 {
		return nil, ErrEmptyEntry
	}
	if data[0] != entryFormat {
		return nil, fmt.Errorf("fsm: log entry format %d, this build reads %d", data[0], entryFormat)
	}
	b := &fsmv1.Batch{}
	if err := proto.Unmarshal(data[1:], b); err != nil {
		return nil, fmt.Errorf("fsm: decode log entry: %w", err)
	}
	return b, nil
}

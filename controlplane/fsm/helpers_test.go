package fsm

import (
	"google.golang.org/protobuf/encoding/protowire"
)

// protowireField encodes an empty length-delimited field with the given number.
func protowireField(num protowire.Number) []byte {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendBytes(b, nil)
}

package benchmark

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec positionCodec delegates to
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/devfleet/devfleet/controlplane/feed"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// positionCodec is the bench's watchers' codec: the proto codec, except that a WatchResponse's
// event, or each event of its batch, is decoded only as far as a watcher needs to follow the
// feed (index, n, topic, key, deleted), skipping its stamp and its object. The bytes are still received and walked, field by
// field, and a malformed message is still an error.
type positionCodec struct{ proto encoding.CodecV2 }

func newPositionCodec() positionCodec { return positionCodec{proto: encoding.GetCodecV2("proto")} }

func (c positionCodec) Name() string { return c.proto.Name() }

func (c positionCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c positionCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*v1.WatchResponse)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	b := buf.ReadOnlyData()
	r.Kind = nil // gRPC hands a new message; nothing else to clear
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType || (num != 1 && num != 2 && num != 3) {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		m, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if num == 2 {
			hb := &v1.Heartbeat{}
			if err := proto.Unmarshal(m, hb); err != nil {
				return err
			}
			r.Kind = &v1.WatchResponse_Heartbeat{Heartbeat: hb}
			continue
		}
		if num == 3 {
			batch, err := decodeBatch(m)
			if err != nil {
				return fmt.Errorf("watch response: batch: %w", err)
			}
			r.Kind = &v1.WatchResponse_Batch{Batch: batch}
			continue
		}
		e, err := decodePosition(m)
		if err != nil {
			return fmt.Errorf("watch response: event: %w", err)
		}
		r.Kind = &v1.WatchResponse_Event{Event: e}
	}
	return nil
}

// decodeBatch decodes a WatchEventBatch's events as decodePosition does, in one allocation for
// the events: it counts them first.
func decodeBatch(b []byte) (*v1.WatchEventBatch, error) {
	count := 0
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		rest = rest[n:]
		if n = protowire.ConsumeFieldValue(num, typ, rest); n < 0 {
			return nil, protowire.ParseError(n)
		}
		rest = rest[n:]
		if num == 1 && typ == protowire.BytesType {
			count++
		}
	}
	slab := make([]v1.Event, count)
	batch := &v1.WatchEventBatch{Events: make([]*v1.Event, 0, count)}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		b = b[n:] // well-formed: counted above
		if num != 1 || typ != protowire.BytesType {
			b = b[protowire.ConsumeFieldValue(num, typ, b):]
			continue
		}
		m, n := protowire.ConsumeBytes(b)
		b = b[n:]
		e := &slab[len(batch.Events)]
		if err := decodePositionInto(e, m); err != nil {
			return nil, fmt.Errorf("event %d: %w", len(batch.Events), err)
		}
		batch.Events = append(batch.Events, e)
	}
	return batch, nil
}

// topics interns the feed's topics, which every event repeats.
var topics = func() map[string]string {
	m := make(map[string]string, len(feed.Topics))
	for _, t := range feed.Topics {
		m[t] = t
	}
	return m
}()

// decodePosition decodes an Event's index, n, topic, key and deleted, and skips the rest.
func decodePosition(b []byte) (*v1.Event, error) {
	e := &v1.Event{}
	if err := decodePositionInto(e, b); err != nil {
		return nil, err
	}
	return e, nil
}

// decodePositionInto is decodePosition into a zero e.
func decodePositionInto(e *v1.Event, b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case typ == protowire.VarintType && (num == 1 || num == 2 || num == 6):
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			switch num {
			case 1:
				e.Index = v
			case 2:
				e.N = uint32(v)
			default:
				e.Deleted = v != 0
			}
		case typ == protowire.BytesType && (num == 4 || num == 5):
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			if num == 4 {
				if t, ok := topics[string(v)]; ok { // the map lookup does not allocate
					e.Topic = t
				} else {
					e.Topic = string(v)
				}
			} else {
				e.Key = string(v)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	if e.Index == 0 {
		return errors.New("no index")
	}
	return nil
}

package api

import (
	"sync/atomic"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec serverCodec delegates to
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/devfleet/devfleet/controlplane/eventlog"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Fan-out: every Watch stream of a node sends the same events. Rather than each stream
// marshalling each event again, a node frames each event once as a WatchResponse (from the
// encoding the history already stored) and every stream sends those bytes: serverCodec passes
// an *encodedResponse through as is and gives every other message to the standard proto codec.

// encodedResponse is a WatchResponse with its wire encoding, shared read-only by every stream
// that sends it. It embeds the message, so it is a proto.Message too: a server without
// serverCodec marshals the message again, which is slower but the same on the wire.
type encodedResponse struct {
	*v1.WatchResponse
	data mem.BufferSlice // one mem.SliceBuffer, whose Ref and Free do nothing
}

// watchEventField is WatchResponse's event field, from the descriptor so that a renumbered
// proto cannot silently send wrong bytes.
var watchEventField = func() protowire.Number {
	fd := (&v1.WatchResponse{}).ProtoReflect().Descriptor().Fields().ByName("event")
	if fd == nil {
		panic("api: WatchResponse has no field event")
	}
	return fd.Number()
}()

// newEncodedResponse frames d's event as a WatchResponse: the event field's tag and length,
// then the event's stored encoding (marshalled here if the delivery has none).
func newEncodedResponse(d eventlog.Delivery) (*encodedResponse, error) {
	ev := d.Encoded
	if ev == nil {
		b, err := proto.Marshal(d.Event)
		if err != nil {
			return nil, err
		}
		ev = b
	}
	b := make([]byte, 0, protowire.SizeTag(watchEventField)+protowire.SizeBytes(len(ev)))
	b = protowire.AppendTag(b, watchEventField, protowire.BytesType)
	b = protowire.AppendBytes(b, ev)
	return &encodedResponse{
		WatchResponse: &v1.WatchResponse{Kind: &v1.WatchResponse_Event{Event: d.Event}},
		data:          mem.BufferSlice{mem.SliceBuffer(b)},
	}, nil
}

// encodedCache holds the framed events of a node, most recent first, for its Watch streams: the
// first stream to send an event frames it, the others find it here. A slot is keyed by the
// event's pointer: the history's tail hands the same *Event to every live subscriber, and the
// slot keeps it alive, so a pointer cannot name another event while it is cached. Replayed
// events (fresh pointers from the store) miss, and are framed by each stream that sends them.
type encodedCache struct {
	slots [encodedSlots]atomic.Pointer[encodedResponse]
}

// encodedSlots: more than the events a live stream may be behind the first (watchBuffer), so
// that streams a little behind still find them.
const encodedSlots = 4096

func (c *encodedCache) get(d eventlog.Delivery) (*encodedResponse, error) {
	e := d.Event
	slot := &c.slots[(e.GetIndex()*31+uint64(e.GetN()))%encodedSlots]
	if r := slot.Load(); r != nil && r.GetEvent() == e {
		return r, nil
	}
	r, err := newEncodedResponse(d)
	if err != nil {
		return nil, err
	}
	slot.Store(r)
	return r, nil
}

// serverCodec is the gRPC server's codec: the standard proto codec (same name, same bytes), but
// an *encodedResponse is sent as it was encoded.
type serverCodec struct{ proto encoding.CodecV2 }

func newServerCodec() serverCodec {
	c := encoding.GetCodecV2("proto")
	if c == nil {
		panic("api: gRPC's proto codec is not registered")
	}
	return serverCodec{proto: c}
}

func (c serverCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*encodedResponse); ok {
		return r.data, nil
	}
	return c.proto.Marshal(v)
}

func (c serverCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return c.proto.Unmarshal(data, v)
}

func (c serverCodec) Name() string { return c.proto.Name() }

package api

import (
	"fmt"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec serverCodec delegates to
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/devfleet/devfleet/controlplane/eventlog"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Fan-out: every Watch stream of a node sends the same events. Rather than each stream
// marshalling each event again, a node frames each event once as a WatchResponse (from the
// encoding the history already stored) and every stream sends those bytes: serverCodec passes
// an *encodedResponse through as is and gives every other message to the standard proto codec.
// A stream that sends a batch (WatchRequest.batch) frames it from the same stored encodings.

// encodedResponse is a WatchResponse with its wire encoding, shared read-only by every stream
// that sends it. It embeds the message, so it is a proto.Message too: a server without
// serverCodec marshals the message again, which is slower but the same on the wire.
type encodedResponse struct {
	*v1.WatchResponse
	// data: for an event, one mem.SliceBuffer, whose Ref and Free do nothing (the cache's
	// response is sent by many streams); for a batch, one buffer of batchBuffers, freed once
	// sent.
	data mem.BufferSlice
}

// watchEventField is WatchResponse's event field, watchBatchField its batch and
// batchEventsField WatchEventBatch's events: from the descriptors, so that a renumbered proto
// cannot silently send wrong bytes.
var (
	watchEventField  = fieldNumber((&v1.WatchResponse{}).ProtoReflect().Descriptor(), "event")
	watchBatchField  = fieldNumber((&v1.WatchResponse{}).ProtoReflect().Descriptor(), "batch")
	batchEventsField = fieldNumber((&v1.WatchEventBatch{}).ProtoReflect().Descriptor(), "events")
)

func fieldNumber(md protoreflect.MessageDescriptor, name protoreflect.Name) protowire.Number {
	fd := md.Fields().ByName(name)
	if fd == nil {
		panic(fmt.Sprintf("api: %s has no field %s", md.FullName(), name))
	}
	return fd.Number()
}

// eventBytes is d's event's encoding: the one the history stored, or marshalled here if the
// delivery has none.
func eventBytes(d eventlog.Delivery) ([]byte, error) {
	if d.Encoded != nil {
		return d.Encoded, nil
	}
	return proto.Marshal(d.Event)
}

// batchBuffers recycles the buffers of batches. Unlike gRPC's default pool it does not clear a
// buffer it hands out, since a batch overwrites all of it: gRPC's clears its whole size class
// (1 MiB for anything over 32 KiB), which cost more than framing the batch.
var batchBuffers bufferPool

// maxPooledBatch: larger buffers are left to the garbage collector.
const maxPooledBatch = 2 << 20

type bufferPool struct{ p sync.Pool }

func (bp *bufferPool) Get(n int) *[]byte {
	if b, ok := bp.p.Get().(*[]byte); ok {
		if cap(*b) >= n {
			*b = (*b)[:n]
			return b
		}
		bp.p.Put(b) // too small for this one, not for the next
	}
	b := make([]byte, n)
	return &b
}

func (bp *bufferPool) Put(b *[]byte) {
	if cap(*b) <= maxPooledBatch {
		bp.p.Put(b)
	}
}

var _ mem.BufferPool = (*bufferPool)(nil)

// newEncodedBatch frames the events as one WatchResponse whose batch holds them, in order, from
// their encodings (encoded[i] is ds[i]'s): the batch field's tag and length, then each event's
// tag, length and bytes; nothing is marshalled again. The bytes are in a buffer of
// batchBuffers, which gRPC frees once it has written them: the response is for one SendMsg.
func newEncodedBatch(ds []eventlog.Delivery, encoded [][]byte) *encodedResponse {
	inner := 0
	evs := make([]*v1.Event, len(ds))
	for i, d := range ds {
		evs[i] = d.Event
		inner += protowire.SizeTag(batchEventsField) + protowire.SizeBytes(len(encoded[i]))
	}
	size := protowire.SizeTag(watchBatchField) + protowire.SizeBytes(inner)
	pool := &batchBuffers
	buf := pool.Get(size)
	b := (*buf)[:0]
	b = protowire.AppendTag(b, watchBatchField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(inner))
	for _, ev := range encoded {
		b = protowire.AppendTag(b, batchEventsField, protowire.BytesType)
		b = protowire.AppendBytes(b, ev)
	}
	*buf = b
	return &encodedResponse{
		WatchResponse: &v1.WatchResponse{Kind: &v1.WatchResponse_Batch{Batch: &v1.WatchEventBatch{Events: evs}}},
		data:          mem.BufferSlice{mem.NewBuffer(buf, pool)},
	}
}

// newEncodedResponse frames d's event as a WatchResponse: the event field's tag and length,
// then the event's stored encoding (marshalled here if the delivery has none).
func newEncodedResponse(d eventlog.Delivery) (*encodedResponse, error) {
	ev, err := eventBytes(d)
	if err != nil {
		return nil, err
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

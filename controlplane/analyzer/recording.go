package analyzer

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// RecordingVersion is the format Writer writes; ReadRecording refuses others.
const RecordingVersion = 1

// maxChunk bounds one chunk of a recording, so that a corrupt length cannot make a reader
// allocate without limit.
const maxChunk = 16 << 20

// Writer writes a recording: gzip over length-delimited RecordingChunks (the header, the base
// state, then the events). The API's Record stream is the same chunks.
type Writer struct {
	gz *gzip.Writer
	bw *bufio.Writer
}

// NewWriter starts a recording on w; Close finishes it.
func NewWriter(w io.Writer) *Writer {
	bw := bufio.NewWriter(w)
	return &Writer{gz: gzip.NewWriter(bw), bw: bw}
}

// Put writes one chunk.
func (w *Writer) Put(c *v1.RecordingChunk) error {
	_, err := protodelim.MarshalTo(w.gz, c)
	return err
}

// Close flushes the recording.
func (w *Writer) Close() error {
	if err := w.gz.Close(); err != nil {
		return err
	}
	return w.bw.Flush()
}

// Recording is a segment of the feed: the fleet's state at its start and every event after it.
// It is a Source: an analyzer replays it exactly as it ran on the live fleet.
type Recording struct {
	Header *v1.RecordingHeader
	// Segment is the events after the base state, in feed order.
	Segment []*v1.Event

	base *state.Store
	// mu guards the replay cursor: a store advanced through Events, and views taken on the way.
	mu     sync.Mutex
	cursor *state.Store
	at     int
	views  map[int]*state.View
	// marks[i] is the watermark of Segment[i]: the latest stamp of the events up to it.
	marks []time.Time
}

// ReadRecording reads a recording written by Writer. A file that is not one, is truncated or
// is corrupt is an error saying where, never a panic.
func ReadRecording(r io.Reader) (*Recording, error) {
	gz, err := gzip.NewReader(bufio.NewReader(r))
	if err != nil {
		return nil, fmt.Errorf("not a devfleet recording (want gzip): %w", err)
	}
	defer gz.Close()
	br := bufio.NewReader(gz)
	opts := protodelim.UnmarshalOptions{MaxSize: maxChunk}
	rec := &Recording{}
	var base bytes.Buffer
	hasBase := false
	for n := 0; ; n++ {
		c := &v1.RecordingChunk{}
		err := opts.UnmarshalFrom(br, c)
		if errors.Is(err, io.EOF) {
			if n == 0 {
				return nil, errors.New("recording is empty")
			}
			break
		}
		if err != nil {
			return nil, fmt.Errorf("recording chunk %d: corrupt or truncated: %w", n, err)
		}
		switch p := c.GetPart().(type) {
		case *v1.RecordingChunk_Header:
			if n != 0 {
				return nil, fmt.Errorf("recording chunk %d: a second header", n)
			}
			if v := p.Header.GetVersion(); v != RecordingVersion {
				return nil, fmt.Errorf("recording format version %d; this build reads %d", v, RecordingVersion)
			}
			rec.Header = p.Header
		case *v1.RecordingChunk_Base:
			if rec.Header == nil || len(rec.Segment) > 0 {
				return nil, fmt.Errorf("recording chunk %d: base state out of place (it comes after the header, before the events)", n)
			}
			base.Write(p.Base)
			hasBase = true
		case *v1.RecordingChunk_Event:
			if rec.Header == nil {
				return nil, fmt.Errorf("recording chunk %d: an event before the header", n)
			}
			if err := checkEvent(p.Event, rec.Segment); err != nil {
				return nil, fmt.Errorf("recording chunk %d: %w", n, err)
			}
			rec.Segment = append(rec.Segment, p.Event)
		default:
			if n == 0 {
				return nil, errors.New("not a devfleet recording: it does not start with a header")
			}
			return nil, fmt.Errorf("recording chunk %d: unknown kind", n)
		}
	}
	if rec.Header == nil {
		return nil, errors.New("not a devfleet recording: it does not start with a header")
	}
	if !hasBase {
		// A writer always puts the base (an empty state is a few bytes): a stream cut short.
		return nil, errors.New("recording has no base state: it is truncated")
	}
	st, err := state.Restore(&base)
	if err != nil {
		return nil, fmt.Errorf("recording base state: %w", err)
	}
	rec.base = st
	return rec, nil
}

func checkEvent(e *v1.Event, before []*v1.Event) error {
	if e.GetTime() == nil || e.GetObject() == nil || e.GetTopic() == "" {
		return fmt.Errorf("event %d/%d lacks its time, topic or object", e.GetIndex(), e.GetN())
	}
	if n := len(before); n > 0 {
		p := before[n-1]
		if e.GetIndex() < p.GetIndex() || (e.GetIndex() == p.GetIndex() && e.GetN() <= p.GetN()) {
			return fmt.Errorf("event %d/%d is out of order (after %d/%d)", e.GetIndex(), e.GetN(), p.GetIndex(), p.GetN())
		}
	}
	m, err := e.GetObject().UnmarshalNew()
	if err != nil {
		return fmt.Errorf("event %d/%d: its object (%s) cannot be read: %w", e.GetIndex(), e.GetN(), e.GetObject().GetTypeUrl(), err)
	}
	if state.TableOf(m) == "" {
		return fmt.Errorf("event %d/%d: its object is a %s, which is no part of the fleet's state", e.GetIndex(), e.GetN(), m.ProtoReflect().Descriptor().FullName())
	}
	return nil
}

// NewRecording makes a recording from a base state and the events after it (tests, and Record).
func NewRecording(h *v1.RecordingHeader, base *state.Store, events []*v1.Event) *Recording {
	if base == nil {
		base = state.New()
	}
	return &Recording{Header: h, Segment: events, base: base}
}

// Write writes the recording in Writer's format.
func (r *Recording) Write(w io.Writer) error {
	wr := NewWriter(w)
	h := &v1.RecordingHeader{}
	if r.Header != nil {
		h = proto.Clone(r.Header).(*v1.RecordingHeader)
	}
	h.Version = RecordingVersion
	if err := wr.Put(&v1.RecordingChunk{Part: &v1.RecordingChunk_Header{Header: h}}); err != nil {
		return err
	}
	if err := PutBase(wr, r.base.View()); err != nil {
		return err
	}
	for _, e := range r.Segment {
		if err := wr.Put(&v1.RecordingChunk{Part: &v1.RecordingChunk_Event{Event: e}}); err != nil {
			return err
		}
	}
	return wr.Close()
}

// baseChunk is the size of the base state's pieces.
const baseChunk = 1 << 20

// PutBase writes a state as base chunks.
func PutBase(w interface {
	Put(*v1.RecordingChunk) error
}, v *state.View) error {
	var buf bytes.Buffer
	if err := v.Persist(&buf); err != nil {
		return err
	}
	for b := buf.Bytes(); len(b) > 0; {
		n := min(len(b), baseChunk)
		if err := w.Put(&v1.RecordingChunk{Part: &v1.RecordingChunk_Base{Base: b[:n]}}); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// Now is the end of the recording.
func (r *Recording) Now() time.Time {
	if t := r.Header.GetUntil(); t != nil {
		return t.AsTime()
	}
	if n := len(r.Segment); n > 0 {
		return r.Segment[n-1].GetTime().AsTime()
	}
	return r.Header.GetSince().AsTime()
}

// Since is the start of the recording.
func (r *Recording) Since() time.Time { return r.Header.GetSince().AsTime() }

// StateAt replays the events stamped up to t onto the base state. Before the recording's
// start it is an error: the recording does not know.
//
// As on a live node (eventlog's AtTime), "stamped up to t" goes by the watermark, the latest
// stamp so far in feed order: the events before the first one stamped after t. Stamps are the
// leader's clock, which can step back when the leader changes.
func (r *Recording) StateAt(_ context.Context, t time.Time) (*state.View, error) {
	if since := r.Since(); t.Before(since) {
		return nil, fmt.Errorf("the recording starts at %s; it does not hold the fleet at %s", since.Format(time.RFC3339Nano), t.Format(time.RFC3339Nano))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.marks) != len(r.Segment) {
		r.marks = make([]time.Time, len(r.Segment))
		var mark time.Time
		for i, e := range r.Segment {
			if at := e.GetTime().AsTime(); i == 0 || at.After(mark) {
				mark = at
			}
			r.marks[i] = mark
		}
	}
	k := sort.Search(len(r.marks), func(i int) bool { return r.marks[i].After(t) })
	if v, ok := r.views[k]; ok {
		return v, nil
	}
	if r.cursor == nil || r.at > k {
		r.cursor, r.at = r.base.Clone(), 0
	}
	if r.at < k {
		w := r.cursor.Begin(r.Segment[k-1].GetIndex(), r.Segment[k-1].GetTime().AsTime())
		for _, e := range r.Segment[r.at:k] {
			if err := ApplyEvent(w, e); err != nil {
				w.Abort()
				return nil, err
			}
		}
		if err := w.Commit(); err != nil {
			return nil, err
		}
		r.at = k
	}
	if r.views == nil {
		r.views = map[int]*state.View{}
	}
	v := r.cursor.View()
	r.views[k] = v
	return v, nil
}

// ApplyEvent writes an event's object (or removes it, for a deletion) into a store.
func ApplyEvent(w *state.WriteTxn, e *v1.Event) error {
	m, err := anypb.UnmarshalNew(e.GetObject(), proto.UnmarshalOptions{})
	if err != nil {
		return fmt.Errorf("event %d/%d: %w", e.GetIndex(), e.GetN(), err)
	}
	if e.GetDeleted() {
		return w.Delete(m)
	}
	return w.Put(m)
}

// Events filters the recording's events.
func (r *Recording) Events(_ context.Context, q Query) ([]*v1.Event, error) {
	var out []*v1.Event
	for _, e := range r.Segment {
		if q.match(e) {
			out = append(out, e)
		}
	}
	if l := q.limit(); len(out) > l {
		out = out[len(out)-l:]
	}
	return out, nil
}

package analyzer

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// ev is an event as the feed makes it.
func ev(t testing.TB, index uint64, n uint32, at time.Time, topic, key string, deleted bool, m proto.Message) *v1.Event {
	t.Helper()
	obj, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return &v1.Event{Index: index, N: n, Time: timestamppb.New(at), Topic: topic, Key: key, Deleted: deleted, Object: obj}
}

func encode(t testing.TB, r *Recording) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := r.Write(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func decode(t testing.TB, b []byte) *Recording {
	t.Helper()
	r, err := ReadRecording(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// recordingOf is the recording of f's history from after stamps[k], as a node records it: the
// state at since, then every event after it.
func recordingOf(t testing.TB, f *fleet, stamps []stamp, k int) (*Recording, time.Time) {
	t.Helper()
	since := stamps[k].at.Add(500 * time.Millisecond)
	base := stamps[k].store.Clone()
	var segment []*v1.Event
	for _, e := range f.events() {
		if e.GetTime().AsTime().After(since) {
			segment = append(segment, e)
		}
	}
	h := &v1.RecordingHeader{Since: timestamppb.New(since), Until: timestamppb.New(stamps[len(stamps)-1].at.Add(time.Minute)), BaseIndex: uint64(k + 1), Node: "n1", Note: "test"}
	return NewRecording(h, base, segment), since
}

func checkStates(t *testing.T, what string, src Source, stamps []stamp, since time.Time, order []time.Time) {
	t.Helper()
	ctx := context.Background()
	for _, at := range order {
		v, err := src.StateAt(ctx, at)
		if at.Before(since) {
			if err == nil || !strings.Contains(err.Error(), "starts at") {
				t.Fatalf("%s: state at %v, before the start %v: %v", what, at, since, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: state at %v: %v", what, at, err)
		}
		if d := diffRows(rows(t, v), rowsAt(stamps, at)); d != "" {
			t.Fatalf("%s: state at %v (%v after t0): %s", what, at, at.Sub(t0), d)
		}
	}
}

func TestRecordingRoundTripAndStates(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	stamps := history(f)
	rec, since := recordingOf(t, f, stamps, 3)
	b := encode(t, rec)
	back := decode(t, b)

	if h := back.Header; h.GetVersion() != RecordingVersion || h.GetNode() != "n1" || h.GetNote() != "test" || h.GetBaseIndex() != 4 {
		t.Fatalf("header %v", h)
	}
	if !back.Since().Equal(since) || !back.Now().Equal(rec.Now()) || !back.Now().Equal(stamps[len(stamps)-1].at.Add(time.Minute)) {
		t.Fatalf("since %v now %v", back.Since(), back.Now())
	}
	sameEvents(t, "segment", back.Segment, rec.Segment)
	if len(rec.Segment) == 0 || rec.Segment[0].GetIndex() != 5 {
		t.Fatalf("segment %s", positions(rec.Segment))
	}

	ts := probeTimes(stamps)
	backwards := make([]time.Time, len(ts))
	for i, x := range ts {
		backwards[len(ts)-1-i] = x
	}
	shuffled := append([]time.Time(nil), ts...)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for _, src := range []struct {
		name string
		rec  *Recording
	}{{"written", rec}, {"read back", back}} {
		checkStates(t, src.name+" forwards", src.rec, stamps, since, ts)
		checkStates(t, src.name+" backwards", src.rec, stamps, since, backwards)
		checkStates(t, src.name+" shuffled", src.rec, stamps, since, shuffled)
	}
	// A fresh one, backwards first.
	checkStates(t, "fresh backwards", decode(t, b), stamps, since, backwards)

	// Writing what was read gives the same recording.
	again := decode(t, encode(t, back))
	sameEvents(t, "rewritten", again.Segment, rec.Segment)
	checkStates(t, "rewritten", again, stamps, since, ts)
}

func TestRecordingEvents(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	stamps := history(f)
	rec, _ := recordingOf(t, f, stamps, 1)
	back := decode(t, encode(t, rec))
	ctx := context.Background()
	for _, q := range queries() {
		got, err := back.Events(ctx, q)
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		sameEvents(t, fmt.Sprintf("%+v", q), got, filterEvents(rec.Segment, q))
	}
	// The limit keeps the most recent.
	got, _ := back.Events(ctx, Query{Limit: 2})
	if n := len(rec.Segment); len(got) != 2 || !proto.Equal(got[1], rec.Segment[n-1]) || !proto.Equal(got[0], rec.Segment[n-2]) {
		t.Fatalf("limit 2: %s of %s", positions(got), positions(rec.Segment))
	}
	// Through an Env, Until is at most Now.
	reg := mustRegistry(t, &Analyzer{Name: "a", Run: func(ctx context.Context, env *Env, _ Inputs) ([]*v1.Finding, error) {
		evs, err := env.Events(ctx, Query{})
		if err != nil {
			return nil, err
		}
		since, ok := env.Since()
		return []*v1.Finding{{Summary: fmt.Sprintf("%d %v %v", len(evs), since.Equal(rec.Since()), ok)}}, nil
	}})
	short := NewRecording(&v1.RecordingHeader{Since: rec.Header.GetSince(), Until: timestamppb.New(sec(16.5))}, nil, rec.Segment)
	rep, err := reg.Run(ctx, short, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d true true", len(filterEvents(rec.Segment, Query{Until: sec(16.5)}))); rep.GetFindings()[0].GetSummary() != want {
		t.Fatalf("%s, want %s", rep.GetFindings()[0].GetSummary(), want)
	}
}

func TestRecordingNow(t *testing.T) {
	t.Parallel()
	e := ev(t, 3, 0, sec(5), "region", "eu", false, &v1.Region{Name: "eu"})
	for _, tc := range []struct {
		h    *v1.RecordingHeader
		evs  []*v1.Event
		want time.Time
	}{
		{&v1.RecordingHeader{Since: timestamppb.New(sec(1)), Until: timestamppb.New(sec(9))}, []*v1.Event{e}, sec(9)},
		{&v1.RecordingHeader{Since: timestamppb.New(sec(1))}, []*v1.Event{e}, sec(5)},
		{&v1.RecordingHeader{Since: timestamppb.New(sec(1))}, nil, sec(1)},
	} {
		r := NewRecording(tc.h, nil, tc.evs)
		if !r.Now().Equal(tc.want) || !r.Since().Equal(sec(1)) {
			t.Errorf("%v: now %v since %v", tc.h, r.Now(), r.Since())
		}
		if back := decode(t, encode(t, r)); !back.Now().Equal(tc.want) {
			t.Errorf("%v: read back, now %v", tc.h, back.Now())
		}
	}
	// Without a header at all, it writes and reads.
	back := decode(t, encode(t, NewRecording(nil, nil, []*v1.Event{e})))
	if len(back.Segment) != 1 || !back.Now().Equal(sec(5)) {
		t.Fatalf("%v", back)
	}
}

// Stamps are the leader's clock, which may step back when the leader changes: as on a live node,
// the state at t holds the events up to the first one stamped after t.
func TestRecordingSkewedStamps(t *testing.T) {
	t.Parallel()
	evs := []*v1.Event{
		ev(t, 1, 0, sec(10), "region", "a", false, &v1.Region{Name: "a"}),
		ev(t, 2, 0, sec(20), "region", "b", false, &v1.Region{Name: "b"}),
		ev(t, 3, 0, sec(15), "region", "c", false, &v1.Region{Name: "c"}),
		ev(t, 4, 0, sec(30), "region", "d", false, &v1.Region{Name: "d"}),
	}
	r := NewRecording(&v1.RecordingHeader{Since: timestamppb.New(sec(0))}, nil, evs)
	for _, tc := range []struct {
		at   time.Time
		want string
	}{{sec(5), ""}, {sec(10), "a"}, {sec(16), "a"}, {sec(17), "a"}, {sec(20), "a b c"}, {sec(29), "a b c"}, {sec(30), "a b c d"}} {
		for _, rec := range []*Recording{r, decode(t, encode(t, r))} {
			v, err := rec.StateAt(context.Background(), tc.at)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, x := range v.Regions() {
				names = append(names, x.GetName())
			}
			if got := strings.Join(names, " "); got != tc.want {
				t.Errorf("at %v: regions %q, want %q", tc.at.Sub(t0), got, tc.want)
			}
		}
	}
}

func TestRecordingConcurrentStates(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	stamps := history(f)
	rec, since := recordingOf(t, f, stamps, 0)
	ts := probeTimes(stamps)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(g), 7))
			for range 40 {
				at := ts[rnd.IntN(len(ts))]
				if at.Before(since) {
					continue
				}
				v, err := rec.StateAt(context.Background(), at)
				if err != nil {
					errs <- err.Error()
					return
				}
				if d := diffRows(rows(t, v), rowsAt(stamps, at)); d != "" {
					errs <- fmt.Sprintf("at %v: %s", at, d)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

// chunks encodes chunks as a recording's uncompressed stream.
func chunks(t testing.TB, cs ...*v1.RecordingChunk) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, c := range cs {
		if _, err := protodelim.MarshalTo(&buf, c); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gunzip(t testing.TB, b []byte) []byte {
	t.Helper()
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func header(v uint32) *v1.RecordingChunk {
	return &v1.RecordingChunk{Part: &v1.RecordingChunk_Header{Header: &v1.RecordingHeader{Version: v, Since: timestamppb.New(sec(0))}}}
}

func eventChunk(e *v1.Event) *v1.RecordingChunk {
	return &v1.RecordingChunk{Part: &v1.RecordingChunk_Event{Event: e}}
}

func baseChunks(t testing.TB, s *state.Store) []*v1.RecordingChunk {
	t.Helper()
	var out []*v1.RecordingChunk
	if err := PutBase(putter(func(c *v1.RecordingChunk) error { out = append(out, c); return nil }), s.View()); err != nil {
		t.Fatal(err)
	}
	return out
}

// smallRecording is a valid recording: a base of a few rows, and events that create, change and
// delete some.
func smallRecording(t testing.TB) (*Recording, []time.Time) {
	t.Helper()
	base := state.New()
	w := base.Begin(1, sec(0))
	if err := putAll(w, &v1.Region{Name: "eu"}, &v1.Site{Name: "eu-1", Region: "eu"}, &v1.Host{Name: "h1", Site: "eu-1"},
		&v1.ContainerPool{Region: "eu", Profile: "p"}); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	evs := []*v1.Event{
		ev(t, 2, 0, sec(2), "host", "h2", false, &v1.Host{Name: "h2", Site: "eu-1"}),
		ev(t, 2, 1, sec(2), "host", "h1", false, &v1.Host{Name: "h1", Site: "eu-1", Labels: map[string]string{"a": "b"}}),
		ev(t, 3, 0, sec(3), "host", "h2", true, &v1.Host{Name: "h2", Site: "eu-1"}),
		ev(t, 4, 0, sec(4), "drain-event", "dr", false, &v1.DrainEvent{DrainId: "dr", Seq: 1, Kind: "started"}),
		ev(t, 4, 1, sec(4), "pool", "", true, &v1.ContainerPool{Region: "eu", Profile: "p"}),
		ev(t, 5, 0, sec(5), "devserver", "d", false, &v1.Devserver{Name: "d", Id: "x", Owner: "ann", Region: "eu", Host: "h1"}),
	}
	return NewRecording(&v1.RecordingHeader{Since: timestamppb.New(sec(1)), Until: timestamppb.New(sec(6))}, base, evs),
		[]time.Time{sec(1), sec(2), sec(2.5), sec(3), sec(4), sec(5), sec(6), sec(60)}
}

func wantError(t *testing.T, what string, b []byte, substr ...string) {
	t.Helper()
	r, err := ReadRecording(bytes.NewReader(b))
	if err == nil {
		t.Fatalf("%s: read a recording (%d events)", what, len(r.Segment))
	}
	for _, s := range substr {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%s: %q does not say %q", what, err, s)
		}
	}
}

func TestReadRecordingRefusesCorruptInput(t *testing.T) {
	t.Parallel()
	rec, _ := smallRecording(t)
	good := encode(t, rec)
	base := baseChunks(t, rec.base)
	e1 := rec.Segment[0]
	e2 := rec.Segment[1]
	noObject := proto.Clone(e1).(*v1.Event)
	noObject.Object = nil
	noTime := proto.Clone(e1).(*v1.Event)
	noTime.Time = nil
	unknownType := proto.Clone(e1).(*v1.Event)
	unknownType.Object.TypeUrl = "type.googleapis.com/devfleet.v1.NoSuchThing"
	badObject := proto.Clone(e1).(*v1.Event)
	badObject.Object.Value = []byte{0xff, 0xff, 0xff}
	tableless := proto.Clone(e1).(*v1.Event)
	tableless.Object, _ = anypb.New(timestamppb.New(sec(1)))
	hugeChunk := binary.AppendUvarint(nil, maxChunk+1)
	hugeChunk = append(hugeChunk, make([]byte, 64)...)

	with := func(cs ...*v1.RecordingChunk) []byte { return gz(t, chunks(t, cs...)) }
	withBase := func(cs ...*v1.RecordingChunk) []*v1.RecordingChunk {
		return append(append([]*v1.RecordingChunk{header(RecordingVersion)}, base...), cs...)
	}
	for _, tc := range []struct {
		what   string
		b      []byte
		substr []string
	}{
		{"empty file", nil, []string{"gzip"}},
		{"not gzip", []byte("hello, this is not a recording at all"), []string{"gzip"}},
		{"gzip of nothing", gz(t, nil), []string{"empty"}},
		{"gzip of garbage", gz(t, []byte("\x0a\x05hello, garbage follows \xff\xff\xff\xff")), []string{"chunk 0"}},
		{"gzip of a text", gz(t, []byte(strings.Repeat("lorem ipsum ", 100))), nil},
		{"a base first", with(base...), []string{"header"}},
		{"an event first", with(eventChunk(e1)), []string{"header"}},
		{"an empty chunk first", with(&v1.RecordingChunk{}), []string{"header"}},
		{"an empty chunk later", with(withBase(&v1.RecordingChunk{})...), []string{"chunk"}},
		{"version 0", with(header(0)), []string{"version 0"}},
		{"version 2", with(append([]*v1.RecordingChunk{header(2)}, base...)...), []string{"version 2"}},
		{"two headers", with(header(RecordingVersion), header(RecordingVersion)), []string{"second header"}},
		{"no base", with(header(RecordingVersion), eventChunk(e1)), []string{"base"}},
		{"only a header", with(header(RecordingVersion)), []string{"base"}},
		{"base after events", with(withBase(eventChunk(e1), base[0])...), []string{"base"}},
		{"corrupt base", with(header(RecordingVersion), &v1.RecordingChunk{Part: &v1.RecordingChunk_Base{Base: []byte("\x03abc")}}), []string{"base"}},
		{"events out of order", with(withBase(eventChunk(e2), eventChunk(e1))...), []string{"out of order"}},
		{"an event twice", with(withBase(eventChunk(e1), eventChunk(e1))...), []string{"out of order"}},
		{"an event without object", with(withBase(eventChunk(noObject))...), []string{"object"}},
		{"an event without time", with(withBase(eventChunk(noTime))...), []string{"time"}},
		{"an event of an unknown type", with(withBase(eventChunk(unknownType))...), []string{"NoSuchThing"}},
		{"an event of an unreadable object", with(withBase(eventChunk(badObject))...), []string{"object"}},
		{"an event of no table", with(withBase(eventChunk(tableless))...), []string{"Timestamp"}},
		{"a huge chunk", gz(t, append(chunks(t, withBase()...), hugeChunk...)), []string{"chunk"}},
		{"garbage after the gzip stream", append(append([]byte(nil), good...), "trailing"...), nil},
		{"two gzip streams, the second garbage", append(append([]byte(nil), good...), gz(t, []byte("\xff\xff"))...), []string{"chunk"}},
	} {
		wantError(t, tc.what, tc.b, tc.substr...)
	}
	// What was written was valid.
	decode(t, good)
	decode(t, with(withBase(eventChunk(e1), eventChunk(e2))...))
}

func TestReadRecordingRefusesTruncated(t *testing.T) {
	t.Parallel()
	rec, _ := smallRecording(t)
	good := encode(t, rec)
	for n := range len(good) {
		wantError(t, fmt.Sprintf("cut at %d of %d", n, len(good)), good[:n])
	}
	// Cut inside a chunk of the stream (and compressed again): an error naming the chunk.
	raw := gunzip(t, good)
	bounds := map[int]bool{}
	for off, br := 0, bytes.NewReader(raw); off < len(raw); off = len(raw) - br.Len() {
		bounds[off] = true
		if err := protodelim.UnmarshalFrom(br, &v1.RecordingChunk{}); err != nil {
			t.Fatal(err)
		}
	}
	header := len(raw)
	for n := range bounds {
		if n > 0 {
			header = min(header, n)
		}
	}
	for n := 1; n < len(raw); n++ {
		b := gz(t, raw[:n])
		if bounds[n] && n > header { // cut between chunks, after the base: a shorter recording
			decode(t, b)
			continue
		}
		wantError(t, fmt.Sprintf("stream cut at %d of %d", n, len(raw)), b)
	}
}

// Random damage never panics: the reader and the replay either fail or work.
func TestReadRecordingSurvivesDamage(t *testing.T) {
	t.Parallel()
	rec, times := smallRecording(t)
	good := encode(t, rec)
	raw := gunzip(t, good)
	rnd := rand.New(rand.NewPCG(42, 1))
	try := func(what string, b []byte) {
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("%s: panic: %v", what, p)
			}
		}()
		r, err := ReadRecording(bytes.NewReader(b))
		if err != nil {
			return
		}
		ctx := context.Background()
		for _, at := range times {
			if v, err := r.StateAt(ctx, at); err == nil {
				_ = rows(t, v)
			}
		}
		_, _ = r.Events(ctx, Query{Topics: []string{"host"}, Keys: []string{"h1"}, Limit: 2})
		var buf bytes.Buffer
		if err := r.Write(&buf); err == nil {
			_, _ = ReadRecording(&buf)
		}
	}
	damage := func(b []byte) []byte {
		b = append([]byte(nil), b...)
		for range 1 + rnd.IntN(3) {
			i := rnd.IntN(len(b))
			switch rnd.IntN(3) {
			case 0:
				b[i] ^= 1 << rnd.IntN(8)
			case 1:
				b[i] = byte(rnd.IntN(256))
			default:
				b = append(b[:i], b[i+1:]...)
			}
		}
		return b
	}
	tries := 600
	if testing.Short() {
		tries = 100
	}
	read := 0
	for i := range tries / 4 {
		try(fmt.Sprintf("compressed, try %d", i), damage(good))
	}
	for i := range tries {
		b := gz(t, damage(raw))
		if _, err := ReadRecording(bytes.NewReader(b)); err == nil {
			read++
		}
		try(fmt.Sprintf("stream, try %d", i), b)
	}
	t.Logf("%d of %d damaged streams still read", read, tries)
}

func TestRecordingStatesOfSmall(t *testing.T) {
	t.Parallel()
	rec, _ := smallRecording(t)
	back := decode(t, encode(t, rec))
	ctx := context.Background()
	v, err := back.StateAt(ctx, sec(2.5))
	if err != nil {
		t.Fatal(err)
	}
	if h, err := v.GetHost("h2"); err != nil || h.GetName() != "h2" {
		t.Fatalf("h2 at 2.5s: %v", err)
	}
	if h, _ := v.GetHost("h1"); h.GetLabels()["a"] != "b" {
		t.Fatalf("h1 at 2.5s: %v", h)
	}
	if v, err = back.StateAt(ctx, sec(1.5)); err != nil || len(v.Regions()) != 1 {
		t.Fatalf("base: %v", err)
	}
	if h, _ := v.GetHost("h1"); len(h.GetLabels()) != 0 {
		t.Fatalf("h1 at 1.5s: %v", h)
	}
	if v, err = back.StateAt(ctx, sec(10)); err != nil {
		t.Fatal(err)
	}
	if _, err := v.GetHost("h2"); err == nil {
		t.Fatal("h2 deleted at 3s is there at 10s")
	}
	if _, err := v.GetDevserver("d"); err != nil {
		t.Fatal(err)
	}
	if _, err := back.StateAt(ctx, sec(0.5)); err == nil {
		t.Fatal("state before the start")
	}
}

// A replay that cannot apply an event says which, and the recording stays usable up to it.
func TestRecordingReplayError(t *testing.T) {
	t.Parallel()
	evs := []*v1.Event{
		ev(t, 1, 0, sec(1), "region", "eu", false, &v1.Region{Name: "eu"}),
		ev(t, 2, 0, sec(2), "host", "", false, &v1.Host{}), // no name: memdb refuses it
	}
	r := NewRecording(&v1.RecordingHeader{Since: timestamppb.New(sec(0))}, nil, evs)
	ctx := context.Background()
	if _, err := r.StateAt(ctx, sec(3)); err == nil {
		t.Fatal("applied a host without a name")
	}
	v, err := r.StateAt(ctx, sec(1))
	if err != nil || len(v.Regions()) != 1 {
		t.Fatalf("%v", err)
	}
	if _, err := r.StateAt(ctx, sec(3)); err == nil {
		t.Fatal("applied a host without a name, the second time")
	}
}

package hypervisor

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// newVolumeHost is an in-memory host with a raw volume of capacity bytes.
func newVolumeHost(t *testing.T, host, volume string, capacity uint64) *Memory {
	t.Helper()
	m := NewMemory(MemoryOptions{Host: host})
	if err := m.PrepareVolume(testCtx(t), Volume{Name: volume, Capacity: capacity, Format: "raw"}); err != nil {
		t.Fatal(err)
	}
	return m
}

// readBack reads n bytes of a volume at off, failing the test on an error.
func readBack(t *testing.T, m *Memory, volume string, off uint64, n int) []byte {
	t.Helper()
	b, err := m.ReadVolumeAt(volume, off, n)
	if err != nil {
		t.Fatalf("ReadVolumeAt(%s, %d, %d): %v", volume, off, n, err)
	}
	return b
}

func TestMemoryVolumeContent(t *testing.T) {
	ctx := testCtx(t)
	const capacity = 3*mib + 1000 // a partial last block
	m := newVolumeHost(t, "m1", "v.raw", capacity)
	if got := readBack(t, m, "v.raw", 0, 10); !bytes.Equal(got, make([]byte, 10)) {
		t.Errorf("a new volume reads %x, want zeros", got)
	}
	// Across a block boundary, and the very last byte.
	if err := m.WriteVolumeAt("v.raw", mib-3, []byte("abcdef")); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteVolumeAt("v.raw", capacity-1, []byte("z")); err != nil {
		t.Fatal(err)
	}
	if got := readBack(t, m, "v.raw", mib-4, 8); string(got) != "\x00abcdef\x00" {
		t.Errorf("across blocks: %q", got)
	}
	if got := readBack(t, m, "v.raw", capacity-2, 2); string(got) != "\x00z" {
		t.Errorf("the end: %q", got)
	}
	// Three blocks hold data; writing zeros over one frees it.
	if n, err := m.VolumeAllocated("v.raw"); err != nil || n != 2*mib+1000 {
		t.Errorf("VolumeAllocated = %d, %v; want blocks 0, 1 and the last (1000 bytes)", n, err)
	}
	if err := m.WriteVolumeAt("v.raw", capacity-1, []byte{0}); err != nil {
		t.Fatal(err)
	}
	if n, _ := m.VolumeAllocated("v.raw"); n != 2*mib {
		t.Errorf("VolumeAllocated after zeroing the last block = %d", n)
	}
	// Out of range, no such volume.
	wantKind(t, m.WriteVolumeAt("v.raw", capacity, []byte("x")), KindInvalidArgument)
	_, err := m.ReadVolumeAt("v.raw", capacity-1, 2)
	wantKind(t, err, KindInvalidArgument)
	wantKind(t, m.WriteVolumeAt("nope.raw", 0, []byte("x")), KindNotFound)
	_, err = m.ReadVolumeAt("nope.raw", 0, 1)
	wantKind(t, err, KindNotFound)

	// PrepareVolume keeps a volume of the same size and format as it is, content included, and
	// replaces one of another size by an empty one.
	v := Volume{Name: "v.raw", Capacity: capacity, Format: "raw"}
	if err := m.PrepareVolume(ctx, v); err != nil {
		t.Fatal(err)
	}
	if got := readBack(t, m, "v.raw", mib, 3); string(got) != "def" {
		t.Errorf("content after PrepareVolume of the same volume: %q", got)
	}
	v.Capacity = 4 * mib
	if err := m.PrepareVolume(ctx, v); err != nil {
		t.Fatal(err)
	}
	if n, _ := m.VolumeAllocated("v.raw"); n != 0 {
		t.Errorf("a replaced volume holds %d bytes", n)
	}
}

func TestMemoryDownloadUploadVolume(t *testing.T) {
	ctx := testCtx(t)
	const capacity = 5*mib + 7
	m := NewMemory(MemoryOptions{Host: "m1"})
	// No pool, then no volume.
	wantKind(t, m.DownloadVolume(ctx, "v.raw", io.Discard), KindNotFound)
	wantKind(t, m.UploadVolume(ctx, "v.raw", 0, 1, strings.NewReader("x")), KindNotFound)
	if err := m.PrepareVolume(ctx, Volume{Name: "v.raw", Capacity: capacity}); err != nil {
		t.Fatal(err)
	}
	wantKind(t, m.DownloadVolume(ctx, "nope.raw", io.Discard), KindNotFound)
	wantKind(t, m.UploadVolume(ctx, "nope.raw", 0, 1, strings.NewReader("x")), KindNotFound)
	wantKind(t, m.DownloadVolume(ctx, "../x", io.Discard), KindInvalidArgument)

	// An upload writes exactly its range, across blocks, and leaves the rest.
	if err := m.WriteVolumeAt("v.raw", 0, []byte("head")); err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("0123456789abcdef"), mib/8) // 2 MiB
	if err := m.UploadVolume(ctx, "v.raw", mib+5, uint64(len(payload)), bytes.NewReader(payload)); err != nil {
		t.Fatal(err)
	}
	if err := m.UploadVolume(ctx, "v.raw", capacity-3, 3, strings.NewReader("endANDMORE")); err != nil {
		t.Fatal(err) // reads only length bytes of r
	}
	var out bytes.Buffer
	if err := m.DownloadVolume(ctx, "v.raw", &out); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, capacity)
	copy(want, "head")
	copy(want[mib+5:], payload)
	copy(want[capacity-3:], "end")
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("downloaded %d bytes, not what was written (want %d)", out.Len(), len(want))
	}
	// Refusals: beyond the capacity, a reader that ends early (what it gave is written), a
	// qcow2 volume, a length of 0 does nothing.
	wantKind(t, m.UploadVolume(ctx, "v.raw", capacity-1, 2, strings.NewReader("xy")), KindInvalidArgument)
	wantKind(t, m.UploadVolume(ctx, "v.raw", 1<<63, 1<<63, strings.NewReader("")), KindInvalidArgument)
	err := m.UploadVolume(ctx, "v.raw", 2*mib, 10, strings.NewReader("short"))
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("upload from a short reader: %v, want io.ErrUnexpectedEOF", err)
	}
	if err := m.UploadVolume(ctx, "v.raw", 0, 0, strings.NewReader("")); err != nil {
		t.Errorf("an empty upload: %v", err)
	}
	if err := m.PrepareVolume(ctx, Volume{Name: "q.qcow2", Capacity: mib, Format: "qcow2"}); err != nil {
		t.Fatal(err)
	}
	wantKind(t, m.DownloadVolume(ctx, "q.qcow2", io.Discard), KindFailedPrecondition)
	wantKind(t, m.UploadVolume(ctx, "q.qcow2", 0, 1, strings.NewReader("x")), KindFailedPrecondition)

	// A failing writer ends the download with its error.
	err = m.DownloadVolume(ctx, "v.raw", &failWriter{after: 2})
	if err == nil || !strings.Contains(err.Error(), "disk full") || !strings.Contains(err.Error(), "after 2097152 of") {
		t.Errorf("download into a failing writer: %v", err)
	}

	// A domain's volume: downloaded while it is shut off, not while it runs; never uploaded
	// into.
	spec := devserverSpec("d", 1, 128, 1)
	if _, err := m.DefineAndStart(ctx, spec); err != nil {
		t.Fatal(err)
	}
	err = m.DownloadVolume(ctx, "d.raw", io.Discard)
	wantKind(t, err, KindFailedPrecondition)
	t.Logf("running: %v", err)
	wantKind(t, m.UploadVolume(ctx, "d.raw", 0, 1, strings.NewReader("x")), KindFailedPrecondition)
	if err := m.Shutdown(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	n := &countWriter{}
	if err := m.DownloadVolume(ctx, "d.raw", n); err != nil || n.n != 1<<30 {
		t.Errorf("download of a shut-off domain's 1 GiB volume: %d bytes, %v", n.n, err)
	}
	wantKind(t, m.UploadVolume(ctx, "d.raw", 0, 1, strings.NewReader("x")), KindFailedPrecondition)

	// Faults and counts, as for every operation.
	m.FailNext(OpDownloadVolume, &Error{Kind: KindUnavailable, Message: "gone"})
	wantKind(t, m.DownloadVolume(ctx, "v.raw", io.Discard), KindUnavailable)
	m.FailNext(OpUploadVolume, errors.New("boom"))
	wantKind(t, m.UploadVolume(ctx, "v.raw", 0, 1, strings.NewReader("x")), KindInternal)
	m.HangNext(OpDownloadVolume)
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	wantKind(t, m.DownloadVolume(short, "v.raw", io.Discard), KindTimeout)
	if d, u := m.Calls(OpDownloadVolume), m.Calls(OpUploadVolume); d != 9 || u != 12 { // refused before they count: invalid names only
		t.Errorf("calls: download %d, upload %d", d, u)
	}
}

// A stream stops when its context ends or the connection drops under it.
func TestMemoryVolumeStreamInterrupted(t *testing.T) {
	ctx := testCtx(t)
	m := newVolumeHost(t, "m1", "v.raw", 64*mib)
	cctx, cancel := context.WithCancel(ctx)
	w := &countWriter{onWrite: func(n uint64) {
		if n == 3*mib {
			cancel()
		}
	}}
	wantKind(t, m.DownloadVolume(cctx, "v.raw", w), KindTimeout)
	if w.n != 3*mib {
		t.Errorf("the download went on to %d bytes after its context ended", w.n)
	}
	w = &countWriter{onWrite: func(n uint64) {
		if n == 2*mib {
			m.DropConnection()
		}
	}}
	wantKind(t, m.DownloadVolume(ctx, "v.raw", w), KindUnavailable)
	m.RestoreConnection()
	r := &slowReader{r: bytes.NewReader(bytes.Repeat([]byte{1}, 4*mib)), every: mib, do: m.DropConnection}
	wantKind(t, m.UploadVolume(ctx, "v.raw", 0, 4*mib, r), KindUnavailable)
	m.RestoreConnection()
	if n, _ := m.VolumeAllocated("v.raw"); n == 0 || n >= 4*mib {
		t.Errorf("an upload cut short wrote %d bytes: want part of it", n)
	}
}

// failWriter fails once it took after MiB.
type failWriter struct{ after, n int }

func (w *failWriter) Write(p []byte) (int, error) {
	if w.n >= w.after*mib {
		return 0, errors.New("disk full")
	}
	w.n += len(p)
	return len(p), nil
}

// countWriter counts what it is written, and calls onWrite with the count after each write.
type countWriter struct {
	n       uint64
	onWrite func(n uint64)
}

func (w *countWriter) Write(p []byte) (int, error) {
	w.n += uint64(len(p))
	if w.onWrite != nil {
		w.onWrite(w.n)
	}
	return len(p), nil
}

// slowReader calls do each time every bytes were read.
type slowReader struct {
	r     io.Reader
	every int
	read  int
	do    func()
}

func (r *slowReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	before := r.read
	r.read += n
	if r.read/r.every != before/r.every {
		r.do()
	}
	return n, err
}

func TestMemoryExistingVolume(t *testing.T) {
	ctx := testCtx(t)
	m := NewMemory(MemoryOptions{Host: "m1"})
	spec := devserverSpec("d", 1, 128, 2)
	spec.ExistingVolume = true
	_, err := m.DefineAndStart(ctx, spec)
	wantKind(t, err, KindNotFound) // no pool
	if err := m.PrepareVolume(ctx, Volume{Name: "other.raw", Capacity: mib}); err != nil {
		t.Fatal(err)
	}
	_, err = m.DefineAndStart(ctx, spec)
	wantKind(t, err, KindNotFound) // no volume
	if err := m.PrepareVolume(ctx, Volume{Name: "d.raw", Capacity: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	_, err = m.DefineAndStart(ctx, spec)
	wantKind(t, err, KindFailedPrecondition) // 1 GiB for a 2 GiB disk
	t.Logf("too small: %v", err)
	if err := m.PrepareVolume(ctx, Volume{Name: "d.raw", Capacity: 3 << 30}); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteVolumeAt("d.raw", 0, []byte("boot")); err != nil {
		t.Fatal(err)
	}
	// A failed define leaves the volume (it may be the guest's only copy).
	m.FailNext(OpDefineAndStart, nil)
	if _, err := m.DefineAndStart(ctx, spec); err == nil {
		t.Fatal("the injected failure did not fail")
	}
	tooBig := spec
	tooBig.VCPUs = 1000
	tooBig.MemoryMiB = 1 << 30
	if _, err := m.DefineAndStart(ctx, tooBig); err == nil {
		t.Fatal("a guest too big for the host started")
	}
	if got := m.Volumes(); got["d.raw"] != 3 {
		t.Fatalf("volumes after failed defines: %v", got)
	}
	d, err := m.DefineAndStart(ctx, spec)
	if err != nil || d.State != StateRunning {
		t.Fatalf("DefineAndStart on the existing volume = %+v, %v", d, err)
	}
	if vols, err := m.DomainVolumes(ctx, "d"); err != nil || len(vols) != 1 || vols[0].Capacity != 3<<30 {
		t.Errorf("DomainVolumes = %+v, %v; want the existing 3 GiB volume", vols, err)
	}
	if got := readBack(t, m, "d.raw", 0, 4); string(got) != "boot" {
		t.Errorf("the volume's content: %q", got)
	}
	if err := m.Destroy(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	wantKind(t, m.RemoveVolume(ctx, "d.raw"), KindFailedPrecondition)
	if err := m.Undefine(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	if got := m.Volumes(); got["d.raw"] != 0 {
		t.Errorf("Undefine left the volume: %v", got)
	}
}

func TestMemoryFenceStamp(t *testing.T) {
	ctx := testCtx(t)
	m := NewMemory(MemoryOptions{Host: "m1"})
	spec := devserverSpec("d", 1, 128, 0)
	spec.Metadata.Term, spec.Metadata.Index = 7, 1234
	if _, err := m.DefineAndStart(ctx, spec); err != nil {
		t.Fatal(err)
	}
	d, err := m.Lookup(ctx, "d")
	if err != nil || d.Metadata.Fence() != (Fence{Term: 7, Index: 1234}) {
		t.Errorf("Lookup = %+v, %v; want the stamp 7/1234", d.Metadata, err)
	}
	doms, err := m.List(ctx)
	if err != nil || len(doms) != 1 || doms[0].Metadata != spec.Metadata {
		t.Errorf("List = %+v, %v", doms, err)
	}
}

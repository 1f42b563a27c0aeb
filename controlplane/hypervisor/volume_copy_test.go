package hypervisor

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordUploads is an in-memory host that records the uploads made into it.
type recordUploads struct {
	*Memory
	mu      sync.Mutex
	uploads [][2]uint64 // offset, length
}

func (r *recordUploads) UploadVolume(ctx context.Context, name string, offset, length uint64, rd io.Reader) error {
	r.mu.Lock()
	r.uploads = append(r.uploads, [2]uint64{offset, length})
	r.mu.Unlock()
	return r.Memory.UploadVolume(ctx, name, offset, length, rd)
}

// progressLog records CopyVolume's progress reports.
type progressLog struct{ calls [][2]uint64 }

func (p *progressLog) report(copied, total uint64) {
	p.calls = append(p.calls, [2]uint64{copied, total})
}

// check verifies that the reports grow, come every few MiB, and end with the total.
func (p *progressLog) check(t *testing.T, total uint64) {
	t.Helper()
	if len(p.calls) == 0 || p.calls[len(p.calls)-1] != [2]uint64{total, total} {
		t.Fatalf("progress %v: want it to end with %d of %d", p.calls, total, total)
	}
	for i, c := range p.calls {
		if c[1] != total || i > 0 && c[0] <= p.calls[i-1][0] || i < len(p.calls)-1 && i > 0 && c[0]-p.calls[i-1][0] < copyProgressEvery {
			t.Fatalf("progress %v: report %d is wrong", p.calls, i)
		}
	}
}

// download reads a whole volume.
func download(t *testing.T, hv Hypervisor, name string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := hv.DownloadVolume(testCtx(t), name, &b); err != nil {
		t.Fatalf("DownloadVolume(%s): %v", name, err)
	}
	return b.Bytes()
}

func TestCopyVolume(t *testing.T) {
	ctx := testCtx(t)
	const capacity = 20*mib + 123 // a partial last block
	src := newVolumeHost(t, "m1", "v.raw", capacity)
	dst := &recordUploads{Memory: NewMemory(MemoryOptions{Host: "m2"})}
	// Data in block 0, block 3, blocks 6 to 15 (one run of 10 MiB), block 19 and the partial
	// last block; the other blocks are holes.
	marks := map[uint64]string{0: "first", 3*mib + 17: "three", 19*mib + 5: "nineteen", capacity - 5: "last!"}
	for off, s := range marks {
		if err := src.WriteVolumeAt("v.raw", off, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.WriteVolumeAt("v.raw", 6*mib, bytes.Repeat([]byte{0xA5}, 10*mib)); err != nil {
		t.Fatal(err)
	}
	// Something of that name on the destination already: replaced.
	if err := dst.PrepareVolume(ctx, Volume{Name: "v.raw", Capacity: capacity}); err != nil {
		t.Fatal(err)
	}
	if err := dst.WriteVolumeAt("v.raw", 2*mib, []byte("stale")); err != nil {
		t.Fatal(err)
	}
	var p progressLog
	v := Volume{Name: "v.raw", Capacity: capacity, Format: "raw"}
	if err := CopyVolume(ctx, src, dst, v, 0, p.report); err != nil {
		t.Fatal(err)
	}
	p.check(t, capacity)
	if !bytes.Equal(download(t, dst, "v.raw"), download(t, src, "v.raw")) {
		t.Fatal("the copy differs from the source")
	}
	for off, s := range marks {
		if got := readBack(t, dst.Memory, "v.raw", off, len(s)); string(got) != s {
			t.Errorf("at %d: %q, want %q", off, got, s)
		}
	}
	// Only the data blocks went, runs coalesced up to 8 MiB.
	want := [][2]uint64{{0, mib}, {3 * mib, mib}, {6 * mib, 8 * mib}, {14 * mib, 2 * mib}, {19 * mib, mib + 123}}
	if !slices.Equal(dst.uploads, want) {
		t.Errorf("uploads %v, want %v", dst.uploads, want)
	}
	if a, _ := dst.VolumeAllocated("v.raw"); a != 13*mib+123 {
		t.Errorf("the copy holds %d bytes of data, want 13 MiB + 123", a)
	}
	if vols := dst.Volumes(); len(vols) != 1 {
		t.Errorf("destination volumes %v", vols)
	}

	// Bigger: the rest reads as zeros.
	dst.uploads = nil
	if err := CopyVolume(ctx, src, dst, v, 64*mib, nil); err != nil {
		t.Fatal(err)
	}
	got := download(t, dst, "v.raw")
	if len(got) != 64*mib || !bytes.Equal(got[:capacity], download(t, src, "v.raw")) || !isZero(got[capacity:]) {
		t.Errorf("grown copy: %d bytes, or not the source followed by zeros", len(got))
	}
	if !slices.Equal(dst.uploads, want) {
		t.Errorf("uploads of the grown copy %v, want %v", dst.uploads, want)
	}
	// A capacity smaller than the volume's does not shrink it.
	if err := CopyVolume(ctx, src, dst, v, mib, nil); err != nil {
		t.Fatal(err)
	}
	if got := dst.Volumes(); got["v.raw"] != 1 {
		t.Errorf("volumes after a copy asked smaller: %v", got)
	}
	if got := len(download(t, dst, "v.raw")); got != capacity {
		t.Errorf("copy asked smaller is %d bytes, want %d", got, capacity)
	}
	// An empty volume uploads nothing.
	if err := src.PrepareVolume(ctx, Volume{Name: "e.raw", Capacity: 3 * mib}); err != nil {
		t.Fatal(err)
	}
	dst.uploads = nil
	if err := CopyVolume(ctx, src, dst, Volume{Name: "e.raw", Capacity: 3 * mib, Format: "raw"}, 0, nil); err != nil {
		t.Fatal(err)
	}
	if len(dst.uploads) != 0 || dst.Volumes()["e.raw"] != 1 {
		t.Errorf("copy of an empty volume: uploads %v, volumes %v", dst.uploads, dst.Volumes())
	}
}

// A cold move, as the migration controller makes it: shut off on the source, copy (growing the
// disk), define on the destination on the copy, undefine on the source.
func TestCopyVolumeColdMove(t *testing.T) {
	ctx := testCtx(t)
	src, dst := NewMemory(MemoryOptions{Host: "m1"}), NewMemory(MemoryOptions{Host: "m2"})
	spec := devserverSpec("d", 2, 1024, 1)
	spec.Metadata.Term, spec.Metadata.Index = 3, 100
	if _, err := src.DefineAndStart(ctx, spec); err != nil {
		t.Fatal(err)
	}
	for _, off := range []uint64{0, 512 * mib, 1<<30 - 8} {
		if err := src.WriteVolumeAt("d.raw", off, []byte("marker!!")); err != nil {
			t.Fatal(err)
		}
	}
	vols, err := src.DomainVolumes(ctx, "d")
	if err != nil || len(vols) != 1 {
		t.Fatalf("DomainVolumes = %v, %v", vols, err)
	}
	err = CopyVolume(ctx, src, dst, vols[0], 2<<30, nil)
	wantKind(t, err, KindFailedPrecondition) // it runs
	if !strings.Contains(err.Error(), "source: download") || !strings.Contains(err.Error(), "running domain d") {
		t.Errorf("copy of a running guest's volume: %v", err)
	}
	if err := src.Shutdown(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := CopyVolume(ctx, src, dst, vols[0], 2<<30, nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("in-memory copy of a 1 GiB volume with 3 blocks of data into 2 GiB: %v", time.Since(begin).Round(time.Millisecond))
	moved := spec
	moved.DiskGiB, moved.ExistingVolume = 2, true
	moved.Metadata.Term, moved.Metadata.Index = 4, 7
	d, err := dst.DefineAndStart(ctx, moved)
	if err != nil || d.State != StateRunning {
		t.Fatalf("DefineAndStart on the copy = %+v, %v", d, err)
	}
	if err := src.Undefine(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	for _, off := range []uint64{0, 512 * mib, 1<<30 - 8} {
		if got := readBack(t, dst, "d.raw", off, 8); string(got) != "marker!!" {
			t.Errorf("at %d: %q", off, got)
		}
	}
	if got := readBack(t, dst, "d.raw", 2<<30-4, 4); !isZero(got) {
		t.Errorf("the grown space reads %x", got)
	}
	if d, err := dst.Lookup(ctx, "d"); err != nil || !d.Metadata.Fence().Newer(spec.Metadata.Fence()) {
		t.Errorf("the moved domain's stamp %+v is not newer than the original's", d.Metadata.Fence())
	}
	if got := src.Volumes(); len(got) != 0 {
		t.Errorf("source volumes after the move: %v", got)
	}
	// Copying again onto the guest's disk is refused: it uses it.
	if err := src.PrepareVolume(ctx, vols[0]); err != nil {
		t.Fatal(err)
	}
	err = CopyVolume(ctx, src, dst, vols[0], 0, nil)
	wantKind(t, err, KindFailedPrecondition)
	if !strings.Contains(err.Error(), "destination: remove") {
		t.Errorf("copy onto a volume in use: %v", err)
	}
}

func TestCopyVolumeRefusals(t *testing.T) {
	ctx := testCtx(t)
	src := newVolumeHost(t, "m1", "v.raw", 4*mib)
	dst := NewMemory(MemoryOptions{Host: "m2"})
	v := Volume{Name: "v.raw", Capacity: 4 * mib, Format: "raw"}
	if err := src.PrepareVolume(ctx, Volume{Name: "q.qcow2", Capacity: mib, Format: "qcow2"}); err != nil {
		t.Fatal(err)
	}
	err := CopyVolume(ctx, src, dst, Volume{Name: "q.qcow2", Capacity: mib, Format: "qcow2"}, 0, nil)
	wantKind(t, err, KindFailedPrecondition)
	t.Logf("qcow2: %v", err)
	wantKind(t, CopyVolume(ctx, src, src, v, 0, nil), KindInvalidArgument)
	wantKind(t, CopyVolume(ctx, src, dst, Volume{Name: "../v", Capacity: mib, Format: "raw"}, 0, nil), KindInvalidArgument)
	if n := dst.Calls(OpRemoveVolume) + dst.Calls(OpPrepareVolume); n != 0 {
		t.Errorf("refused copies touched the destination (%d calls)", n)
	}
	wantKind(t, CopyVolume(ctx, src, dst, Volume{Name: "nope.raw", Capacity: mib, Format: "raw"}, 0, nil), KindNotFound)

	// A failing step names its side and step, with its kind.
	for _, tt := range []struct {
		host *Memory
		op   Op
		kind Kind
		want string
	}{
		{dst, OpRemoveVolume, KindUnavailable, "destination: remove"},
		{dst, OpPrepareVolume, KindInternal, "destination: make the volume"},
		{src, OpDownloadVolume, KindUnavailable, "source: download"},
		{dst, OpUploadVolume, KindAborted, "destination: upload 1048576 bytes at 2097152"},
	} {
		if err := src.WriteVolumeAt("v.raw", 2*mib, []byte("data")); err != nil {
			t.Fatal(err)
		}
		tt.host.FailNext(tt.op, &Error{Kind: tt.kind, Message: "injected"})
		err := CopyVolume(ctx, src, dst, v, 0, nil)
		wantKind(t, err, tt.kind)
		var e *Error
		if !errors.As(err, &e) || e.Op != tt.op || e.Host != tt.host.Host() || !strings.Contains(e.Message, tt.want) {
			t.Errorf("failed %s on %s: %#v, want the step %q", tt.op, tt.host.Host(), err, tt.want)
		}
	}
	// Hung, until the context ends; the source's connection lost during the download.
	dst.HangNext(OpUploadVolume)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	wantKind(t, CopyVolume(short, src, dst, v, 0, nil), KindTimeout)
	big := newVolumeHost(t, "m3", "b.raw", 64*mib)
	if err := big.WriteVolumeAt("b.raw", 0, bytes.Repeat([]byte{1}, 64*mib)); err != nil {
		t.Fatal(err)
	}
	err = CopyVolume(ctx, big, dst, Volume{Name: "b.raw", Capacity: 64 * mib, Format: "raw"}, 0, func(copied, _ uint64) {
		if copied >= 16*mib {
			big.DropConnection()
		}
	})
	wantKind(t, err, KindUnavailable)
	if !strings.Contains(err.Error(), "source: download") {
		t.Errorf("copy from a host that went: %v", err)
	}
}

// Through a Connector's fake hosts, as the migration controller calls it.
func TestCopyVolumeConnector(t *testing.T) {
	ctx := testCtx(t)
	c := newConnector(t, fastOptions(t, nil))
	h1, err := c.Open("m1", "fake://m1")
	if err != nil {
		t.Fatal(err)
	}
	h2, err := c.Open("m2", "fake://m2")
	if err != nil {
		t.Fatal(err)
	}
	if err := h1.PrepareVolume(ctx, Volume{Name: "v.raw", Capacity: 3 * mib}); err != nil {
		t.Fatal(err)
	}
	if err := h1.UploadVolume(ctx, "v.raw", mib, 5, strings.NewReader("hello")); err != nil {
		t.Fatal(err)
	}
	if err := CopyVolume(ctx, h1, h2, Volume{Name: "v.raw", Capacity: 3 * mib, Format: "raw"}, 4*mib, nil); err != nil {
		t.Fatal(err)
	}
	got := download(t, h2, "v.raw")
	if len(got) != 4*mib || string(got[mib:mib+5]) != "hello" {
		t.Errorf("the copy through the Connector: %d bytes, %q at 1 MiB", len(got), got[mib:mib+5])
	}
	m2, _ := c.Fake("fake://m2")
	m2.FailNext(OpUploadVolume, &Error{Kind: KindUnavailable, Message: "injected"})
	err = h2.UploadVolume(ctx, "v.raw", 0, 1, strings.NewReader("x"))
	var e *Error
	if !errors.As(err, &e) || e.Host != "m2" || e.Op != OpUploadVolume || e.Kind != KindUnavailable {
		t.Errorf("an upload failed through the Connector: %#v", err)
	}
}

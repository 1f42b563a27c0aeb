package hypervisor

// A cold move between two real libvirt daemons: the guest's disk goes through libvirt's storage
// streams (StorageVolDownload on the source, StorageVolUpload on the destination), and the
// guest is defined on the copy. One fleet serves the subtests, in order.

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devfleet/devfleet/e2e/libvirthost"
)

func TestLibvirtColdMove(t *testing.T) {
	hosts := libvirthost.StartT(t, 2)
	h1, h2 := hosts[0], hosts[1]
	c1, c2 := dialHost(t, h1), dialHost(t, h2)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // slow under the race detector
	defer cancel()
	poolFile := func(h libvirthost.Host, vol string) string { return filepath.Join(h.Dir, "lib", "devfleet", vol) }

	t.Run("streams", func(t *testing.T) { libvirtStreams(t, ctx, h1, c1, c2) })

	// The guest: devfleet's definition on a 64 MiB volume (quicker than a whole GiB) that holds
	// markers and 16 MiB of random data, uploaded before the domain is defined (a volume a
	// domain uses is never uploaded into).
	const name = "ds-cold"
	vol := Volume{Name: name + "." + DefaultVolumeFormat, Capacity: 64 * mib, Format: DefaultVolumeFormat}
	if err := c1.PrepareVolume(ctx, vol); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, vol.Capacity)
	rand.Read(want[8*mib : 24*mib])
	marks := map[uint64]string{mib + 3: "second block", 40*mib + 1000: "a lonely block", vol.Capacity - 6: "last!!"}
	for off, s := range marks {
		copy(want[off:], s)
	}
	for _, span := range [][2]uint64{{8 * mib, 16 * mib}, {mib, mib}, {40 * mib, mib}, {vol.Capacity - mib, mib}} {
		if err := c1.UploadVolume(ctx, vol.Name, span[0], span[1], bytes.NewReader(want[span[0]:span[0]+span[1]])); err != nil {
			t.Fatal(err)
		}
	}
	if got := libvirtDownload(t, c1, vol.Name); !bytes.Equal(got, want) {
		t.Fatal("the source's volume is not what was uploaded")
	}
	if got, err := os.ReadFile(poolFile(h1, vol.Name)); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the source's volume file is not what was uploaded (%v)", err)
	}
	xml, err := domainXML(devserverSpec(name, 1, 128, 1), c1.layout)
	if err != nil {
		t.Fatal(err)
	}
	virsh(t, h1, "define", writeFile(t, "cold.xml", xml))
	if err := c1.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	// Running: neither downloaded (torn content) nor uploaded into, nor copied.
	err = c1.DownloadVolume(ctx, vol.Name, io.Discard)
	wantKind(t, err, KindFailedPrecondition)
	t.Logf("download of a running guest's volume: %v", err)
	wantKind(t, c1.UploadVolume(ctx, vol.Name, 0, 1, strings.NewReader("x")), KindFailedPrecondition)
	wantKind(t, CopyVolume(ctx, c1, c2, vol, 0, nil), KindFailedPrecondition)
	if err := c1.Destroy(ctx, name); err != nil {
		t.Fatal(err)
	}
	// Shut off: downloaded, still not uploaded into.
	wantKind(t, c1.UploadVolume(ctx, vol.Name, 0, 1, strings.NewReader("x")), KindFailedPrecondition)

	// The copy, growing the disk to 1 GiB.
	var reports atomic.Int64
	begin := time.Now()
	err = CopyVolume(ctx, c1, c2, vol, 1<<30, func(copied, total uint64) { reports.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(begin)
	file2 := poolFile(h2, vol.Name)
	fi, err := os.Stat(file2)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cold copy of a %d MiB volume (%d MiB of data) into 1 GiB: %v, %d progress reports; the copy takes %d KiB on the destination",
		vol.Capacity/mib, 16+3, took.Round(time.Millisecond), reports.Load(), allocated(fi)>>10)
	if fi.Size() != 1<<30 {
		t.Errorf("destination file is %d bytes, want 1 GiB", fi.Size())
	}
	if allocated(fi) > 24*mib {
		t.Errorf("the copy takes %d MiB on the destination: not sparse", allocated(fi)/mib)
	}
	// The copy is the source's content, then zeros (compared as it comes: 1 GiB).
	cmp := &matchWriter{want: want}
	if err := c2.DownloadVolume(ctx, vol.Name, cmp); err != nil {
		t.Fatal(err)
	}
	if cmp.n != 1<<30 || cmp.diff >= 0 {
		t.Fatalf("the copy (%d bytes) is not the source's content followed by zeros: first difference at %d", cmp.n, cmp.diff)
	}

	// Defined on the copy. Refused: a disk bigger than the copy, a missing volume; a define
	// that fails (the UUID of another domain) leaves the copy alone.
	moved := devserverSpec(name, 1, 128, 1)
	moved.ExistingVolume = true
	moved.Metadata.Term, moved.Metadata.Index = 5, 4242
	tooBig := moved
	tooBig.DiskGiB = 2
	_, err = c2.DefineAndStart(ctx, tooBig)
	wantKind(t, err, KindFailedPrecondition)
	t.Logf("a disk bigger than the volume: %v", err)
	missing := moved
	missing.Name = "ds-missing"
	_, err = c2.DefineAndStart(ctx, missing)
	wantKind(t, err, KindNotFound)
	other := devserverSpec("ds-other", 1, 128, 0)
	other.UUID = "6f1c0b2e-0a4e-4d7e-9a57-3c1d2e3f4a5b"
	if _, err := c2.DefineAndStart(ctx, other); err != nil {
		t.Fatal(err)
	}
	clash := moved
	clash.UUID = other.UUID
	_, err = c2.DefineAndStart(ctx, clash)
	if err == nil {
		t.Fatal("a define with another domain's UUID succeeded")
	}
	t.Logf("a failed define on an existing volume: %v", err)
	if _, err := os.Stat(file2); err != nil {
		t.Fatalf("the failed define removed the copy: %v", err)
	}
	d, err := c2.DefineAndStart(ctx, moved)
	if err != nil {
		t.Fatal(err)
	}
	if d, err = c2.Lookup(ctx, name); err != nil || d.State != StateRunning || d.Metadata != moved.Metadata {
		t.Fatalf("the moved guest: %+v, %v", d, err)
	}
	if vols, err := c2.DomainVolumes(ctx, name); err != nil || len(vols) != 1 || vols[0].Capacity != 1<<30 {
		t.Errorf("the moved guest's volumes: %+v, %v", vols, err)
	}
	// The source's guest goes, with its volume; the copy cannot be replaced under the guest.
	if err := c1.Undefine(ctx, name); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(poolFile(h1, vol.Name)); !os.IsNotExist(err) {
		t.Errorf("the source's volume after Undefine: %v", err)
	}
	expectListed(t, h1, nil)
	if err := c1.PrepareVolume(ctx, vol); err != nil {
		t.Fatal(err)
	}
	err = CopyVolume(ctx, c1, c2, vol, 0, nil)
	wantKind(t, err, KindFailedPrecondition)
	t.Logf("a copy onto the running guest's disk: %v", err)
	for _, n := range []string{name, other.Name} {
		if err := c2.Destroy(ctx, n); err != nil {
			t.Fatal(err)
		}
		if err := c2.Undefine(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := c1.RemoveVolume(ctx, vol.Name); err != nil {
		t.Fatal(err)
	}

	t.Run("rate", func(t *testing.T) { libvirtCopyRate(t, ctx, h2, c1, c2) })
}

// libvirtStreams checks the streams' refusals and failures, and that a stream runs on a
// connection of its own.
func libvirtStreams(t *testing.T, ctx context.Context, h1 libvirthost.Host, c1, c2 *Conn) {
	// No pool on h2 yet, then no volume.
	wantKind(t, c2.DownloadVolume(ctx, "v.raw", io.Discard), KindNotFound)
	wantKind(t, c2.UploadVolume(ctx, "v.raw", 0, 1, strings.NewReader("x")), KindNotFound)
	v := Volume{Name: "v.raw", Capacity: 32 * mib, Format: "raw"}
	if err := c1.PrepareVolume(ctx, v); err != nil {
		t.Fatal(err)
	}
	wantKind(t, c1.DownloadVolume(ctx, "nope.raw", io.Discard), KindNotFound)
	wantKind(t, c1.UploadVolume(ctx, v.Name, v.Capacity-1, 2, strings.NewReader("xy")), KindInvalidArgument)

	// Exactly the range is written; r is read no further.
	if err := c1.UploadVolume(ctx, v.Name, mib-2, 4, strings.NewReader("abcdEFGH")); err != nil {
		t.Fatal(err)
	}
	if err := c1.UploadVolume(ctx, v.Name, mib, 1, strings.NewReader("Z")); err != nil {
		t.Fatal(err)
	}
	got := libvirtDownload(t, c1, v.Name)
	if len(got) != int(v.Capacity) || string(got[mib-3:mib+3]) != "\x00abZd\x00" {
		t.Fatalf("after two uploads: %d bytes, %q around 1 MiB", len(got), got[mib-3:mib+3])
	}
	// A reader that ends early, or fails: the upload fails with its error.
	err := c1.UploadVolume(ctx, v.Name, 0, 5*mib, io.LimitReader(zeroReader{}, 4*mib+5))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("upload from a short reader: %v, want io.ErrUnexpectedEOF", err)
	}
	t.Logf("a short reader: %v (%v)", err, KindOf(err))
	boom := errors.New("boom")
	err = c1.UploadVolume(ctx, v.Name, 0, 5*mib, io.MultiReader(io.LimitReader(zeroReader{}, mib), errReader{boom}))
	if !errors.Is(err, boom) {
		t.Errorf("upload from a failing reader: %v", err)
	}
	// A writer that fails: the download fails with its error, and the connection is fine.
	err = c1.DownloadVolume(ctx, v.Name, &failWriter{after: 2})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("download into a failing writer: %v", err)
	}
	t.Logf("a failing writer: %v", err)
	if err := c1.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	// A slow download holds up nothing on the host's connection; its context ending cuts it.
	slow := &countWriter{onWrite: func(uint64) { time.Sleep(20 * time.Millisecond) }}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c1.DownloadVolume(cctx, v.Name, slow) }()
	time.Sleep(100 * time.Millisecond)
	var worst time.Duration
	for range 10 {
		begin := time.Now()
		if _, err := c1.List(ctx); err != nil {
			t.Fatal(err)
		}
		worst = max(worst, time.Since(begin))
	}
	clients := len(clientIDs(t, h1))
	cancel()
	begin := time.Now()
	err = <-done
	wantKind(t, err, KindTimeout)
	t.Logf("during a slow download, List took at most %v; the download returned %v after its context ended (%d clients meanwhile): %v",
		worst.Round(time.Microsecond), time.Since(begin).Round(time.Microsecond), clients, err)
	if worst > 100*time.Millisecond {
		t.Errorf("List took %v during a slow download: queued behind it", worst)
	}
	if clients != 2 {
		t.Errorf("%d clients of the daemon during the download, want the host's connection and the stream's", clients)
	}
	eventually(t, "the stream's connection to go", func() bool { return len(clientIDs(t, h1)) == 1 })

	// Closing the connection cuts its streams.
	c3 := dialHost(t, h1)
	slow = &countWriter{onWrite: func(uint64) { time.Sleep(20 * time.Millisecond) }} // the last may still be written
	go func() { done <- c3.DownloadVolume(ctx, v.Name, slow) }()
	time.Sleep(100 * time.Millisecond)
	c3.Close()
	select {
	case err := <-done:
		wantKind(t, err, KindUnavailable)
	case <-time.After(waitTimeout):
		t.Fatal("Close did not cut the download")
	}
	if err := c1.RemoveVolume(ctx, v.Name); err != nil {
		t.Fatal(err)
	}
}

// libvirtCopyRate measures a copy of a 1 GiB volume with 64 MiB of data, and the streams' rates.
func libvirtCopyRate(t *testing.T, ctx context.Context, h2 libvirthost.Host, c1, c2 *Conn) {
	const dataMiB = 64
	v := Volume{Name: "rate.raw", Capacity: 1 << 30, Format: "raw"}
	if err := c1.PrepareVolume(ctx, v); err != nil {
		t.Fatal(err)
	}
	// The data in 4 runs of 16 MiB, spread over the volume.
	data := make([]byte, dataMiB*mib)
	rand.Read(data)
	begin := time.Now()
	for i := range uint64(4) {
		off := i * 256 * mib
		if err := c1.UploadVolume(ctx, v.Name, off, 16*mib, bytes.NewReader(data[i*16*mib:(i+1)*16*mib])); err != nil {
			t.Fatal(err)
		}
	}
	up := time.Since(begin)
	begin = time.Now()
	n := &countWriter{}
	if err := c1.DownloadVolume(ctx, v.Name, n); err != nil || n.n != v.Capacity {
		t.Fatalf("download: %d bytes, %v", n.n, err)
	}
	down := time.Since(begin)
	begin = time.Now()
	if err := CopyVolume(ctx, c1, c2, v, 0, nil); err != nil {
		t.Fatal(err)
	}
	took := time.Since(begin)
	fi, err := os.Stat(filepath.Join(h2.Dir, "lib", "devfleet", v.Name))
	if err != nil {
		t.Fatal(err)
	}
	alloc := allocated(fi)
	t.Logf("upload of %d MiB in 4 calls: %.0f MiB/s; download of 1 GiB: %v, %.0f MiB/s",
		dataMiB, dataMiB/up.Seconds(), down.Round(time.Millisecond), 1024/down.Seconds())
	t.Logf("CopyVolume of a 1 GiB volume with %d MiB of data: %v, %.0f MiB/s of capacity; %d MiB allocated on the destination",
		dataMiB, took.Round(time.Millisecond), 1024/took.Seconds(), alloc/mib)
	if alloc > (dataMiB+8)*mib {
		t.Errorf("the copy takes %d MiB on the destination: not sparse", alloc/mib)
	}
	if err := c1.RemoveVolume(ctx, v.Name); err != nil {
		t.Fatal(err)
	}
	if err := c2.RemoveVolume(ctx, v.Name); err != nil {
		t.Fatal(err)
	}
}

// libvirtDownload reads a whole volume of a real host.
func libvirtDownload(t *testing.T, c *Conn, name string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := c.DownloadVolume(testCtx(t), name, &b); err != nil {
		t.Fatalf("DownloadVolume(%s): %v", name, err)
	}
	return b.Bytes()
}

// matchWriter compares what it is written with want followed by zeros.
type matchWriter struct {
	want []byte
	n    uint64
	diff int64 // the offset of the first difference; -1 while there is none
}

func (w *matchWriter) Write(p []byte) (int, error) {
	if w.n == 0 {
		w.diff = -1
	}
	for at, q := w.n, p; w.diff < 0 && len(q) > 0; {
		var ref []byte
		if at < uint64(len(w.want)) {
			ref = w.want[at:min(uint64(len(w.want)), at+uint64(len(q)))]
		} else {
			ref = memZeros[:min(len(memZeros), len(q))]
		}
		if !bytes.Equal(q[:len(ref)], ref) {
			w.diff = int64(at) // within this chunk: close enough for a failure message
		}
		at += uint64(len(ref))
		q = q[len(ref):]
	}
	w.n += uint64(len(p))
	return len(p), nil
}

// zeroReader reads zeros forever.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// errReader fails.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

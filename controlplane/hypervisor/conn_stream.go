package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	libvirt "github.com/digitalocean/go-libvirt"
)

// DownloadVolume implements Hypervisor with libvirt's StorageVolDownload of the whole volume,
// on a connection of its own (see dedicated). Without flags libvirt sends holes as zeros: its
// sparse streams (VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM) send holes as packets of their own,
// which go-libvirt does not know and would hand over as data.
func (c *Conn) DownloadVolume(ctx context.Context, name string, w io.Writer) error {
	const op = OpDownloadVolume
	if err := validateVolumeName(name); err != nil {
		return errorf(c.host, op, name, KindInvalidArgument, "%v", err)
	}
	vol, v, err := c.streamVolume(ctx, op, name, true)
	if err != nil {
		return err
	}
	sw := &streamWriter{w: w}
	err = c.dedicated(ctx, op, name, dedicatedCall{what: "the download", cut: true, onTimeout: "the download was cut"},
		func(dc *Conn) error {
			sw.cut = dc.abort
			return dc.l.StorageVolDownload(vol, sw, 0, v.Capacity, 0)
		})
	n, werr := sw.stop()
	switch {
	case KindOf(err) == KindTimeout:
		return err
	case werr != nil:
		// The consumer failed: the connection was cut to stop the stream, whatever err says.
		return &Error{Host: c.host, Op: op, Domain: name, Kind: KindOf(werr), Err: werr,
			Message: fmt.Sprintf("write the volume's content after %d of %d bytes: %v", n, v.Capacity, werr)}
	case err != nil:
		return err
	case n != v.Capacity:
		return errorf(c.host, op, name, KindInternal, "the download ended after %d of %d bytes", n, v.Capacity)
	}
	return nil
}

// UploadVolume implements Hypervisor with libvirt's StorageVolUpload, on a connection of its own
// (see dedicated). libvirt writes what it is sent, zeros included: the caller skips zeros that
// a sparse volume needs not store (CopyVolume does).
func (c *Conn) UploadVolume(ctx context.Context, name string, offset, length uint64, r io.Reader) error {
	const op = OpUploadVolume
	if err := validateVolumeName(name); err != nil {
		return errorf(c.host, op, name, KindInvalidArgument, "%v", err)
	}
	vol, v, err := c.streamVolume(ctx, op, name, false)
	if err != nil {
		return err
	}
	if err := checkRange(v, offset, length); err != nil {
		return errorf(c.host, op, name, KindInvalidArgument, "%v", err)
	}
	if length == 0 {
		return nil // libvirt would take a length of 0 for "up to the end"
	}
	sr := &streamReader{r: r, left: length}
	err = c.dedicated(ctx, op, name, dedicatedCall{what: "the upload", cut: true, onTimeout: "the upload was cut"},
		func(dc *Conn) error { return dc.l.StorageVolUpload(vol, sr, offset, length, 0) })
	read, rerr := sr.stop()
	switch {
	case KindOf(err) == KindTimeout:
		return err
	case rerr != nil:
		// go-libvirt aborted the stream (and returns rerr itself, unclassified).
		return &Error{Host: c.host, Op: op, Domain: name, Kind: KindOf(rerr), Err: rerr,
			Message: fmt.Sprintf("read the content to upload after %d of %d bytes: %v", read, length, rerr)}
	}
	return err
}

// streamVolume finds the raw volume name of the pool for a stream, and checks that no domain
// uses it that would make the stream wrong: a running one for a download (running set), any
// for an upload.
func (c *Conn) streamVolume(ctx context.Context, op Op, name string, running bool) (libvirt.StorageVol, Volume, error) {
	p, err := c.pool(ctx, op, name, true)
	if err != nil {
		return libvirt.StorageVol{}, Volume{}, err
	}
	type found struct {
		vol libvirt.StorageVol
		v   Volume
	}
	f, err := call(ctx, c, op, name, func(l *libvirt.Libvirt) (found, error) {
		vol, err := l.StorageVolLookupByName(p, name)
		if err != nil {
			return found{}, fmt.Errorf("volume %s: %w", name, err)
		}
		v, err := readVolume(l, p, name)
		return found{vol, v}, err
	})
	if err != nil {
		return libvirt.StorageVol{}, Volume{}, err
	}
	if err := checkStreamFormat(f.v); err != nil {
		return libvirt.StorageVol{}, Volume{}, errorf(c.host, op, name, KindFailedPrecondition, "%v", err)
	}
	if err := c.checkUnused(ctx, op, name, running); err != nil {
		return libvirt.StorageVol{}, Volume{}, err
	}
	return f.vol, f.v, nil
}

// checkStreamFormat refuses to stream a volume whose bytes on the host are not the disk the
// guest sees: a qcow2 volume's are the image file (its header, tables and clusters).
func checkStreamFormat(v Volume) error {
	if v.Format != "raw" {
		return fmt.Errorf("volume %s is %s: only a raw volume's content is streamed (a %s file is not the disk the guest sees)",
			v.Name, v.Format, v.Format)
	}
	return nil
}

// checkRange checks that v holds [offset, offset+length).
func checkRange(v Volume, offset, length uint64) error {
	if offset > v.Capacity || length > v.Capacity-offset {
		return fmt.Errorf("%d bytes at %d go beyond the volume's %d bytes", length, offset, v.Capacity)
	}
	return nil
}

// streamWriter is the consumer go-libvirt writes a download's packets to. It never returns an
// error: go-libvirt would then stop reading the stream's packets without telling libvirt,
// leaving the connection's reading goroutine blocked for good on the next packet, with the
// lock every call needs (a deadlock that cutting the socket does not end). Instead it keeps
// w's failure, cuts the connection (which stops the stream) and drops what comes after; the
// download then returns the failure.
type streamWriter struct {
	w   io.Writer
	cut func() // cuts the stream's connection; set before the stream starts

	mu      sync.Mutex
	n       uint64
	err     error
	stopped bool // the call returned: drop everything
}

// Write implements io.Writer for go-libvirt.
func (s *streamWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	drop := s.stopped || s.err != nil
	s.mu.Unlock()
	if drop {
		return len(p), nil
	}
	n, err := s.w.Write(p) // not under mu: a slow w must not hold up stop
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	s.mu.Lock()
	s.n += uint64(n)
	if err != nil && s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	if err != nil {
		s.cut()
	}
	return len(p), nil
}

// stop makes later writes go nowhere and returns what was written and w's failure.
func (s *streamWriter) stop() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	return s.n, s.err
}

// errStreamStopped ends an upload's reads once UploadVolume returned.
var errStreamStopped = errors.New("upload stopped")

// streamReader is what go-libvirt reads an upload's packets from: exactly left bytes of r. An
// early EOF of r becomes io.ErrUnexpectedEOF: go-libvirt would end the stream as complete at
// any EOF, and libvirt takes a shorter upload without a word; an error makes go-libvirt abort
// the stream instead.
type streamReader struct {
	r io.Reader

	mu      sync.Mutex
	left    uint64
	read    uint64
	err     error
	stopped bool
}

// Read implements io.Reader for go-libvirt.
func (s *streamReader) Read(p []byte) (int, error) {
	s.mu.Lock()
	stopped, left, failed := s.stopped, s.left, s.err
	s.mu.Unlock()
	switch {
	case stopped:
		return 0, errStreamStopped
	case failed != nil:
		return 0, failed
	case left == 0:
		return 0, io.EOF
	}
	if uint64(len(p)) > left {
		p = p[:left]
	}
	n, err := s.r.Read(p) // not under mu: a slow r must not hold up stop
	s.mu.Lock()
	defer s.mu.Unlock()
	s.left -= uint64(n)
	s.read += uint64(n)
	switch {
	case errors.Is(err, io.EOF) && s.left > 0:
		err = io.ErrUnexpectedEOF
	case errors.Is(err, io.EOF):
		return n, io.EOF
	}
	if err != nil && s.err == nil {
		s.err = err
	}
	return n, err
}

// stop makes later reads fail and returns what was read and r's failure.
func (s *streamReader) stop() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	return s.read, s.err
}

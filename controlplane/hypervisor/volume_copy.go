package hypervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
)

// Sizes of CopyVolume.
const (
	// copyBlock is the unit of zero skipping: a block of zeros is not uploaded.
	copyBlock = 1 << 20
	// copyMaxUpload caps one upload of consecutive data blocks: each upload costs a few ms of
	// set-up on a libvirt host (checks, a dedicated connection), so runs are coalesced, but
	// not without bound, which would hold the download back.
	copyMaxUpload = 8 << 20
	// copyBuffers is how many blocks are in flight between the download and the uploads: an
	// upload under way holds up to copyMaxUpload, and the download fills the others meanwhile.
	copyBuffers = 2 * copyMaxUpload / copyBlock
	// copyProgressEvery is how often (in bytes read from the source) progress is reported.
	copyProgressEvery = 4 << 20
)

// opCopyVolume names CopyVolume in its own refusals; a failed step's error names the step's
// operation and host.
const opCopyVolume Op = "copy-volume"

// CopyVolume copies the raw volume v of src (as src's DomainVolumes returned it) into a fresh
// volume of the same name and format on dst, of capacity max(v.Capacity, capacity): a bigger
// capacity grows the disk (a resize), and the guest sees the new space as zeros. It is the disk
// half of a cold move: the guest must be shut off on src (a running one is refused by
// DownloadVolume), and no domain of dst may use the name's volume (RemoveVolume refuses it).
//
// Steps: RemoveVolume on dst (whatever was left there, e.g. by a failed attempt), PrepareVolume
// (sparse), then src's DownloadVolume streamed into dst's UploadVolume. go-libvirt has no
// sparse streams, so the whole capacity crosses the control plane, holes as zeros; only the 1
// MiB blocks that hold data are uploaded (consecutive ones coalesced, up to 8 MiB per upload),
// so the copy takes on dst only what the data takes, as the fresh volume's holes read as zeros.
// The download and the uploads run concurrently, with at most 16 MiB in flight.
//
// A qcow2 volume is refused (KindFailedPrecondition): its bytes on the host are the image file,
// where skipping zero blocks is wrong. progress, if not nil, is called from CopyVolume's
// goroutine with the bytes read from src so far and their total (v.Capacity), every 4 MiB or
// so and at the end. An error names the side and the step that failed, with that step's *Error
// (host, operation, kind); after one, dst may hold a partial volume, which the next attempt
// replaces (or RemoveVolume deletes). src is never written.
func CopyVolume(ctx context.Context, src, dst Hypervisor, v Volume, capacity uint64, progress func(copied, total uint64)) error {
	if err := v.validate(); err != nil {
		return errorf(hostOf(src), opCopyVolume, v.Name, KindInvalidArgument, "%v", err)
	}
	if v.Format != "raw" {
		return errorf(hostOf(src), opCopyVolume, v.Name, KindFailedPrecondition,
			"volume %s is %s: only a raw volume is copied (zero blocks are skipped, which is only right for raw)", v.Name, v.Format)
	}
	if src == dst {
		return errorf(hostOf(src), opCopyVolume, v.Name, KindInvalidArgument, "source and destination are the same host")
	}
	fresh := v
	fresh.Capacity = max(v.Capacity, capacity)
	if err := dst.RemoveVolume(ctx, v.Name); err != nil {
		return copyStepError(dst, OpRemoveVolume, v.Name, err, "destination: remove the volume left there")
	}
	if err := dst.PrepareVolume(ctx, fresh); err != nil {
		return copyStepError(dst, OpPrepareVolume, v.Name, err, fmt.Sprintf("destination: make the volume (%d bytes)", fresh.Capacity))
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := &blockCopy{
		ctx: ctx, total: v.Capacity,
		free: make(chan []byte, copyBuffers), full: make(chan copyBlockMsg, copyBuffers),
	}
	for range copyBuffers {
		c.free <- make([]byte, copyBlock)
	}
	downloaded := make(chan error, 1)
	go func() {
		err := src.DownloadVolume(ctx, v.Name, c)
		if err == nil {
			err = c.finish()
		}
		close(c.full)
		downloaded <- err
	}()
	upErr := c.upload(func(off uint64, blocks [][]byte) error {
		n := uint64(0)
		readers := make([]io.Reader, len(blocks))
		for i, b := range blocks {
			readers[i] = bytes.NewReader(b)
			n += uint64(len(b))
		}
		if err := dst.UploadVolume(ctx, v.Name, off, n, io.MultiReader(readers...)); err != nil {
			return copyStepError(dst, OpUploadVolume, v.Name, err, fmt.Sprintf("destination: upload %d bytes at %d", n, off))
		}
		return nil
	}, progress)
	if upErr != nil {
		cancel()     // stops the download
		<-downloaded // which fails for that
		return upErr // the first failure: a failed download ends the uploads without one
	}
	if err := <-downloaded; err != nil {
		return copyStepError(src, OpDownloadVolume, v.Name, err, "source: download")
	}
	if progress != nil {
		progress(v.Capacity, v.Capacity)
	}
	return nil
}

// copyBlockMsg is a block of the source, by index; data is nil for a block of zeros.
type copyBlockMsg struct {
	index uint64
	data  []byte
}

// blockCopy cuts the download into blocks (it is the download's io.Writer) and hands them to
// the uploads, the data blocks in buffers from free, which come back once uploaded.
type blockCopy struct {
	ctx   context.Context
	total uint64 // the source's capacity
	free  chan []byte
	full  chan copyBlockMsg

	// The writer's side (one goroutine).
	cur   []byte // the block being filled, nil while it is all zeros
	index uint64 // its index
	fill  int    // bytes of it written
	read  uint64 // bytes written so far
}

// blockLen is the length of block i of the source.
func (c *blockCopy) blockLen(i uint64) int { return int(min(copyBlock, c.total-i*copyBlock)) }

// Write implements io.Writer for the download. A block takes a buffer only once data comes for
// it: zeros are checked as they come, not copied.
func (c *blockCopy) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if c.read >= c.total {
			return written, fmt.Errorf("the source's volume has more than its %d bytes: it changed since it was read", c.total)
		}
		want := c.blockLen(c.index)
		chunk := p[:min(len(p), want-c.fill)]
		if c.cur == nil && !isZero(chunk) {
			select {
			case c.cur = <-c.free:
			case <-c.ctx.Done():
				return written, c.ctx.Err()
			}
			clear(c.cur[:c.fill]) // the zeros so far
		}
		if c.cur != nil {
			copy(c.cur[c.fill:], chunk)
		}
		c.fill += len(chunk)
		c.read += uint64(len(chunk))
		written += len(chunk)
		p = p[len(chunk):]
		if c.fill == want {
			if err := c.send(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// send hands the block just filled on.
func (c *blockCopy) send() error {
	msg := copyBlockMsg{index: c.index}
	if c.cur != nil {
		msg.data = c.cur[:c.fill]
	}
	c.cur, c.fill, c.index = nil, 0, c.index+1
	select {
	case c.full <- msg:
		return nil
	case <-c.ctx.Done():
		return c.ctx.Err()
	}
}

// finish checks, once the download returned, that it sent the whole volume.
func (c *blockCopy) finish() error {
	if c.read != c.total {
		return fmt.Errorf("the download ended after %d of %d bytes", c.read, c.total)
	}
	return nil
}

// upload runs the uploads of the data blocks as they come, coalescing consecutive ones up to
// copyMaxUpload, until the download's blocks end or an upload fails.
func (c *blockCopy) upload(put func(off uint64, blocks [][]byte) error, progress func(copied, total uint64)) error {
	var run [][]byte // consecutive data blocks not uploaded yet
	var runAt uint64 // the offset of the first
	var runLen int
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		err := put(runAt, run)
		for _, b := range run {
			c.free <- b[:cap(b)] // never blocks: the buffers came from there
		}
		run, runLen = run[:0], 0
		return err
	}
	var reported uint64
	for msg := range c.full {
		if msg.data == nil || runLen+len(msg.data) > copyMaxUpload {
			if err := flush(); err != nil {
				return err
			}
		}
		if msg.data != nil {
			if len(run) == 0 {
				runAt = msg.index * copyBlock
			}
			run = append(run, msg.data)
			runLen += len(msg.data)
		}
		if copied := min(c.total, (msg.index+1)*copyBlock); progress != nil && copied-reported >= copyProgressEvery && copied < c.total {
			progress(copied, c.total)
			reported = copied
		}
	}
	return flush()
}

// copyStepError names the side and step of CopyVolume that failed in err, an error of hv's op.
func copyStepError(hv Hypervisor, op Op, volume string, err error, step string) error {
	var e *Error
	if errors.As(err, &e) {
		d := *e
		d.Message = "copy of volume " + volume + ": " + step + ": " + e.Message
		return &d
	}
	return &Error{Host: hostOf(hv), Op: op, Domain: volume, Kind: KindOf(err), Err: err,
		Message: "copy of volume " + volume + ": " + step + ": " + err.Error()}
}

// hostOf is hv's host name, when it tells it.
func hostOf(hv Hypervisor) string {
	if h, ok := hv.(interface{ Host() string }); ok {
		return h.Host()
	}
	return ""
}

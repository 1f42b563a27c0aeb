package hypervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
)

// memBlockSize is the unit in which in-memory volumes keep their content.
const memBlockSize = 1 << 20

// memZeros is the content of a block that is not stored, written by downloads as it is (Write
// must not change its argument).
var memZeros = make([]byte, memBlockSize)

// memVolume is a volume of an in-memory host, with its content.
type memVolume struct {
	Volume
	// blocks holds the content by index of 1 MiB block (the last one is shorter when the
	// capacity is not a whole number of MiB). A block that is not there is zeros, and a block
	// that becomes all zeros goes: a mostly-empty volume costs little. A block is never
	// changed in place (a write replaces it), so volumes and downloads can share blocks.
	blocks map[uint64][]byte
}

// blockLen is the length of block i.
func (v *memVolume) blockLen(i uint64) uint64 {
	return min(memBlockSize, v.Capacity-i*memBlockSize)
}

// writeAt writes p at off (within the capacity, checked by the caller).
func (v *memVolume) writeAt(off uint64, p []byte) {
	for len(p) > 0 {
		i, in := off/memBlockSize, off%memBlockSize
		b := make([]byte, v.blockLen(i))
		copy(b, v.blocks[i])
		n := copy(b[in:], p)
		if isZero(b) {
			delete(v.blocks, i)
		} else {
			if v.blocks == nil {
				v.blocks = make(map[uint64][]byte)
			}
			v.blocks[i] = b
		}
		off += uint64(n)
		p = p[n:]
	}
}

// grow makes the volume capacity bytes long when it is shorter; the new space reads as zeros.
func (v *memVolume) grow(capacity uint64) {
	if capacity <= v.Capacity {
		return
	}
	last := (v.Capacity - 1) / memBlockSize // capacities are never 0
	v.Capacity = capacity
	if b, ok := v.blocks[last]; ok && uint64(len(b)) < v.blockLen(last) {
		nb := make([]byte, v.blockLen(last))
		copy(nb, b)
		v.blocks[last] = nb
	}
}

// readAt reads n bytes at off (within the capacity, checked by the caller).
func (v *memVolume) readAt(off uint64, n int) []byte {
	out := make([]byte, n)
	for p := out; len(p) > 0; {
		i, in := off/memBlockSize, off%memBlockSize
		k := len(p)
		if b, ok := v.blocks[i]; ok {
			k = copy(p, b[in:])
		} else {
			k = min(k, int(v.blockLen(i)-in)) // zeros already
		}
		off += uint64(k)
		p = p[k:]
	}
	return out
}

// isZero reports whether b is all zeros.
func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(memZeros))
		if !bytes.Equal(b[:n], memZeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// DownloadVolume implements Hypervisor. It writes a snapshot of the volume taken when the call
// began, block by block without the host's lock (a slow w holds up nothing), and stops when
// ctx ends or the connection drops.
func (m *Memory) DownloadVolume(ctx context.Context, name string, w io.Writer) error {
	const op = OpDownloadVolume
	if err := validateVolumeName(name); err != nil {
		return errorf(m.host, op, name, KindInvalidArgument, "%v", err)
	}
	if err := m.begin(ctx, op, name); err != nil {
		return err
	}
	v, err := m.streamVolumeLocked(op, name, true)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	snap := &memVolume{Volume: v.Volume, blocks: maps.Clone(v.blocks)}
	down := m.down
	m.mu.Unlock()
	var written uint64
	for i := range (snap.Capacity + memBlockSize - 1) / memBlockSize {
		if err := m.streamErr(ctx, op, name, down); err != nil {
			return err
		}
		b, ok := snap.blocks[i]
		if !ok {
			b = memZeros[:snap.blockLen(i)]
		}
		n, err := w.Write(b)
		written += uint64(n)
		if err == nil && n < len(b) {
			err = io.ErrShortWrite
		}
		if err != nil {
			return &Error{Host: m.host, Op: op, Domain: name, Kind: KindOf(err), Err: err,
				Message: fmt.Sprintf("write the volume's content after %d of %d bytes: %v", written, snap.Capacity, err)}
		}
	}
	return nil
}

// UploadVolume implements Hypervisor. It reads r by blocks and writes each into the volume as it
// comes (a failure leaves what was written), without the host's lock while it reads.
func (m *Memory) UploadVolume(ctx context.Context, name string, offset, length uint64, r io.Reader) error {
	const op = OpUploadVolume
	if err := validateVolumeName(name); err != nil {
		return errorf(m.host, op, name, KindInvalidArgument, "%v", err)
	}
	if err := m.begin(ctx, op, name); err != nil {
		return err
	}
	v, err := m.streamVolumeLocked(op, name, false)
	if err == nil {
		if rerr := checkRange(v.Volume, offset, length); rerr != nil {
			err = errorf(m.host, op, name, KindInvalidArgument, "%v", rerr)
		}
	}
	down := m.down
	m.mu.Unlock()
	if err != nil {
		return err
	}
	buf := make([]byte, min(length, memBlockSize))
	for off, end := offset, offset+length; off < end; {
		if err := m.streamErr(ctx, op, name, down); err != nil {
			return err
		}
		p := buf[:min(end-off, memBlockSize-off%memBlockSize)] // up to the next block
		if n, err := io.ReadFull(r, p); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return &Error{Host: m.host, Op: op, Domain: name, Kind: KindOf(err), Err: err,
				Message: fmt.Sprintf("read the content to upload after %d of %d bytes: %v", off-offset+uint64(n), length, err)}
		}
		m.mu.Lock()
		if m.volumes[name] != v {
			m.mu.Unlock()
			return errorf(m.host, op, name, KindNotFound, "volume %s was removed during the upload", name)
		}
		v.writeAt(off, p)
		m.mu.Unlock()
		off += uint64(len(p))
	}
	return nil
}

// streamVolumeLocked is Conn.streamVolume in memory.
func (m *Memory) streamVolumeLocked(op Op, name string, running bool) (*memVolume, error) {
	v, err := m.volumeLocked(op, name, name)
	if err != nil {
		return nil, err
	}
	if err := checkStreamFormat(v.Volume); err != nil {
		return nil, errorf(m.host, op, name, KindFailedPrecondition, "%v", err)
	}
	if err := m.checkUnusedLocked(op, name, running); err != nil {
		return nil, err
	}
	return v, nil
}

// streamErr is why a stream under way must stop, if it must: ctx ended (KindTimeout), or the
// connection it began on dropped (down) or its session ended (KindUnavailable).
func (m *Memory) streamErr(ctx context.Context, op Op, name string, down <-chan struct{}) error {
	if err := ctx.Err(); err != nil {
		return newError(m.host, op, name, err)
	}
	select {
	case <-down:
		return newError(m.host, op, name, errClosed)
	case <-sessionEnd(ctx):
		return newError(m.host, op, name, errClosed)
	default:
		return nil
	}
}

// WriteVolumeAt writes p into the volume name at off, behind the caller's back (no call is
// counted, no fault applies, and domains' use of the volume is not checked): a test puts
// content on a volume, as a guest or an operator would.
func (m *Memory) WriteVolumeAt(name string, off uint64, p []byte) error {
	const op Op = "write-volume"
	m.mu.Lock()
	defer m.mu.Unlock()
	v, err := m.volumeLocked(op, name, name)
	if err != nil {
		return err
	}
	if err := checkRange(v.Volume, off, uint64(len(p))); err != nil {
		return errorf(m.host, op, name, KindInvalidArgument, "%v", err)
	}
	v.writeAt(off, p)
	return nil
}

// ReadVolumeAt reads n bytes of the volume name at off, behind the caller's back (as
// WriteVolumeAt): a test checks what a copy put there.
func (m *Memory) ReadVolumeAt(name string, off uint64, n int) ([]byte, error) {
	const op Op = "read-volume"
	m.mu.Lock()
	defer m.mu.Unlock()
	v, err := m.volumeLocked(op, name, name)
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, errorf(m.host, op, name, KindInvalidArgument, "read %d bytes", n)
	}
	if err := checkRange(v.Volume, off, uint64(n)); err != nil {
		return nil, errorf(m.host, op, name, KindInvalidArgument, "%v", err)
	}
	return v.readAt(off, n), nil
}

// VolumeAllocated returns how many bytes of the volume name hold data: its stored blocks, as a
// real host's sparse file allocates only what was written.
func (m *Memory) VolumeAllocated(name string) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, err := m.volumeLocked("volume-allocated", name, name)
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, b := range v.blocks {
		n += uint64(len(b))
	}
	return n, nil
}

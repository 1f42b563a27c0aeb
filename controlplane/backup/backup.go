// Package backup reads and writes snapshot archives: the file `devfleet cluster snapshot save`
// produces and `restore` consumes. An archive is a header line, the state stream, and a
// SHA-256 trailer over everything before it, so that a truncated or altered file is refused
// before it replaces anything.
package backup

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"time"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/state"
)

const magic = "devfleet-snapshot 1\n"

// Header describes an archive.
type Header struct {
	Index   uint64    `json:"index"`
	NodeID  string    `json:"node_id"`
	Created time.Time `json:"created"`
}

// Write writes an archive of view to w.
func Write(w io.Writer, view *state.View, h Header) error {
	sum := sha256.New()
	mw := io.MultiWriter(w, sum)
	hdr, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(mw, magic); err != nil {
		return err
	}
	if _, err := mw.Write(append(hdr, '\n')); err != nil {
		return err
	}
	if err := view.Persist(mw); err != nil {
		return err
	}
	_, err = w.Write(sum.Sum(nil))
	return err
}

// Archive is a verified archive spooled to a temporary file.
type Archive struct {
	Header Header
	file   *os.File
	offset int64 // start of the state stream
	size   int64 // length of the state stream
}

// Read spools an archive from r to a temporary file, verifies its checksum and that its state
// stream decodes, and returns it. Errors are InvalidArgument: the input is at fault.
func Read(r io.Reader) (*Archive, error) {
	f, err := os.CreateTemp("", "devfleet-restore-*")
	if err != nil {
		return nil, err
	}
	_ = os.Remove(f.Name()) // unlinked: the space goes when the file is closed
	a := &Archive{file: f}
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	n, err := io.Copy(f, r)
	if err != nil {
		return nil, err
	}
	if n < int64(len(magic))+sha256.Size {
		return nil, apierror.Invalid("snapshot", "archive is %d bytes, too short to be a devfleet snapshot", n)
	}
	body := n - sha256.Size
	sum := sha256.New()
	if _, err := io.Copy(sum, io.NewSectionReader(f, 0, body)); err != nil {
		return nil, err
	}
	trailer := make([]byte, sha256.Size)
	if _, err := f.ReadAt(trailer, body); err != nil {
		return nil, err
	}
	if !bytes.Equal(sum.Sum(nil), trailer) {
		return nil, apierror.Invalid("snapshot", "checksum mismatch: the archive is truncated or corrupt")
	}
	br := bufio.NewReader(io.NewSectionReader(f, 0, body))
	m, err := br.ReadString('\n')
	if err != nil || m != magic {
		return nil, apierror.Invalid("snapshot", "not a devfleet snapshot archive (bad magic)")
	}
	line, err := br.ReadBytes('\n')
	if err != nil {
		return nil, apierror.Invalid("snapshot", "archive header: %v", err)
	}
	if err := json.Unmarshal(line, &a.Header); err != nil {
		return nil, apierror.Invalid("snapshot", "archive header: %v", err)
	}
	a.offset = int64(len(magic) + len(line))
	a.size = body - a.offset
	if _, err := state.Restore(a.Stream()); err != nil {
		return nil, apierror.Invalid("snapshot", "state in archive does not decode: %v", err)
	}
	ok = true
	return a, nil
}

// Stream returns a fresh reader over the archive's state stream.
func (a *Archive) Stream() io.Reader { return io.NewSectionReader(a.file, a.offset, a.size) }

// Size is the length of the state stream.
func (a *Archive) Size() int64 { return a.size }

// Close removes the spooled copy.
func (a *Archive) Close() error { return a.file.Close() }

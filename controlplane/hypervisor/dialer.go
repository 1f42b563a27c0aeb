package hypervisor

import (
	"net"
	"sync"

	"github.com/digitalocean/go-libvirt/socket"
)

// trackingDialer remembers the socket it opened, so that a hung handshake or a hung daemon can be
// cut loose: closing the socket makes every pending go-libvirt call return.
type trackingDialer struct {
	inner socket.Dialer

	mu   sync.Mutex
	conn net.Conn
	cuts bool // cut was called: close what Dial opens from now on
}

// Dial implements go-libvirt's socket.Dialer.
func (d *trackingDialer) Dial() (net.Conn, error) {
	conn, err := d.inner.Dial()
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cuts {
		conn.Close()
		return nil, net.ErrClosed
	}
	d.conn = conn
	return conn, nil
}

// cut closes the socket (now, or as soon as Dial opens it).
func (d *trackingDialer) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cuts = true
	if d.conn != nil {
		_ = d.conn.Close()
	}
}

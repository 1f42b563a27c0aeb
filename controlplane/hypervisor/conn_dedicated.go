package hypervisor

import (
	"context"
	"errors"
)

// dedicatedCall describes a call that runs on a connection of its own (see Conn.dedicated).
type dedicatedCall struct {
	// what names the call's work in messages ("the migration", "the download").
	what string
	// cut makes the end of the caller's context cut the connection, which stops a stream (a
	// migration is not stopped that way: the daemon carries on without us, see AbortJob).
	cut bool
	// onTimeout and onLost are added to the message of a KindTimeout (ctx ended) and of a
	// KindUnavailable that is our connection going during the call (not the dial failing).
	onTimeout, onLost string
}

// dedicated runs f on a connection of its own, dialed for the call and closed when f returns,
// so that a call that lasts never holds up the host's other calls on c. For a migration that is
// JobStats, AbortJob and SetMaxSpeed while it runs. For a stream it is every call: go-libvirt
// reads a connection with one goroutine, which hands each stream packet to the goroutine that
// writes it to the stream's consumer and waits until it is taken, holding the lock every call
// needs to register for its reply, so a slow consumer stalls the whole connection. The
// connection is registered with c, so that closing c (or the Connector dropping it) cuts it
// too: f then fails as KindUnavailable. When ctx ends first, dedicated returns KindTimeout;
// with k.cut it also cuts the connection, and f ends with it.
func (c *Conn) dedicated(ctx context.Context, op Op, name string, k dedicatedCall, f func(dc *Conn) error) error {
	if err := ctx.Err(); err != nil {
		return newError(c.host, op, name, err)
	}
	dc, err := c.dialDedicated(ctx, op, name, k.what)
	if err != nil {
		return err
	}
	ch := make(chan error, 1)
	go func() {
		err := f(dc)
		c.releaseDedicated(dc)
		ch <- err
	}()
	select {
	case err := <-ch:
		err = newError(c.host, op, name, err)
		var e *Error
		if k.onLost != "" && errors.As(err, &e) && e.Kind == KindUnavailable && e.Code == 0 {
			e.Message += " (" + k.onLost + ")"
		}
		return err
	case <-ctx.Done():
		if k.cut {
			dc.abort()
		}
		msg := ctx.Err().Error()
		if k.onTimeout != "" {
			msg += " (" + k.onTimeout + ")"
		}
		return &Error{Host: c.host, Op: op, Domain: name, Kind: KindTimeout, Err: ctx.Err(), Message: msg}
	}
}

// dialDedicated opens a dedicated connection for what, registered with c.
func (c *Conn) dialDedicated(ctx context.Context, op Op, name, what string) (*Conn, error) {
	if c.closed.Load() {
		return nil, newError(c.host, op, name, errClosed)
	}
	dc, err := Dial(ctx, c.uri, c.opts)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			d := *e
			d.Op, d.Domain, d.Message = op, name, "connection for "+what+": "+e.Message
			return nil, &d
		}
		return nil, newError(c.host, op, name, err)
	}
	c.dedMu.Lock()
	defer c.dedMu.Unlock()
	if c.closed.Load() {
		dc.abort()
		return nil, newError(c.host, op, name, errClosed)
	}
	if c.dedConns == nil {
		c.dedConns = make(map[*Conn]struct{})
	}
	c.dedConns[dc] = struct{}{}
	return dc, nil
}

// releaseDedicated closes a dedicated connection once its call returned.
func (c *Conn) releaseDedicated(dc *Conn) {
	c.dedMu.Lock()
	delete(c.dedConns, dc)
	c.dedMu.Unlock()
	dc.Close()
}

// cutDedicated cuts the dedicated connections of the calls under way (c is closing); their
// calls return KindUnavailable.
func (c *Conn) cutDedicated() {
	c.dedMu.Lock()
	conns := c.dedConns
	c.dedConns = nil
	c.dedMu.Unlock()
	for dc := range conns {
		dc.abort()
	}
}

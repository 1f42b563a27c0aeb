package hypervisor

import (
	"context"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
)

// Events implements Hypervisor over go-libvirt's lifecycle event stream.
func (c *Conn) Events(ctx context.Context) (<-chan Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, newError(c.host, OpEvents, "", err)
	}
	if c.closed.Load() {
		return nil, newError(c.host, OpEvents, "", errClosed)
	}
	ctx, cancel := context.WithCancel(ctx)
	type result struct {
		in  <-chan libvirt.DomainEventLifecycleMsg
		err error
	}
	ch := make(chan result, 1)
	go func() {
		in, err := c.l.LifecycleEvents(ctx)
		ch <- result{in, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		cancel()
		go func() {
			if r := <-ch; r.err == nil {
				drain(r.in)
			}
		}()
		return nil, newError(c.host, OpEvents, "", ctx.Err())
	}
	if r.err != nil {
		cancel()
		return nil, newError(c.host, OpEvents, "", r.err)
	}
	out := make(chan Event)
	go func() {
		defer close(out)
		defer cancel()
		for msg := range r.in {
			select {
			case out <- lifecycleEvent(c.host, msg, time.Now()):
			case <-ctx.Done():
				drain(r.in)
				return
			}
		}
	}()
	return out, nil
}

// drain empties a go-libvirt event channel until it closes: go-libvirt's sender does not watch
// its context while it sends, so a channel nobody reads would keep it forever.
func drain[T any](in <-chan T) {
	for range in {
	}
}

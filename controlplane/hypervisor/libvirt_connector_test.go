package hypervisor

import (
	"errors"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/devfleet/devfleet/e2e/libvirthost"
)

// realOptions make a Connector for real daemons that notices trouble within a second or two.
func realOptions(t *testing.T, hl *healthLog) Options {
	return Options{
		PingInterval:   200 * time.Millisecond,
		PingTimeout:    200 * time.Millisecond,
		MaxMissedPings: 2,
		BackoffMin:     50 * time.Millisecond,
		BackoffMax:     400 * time.Millisecond,
		Conn:           ConnOptions{DialTimeout: 500 * time.Millisecond},
		OnHealth:       hl.report,
		Logger:         testLogger(t),
	}
}

// TestLibvirtConnectorReconnectsAfterDrop has the daemon itself drop our connection
// (virt-admin client-disconnect, the daemon-side equivalent of a broken link): the Connector
// notices through go-libvirt's Disconnected channel, connects again at once, and the event
// stream resubscribes (EventResync) and keeps delivering.
func TestLibvirtConnectorReconnectsAfterDrop(t *testing.T) {
	ctx := testCtx(t)
	h := libvirthost.StartT(t, 1)[0]
	hl := newHealthLog()
	c := newConnector(t, realOptions(t, hl))
	hv, err := c.Open(h.Name, h.URI)
	if err != nil {
		t.Fatal(err)
	}
	hl.expect(t, h.Name, true)
	events, err := hv.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	expectEvents(t, events, "resync")
	if _, err := hv.DefineAndStart(ctx, devserverSpec("ds-r", 1, 128, 0)); err != nil {
		t.Fatal(err)
	}
	expectDomainEvents(t, events, "ds-r", "defined/added", "started/booted")

	before := clientIDs(t, h)
	if len(before) != 1 {
		t.Fatalf("clients of the daemon: %v, want our one connection", before)
	}
	dropped := time.Now()
	virtAdmin(t, h, "client-disconnect", "libvirtd", before[0])
	ev := next(t, events)
	if ev.Type != EventResync {
		t.Fatalf("after the drop got %s, want resync", eventString(ev))
	}
	t.Logf("resubscribed %v after the daemon dropped the connection", time.Since(dropped).Round(time.Millisecond))
	after := clientIDs(t, h)
	if len(after) != 1 || slices.Contains(before, after[0]) {
		t.Errorf("clients after the drop: %v (before: %v), want one new connection", after, before)
	}
	if d, err := hv.Lookup(ctx, "ds-r"); err != nil || d.State != StateRunning || d.Metadata.ID != "id-ds-r" {
		t.Errorf("Lookup after reconnection = %+v, %v", d, err)
	}
	virsh(t, h, "destroy", "ds-r")
	expectDomainEvents(t, events, "ds-r", "stopped/destroyed")
	// The daemon answered again at once: no unreachable report.
	select {
	case r := <-hl.ch:
		t.Errorf("unexpected health report %+v", r)
	default:
	}
}

// TestLibvirtConnectorUnresponsiveDaemon freezes the daemon (SIGSTOP): its socket still accepts
// but nothing answers, as with a hung libvirtd. Pings time out, the host is reported unreachable
// and reconnection attempts time out in the handshake; after SIGCONT it is reachable again.
func TestLibvirtConnectorUnresponsiveDaemon(t *testing.T) {
	ctx := testCtx(t)
	h := libvirthost.StartT(t, 1)[0]
	hl := newHealthLog()
	c := newConnector(t, realOptions(t, hl))
	hv, err := c.Open(h.Name, h.URI)
	if err != nil {
		t.Fatal(err)
	}
	hl.expect(t, h.Name, true)
	if err := hv.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() { signalDaemon(t, h, syscall.SIGCONT) }) // before the host is stopped
	stopped := time.Now()
	signalDaemon(t, h, syscall.SIGSTOP)
	down := hl.expect(t, h.Name, false)
	t.Logf("unreachable %v after the daemon froze: %v", time.Since(stopped).Round(time.Millisecond), down.Err)
	if !errors.Is(down.Err, errUnresponsive) {
		t.Errorf("unreachable because %v, want unresponsive", down.Err)
	}
	err = hv.Ping(ctx)
	wantKind(t, err, KindUnavailable)

	resumed := time.Now()
	signalDaemon(t, h, syscall.SIGCONT)
	hl.expect(t, h.Name, true)
	t.Logf("reachable %v after the daemon resumed", time.Since(resumed).Round(time.Millisecond))
	if err := hv.Ping(ctx); err != nil {
		t.Errorf("Ping after resume: %v", err)
	}
}

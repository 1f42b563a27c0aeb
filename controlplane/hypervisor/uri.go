package hypervisor

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Where libvirt listens unless the URI says otherwise.
const (
	defaultSocket  = "/var/run/libvirt/libvirt-sock"
	defaultTCPPort = "16509"
)

// FakeScheme is the URI scheme of in-memory hosts (fake://NAME?cpus=N&memory_mib=M), served by a
// Connector created with AllowFake.
const FakeScheme = "fake"

// transport is how a URI reaches its daemon.
type transport int

const (
	transportUnix transport = iota
	transportTCP
	transportFake
)

// target is a parsed host URI.
type target struct {
	transport transport
	// socket is the unix socket path (transportUnix).
	socket string
	// addr is host:port (transportTCP).
	addr string
	// driver is the URI the daemon is asked to open (qemu:///system).
	driver string
	// query holds a fake URI's parameters.
	query url.Values
}

// parseURI understands qemu[+unix]:///system[?socket=PATH], qemu+tcp://HOST[:PORT]/system and
// fake://ANYTHING.
func parseURI(raw string) (target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return target{}, fmt.Errorf("libvirt URI %q: %w", raw, err)
	}
	if u.Scheme == FakeScheme {
		return target{transport: transportFake, query: u.Query()}, nil
	}
	driver, trans, _ := strings.Cut(u.Scheme, "+")
	if driver != "qemu" {
		return target{}, fmt.Errorf("libvirt URI %q: driver %q is not supported (want qemu)", raw, driver)
	}
	path := u.Path
	if path == "" {
		path = "/system"
	}
	t := target{driver: driver + "://" + path}
	switch trans {
	case "", "unix":
		if u.Host != "" {
			return target{}, fmt.Errorf("libvirt URI %q: a unix socket URI has no host (qemu+unix:///system?socket=PATH)", raw)
		}
		t.transport, t.socket = transportUnix, u.Query().Get("socket")
		if t.socket == "" {
			t.socket = defaultSocket
		}
	case "tcp":
		if u.Hostname() == "" {
			return target{}, fmt.Errorf("libvirt URI %q: no host (qemu+tcp://HOST[:PORT]/system)", raw)
		}
		port := u.Port()
		if port == "" {
			port = defaultTCPPort
		}
		t.transport, t.addr = transportTCP, net.JoinHostPort(u.Hostname(), port)
	default:
		return target{}, fmt.Errorf("libvirt URI %q: transport %q is not supported (want unix or tcp)", raw, trans)
	}
	return t, nil
}

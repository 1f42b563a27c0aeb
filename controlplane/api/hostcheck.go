package api

import (
	"context"
	"net/url"
	"time"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/hypervisor"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Hypervisors opens connections to hosts' libvirt (hypervisor.Connector).
type Hypervisors interface {
	Open(name, uri string) (hypervisor.Hypervisor, error)
	// Forget closes a connection opened for a host that was then not recorded.
	Forget(name, uri string)
}

// hostCheckTimeout bounds the call to a new host's libvirt at registration.
const hostCheckTimeout = 15 * time.Second

// checkLibvirt reaches a host's libvirt before the host is recorded: an unreachable URI is
// Unavailable naming the URI and the cause, and declared capacity beyond what the host has is
// InvalidArgument. A host declared without vCPUs and memory takes them from libvirt. Nothing is
// recorded until this passes.
func (s *Server) checkLibvirt(ctx context.Context, h *v1.Host) error {
	uri := h.GetLibvirtUri()
	if uri == "" {
		return nil
	}
	if u, err := url.Parse(uri); err == nil && u.Scheme == "fake" && !s.cfg.AllowFakeHypervisors {
		return apierror.Invalid("host.libvirt_uri", "%s is an in-memory test host; devfleetd accepts those only with --dev or --allow-fake-hypervisors", uri)
	}
	if s.cfg.Hypervisors == nil {
		return apierror.Blocked("this devfleetd drives no libvirt hosts (no hypervisor connector configured)")
	}
	hv, err := s.cfg.Hypervisors.Open(h.GetName(), uri)
	if err != nil {
		return apierror.Invalid("host.libvirt_uri", "%v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, hostCheckTimeout)
	defer cancel()
	info, err := hv.NodeInfo(ctx)
	if err != nil {
		return &apierror.Error{Kind: apierror.Unavailable, Field: "host.libvirt_uri", Reason: "cannot reach libvirt at " + uri + ": " + err.Error(),
			Code: apierror.CodeLibvirtUnreachable}
	}
	c := h.GetCapacity()
	if c == nil {
		c = &v1.Resources{}
		h.Capacity = c
	}
	if c.GetVcpus() == 0 && c.GetMemoryMib() == 0 {
		c.Vcpus, c.MemoryMib = info.CPUs, info.MemoryMiB
	}
	if c.GetVcpus() > info.CPUs {
		return apierror.Invalid("host.capacity.vcpus", "declared %d, but libvirt at %s reports %d CPUs", c.GetVcpus(), uri, info.CPUs)
	}
	if c.GetMemoryMib() > info.MemoryMiB {
		return apierror.Invalid("host.capacity.memory_mib", "declared %d MiB, but libvirt at %s reports %d MiB", c.GetMemoryMib(), uri, info.MemoryMiB)
	}
	return nil
}

// Package hypervisor is devfleet's one door to libvirt: the Hypervisor interface that the
// provisioner, migration and decommission controllers drive, its implementation over libvirt's
// RPC protocol (github.com/digitalocean/go-libvirt, domain XML built with libvirtxml), an
// in-memory implementation with fault injection for unit tests and the no-libvirt dev mode, and
// the Connector that keeps one connection per host, reconnects with capped exponential backoff
// and reports each host's reachability.
//
// Every domain devfleet creates carries a devfleet element in its libvirt <metadata> (see
// Metadata), so that what libvirt runs can be matched with the replicated state after a leader
// change, without any naming convention. Errors are *Error values that say which host and
// operation failed and classify the failure (Kind), so that the API maps them to gRPC codes.
//
// See DESIGN.md in this directory for the connection model and the decisions behind it.
package hypervisor

package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	libvirt "github.com/digitalocean/go-libvirt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestErrorClassification(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		want     Kind
		wantCode codes.Code
	}{
		{"no domain", libvirt.Error{Code: uint32(libvirt.ErrNoDomain), Message: "Domain not found"}, KindNotFound, codes.NotFound},
		{"no volume, wrapped", fmt.Errorf("volume x: %w", libvirt.Error{Code: uint32(libvirt.ErrNoStorageVol)}), KindNotFound, codes.NotFound},
		{"not running", libvirt.Error{Code: uint32(libvirt.ErrOperationInvalid), Message: "domain is not running"}, KindFailedPrecondition, codes.FailedPrecondition},
		{"volume exists", libvirt.Error{Code: uint32(libvirt.ErrStorageVolExist)}, KindAlreadyExists, codes.AlreadyExists},
		{"unsafe migration", libvirt.Error{Code: uint32(libvirt.ErrMigrateUnsafe), Message: "Unsafe migration: Migration without shared storage is unsafe"}, KindFailedPrecondition, codes.FailedPrecondition},
		{"aborted", libvirt.Error{Code: uint32(libvirt.ErrOperationAborted), Message: "operation aborted: job 'migration out' canceled by client"}, KindAborted, codes.Aborted},
		{"rpc", libvirt.Error{Code: uint32(libvirt.ErrRPC)}, KindUnavailable, codes.Unavailable},
		{"other libvirt", libvirt.Error{Code: uint32(libvirt.ErrXMLError)}, KindInternal, codes.Internal},
		{"interrupted mid-call", libvirt.ErrInterrupted, KindUnavailable, codes.Unavailable},
		{"call on a closed socket", syscall.EINVAL, KindUnavailable, codes.Unavailable},
		{"refused", &net.OpError{Op: "dial", Net: "unix", Err: syscall.ECONNREFUSED}, KindUnavailable, codes.Unavailable},
		{"deadline", context.DeadlineExceeded, KindTimeout, codes.DeadlineExceeded},
		{"canceled", context.Canceled, KindTimeout, codes.Canceled},
		{"anything else", errors.New("boom"), KindInternal, codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := newError("h1", OpLookup, "d1", tt.err)
			if got := KindOf(err); got != tt.want {
				t.Errorf("KindOf = %v, want %v", got, tt.want)
			}
			// The API wraps errors further; the code must still come through.
			wrapped := fmt.Errorf("create devserver: %w", err)
			if got := status.Code(wrapped); got != tt.wantCode {
				t.Errorf("status.Code = %v, want %v", got, tt.wantCode)
			}
			if !errors.Is(err, tt.err) {
				t.Error("the cause is not unwrapped")
			}
			if IsNotFound(err) != (tt.want == KindNotFound) || IsUnavailable(err) != (tt.want == KindUnavailable) {
				t.Errorf("IsNotFound = %v, IsUnavailable = %v for %v", IsNotFound(err), IsUnavailable(err), tt.want)
			}
		})
	}
}

func TestErrorMessageNamesHostOpAndDomain(t *testing.T) {
	err := newError("h1", OpDestroy, "ds-1", libvirt.Error{Code: uint32(libvirt.ErrNoDomain), Message: "Domain not found: no domain with matching name 'ds-1'"})
	want := "hypervisor h1: destroy ds-1: Domain not found: no domain with matching name 'ds-1'"
	if err.Error() != want {
		t.Errorf("Error() = %q, want %q", err, want)
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != int(libvirt.ErrNoDomain) || e.Host != "h1" || e.Op != OpDestroy {
		t.Errorf("error = %#v", e)
	}
	if newError("h1", OpPing, "", nil) != nil {
		t.Error("newError(nil) is not nil")
	}
	if KindOf(nil) != KindInternal || IsNotFound(nil) || IsUnavailable(nil) {
		t.Error("nil error classified")
	}
}

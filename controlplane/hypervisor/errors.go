package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	libvirt "github.com/digitalocean/go-libvirt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kind classifies a hypervisor failure by what the caller should do about it; each kind maps to
// one gRPC code (see Kind.Code).
type Kind int

// Kinds of failure. The zero value, KindInternal, is what an unclassified failure gets.
const (
	// KindInternal: anything else (a libvirt failure we do not classify, a bug). Not retryable
	// as such.
	KindInternal Kind = iota
	// KindNotFound: the domain (or its volume or pool) does not exist on the host.
	KindNotFound
	// KindUnavailable: the host cannot be reached (no connection, connection lost mid-call,
	// daemon not answering). Retrying later may succeed; the call may or may not have happened.
	KindUnavailable
	// KindFailedPrecondition: the domain is not in a state that allows the operation (start a
	// running domain, undefine a running one, not enough memory on a fake host).
	KindFailedPrecondition
	// KindAlreadyExists: a domain or volume of that name already exists.
	KindAlreadyExists
	// KindInvalidArgument: the request itself is wrong (a DomainSpec that does not validate).
	KindInvalidArgument
	// KindTimeout: the caller's context ended first; the operation may still complete on the host.
	KindTimeout
	// KindAborted: the operation was cancelled on the host (a migration stopped by AbortJob,
	// libvirt's OPERATION_ABORTED). Nothing changed.
	KindAborted
)

var kindNames = [...]string{
	KindInternal:           "internal",
	KindNotFound:           "not found",
	KindUnavailable:        "unavailable",
	KindFailedPrecondition: "failed precondition",
	KindAlreadyExists:      "already exists",
	KindInvalidArgument:    "invalid argument",
	KindTimeout:            "timeout",
	KindAborted:            "aborted",
}

// String names the kind in messages and logs.
func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Code is the gRPC code an API returns for a failure of this kind.
func (k Kind) Code() codes.Code {
	switch k {
	case KindNotFound:
		return codes.NotFound
	case KindUnavailable:
		return codes.Unavailable
	case KindFailedPrecondition:
		return codes.FailedPrecondition
	case KindAlreadyExists:
		return codes.AlreadyExists
	case KindInvalidArgument:
		return codes.InvalidArgument
	case KindTimeout:
		return codes.DeadlineExceeded
	case KindAborted:
		return codes.Aborted
	default:
		return codes.Internal
	}
}

// Error is a failed hypervisor call: which host, which operation on which domain, and why, so
// that logs name the host and the API can map the failure to a status code.
type Error struct {
	// Host is the host's name as the Connector knows it (or the URI when there is no name).
	Host string
	// Op is the operation that failed.
	Op Op
	// Domain is the domain concerned, if any (the volume, for PrepareVolume, RemoveVolume,
	// DownloadVolume, UploadVolume and CopyVolume).
	Domain string
	// Kind classifies the failure.
	Kind Kind
	// Code is libvirt's error number (virErrorNumber) when libvirt reported the failure, else 0.
	Code int
	// Message is libvirt's message, or a description of the failure.
	Message string
	// Err is the underlying error (a libvirt error, a network error, a context error), if any.
	Err error
}

// Error says which host and operation failed, and why.
func (e *Error) Error() string {
	s := "hypervisor " + e.Host + ": " + string(e.Op)
	if e.Domain != "" {
		s += " " + e.Domain
	}
	return s + ": " + e.Message
}

// Unwrap exposes the underlying error, so that errors.Is(err, context.DeadlineExceeded) works.
func (e *Error) Unwrap() error { return e.Err }

// GRPCStatus lets status.FromError and status.Code map a hypervisor failure (also when it is
// wrapped) without the API knowing this package's kinds.
func (e *Error) GRPCStatus() *status.Status {
	code := e.Kind.Code()
	if e.Kind == KindTimeout && errors.Is(e.Err, context.Canceled) {
		code = codes.Canceled
	}
	return status.New(code, e.Error())
}

// KindOf returns the kind of err: that of the *Error it wraps, KindTimeout for a bare context
// error, and KindInternal for anything else (including nil).
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return KindTimeout
	}
	return KindInternal
}

// IsNotFound reports whether err says the domain (or its volume) does not exist.
func IsNotFound(err error) bool { return err != nil && KindOf(err) == KindNotFound }

// IsUnavailable reports whether err says the host could not be reached.
func IsUnavailable(err error) bool { return err != nil && KindOf(err) == KindUnavailable }

// messageOf is err's message without the host and operation an *Error prefixes it with.
func messageOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return err.Error()
}

// errNotConnected is the cause of calls made while the Connector has no connection to a host.
var errNotConnected = errors.New("not connected")

// errClosed is the cause of calls made on a closed connection or Connector.
var errClosed = errors.New("connection closed")

// newError wraps err, a failure of op on host, classifying it. A nil err gives nil; an *Error is
// returned as is (it was classified where it happened).
func newError(host string, op Op, domain string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	kind, code, msg := classify(err)
	return &Error{Host: host, Op: op, Domain: domain, Kind: kind, Code: code, Message: msg, Err: err}
}

// errorf makes an *Error of our own (not from libvirt) of the given kind.
func errorf(host string, op Op, domain string, kind Kind, format string, args ...any) *Error {
	return &Error{Host: host, Op: op, Domain: domain, Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// classify maps an error from go-libvirt, the network or a context to a kind, libvirt's error
// number and a message.
func classify(err error) (Kind, int, string) {
	var lerr libvirt.Error
	if errors.As(err, &lerr) {
		return libvirtKind(libvirt.ErrorNumber(lerr.Code)), int(lerr.Code), err.Error()
	}
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return KindTimeout, 0, err.Error()
	case isConnectionError(err):
		return KindUnavailable, 0, "connection to libvirt lost or refused: " + err.Error()
	}
	return KindInternal, 0, err.Error()
}

// isConnectionError reports whether err means the connection to the daemon is unusable: go-libvirt
// returns ErrInterrupted when the socket closes during a call and EINVAL for a call on a closed
// socket; dialing returns network errors.
func isConnectionError(err error) bool {
	var nerr net.Error
	return errors.Is(err, libvirt.ErrInterrupted) ||
		errors.Is(err, errNotConnected) ||
		errors.Is(err, errClosed) ||
		errors.Is(err, syscall.EINVAL) ||
		errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) ||
		errors.As(err, &nerr)
}

// libvirtKind classifies libvirt's error numbers.
func libvirtKind(n libvirt.ErrorNumber) Kind {
	switch n {
	case libvirt.ErrNoDomain, libvirt.ErrNoStoragePool, libvirt.ErrNoStorageVol:
		return KindNotFound
	case libvirt.ErrOperationInvalid, libvirt.ErrResourceBusy, libvirt.ErrMigrateUnsafe:
		return KindFailedPrecondition
	case libvirt.ErrDomExist, libvirt.ErrStorageVolExist:
		return KindAlreadyExists
	case libvirt.ErrOperationAborted:
		return KindAborted
	case libvirt.ErrNoConnect, libvirt.ErrInvalidConn, libvirt.ErrRPC, libvirt.ErrOperationTimeout,
		libvirt.ErrAgentUnresponsive:
		return KindUnavailable
	default:
		return KindInternal
	}
}

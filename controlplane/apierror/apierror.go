// Package apierror holds the typed errors that validation and the FSM return, and their mapping
// to gRPC status codes, so a refusal means the same thing over gRPC, REST and the CLI.
package apierror

import (
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kind classifies a refusal; each kind maps to one gRPC code.
type Kind int

// Kinds of refusal. The zero value is not a valid kind.
const (
	_ Kind = iota
	InvalidArgument
	NotFound
	AlreadyExists
	FailedPrecondition
	Unavailable
	// Aborted: a compare-and-set found the object changed since it was read; read it again.
	Aborted
	// PermissionDenied: the caller may not do this to this object.
	PermissionDenied
)

var kindCodes = map[Kind]codes.Code{
	InvalidArgument:    codes.InvalidArgument,
	NotFound:           codes.NotFound,
	AlreadyExists:      codes.AlreadyExists,
	FailedPrecondition: codes.FailedPrecondition,
	Unavailable:        codes.Unavailable,
	Aborted:            codes.Aborted,
	PermissionDenied:   codes.PermissionDenied,
}

// Error is a refusal with the field or object it concerns, so that the caller can fix its input.
type Error struct {
	Kind Kind
	// Field is the request field at fault (proto field path such as "host.capacity.vcpus"), or
	// the kind of object that is missing or blocking ("site"); empty if none applies.
	Field string
	// Reason is a sentence fragment that reads well after the field: "must not be empty".
	Reason string
	// Code, if set, names the refusal for programs (a gRPC ErrorInfo reason), so that callers
	// can react to it without parsing Reason.
	Code string
}

// Domain is the ErrorInfo domain of devfleet's machine-readable error reasons.
const Domain = "devfleet.dev"

// Codes of refusals that callers act on.
const (
	// CodeNoRoom: the chosen host no longer has room; placing again may succeed.
	CodeNoRoom = "NO_ROOM"
	// CodeLibvirtUnreachable: a host's libvirt could not be reached to check it; nothing was
	// recorded, and retrying once the host answers may succeed.
	CodeLibvirtUnreachable = "LIBVIRT_UNREACHABLE"
)

// HasCode reports whether err is a refusal with the given code.
func HasCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

func (e *Error) Error() string {
	// A missing or duplicate object's reason already names it ("site \"x\" not found").
	if e.Field == "" || e.Kind == NotFound || e.Kind == AlreadyExists {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// GRPCStatus lets status.FromError and status.Code see through to the right code, also when
// the error is wrapped.
func (e *Error) GRPCStatus() *status.Status { return e.status(e.Error()) }

// status builds the gRPC status with msg, which may carry context wrapped around e.
func (e *Error) status(msg string) *status.Status {
	st := status.New(kindCodes[e.Kind], msg)
	if e.Kind == InvalidArgument && e.Field != "" {
		if d, err := st.WithDetails(&errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: e.Field, Description: e.Reason}},
		}); err == nil {
			st = d
		}
	}
	if e.Code != "" {
		if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: e.Code, Domain: Domain}); err == nil {
			st = d
		}
	}
	return st
}

// Invalid reports a malformed field.
func Invalid(field, format string, args ...any) *Error {
	return &Error{Kind: InvalidArgument, Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Missing reports that a named object does not exist: Missing("site", "eu-1").
func Missing(kind, name string) *Error {
	return &Error{Kind: NotFound, Field: kind, Reason: fmt.Sprintf("%s %q not found", kind, name)}
}

// Exists reports a duplicate: Exists("host", "h1").
func Exists(kind, name string) *Error {
	return &Error{Kind: AlreadyExists, Field: kind, Reason: fmt.Sprintf("%s %q already exists", kind, name)}
}

// Blocked reports that the current state forbids the change; the reason names the blocker.
func Blocked(format string, args ...any) *Error {
	return &Error{Kind: FailedPrecondition, Reason: fmt.Sprintf(format, args...)}
}

// Changed reports a compare-and-set that found the object changed since the caller read it.
func Changed(kind, name string, want, have uint64) *Error {
	return &Error{Kind: Aborted, Field: "expected_modify_index",
		Reason: fmt.Sprintf("%s %q changed since it was read (modify_index %d, expected %d); read it again", kind, name, have, want)}
}

// NoLeader reports that the cluster cannot serve the request now; retrying later may work.
func NoLeader(format string, args ...any) *Error {
	return &Error{Kind: Unavailable, Reason: fmt.Sprintf(format, args...)}
}

// KindOf returns the kind of the first *Error in err's chain, or 0.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}

// ToStatus converts any error into a gRPC status error: typed refusals keep their code (also
// when wrapped), status errors pass through, everything else is Internal.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e.status(err.Error()).Err()
	}
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	return status.Error(codes.Internal, err.Error())
}

// ReasonOf is the reason of the first *Error in err's chain (what a timeline or a blocker
// shows), or err's text.
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Reason != "" {
		return e.Reason
	}
	return err.Error()
}

package notify

import (
	"errors"
	"fmt"
	"time"
)

// Error is a failed delivery that tells the Notifier how to go on; a sink returns it (possibly
// wrapped). Any other error is treated as transient and retried with backoff.
type Error struct {
	Err error
	// Permanent: retrying cannot help (the receiver refused this message), so the message
	// becomes a dead letter at once.
	Permanent bool
	// RetryAfter is the pause the receiver asked for before the next attempt (HTTP Retry-After);
	// the Notifier waits at least this long, up to Config.MaxRetryAfter.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Err == nil {
		return "delivery failed"
	}
	return e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// IsPermanent reports whether err says that retrying cannot help.
func IsPermanent(err error) bool {
	e, ok := errors.AsType[*Error](err)
	return ok && e.Permanent
}

// retryAfter returns the pause err asks for, or 0.
func retryAfter(err error) time.Duration {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.RetryAfter
	}
	return 0
}

// FieldError is an invalid configuration value, named by its field so that the operator knows
// which flag or key to fix.
type FieldError struct {
	// Field is the configuration field at fault, such as "webhook.secret".
	Field string
	// Reason reads well after the field: "must be at least 16 bytes".
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

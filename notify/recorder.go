package notify

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Recorder is an in-memory sink for tests: it keeps what it was given and can be told to fail.
// Other packages' tests use it to see what their code would have sent.
type Recorder struct {
	name string

	mu       sync.Mutex
	got      []Message
	attempts int
	failNext int
	failErr  error
	changed  chan struct{} // closed and replaced whenever got grows
}

// NewRecorder returns an empty recorder named name.
func NewRecorder(name string) *Recorder {
	return &Recorder{name: name, changed: make(chan struct{})}
}

// Name identifies the sink.
func (r *Recorder) Name() string { return r.name }

// Deliver records m, unless it was told to fail this attempt.
func (r *Recorder) Deliver(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts++
	if r.failNext > 0 {
		r.failNext--
		return r.failErr
	}
	r.got = append(r.got, m)
	close(r.changed)
	r.changed = make(chan struct{})
	return nil
}

// FailNext makes the next n deliveries fail with err (a transient error if nil; wrap it in an
// *Error to make it permanent or to ask for a pause).
func (r *Recorder) FailNext(n int, err error) {
	if err == nil {
		err = errors.New("recorder: told to fail")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failNext, r.failErr = n, err
}

// Messages returns what was delivered, in order.
func (r *Recorder) Messages() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Message(nil), r.got...)
}

// Attempts counts Deliver calls, failed ones included.
func (r *Recorder) Attempts() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.attempts
}

// Wait returns the delivered messages once there are at least n, or an error when ctx ends
// first: tests wait on a condition rather than sleep.
func (r *Recorder) Wait(ctx context.Context, n int) ([]Message, error) {
	for {
		r.mu.Lock()
		got, changed := len(r.got), r.changed
		r.mu.Unlock()
		if got >= n {
			return r.Messages(), nil
		}
		select {
		case <-ctx.Done():
			return r.Messages(), fmt.Errorf("recorder %s: %d of %d messages: %w", r.name, got, n, ctx.Err())
		case <-changed:
		}
	}
}

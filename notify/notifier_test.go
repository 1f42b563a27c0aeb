package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/validate"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func ids(ms []Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

func TestRetriesOn500ThenDelivers(t *testing.T) {
	t.Parallel()
	h := newHook(t, answer{status: 500}, answer{status: 503})
	n, p := newTestNotifier(t, Config{Sinks: []Sink{newTestWebhook(t, h.URL)}, BackoffBase: time.Second, BackoffMax: time.Minute})
	start(t, n)
	n.Enqueue(msg("n-1"))
	waitFor(t, "delivery", func() bool { return counter(n.metrics.delivered, "hook") == 1 })

	reqs := h.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3 (500, 503, 200)", len(reqs))
	}
	for i, r := range reqs {
		if r.verify != nil || r.header.Get(HeaderDelivery) != "n-1" {
			t.Errorf("request %d: delivery %q, verify %v", i, r.header.Get(HeaderDelivery), r.verify)
		}
	}
	if got := counter(n.metrics.retried, "hook"); got != 2 {
		t.Errorf("retried %v, want 2", got)
	}
	got := p.all()
	if len(got) != 2 || got[0] < 500*time.Millisecond || got[0] > time.Second || got[1] < time.Second || got[1] > 2*time.Second {
		t.Errorf("pauses %v, want ~1s then ~2s (exponential, jittered by up to half)", got)
	}
	if len(n.DeadLetters()) != 0 {
		t.Errorf("dead letters %v", n.DeadLetters())
	}
}

func TestNoRetryOn400(t *testing.T) {
	t.Parallel()
	h := newHook(t, answer{status: 400})
	var calls []DeadLetter
	var mu sync.Mutex
	n, p := newTestNotifier(t, Config{Sinks: []Sink{newTestWebhook(t, h.URL)},
		OnDeadLetter: func(d DeadLetter) { mu.Lock(); calls = append(calls, d); mu.Unlock() }})
	start(t, n)
	n.Enqueue(msg("n-1"))
	n.Enqueue(msg("n-2"))
	waitFor(t, "n-2 delivered", func() bool { return counter(n.metrics.delivered, "hook") == 1 })

	if reqs := h.requests(); len(reqs) != 2 || reqs[1].header.Get(HeaderDelivery) != "n-2" {
		t.Fatalf("%d requests, want n-1 once (refused) then n-2", len(reqs))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 1 || calls[0].Attempts != 1 || calls[0].Message.ID != "n-1" || !strings.Contains(calls[0].LastError, "400") {
		t.Fatalf("dead letters %+v, want n-1 after 1 attempt", calls)
	}
	if got := counter(n.metrics.retried, "hook"); got != 0 || len(p.all()) != 0 {
		t.Errorf("retried %v, paused %v: a 400 is not retried", got, p.all())
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		header        string
		maxRetryAfter time.Duration
		want          time.Duration
	}{
		{"honoured", "7", 0, 7 * time.Second},
		{"capped", "3600", 10 * time.Second, 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHook(t, answer{status: 429, retryAfter: tc.header})
			n, p := newTestNotifier(t, Config{Sinks: []Sink{newTestWebhook(t, h.URL)},
				BackoffBase: time.Millisecond, MaxRetryAfter: tc.maxRetryAfter})
			start(t, n)
			n.Enqueue(msg("n-1"))
			waitFor(t, "delivery", func() bool { return counter(n.metrics.delivered, "hook") == 1 })
			if got := p.all(); !slices.Equal(got, []time.Duration{tc.want}) {
				t.Fatalf("pauses %v, want [%s]", got, tc.want)
			}
			if len(h.requests()) != 2 {
				t.Fatalf("%d requests, want 2", len(h.requests()))
			}
		})
	}
}

func TestDeadLetterAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	rec := NewRecorder("rec")
	rec.FailNext(3, errors.New("receiver is down"))
	var calls atomic.Int32
	var got DeadLetter
	stamp := time.Date(2026, 11, 23, 13, 0, 0, 0, time.UTC)
	n, p := newTestNotifier(t, Config{Sinks: []Sink{rec}, MaxAttempts: 3, Now: func() time.Time { return stamp },
		OnDeadLetter: func(d DeadLetter) { calls.Add(1); got = d }})
	start(t, n)
	n.Enqueue(msg("n-1"))
	n.Enqueue(msg("n-2"))
	if _, err := rec.Wait(ctxTimeout(t), 1); err != nil {
		t.Fatal(err)
	}
	// The callback ran before n-2 was tried: it runs on the sink's worker.
	if calls.Load() != 1 {
		t.Fatalf("OnDeadLetter called %d times, want once", calls.Load())
	}
	want := DeadLetter{Sink: "rec", Message: msg("n-1"), Attempts: 3, LastError: "receiver is down", Time: stamp}
	if !equalDeadLetter(got, want) {
		t.Fatalf("dead letter %+v, want %+v", got, want)
	}
	if dl := n.DeadLetters(); len(dl) != 1 || !equalDeadLetter(dl[0], want) {
		t.Fatalf("DeadLetters() = %+v", dl)
	}
	if ids := ids(rec.Messages()); !slices.Equal(ids, []string{"n-2"}) {
		t.Fatalf("delivered %v, want [n-2]", ids)
	}
	if rec.Attempts() != 4 || len(p.all()) != 2 {
		t.Fatalf("%d attempts and pauses %v, want 3 for n-1 (2 pauses) and 1 for n-2", rec.Attempts(), p.all())
	}
	for name, want := range map[string]float64{"retried": 2, "dead": 1, "delivered": 1} {
		c := map[string]*prometheus.CounterVec{"retried": n.metrics.retried, "dead": n.metrics.dead, "delivered": n.metrics.delivered}[name]
		if got := counter(c, "rec"); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

func equalDeadLetter(a, b DeadLetter) bool {
	return a.Sink == b.Sink && a.Message.ID == b.Message.ID && a.Attempts == b.Attempts &&
		a.LastError == b.LastError && a.Time.Equal(b.Time)
}

func TestDeadLettersAreBounded(t *testing.T) {
	t.Parallel()
	rec := NewRecorder("rec")
	rec.FailNext(3, &Error{Err: errors.New("refused"), Permanent: true})
	n, _ := newTestNotifier(t, Config{Sinks: []Sink{rec}, MaxDeadLetters: 2})
	start(t, n)
	for _, id := range []string{"n-1", "n-2", "n-3", "n-4"} {
		n.Enqueue(msg(id))
	}
	if _, err := rec.Wait(ctxTimeout(t), 1); err != nil {
		t.Fatal(err)
	}
	dl := n.DeadLetters()
	if len(dl) != 2 || dl[0].Message.ID != "n-2" || dl[1].Message.ID != "n-3" || dl[1].Attempts != 1 {
		t.Fatalf("DeadLetters() = %+v, want n-2 and n-3, after one attempt each", dl)
	}
}

// countHandler counts log records by message.
type countHandler struct {
	mu  sync.Mutex
	got map[string]int
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countHandler) WithGroup(string) slog.Handler            { return h }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got[r.Message]++
	return nil
}

func (h *countHandler) count(prefix string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	total := 0
	for m, c := range h.got {
		if strings.HasPrefix(m, prefix) {
			total += c
		}
	}
	return total
}

func TestQueueOverflowDropsOldest(t *testing.T) {
	t.Parallel()
	rec := NewRecorder("rec")
	logs := &countHandler{got: map[string]int{}}
	n, _ := newTestNotifier(t, Config{Sinks: []Sink{rec}, QueueSize: 3, Logger: slog.New(logs)})
	for i := 1; i <= 5; i++ {
		n.Enqueue(msg(fmt.Sprint("n-", i)))
	}
	if got := counter(n.metrics.dropped, "rec"); got != 2 {
		t.Fatalf("dropped %v, want 2", got)
	}
	if got := testutil.ToFloat64(n.metrics.depth.WithLabelValues("rec")); got != 3 {
		t.Fatalf("queue depth %v, want 3", got)
	}
	if got := logs.count("queue full"); got != 1 {
		t.Fatalf("%d 'queue full' logs for one burst, want 1", got)
	}

	stop := start(t, n)
	got, err := rec.Wait(ctxTimeout(t), 3)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(got), []string{"n-3", "n-4", "n-5"}) {
		t.Fatalf("delivered %v, want the newest three in order", ids(got))
	}
	waitFor(t, "empty queue", func() bool { return testutil.ToFloat64(n.metrics.depth.WithLabelValues("rec")) == 0 })
	stop()

	// The queue had room again, so the next burst is logged again.
	for i := 6; i <= 10; i++ {
		n.Enqueue(msg(fmt.Sprint("n-", i)))
	}
	if got := counter(n.metrics.dropped, "rec"); got != 4 {
		t.Fatalf("dropped %v, want 4", got)
	}
	if got := logs.count("queue full"); got != 2 {
		t.Fatalf("%d 'queue full' logs for two bursts, want 2", got)
	}
}

// flaky fails every third attempt, transiently.
type flaky struct {
	*Recorder
	n atomic.Int32
}

func (f *flaky) Deliver(ctx context.Context, m Message) error {
	if f.n.Add(1)%3 == 0 {
		return errors.New("flaky")
	}
	return f.Recorder.Deliver(ctx, m)
}

func TestOrderPerSink(t *testing.T) {
	t.Parallel()
	steady, shaky := NewRecorder("steady"), &flaky{Recorder: NewRecorder("shaky")}
	n, _ := newTestNotifier(t, Config{Sinks: []Sink{steady, shaky}})
	start(t, n)
	var want []string
	for i := range 200 {
		id := fmt.Sprint("n-", i)
		want = append(want, id)
		n.Enqueue(msg(id))
	}
	for _, r := range []*Recorder{steady, shaky.Recorder} {
		got, err := r.Wait(ctxTimeout(t), len(want))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids(got), want) {
			t.Fatalf("%s delivered %v, want %v", r.Name(), ids(got), want)
		}
	}
	if got := counter(n.metrics.retried, "shaky"); got < 60 {
		t.Errorf("shaky retried %v times, want about 100", got)
	}
}

// blocking is a sink whose deliveries hang until their context ends.
type blocking struct{ started chan string }

func (b *blocking) Name() string { return "blocking" }

func (b *blocking) Deliver(ctx context.Context, m Message) error {
	b.started <- m.ID
	<-ctx.Done()
	return ctx.Err()
}

func TestCancelStopsPromptly(t *testing.T) {
	t.Parallel()
	t.Run("during a delivery", func(t *testing.T) {
		t.Parallel()
		b := &blocking{started: make(chan string, 1)}
		n, _ := newTestNotifier(t, Config{Sinks: []Sink{b}})
		stop := start(t, n)
		n.Enqueue(msg("n-1"))
		<-b.started
		stopsWithin(t, stop)
		// Interrupted, not failed: the message waits at the head of the queue, untried.
		if got := n.sinks[0].q.len(); got != 1 || len(n.DeadLetters()) != 0 || counter(n.metrics.retried, "blocking") != 0 {
			t.Fatalf("after stop: queued %d, dead letters %v", got, n.DeadLetters())
		}
	})
	t.Run("during a backoff", func(t *testing.T) {
		t.Parallel()
		rec := NewRecorder("rec")
		rec.FailNext(1, nil)
		// The real sleep, and an hour's pause.
		n, _ := newTestNotifier(t, Config{Sinks: []Sink{rec}, BackoffBase: time.Hour, Sleep: sleep})
		stop := start(t, n)
		n.Enqueue(msg("n-1"))
		n.Enqueue(msg("n-2"))
		waitFor(t, "a retry", func() bool { return counter(n.metrics.retried, "rec") == 1 })
		stopsWithin(t, stop)

		// The next term starts with the interrupted message, in order.
		start(t, n)
		got, err := rec.Wait(ctxTimeout(t), 2)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids(got), []string{"n-1", "n-2"}) {
			t.Fatalf("delivered %v after restart", ids(got))
		}
	})
}

func stopsWithin(t *testing.T, stop func()) {
	t.Helper()
	begin := time.Now()
	stop()
	if took := time.Since(begin); took > time.Second {
		t.Fatalf("Run took %s to return after cancel", took)
	}
}

func TestRunTwice(t *testing.T) {
	t.Parallel()
	n, _ := newTestNotifier(t, Config{Sinks: []Sink{NewRecorder("rec")}})
	start(t, n)
	waitFor(t, "Run to start", n.running.Load)
	if err := n.Run(t.Context()); err == nil {
		t.Fatal("a second concurrent Run returned nil")
	}
}

func TestNewConfigErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		cfg   Config
		field string
		text  string
	}{
		{"duplicate sink names", Config{Sinks: []Sink{NewRecorder("a"), NewRecorder("a")}}, "notify.sinks", `named "a"`},
		{"unnamed sink", Config{Sinks: []Sink{NewRecorder("")}}, "notify.sinks", "no name"},
		{"nil sink", Config{Sinks: []Sink{nil}}, "notify.sinks", "nil"},
		{"backoff cap below base", Config{BackoffBase: time.Minute, BackoffMax: time.Second}, "notify.backoff_max", "backoff_base"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tc.cfg)
			fe, ok := errors.AsType[*FieldError](err)
			if !ok || fe.Field != tc.field || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("New = %v, want a %s error saying %q", err, tc.field, tc.text)
			}
		})
	}
}

func TestNoSinks(t *testing.T) {
	t.Parallel()
	n, _ := newTestNotifier(t, Config{})
	n.Enqueue(msg("n-1"))
	stopsWithin(t, start(t, n))
}

func TestEnqueueCopiesFields(t *testing.T) {
	t.Parallel()
	rec := NewRecorder("rec")
	n, _ := newTestNotifier(t, Config{Sinks: []Sink{rec}})
	m := msg("n-1")
	m.Fields = map[string]string{"host": "m1"}
	n.Enqueue(m)
	n.Enqueue(Message{Kind: "expiring"}) // no ID: refused
	m.Fields["host"] = "changed"
	start(t, n)
	got, err := rec.Wait(ctxTimeout(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Fields["host"] != "m1" {
		t.Fatalf("fields %v: the caller's later change leaked into the queue", got[0].Fields)
	}
	if n.sinks[0].q.len() != 0 || len(rec.Messages()) != 1 {
		t.Fatalf("a message without an ID was queued")
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	base, limit := time.Second, time.Minute
	for attempt := 1; attempt <= 100; attempt++ {
		full := limit
		if attempt <= 6 {
			full = base << (attempt - 1)
		}
		for range 20 {
			if d := backoff(base, limit, attempt); d < full/2 || d > full {
				t.Fatalf("backoff(attempt %d) = %s, want within [%s, %s]", attempt, d, full/2, full)
			}
		}
	}
}

func TestMetricsRegistered(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	newTestNotifier(t, Config{Sinks: []Sink{NewRecorder("rec")}, Registry: reg})
	for _, name := range []string{"devfleet_notify_delivered_total", "devfleet_notify_retries_total",
		"devfleet_notify_dead_letters_total", "devfleet_notify_dropped_total", "devfleet_notify_queue_depth"} {
		if c, err := testutil.GatherAndCount(reg, name); err != nil || c != 1 {
			t.Errorf("%s: %d series (%v), want 1 (at zero before anything happens)", name, c, err)
		}
	}
}

func TestNoticeMessage(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	m := NoticeMessage(&v1.Notice{Id: "n-7", Owner: "alice", Kind: v1.NoticeKind_NOTICE_KIND_MAINTENANCE,
		Subject: "ds-1", Message: "host m1 goes down at 14:00", CreateTime: timestamppb.New(at)})
	want := Message{ID: "n-7", Kind: "maintenance", Subject: "ds-1", Owner: "alice", Text: "host m1 goes down at 14:00", Time: at}
	if m.ID != want.ID || m.Kind != want.Kind || m.Subject != want.Subject || m.Owner != want.Owner || m.Text != want.Text || !m.Time.Equal(at) {
		t.Fatalf("NoticeMessage = %+v, want %+v", m, want)
	}
	if z := NoticeMessage(&v1.Notice{Id: "n-8"}); !z.Time.IsZero() {
		t.Fatalf("a notice without a create time has time %s", z.Time)
	}
}

func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

func TestReasonFitsTheState(t *testing.T) {
	t.Parallel()
	long := errors.New("line one\nline\ttwo \xff" + strings.Repeat("é", 2000))
	got := reason(long)
	if err := validate.Text("dead_letter.last_error", got, validate.MaxReasonLen); err != nil {
		t.Fatalf("reason(%.40q...) = %.60q...: %v", long.Error(), got, err)
	}
	if !strings.HasPrefix(got, "line one line two ?é") {
		t.Fatalf("reason = %.40q...", got)
	}
}

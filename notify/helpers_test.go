package notify

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/devfleet/devfleet/controlplane/leader"
)

const waitTimeout = 5 * time.Second

var testSecret = []byte("0123456789abcdef-test-secret")

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// testLogger logs to the test's output (shown when the test fails or with -v).
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// pauses stands in for Config.Sleep: it records the pauses asked for and returns at once.
type pauses struct {
	mu  sync.Mutex
	got []time.Duration
}

func (p *pauses) sleep(ctx context.Context, d time.Duration) error {
	p.mu.Lock()
	p.got = append(p.got, d)
	p.mu.Unlock()
	return ctx.Err()
}

func (p *pauses) all() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Duration(nil), p.got...)
}

// newTestNotifier builds a notifier that sleeps through pauses (recorded in the returned
// value) and registers its metrics on a registry of its own.
func newTestNotifier(t *testing.T, cfg Config) (*Notifier, *pauses) {
	t.Helper()
	p := &pauses{}
	if cfg.Sleep == nil {
		cfg.Sleep = p.sleep
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return n, p
}

// start runs n until the returned stop is called (or the test ends), and checks that Run
// returns promptly and cleanly.
func start(t *testing.T, n *Notifier) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(waitTimeout):
				t.Errorf("Run did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func counter(c *prometheus.CounterVec, sink string) float64 {
	return testutil.ToFloat64(c.WithLabelValues(sink))
}

func msg(id string) Message {
	return Message{ID: id, Kind: "expiring", Subject: "ds-" + id, Owner: "alice", Region: "eu",
		Text: "expires tomorrow", Time: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
}

// answer is one reply of a hook.
type answer struct {
	status     int
	retryAfter string
}

// received is one request a hook got, with the outcome of checking its signature.
type received struct {
	header http.Header
	body   []byte
	verify error
}

// hook is a webhook receiver on loopback that replies with its answers in turn, then 200.
type hook struct {
	*httptest.Server
	mu      sync.Mutex
	answers []answer
	got     []received
}

func newHook(t *testing.T, answers ...answer) *hook {
	h := &hook{answers: answers}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.got = append(h.got, received{header: r.Header.Clone(), body: body, verify: Verify(testSecret, r.Header, body, time.Minute)})
		a := answer{status: http.StatusOK}
		if len(h.answers) > 0 {
			a, h.answers = h.answers[0], h.answers[1:]
		}
		h.mu.Unlock()
		if a.retryAfter != "" {
			w.Header().Set("Retry-After", a.retryAfter)
		}
		w.WriteHeader(a.status)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hook) requests() []received {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]received(nil), h.got...)
}

func newTestWebhook(t *testing.T, url string) *Webhook {
	t.Helper()
	w, err := NewWebhook(WebhookConfig{Name: "hook", URL: url, Secret: testSecret, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("NewWebhook: %v", err)
	}
	return w
}

// The leader lifecycle runs the Notifier; the sinks fit the Notifier.
var (
	_ leader.Controller = (*Notifier)(nil)
	_ Sink              = (*Webhook)(nil)
	_ Sink              = (*Recorder)(nil)
)

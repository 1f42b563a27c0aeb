package notify

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestWebhookConfigErrors(t *testing.T) {
	t.Parallel()
	fields := func(err error) []string {
		var out []string
		errs := []error{err}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = j.Unwrap()
		}
		for _, e := range errs {
			fe, ok := errors.AsType[*FieldError](e)
			if !ok {
				t.Fatalf("%v is not a *FieldError", e)
			}
			out = append(out, fe.Field)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		cfg  WebhookConfig
		want []string // fields at fault
		text string   // in the message
	}{
		{"valid", WebhookConfig{URL: "https://hooks.example.com/devfleet", Secret: testSecret}, nil, ""},
		{"no url", WebhookConfig{Secret: testSecret}, []string{"webhook.url"}, "must be set"},
		{"not a url", WebhookConfig{URL: "http://host:port:x", Secret: testSecret}, []string{"webhook.url"}, "not a URL"},
		{"ftp", WebhookConfig{URL: "ftp://hooks.example.com/x", Secret: testSecret}, []string{"webhook.url"}, `not "ftp"`},
		{"relative", WebhookConfig{URL: "/hooks", Secret: testSecret}, []string{"webhook.url"}, "http or https"},
		{"no host", WebhookConfig{URL: "https:///hooks", Secret: testSecret}, []string{"webhook.url"}, "host"},
		{"port only", WebhookConfig{URL: "http://:8080/hooks", Secret: testSecret}, []string{"webhook.url"}, "host"},
		{"no secret", WebhookConfig{URL: "https://h.example.com"}, []string{"webhook.secret"}, "must be set"},
		{"short secret", WebhookConfig{URL: "https://h.example.com", Secret: []byte("short")}, []string{"webhook.secret"}, "at least 16 bytes, got 5"},
		{"negative timeout", WebhookConfig{URL: "https://h.example.com", Secret: testSecret, Timeout: -time.Second}, []string{"webhook.timeout"}, "negative"},
		{"everything wrong", WebhookConfig{URL: "gopher://x", Timeout: -1}, []string{"webhook.url", "webhook.secret", "webhook.timeout"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewWebhook(tc.cfg)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("NewWebhook: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("NewWebhook accepted %+v", tc.cfg)
			}
			if got := fields(err); !slices.Equal(got, tc.want) {
				t.Fatalf("fields at fault %v, want %v (%v)", got, tc.want, err)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("error %q does not say %q", err, tc.text)
			}
		})
	}
}

func TestWebhookDefaultName(t *testing.T) {
	t.Parallel()
	w, err := NewWebhook(WebhookConfig{URL: "https://hooks.example.com:8443/x?token=t", Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	if w.Name() != "hooks.example.com:8443" {
		t.Fatalf("name %q, want the URL's host", w.Name())
	}
}

// TestWebhookRequest checks the request a receiver gets: method, headers, a valid signature and
// the message's JSON with snake_case names.
func TestWebhookRequest(t *testing.T) {
	t.Parallel()
	h := newHook(t)
	m := msg("n-1")
	m.Fields = map[string]string{"expire_time": "2026-11-24T12:00:00Z"}
	if err := newTestWebhook(t, h.URL+"/hooks").Deliver(t.Context(), m); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	reqs := h.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.verify != nil {
		t.Fatalf("signature: %v", r.verify)
	}
	if got := r.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type %q", got)
	}
	if got := r.header.Get(HeaderDelivery); got != "n-1" {
		t.Errorf("%s %q, want the message ID", HeaderDelivery, got)
	}
	if ts, err := strconv.ParseInt(r.header.Get(HeaderTimestamp), 10, 64); err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
		t.Errorf("%s %q is not the current Unix time", HeaderTimestamp, r.header.Get(HeaderTimestamp))
	}
	var raw map[string]any
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "kind", "subject", "owner", "region", "text", "time", "fields"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("body %s lacks %q", r.body, k)
		}
	}
	var back Message
	if err := json.Unmarshal(r.body, &back); err != nil || !reflect.DeepEqual(back, m) {
		t.Errorf("body decodes to %+v (%v), want %+v", back, err, m)
	}
}

// TestWebhookStaleClock: a sender whose clock is far off signs requests receivers refuse.
func TestWebhookStaleClock(t *testing.T) {
	t.Parallel()
	h := newHook(t)
	w, err := NewWebhook(WebhookConfig{URL: h.URL, Secret: testSecret,
		Now: func() time.Time { return time.Now().Add(-time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Deliver(t.Context(), msg("n-1")); err != nil {
		t.Fatal(err)
	}
	if err := h.requests()[0].verify; !errors.Is(err, ErrStale) {
		t.Fatalf("receiver's verify = %v, want ErrStale", err)
	}
}

func TestWebhookAnswers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		answer     answer
		permanent  bool
		ok         bool
		retryAfter time.Duration
	}{
		{answer: answer{status: 200}, ok: true},
		{answer: answer{status: 202}, ok: true},
		{answer: answer{status: 204}, ok: true},
		{answer: answer{status: 400}, permanent: true},
		{answer: answer{status: 401}, permanent: true},
		{answer: answer{status: 404}, permanent: true},
		{answer: answer{status: 410}, permanent: true},
		{answer: answer{status: 302}, permanent: true},
		{answer: answer{status: 408}},
		{answer: answer{status: 429}},
		{answer: answer{status: 429, retryAfter: "7"}, retryAfter: 7 * time.Second},
		{answer: answer{status: 503, retryAfter: "120"}, retryAfter: 2 * time.Minute},
		{answer: answer{status: 429, retryAfter: "soon"}},
		{answer: answer{status: 500}},
		{answer: answer{status: 502}},
	} {
		t.Run(strconv.Itoa(tc.answer.status)+tc.answer.retryAfter, func(t *testing.T) {
			t.Parallel()
			h := newHook(t, tc.answer)
			err := newTestWebhook(t, h.URL).Deliver(t.Context(), msg("n-1"))
			if (err == nil) != tc.ok {
				t.Fatalf("Deliver = %v, want ok %v", err, tc.ok)
			}
			if err == nil {
				return
			}
			if IsPermanent(err) != tc.permanent {
				t.Errorf("Deliver = %v: permanent %v, want %v", err, IsPermanent(err), tc.permanent)
			}
			if got := retryAfter(err); got != tc.retryAfter {
				t.Errorf("retry after %s, want %s", got, tc.retryAfter)
			}
			if !strings.Contains(err.Error(), strconv.Itoa(tc.answer.status)) {
				t.Errorf("error %q does not name the status", err)
			}
			if len(h.requests()) != 1 {
				t.Errorf("%d requests, want 1 (Deliver does not retry; the Notifier does)", len(h.requests()))
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":                              0,
		"0":                             0,
		"-5":                            0,
		"30":                            30 * time.Second,
		"99999999":                      24 * time.Hour,
		"Mon, 23 Nov 2026 12:01:30 GMT": 90 * time.Second,
		"Mon, 23 Nov 2026 11:00:00 GMT": 0,
		"later":                         0,
	} {
		if got := parseRetryAfter(v, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", v, got, want)
		}
	}
}

func TestWebhookTimeoutIsRetried(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	w, err := NewWebhook(WebhookConfig{URL: srv.URL, Secret: testSecret, Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = w.Deliver(t.Context(), msg("n-1"))
	if err == nil || IsPermanent(err) || !strings.Contains(err.Error(), "no answer within 50ms") {
		t.Fatalf("Deliver = %v, want a transient timeout", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Deliver took %s despite a 50ms timeout", took)
	}
}

// TestWebhookConnectionError: refused connections are retried, and errors do not repeat the
// URL's path or query, which may hold a token.
func TestWebhookConnectionError(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL + "/hooks/T0KEN?sig=S3CRET"
	srv.Close()
	err := newTestWebhook(t, url).Deliver(t.Context(), msg("n-1"))
	if err == nil || IsPermanent(err) {
		t.Fatalf("Deliver = %v, want a transient error", err)
	}
	if strings.Contains(err.Error(), "T0KEN") || strings.Contains(err.Error(), "S3CRET") {
		t.Fatalf("error %q leaks the URL's path or query", err)
	}
}

func TestWebhookCancelled(t *testing.T) {
	t.Parallel()
	h := newHook(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := newTestWebhook(t, h.URL).Deliver(ctx, msg("n-1")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Deliver with a cancelled context = %v", err)
	}
}

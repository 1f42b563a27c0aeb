package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MinSecretLen is the shortest webhook secret accepted: 128 bits, so that the signature cannot
// be forged by guessing the key.
const MinSecretLen = 16

// WebhookConfig configures a Webhook.
type WebhookConfig struct {
	// Name identifies the sink in logs, metrics and dead letters (default: the URL's host).
	Name string
	// URL receives one POST per message; http or https. Redirects are not followed (a POST
	// that is redirected may be replayed as a GET): configure the final URL.
	URL string
	// Secret keys the signature; at least MinSecretLen bytes, shared with the receiver only.
	Secret []byte
	// Timeout bounds one request, from connecting to reading the answer (default 10s); a
	// request that times out is retried.
	Timeout time.Duration
	// Client sends the requests (default: one that follows no redirects).
	Client *http.Client
	// Now is the clock of the signature's timestamp (default time.Now); tests move it.
	Now func() time.Time
}

// Validate reports every invalid field at once, each as a *FieldError.
func (c WebhookConfig) Validate() error {
	var errs []error
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		errs = append(errs, invalid("webhook.url", "must be set"))
	case err != nil:
		errs = append(errs, invalid("webhook.url", "is not a URL: %v", errors.Unwrap(err)))
	case u.Scheme != "http" && u.Scheme != "https":
		errs = append(errs, invalid("webhook.url", "must be http or https, not %q", u.Scheme))
	case u.Hostname() == "":
		errs = append(errs, invalid("webhook.url", "must name a host"))
	}
	switch {
	case len(c.Secret) == 0:
		errs = append(errs, invalid("webhook.secret", "must be set (receivers check the signature with it)"))
	case len(c.Secret) < MinSecretLen:
		errs = append(errs, invalid("webhook.secret", "must be at least %d bytes, got %d", MinSecretLen, len(c.Secret)))
	}
	if c.Timeout < 0 {
		errs = append(errs, invalid("webhook.timeout", "must not be negative, got %s", c.Timeout))
	}
	return errors.Join(errs...)
}

// Webhook is a sink that POSTs each message's JSON to a URL, signed with a shared secret.
//
// The request carries Content-Type: application/json, HeaderDelivery (the message ID),
// HeaderTimestamp and HeaderSignature; receivers check it with Verify. A 2xx answer means
// delivered. 408, 429 and 5xx answers, timeouts and connection errors are retried (after
// Retry-After if the receiver sent one). Any other answer (4xx, or a redirect) is permanent:
// the receiver refused this message, and sending it again would be refused again.
type Webhook struct {
	name    string
	url     string
	target  string // scheme://host, for errors: the path or query may hold a token
	secret  []byte
	timeout time.Duration
	client  *http.Client
	now     func() time.Time
}

// NewWebhook returns a webhook sink, or the configuration's errors.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.URL)
	w := &Webhook{name: cfg.Name, url: cfg.URL, target: u.Scheme + "://" + u.Host,
		secret: bytes.Clone(cfg.Secret), timeout: cfg.Timeout, client: cfg.Client, now: cfg.Now}
	if w.name == "" {
		w.name = u.Host
	}
	if w.timeout == 0 {
		w.timeout = 10 * time.Second
	}
	if w.client == nil {
		w.client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if w.now == nil {
		w.now = time.Now
	}
	return w, nil
}

// Name identifies the sink.
func (w *Webhook) Name() string { return w.name }

// Deliver POSTs m once. Its errors are *Error when the answer says how to go on.
func (w *Webhook) Deliver(ctx context.Context, m Message) error {
	body, err := json.Marshal(m)
	if err != nil {
		return &Error{Err: fmt.Errorf("encode message %s: %w", m.ID, err), Permanent: true}
	}
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return &Error{Err: fmt.Errorf("build request to %s: %w", w.target, err), Permanent: true}
	}
	ts := w.now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "devfleet-notify")
	req.Header.Set(HeaderDelivery, m.ID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, sign(w.secret, ts, body))

	resp, err := w.client.Do(req)
	if err != nil {
		// url.Error repeats the whole URL, which may hold a token: keep only its cause.
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			return fmt.Errorf("post to %s: no answer within %s", w.target, w.timeout)
		}
		return fmt.Errorf("post to %s: %w", w.target, err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused

	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return nil
	}
	err = fmt.Errorf("%s answered %s", w.target, resp.Status)
	if s := strings.TrimSpace(strings.ToValidUTF8(string(snippet), "?")); s != "" {
		err = fmt.Errorf("%w: %q", err, s)
	}
	if code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500 {
		return &Error{Err: err, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), w.now())}
	}
	return &Error{Err: err, Permanent: true}
}

// parseRetryAfter reads Retry-After as seconds or as an HTTP date; 0 if absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, int64(24*time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

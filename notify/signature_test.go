package notify

import (
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	t.Parallel()
	now := time.Now()
	body := []byte(`{"id":"n-1","kind":"expiring"}`)
	signed := func(secret []byte, at time.Time, body []byte) http.Header {
		h := http.Header{}
		h.Set(HeaderTimestamp, strconv.FormatInt(at.Unix(), 10))
		h.Set(HeaderSignature, sign(secret, at.Unix(), body))
		return h
	}
	for _, tc := range []struct {
		name   string
		header http.Header
		body   []byte
		want   error
	}{
		{"good", signed(testSecret, now, body), body, nil},
		{"slightly ahead clock", signed(testSecret, now.Add(30*time.Second), body), body, nil},
		{"tampered body", signed(testSecret, now, body), []byte(`{"id":"n-1","kind":"expired"}`), ErrBadSignature},
		{"wrong secret", signed([]byte("another-secret-of-16+"), now, body), body, ErrBadSignature},
		{"stale timestamp", signed(testSecret, now.Add(-2*time.Minute), body), body, ErrStale},
		{"future timestamp", signed(testSecret, now.Add(2*time.Minute), body), body, ErrStale},
		{"no headers", http.Header{}, body, ErrMissingSignature},
		{"timestamp not a number", func() http.Header {
			h := signed(testSecret, now, body)
			h.Set(HeaderTimestamp, "yesterday")
			return h
		}(), body, ErrBadSignature},
		{"signature without prefix", func() http.Header {
			h := signed(testSecret, now, body)
			h.Set(HeaderSignature, h.Get(HeaderSignature)[len("sha256="):])
			return h
		}(), body, ErrBadSignature},
		{"timestamp changed after signing", func() http.Header {
			h := signed(testSecret, now, body)
			h.Set(HeaderTimestamp, strconv.FormatInt(now.Unix()-1, 10))
			return h
		}(), body, ErrBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := verifyAt(now, testSecret, tc.header, tc.body, time.Minute)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestVerifyDefaultSkew(t *testing.T) {
	t.Parallel()
	at := time.Now().Add(-DefaultMaxSkew + time.Minute)
	h := http.Header{}
	h.Set(HeaderTimestamp, strconv.FormatInt(at.Unix(), 10))
	h.Set(HeaderSignature, sign(testSecret, at.Unix(), nil))
	if err := Verify(testSecret, h, nil, 0); err != nil {
		t.Fatalf("Verify with maxSkew 0 (the default): %v", err)
	}
}

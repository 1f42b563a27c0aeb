package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Headers of a webhook request.
const (
	// HeaderDelivery carries the message ID: the key receivers dedupe on (it equals the signed
	// body's "id").
	HeaderDelivery = "X-Devfleet-Delivery"
	// HeaderTimestamp is the Unix time, in seconds, at which the request was signed.
	HeaderTimestamp = "X-Devfleet-Timestamp"
	// HeaderSignature is "sha256=" and the hex HMAC-SHA256, keyed with the sink's secret, of
	// "<timestamp>.<body>".
	HeaderSignature = "X-Devfleet-Signature"
)

// DefaultMaxSkew is the clock difference Verify accepts when given none: wide enough for
// unsynchronised clocks and a slow network, narrow enough that a captured request soon stops
// being accepted.
const DefaultMaxSkew = 5 * time.Minute

// Verification failures, for receivers that answer them differently (all deserve a 4xx).
var (
	ErrMissingSignature = errors.New("notify: missing " + HeaderTimestamp + " or " + HeaderSignature)
	ErrBadSignature     = errors.New("notify: signature does not match")
	ErrStale            = errors.New("notify: timestamp outside the accepted skew")
)

// sign returns the HeaderSignature value for body sent at ts.
func sign(secret []byte, ts int64, body []byte) string {
	return "sha256=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts int64, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(strconv.FormatInt(ts, 10)))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Verify checks a webhook request as a receiver must before trusting it:
//
//  1. read the raw body, before any JSON decoding (the signature covers the exact bytes);
//  2. reject a HeaderTimestamp more than maxSkew away from now (0 means DefaultMaxSkew), so a
//     captured request cannot be replayed later;
//  3. compute hex(HMAC-SHA256(secret, timestamp + "." + body)) and compare it, in constant time,
//     with HeaderSignature after its "sha256=" prefix.
//
// Then dedupe on HeaderDelivery: the same message may arrive more than once. Receivers in other
// languages follow the same three steps.
func Verify(secret []byte, header http.Header, body []byte, maxSkew time.Duration) error {
	return verifyAt(time.Now(), secret, header, body, maxSkew)
}

func verifyAt(now time.Time, secret []byte, header http.Header, body []byte, maxSkew time.Duration) error {
	if maxSkew <= 0 {
		maxSkew = DefaultMaxSkew
	}
	tsText, sigText := header.Get(HeaderTimestamp), header.Get(HeaderSignature)
	if tsText == "" || sigText == "" {
		return ErrMissingSignature
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s %q is not Unix seconds", ErrBadSignature, HeaderTimestamp, tsText)
	}
	if skew := now.Sub(time.Unix(ts, 0)).Abs(); skew > maxSkew {
		return fmt.Errorf("%w: signed %s away from now, more than %s", ErrStale, skew.Round(time.Second), maxSkew)
	}
	hexSig, ok := strings.CutPrefix(sigText, "sha256=")
	got, err := hex.DecodeString(hexSig)
	if !ok || err != nil {
		return fmt.Errorf("%w: %s is not sha256=<hex>", ErrBadSignature, HeaderSignature)
	}
	if !hmac.Equal(got, mac(secret, ts, body)) {
		return ErrBadSignature
	}
	return nil
}

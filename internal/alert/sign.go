package alert

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Webhook headers. The signature covers the timestamp and the body:
//
//	X-Guard-Signature: v1=hex(HMAC-SHA256(secret, timestamp + "." + body))
//
// where timestamp is the X-Guard-Timestamp value (Unix seconds) and the
// key is the subscription's secret as shown at creation, prefix included.
// A receiver recomputes it, compares in constant time, and rejects
// timestamps far from its clock, which bounds replays; the idempotency
// key drops repeats within that bound.
const (
	HeaderTimestamp   = "X-Guard-Timestamp"
	HeaderSignature   = "X-Guard-Signature"
	HeaderAlertID     = "X-Guard-Alert-Id"
	HeaderIdempotency = "Idempotency-Key"
	HeaderAttempt     = "X-Guard-Delivery-Attempt"
	signatureVersion  = "v1="
)

// ErrBadSignature is returned by Verify for a signature that does not
// match or a timestamp outside the tolerance.
var ErrBadSignature = errors.New("alert: bad webhook signature")

// Sign returns the X-Guard-Signature value of a body sent at ts.
func Sign(secret string, ts time.Time, body []byte) string {
	return signatureVersion + hex.EncodeToString(mac(secret, unixString(ts), body))
}

func unixString(ts time.Time) string { return strconv.FormatInt(ts.Unix(), 10) }

func mac(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks a received webhook's timestamp and signature headers
// against the body, as a receiver written in Go would. The timestamp must
// lie within tolerance of now.
func Verify(secret, timestamp, signature string, body []byte, now time.Time,
	tolerance time.Duration) error {
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrBadSignature
	}
	hexSig, ok := strings.CutPrefix(signature, signatureVersion)
	if !ok {
		return ErrBadSignature
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil || !hmac.Equal(got, mac(secret, timestamp, body)) {
		return ErrBadSignature
	}
	return nil
}

package correlation

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/malai-sec/malai/internal/reqid"
)

// HeaderName is the request and response header that carries the
// correlation id.
const HeaderName = "X-Request-ID"

// headerKey is HeaderName in canonical form, for direct map access.
const headerKey = "X-Request-Id"

// Bounds of an acceptable inbound id. Generated ids are [IDLength] bytes.
const (
	MinIDLength = 8
	MaxIDLength = 64
	// IDLength is the length of a generated id: a ULID, 26 characters of
	// Crockford base32.
	IDLength = 26
)

// crockford is the ULID alphabet: no I, L, O, U.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// ValidID reports whether s is acceptable as an inbound correlation id:
// [MinIDLength] to [MaxIDLength] bytes of ASCII letters, digits, '-', '_'
// and '.'. That admits ULIDs, UUIDs and most tracing ids, and rules out
// anything that could break a log line, a header or a query language
// (spaces, quotes, control bytes, '=' and non-ASCII).
func ValidID(s string) bool {
	if len(s) < MinIDLength || len(s) > MaxIDLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// NewID returns a fresh time-sortable id for t: a ULID (48-bit Unix
// millisecond timestamp and 80 random bits, Crockford base32). Ids made in
// later milliseconds sort after earlier ones as strings.
//
// The random bits come from the runtime's ChaCha8 generator
// (math/rand/v2), which is seeded from the operating system. An id is a
// label, not a secret: never use one as a capability or a session token.
func NewID(t time.Time) string {
	var out [IDLength]byte
	newID(&out, t)
	return string(out[:])
}

// newID writes a fresh id for t into dst, for callers that keep the
// bytes in memory they already own.
func newID(dst *[IDLength]byte, t time.Time) {
	var raw [16]byte
	ms := uint64(t.UnixMilli())
	binary.BigEndian.PutUint64(raw[0:8], ms<<16)
	binary.BigEndian.PutUint64(raw[6:14], rand.Uint64())
	binary.BigEndian.PutUint16(raw[14:16], uint16(rand.Uint32()))
	encodeULID(dst, &raw)
}

// encodeULID writes the 128-bit value in raw as 26 base32 characters; the
// first character carries the top 3 bits.
func encodeULID(dst *[IDLength]byte, raw *[16]byte) {
	hi := binary.BigEndian.Uint64(raw[0:8])
	lo := binary.BigEndian.Uint64(raw[8:16])
	for i := IDLength - 1; i >= 0; i-- {
		dst[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
}

// FromContext returns the request's correlation id, set by
// [Middleware.Handler] or [NewContext].
func FromContext(ctx context.Context) (string, bool) { return reqid.FromContext(ctx) }

// NewContext returns a copy of ctx carrying id as the correlation id, for
// work that does not start with an HTTP request (a queue consumer resuming
// a job that carries the id of the request that queued it). An id that
// fails [ValidID] is replaced by a fresh one, so a value read back from a
// queue cannot smuggle anything into logs or headers; [FromContext] reads
// the id stored.
func NewContext(ctx context.Context, id string) context.Context {
	if !ValidID(id) {
		id = NewID(time.Now())
	}
	return reqid.NewContext(ctx, id)
}

// IDFromContext returns the request's correlation id.
//
// Deprecated: use [FromContext].
func IDFromContext(ctx context.Context) (string, bool) { return FromContext(ctx) }

// ContextWithID is [NewContext] that also returns the id stored.
//
// Deprecated: use [NewContext] and [FromContext].
func ContextWithID(ctx context.Context, id string) (context.Context, string) {
	ctx = NewContext(ctx, id)
	id, _ = FromContext(ctx)
	return ctx, id
}

// validHeaderName reports whether s is an HTTP field name (RFC 9110 token).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

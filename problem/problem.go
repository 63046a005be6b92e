// Package problem writes RFC 9457 "application/problem+json" responses.
//
// Every Malai middleware answers errors through [Write]. The writer never
// takes a Go error: the only text a client sees is the title and the safe
// detail the caller chose, so an internal error string (a DSN, a file path,
// a token) cannot leak into a response by accident. The body carries the
// request's correlation id so an operator can find the matching log line.
//
// # Type URIs
//
// A problem's "type" is a URI naming its kind: [DefaultTypeBase] followed
// by a slug ("rate-limited"), which points at the slug's entry in the
// repository's docs/problems.md. A deployment that documents its problems
// elsewhere sets its own base once, in front of everything else, and every
// Malai package's answers follow it:
//
//	types, err := problem.Handler("https://errors.example.com/")
//	if err != nil { ... }
//	srv.Handler = types(app) // "type": "https://errors.example.com/rate-limited"
package problem

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/malai-sec/malai/internal/reqid"
)

// ContentType is the media type of every problem response (RFC 9457 §3).
const ContentType = "application/problem+json"

// DefaultTypeBase prefixes every problem type slug unless a request's
// context names another base ([Handler], [NewContext]). Each slug is
// documented, with the status it travels with, in docs/problems.md of the
// repository, so the type URI dereferences to its meaning.
const DefaultTypeBase = "https://github.com/malai-sec/malai/blob/main/docs/problems.md#"

// TypeBase is the former name of [DefaultTypeBase].
//
// Deprecated: use DefaultTypeBase, or TypeURIFor for a request's base.
const TypeBase = DefaultTypeBase

type baseKey struct{}

// NewContext returns a copy of ctx whose problems use base as the type
// URI prefix. base must be an absolute URI (it is used as given; see
// [Handler] for a validating form).
func NewContext(ctx context.Context, base string) context.Context {
	return context.WithValue(ctx, baseKey{}, base)
}

// TypeBaseFromContext returns the type URI prefix for problems written
// with ctx: the one [NewContext] or [Handler] stored, else
// [DefaultTypeBase].
func TypeBaseFromContext(ctx context.Context) string {
	if b, ok := ctx.Value(baseKey{}).(string); ok && b != "" {
		return b
	}
	return DefaultTypeBase
}

// ErrInvalidConfig is returned by [Handler] for a base that is not an
// absolute URI.
var ErrInvalidConfig = errors.New("problem: invalid config")

// Handler returns middleware that makes every problem written inside it
// (by any Malai package, or [Write] in the application) use base as the
// type URI prefix. base must be an absolute URI such as
// "https://errors.example.com/" or "urn:example:problem:"; the slugs are
// appended to it as they are.
func Handler(base string) (func(http.Handler) http.Handler, error) {
	u, err := url.Parse(base)
	if err != nil || !u.IsAbs() || base != u.String() {
		return nil, fmt.Errorf("%w: type base %q is not an absolute URI", ErrInvalidConfig, base)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), base)))
		})
	}, nil
}

// Problem is one problem response. Type is a stable slug such as
// "rate-limited"; it becomes the request's type base + slug in the body. Detail must be safe
// to show to any client: never an err.Error() of an internal failure.
type Problem struct {
	Status int
	Type   string
	Title  string
	Detail string
	// Extensions are extra members (RFC 9457 §3.2), for example
	// "retry_after". Keys that collide with the standard members are ignored.
	Extensions map[string]any
}

// TypeURI returns the type URI for a slug under [DefaultTypeBase].
func TypeURI(slug string) string { return DefaultTypeBase + slug }

// TypeURIFor returns the type URI for a slug under the base of ctx
// ([TypeBaseFromContext]).
func TypeURIFor(ctx context.Context, slug string) string { return TypeBaseFromContext(ctx) + slug }

type body struct {
	Type          string `json:"type"`
	Title         string `json:"title"`
	Status        int    `json:"status"`
	Detail        string `json:"detail,omitempty"`
	Instance      string `json:"instance,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
}

// Write sends p as application/problem+json. Headers the caller set before
// (WWW-Authenticate, Retry-After) are kept. Write does nothing when the
// request's context is already cancelled: the client is gone and a late
// write would only race with server shutdown.
func Write(w http.ResponseWriter, r *http.Request, p Problem) {
	if r != nil && r.Context().Err() != nil {
		return
	}
	if p.Status < 400 || p.Status > 599 {
		p.Status = http.StatusInternalServerError
	}
	if p.Title == "" {
		p.Title = http.StatusText(p.Status)
	}
	if p.Type == "" {
		p.Type = "about:blank"
	} else if r != nil {
		p.Type = TypeURIFor(r.Context(), p.Type)
	} else {
		p.Type = TypeURI(p.Type)
	}
	b := body{Type: p.Type, Title: p.Title, Status: p.Status, Detail: p.Detail}
	if r != nil {
		if id, ok := reqid.FromContext(r.Context()); ok {
			b.CorrelationID = id
		}
	}
	out, err := marshal(b, p.Extensions)
	if err != nil {
		// Extensions that cannot be encoded are dropped rather than
		// turning a client error into a server error.
		out, _ = json.Marshal(b)
	}
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Content-Length", strconv.Itoa(len(out)+1))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	// A body produced by a previous handler must not be mistaken for ours.
	h.Del("Content-Encoding")
	h.Del("ETag")
	h.Del("Last-Modified")
	w.WriteHeader(p.Status)
	if r != nil && r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(append(out, '\n'))
}

func marshal(b body, ext map[string]any) ([]byte, error) {
	if len(ext) == 0 {
		return json.Marshal(b)
	}
	m := make(map[string]any, len(ext)+6)
	for k, v := range ext {
		m[k] = v
	}
	m["type"] = b.Type
	m["title"] = b.Title
	m["status"] = b.Status
	delete(m, "detail")
	delete(m, "instance")
	delete(m, "correlation_id")
	if b.Detail != "" {
		m["detail"] = b.Detail
	}
	if b.CorrelationID != "" {
		m["correlation_id"] = b.CorrelationID
	}
	return json.Marshal(m)
}

// Common problems shared by several packages. Packages define their own
// beside these with a slug documented in docs/problems.md.
var (
	// Unavailable is the fail-closed answer when a store (Redis,
	// PostgreSQL) cannot be reached.
	Unavailable = Problem{Status: http.StatusServiceUnavailable, Type: "service-unavailable",
		Title: "Service temporarily unavailable", Detail: "A dependency is unavailable; retry later."}
	// Internal hides any unexpected failure behind a generic message.
	Internal = Problem{Status: http.StatusInternalServerError, Type: "internal",
		Title: "Internal server error", Detail: "The request could not be completed."}
)

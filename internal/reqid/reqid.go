// Package reqid carries the request's correlation id in a context.
//
// It lives in internal/ so that every top-level package can read the id
// (for problem+json bodies, logs and audit records) without importing the
// correlation package, which owns how ids are accepted and generated.
package reqid

import "context"

// Key is the context key of the id. A context implementation of its own
// (correlation's per-request state) may answer Value(Key{}) with the id,
// as a string or as a *string into memory it already holds (which saves
// boxing the string on every request), to save the node NewContext would
// add.
type Key struct{}

// NewContext returns a copy of ctx carrying the correlation id.
func NewContext(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, Key{}, id)
}

// FromContext returns the correlation id in ctx, if any.
func FromContext(ctx context.Context) (string, bool) {
	switch id := ctx.Value(Key{}).(type) {
	case string:
		return id, id != ""
	case *string:
		if id != nil {
			return *id, *id != ""
		}
	}
	return "", false
}

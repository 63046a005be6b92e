package correlation

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"

	"github.com/malai-sec/malai/internal/reqid"
)

// Log attribute keys added by [LogHandler].
const (
	LogKeyRequestID = "request_id"
	LogKeyTraceID   = "trace_id"
	LogKeySpanID    = "span_id"
)

// LogHandler is a [slog.Handler] that adds the correlation id
// ([LogKeyRequestID]) and the current span's trace and span ids
// ([LogKeyTraceID], [LogKeySpanID]) from the record's context to every
// record, ahead of the record's own attributes, then passes it on. Ids
// absent from the context are left out. Use the *Context logging methods (InfoContext, LogAttrs) so the
// context reaches the handler.
//
// The ids join the record like any other attribute, so after
// Logger.WithGroup they sit inside the open group. A LogHandler is safe
// for concurrent use when the handler it wraps is.
type LogHandler struct {
	next slog.Handler
}

// NewLogHandler wraps h.
func NewLogHandler(h slog.Handler) *LogHandler { return &LogHandler{next: h} }

// Enabled reports whether the wrapped handler handles records at level.
func (h *LogHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle adds the ids and passes r on.
func (h *LogHandler) Handle(ctx context.Context, r slog.Record) error {
	if ctx == nil {
		return h.next.Handle(ctx, r)
	}
	var buf [16]slog.Attr
	attrs := appendIDs(buf[:0], ctx)
	if len(attrs) == 0 {
		return h.next.Handle(ctx, r)
	}
	// A fresh record with the ids first and the record's attributes after
	// them: one allocation at most, and nothing written into an array the
	// caller's copy of r shares.
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		attrs = append(attrs, a)
		return true
	})
	out.AddAttrs(attrs...)
	return h.next.Handle(ctx, out)
}

// appendIDs appends the correlation id and the span's trace and span ids
// found in ctx.
func appendIDs(dst []slog.Attr, ctx context.Context) []slog.Attr {
	if id, ok := reqid.FromContext(ctx); ok {
		dst = append(dst, slog.String(LogKeyRequestID, id))
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		dst = append(dst,
			slog.String(LogKeyTraceID, sc.TraceID().String()),
			slog.String(LogKeySpanID, sc.SpanID().String()))
	}
	return dst
}

// WithAttrs returns a LogHandler around the wrapped handler's WithAttrs.
func (h *LogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &LogHandler{next: h.next.WithAttrs(attrs)}
}

// WithGroup returns a LogHandler around the wrapped handler's WithGroup.
func (h *LogHandler) WithGroup(name string) slog.Handler {
	return &LogHandler{next: h.next.WithGroup(name)}
}

// Secret is a string that redacts itself wherever it is printed or
// logged: slog (it is a [slog.LogValuer]), fmt verbs, and JSON or text
// encoding. Reveal returns the value for the one place that needs it.
type Secret string

// Redacted is what a [Secret] prints as.
const Redacted = "[REDACTED]"

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// String implements fmt.Stringer.
func (Secret) String() string { return Redacted }

// GoString implements fmt.GoStringer.
func (Secret) GoString() string { return `correlation.Secret("` + Redacted + `")` }

// MarshalText implements encoding.TextMarshaler, which encoding/json uses.
func (Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// RedactedAttr returns an attribute that logs key with a redacted value,
// whatever value is given; use it where a value is known to be sensitive
// but is not a [Secret].
func RedactedAttr(key string) slog.Attr { return slog.String(key, Redacted) }

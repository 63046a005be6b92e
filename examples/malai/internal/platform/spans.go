package platform

import (
	"context"
	"sync"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// DefaultSpanBuffer is how many finished spans a [SpanRing] keeps: under
// a second of a component's spans at full load, hours of an idle one's.
// Every kept span is live heap the garbage collector marks on every
// cycle: at 4096 per component the rings held about half of the
// reference system's live heap under load (35 of 64 MB), and going to
// 1024 cut 6–10 % of each request's CPU (BENCHMARKS.md, whole chain).
// A deployment that needs more history exports to a collector.
const DefaultSpanBuffer = 1024

// SpanRing is a span exporter that keeps only the most recent spans, a
// fixed number, in memory: what a component without an OTLP collector
// exports to, so tracing never grows without bound. It is safe for
// concurrent use.
type SpanRing struct {
	mu    sync.Mutex
	buf   []sdktrace.ReadOnlySpan
	next  int
	full  bool
	total uint64
}

// NewSpanRing returns a ring keeping the last n spans (n ≤ 0:
// DefaultSpanBuffer).
func NewSpanRing(n int) *SpanRing {
	if n <= 0 {
		n = DefaultSpanBuffer
	}
	return &SpanRing{buf: make([]sdktrace.ReadOnlySpan, n)}
}

// ExportSpans implements sdktrace.SpanExporter.
func (r *SpanRing) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range spans {
		r.buf[r.next] = s
		r.next = (r.next + 1) % len(r.buf)
		r.full = r.full || r.next == 0
		r.total++
	}
	return nil
}

// Shutdown implements sdktrace.SpanExporter.
func (r *SpanRing) Shutdown(context.Context) error { return nil }

// GetSpans returns the kept spans, oldest first.
func (r *SpanRing) GetSpans() tracetest.SpanStubs {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []sdktrace.ReadOnlySpan
	if r.full {
		out = append(out, r.buf[r.next:]...)
	}
	out = append(out, r.buf[:r.next]...)
	return tracetest.SpanStubsFromReadOnlySpans(out)
}

// Total is how many spans were exported since start, kept or not.
func (r *SpanRing) Total() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

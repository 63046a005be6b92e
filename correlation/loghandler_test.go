package correlation

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"testing/slogtest"

	"go.opentelemetry.io/otel/trace"
)

// TestLogHandlerConformance runs the standard library's handler test
// suite through the wrapper.
func TestLogHandlerConformance(t *testing.T) {
	var buf bytes.Buffer
	newHandler := func(*testing.T) slog.Handler {
		buf.Reset()
		return NewLogHandler(slog.NewJSONHandler(&buf, nil))
	}
	result := func(t *testing.T) map[string]any {
		var m map[string]any
		if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	slogtest.Run(t, newHandler, result)
}

func TestLogHandlerAddsIDs(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	spanCtx := trace.ContextWithSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
	idCtx, id := ContextWithID(context.Background(), "01JD8Z6X8W2Q4K0V3N5R7T9Y1B")
	bothCtx, _ := ContextWithID(spanCtx, id)
	tests := []struct {
		name string
		ctx  context.Context
		want map[string]any // nil value: key must be absent
	}{
		{"nothing", context.Background(), map[string]any{LogKeyRequestID: nil, LogKeyTraceID: nil, LogKeySpanID: nil}},
		{"id only", idCtx, map[string]any{LogKeyRequestID: id, LogKeyTraceID: nil}},
		{"span only", spanCtx, map[string]any{LogKeyRequestID: nil, LogKeyTraceID: tid.String(), LogKeySpanID: sid.String()}},
		{"both", bothCtx, map[string]any{LogKeyRequestID: id, LogKeyTraceID: tid.String(), LogKeySpanID: sid.String()}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			// Six attributes overflow the record's inline storage, which
			// is where an unsafe append would show.
			slog.New(NewLogHandler(slog.NewJSONHandler(&buf, nil))).With("svc", "ledger").
				InfoContext(tc.ctx, "m", "a", 1, "b", 2, "c", 3, "d", 4, "e", 5, "f", 6)
			var got map[string]any
			if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
			if got["svc"] != "ledger" || got["f"] != float64(6) || strings.Contains(buf.String(), "!BUG") {
				t.Errorf("record mangled: %s", buf.String())
			}
		})
	}
}

func TestSecretRedacts(t *testing.T) {
	s := Secret("hunter2-token")
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	logger.Info("x", "token", s, "group", slog.GroupValue(slog.Any("inner", s)), RedactedAttr("password"))
	js, _ := json.Marshal(map[string]any{"token": s})
	out := buf.String() + string(js) + fmt.Sprintf("%v %+v %#v %s %q %x", s, s, s, s, s, s) + fmt.Sprint(s, []any{s})
	if strings.Contains(out, "hunter2") || strings.Contains(out, fmt.Sprintf("%x", "hunter2")) {
		t.Fatalf("secret leaked: %s", out)
	}
	if strings.Count(out, Redacted) != 11 {
		t.Fatalf("want 11 redactions (and one hex of it): %s", out)
	}
	if s.Reveal() != "hunter2-token" {
		t.Fatal("Reveal lost the value")
	}
}

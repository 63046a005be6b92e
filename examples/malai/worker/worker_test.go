package worker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/malai-sec/malai/correlation"
	"github.com/malai-sec/malai/examples/malai/internal/queue"
)

// The worker acknowledges a job the ledger answered (2xx or 4xx) and
// leaves it queued when the ledger is busy with it (409), throttling
// (429), failing (5xx) or unreachable.
func TestAckOrRetry(t *testing.T) {
	tests := []struct {
		name   string
		status int
		down   bool
		retry  bool
	}{
		{"created", 201, false, false},
		{"replayed", 200, false, false},
		{"refused for good (422)", 422, false, false},
		{"in flight elsewhere (409)", 409, false, true},
		{"throttled (429)", 429, false, true},
		{"ledger failing (503)", 503, false, true},
		{"ledger unreachable", 0, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var gotID, gotPath atomic.Value
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				gotID.Store(r.Header.Get(correlation.HeaderName))
				gotPath.Store(r.URL.Path)
				b, _ := io.ReadAll(r.Body)
				if string(b) != `{"job":1}` {
					t.Errorf("ledger got body %q", b)
				}
				w.WriteHeader(tc.status)
			}))
			url := srv.URL
			if tc.down {
				srv.Close()
			} else {
				defer srv.Close()
			}
			cfg := Config{
				LedgerURL: url,
				Client:    &http.Client{Transport: correlation.Transport(nil, nil)},
				Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
			}
			err := handle(context.Background(), cfg, queue.Message{ID: "1", CorrelationID: "01JD8ZQ3ABCDEFGH", Body: []byte(`{"job":1}`), Deliveries: 1})
			if got := errors.Is(err, ErrRetry); got != tc.retry {
				t.Fatalf("handle = %v; retry %v, want %v", err, got, tc.retry)
			}
			if tc.down {
				return
			}
			if gotPath.Load() != "/internal/v1/transfers" {
				t.Fatalf("posted to %v", gotPath.Load())
			}
			if gotID.Load() != "01JD8ZQ3ABCDEFGH" {
				t.Fatalf("the job's correlation id did not reach the ledger: %q", gotID.Load())
			}
		})
	}
}

func TestRunNeedsConfig(t *testing.T) {
	if err := Run(context.Background(), Config{}); err == nil {
		t.Fatal("Run without a queue, client or ledger URL started")
	}
}

package worker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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
		{"forged or unknown job (403, 404)", 404, false, false},
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
			_, _, err := handle(context.Background(), cfg, queue.Message{ID: "1", CorrelationID: "01JD8ZQ3ABCDEFGH", Body: []byte(`{"job":1}`), Deliveries: 1})
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

// A failing ledger leaves the job queued, slows the worker down and shows
// in Ready; once the ledger answers, the job is done and Ready is clear.
func TestLedgerOutageBacksOffAndReports(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if failing.Load() {
			w.WriteHeader(503)
			return
		}
		w.WriteHeader(200)
	}))
	defer srv.Close()
	q := queue.NewMemory(queue.Options{MinIdle: time.Millisecond, Block: 5 * time.Millisecond}, nil)
	w, err := New(Config{Queue: q, LedgerURL: srv.URL, Client: srv.Client(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Publish(context.Background(), queue.Message{Body: []byte(`{"job":"j"}`)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for calls.Load() < 3 || w.Ready() == nil {
		if time.Now().After(deadline) {
			t.Fatalf("calls %d, ready %v", calls.Load(), w.Ready())
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := w.Ready(); !strings.Contains(err.Error(), "ledger failing") {
		t.Fatalf("Ready = %v", err)
	}
	failing.Store(false)
	for q.Pending() != 0 || w.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("job still pending (%d) or not ready (%v) after the ledger recovered", q.Pending(), w.Ready())
		}
		time.Sleep(2 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
}

func TestQueueErrorShowsInReady(t *testing.T) {
	w, err := New(Config{Queue: queue.NewMemory(queue.Options{}, nil), LedgerURL: "http://x", Client: http.DefaultClient})
	if err != nil {
		t.Fatal(err)
	}
	w.QueueError(errors.New("dial tcp: connection refused"))
	if err := w.Ready(); err == nil || !strings.Contains(err.Error(), "queue failing") {
		t.Fatalf("Ready = %v", err)
	}
	w.QueueError(nil)
	if err := w.Ready(); err != nil {
		t.Fatalf("Ready after recovery = %v", err)
	}
}

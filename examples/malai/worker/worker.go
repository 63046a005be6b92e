// Package worker is the reference system's asynchronous transfer worker.
// It consumes jobs the ledger signed and queued, and hands each back to the
// ledger's internal route with its own service token (OAuth2 client
// credentials: the worker has its own identity and no user's token). The
// signed job carries the client's original Idempotency-Key, so a
// redelivered or re-run job meets the record its first run left.
package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/malai-sec/malai/examples/malai/internal/queue"
	"github.com/malai-sec/malai/internal/reqid"
)

// Config configures the worker.
type Config struct {
	Queue queue.Queue
	// LedgerURL is the ledger's base URL.
	LedgerURL string
	// Client calls the ledger: it must attach the worker's service token
	// (for example an oauth2 clientcredentials client) and forward the
	// correlation id (correlation.Transport).
	Client *http.Client
	Logger *slog.Logger
	// Name identifies this consumer in the queue.
	Name string
}

// ErrRetry marks a job left on the queue for redelivery.
var ErrRetry = errors.New("worker: job will be retried")

// Run consumes jobs until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Queue == nil || cfg.Client == nil || cfg.LedgerURL == "" {
		return errors.New("worker: Queue, Client and LedgerURL are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Name == "" {
		cfg.Name = "worker-1"
	}
	return cfg.Queue.Consume(ctx, cfg.Name, func(ctx context.Context, m queue.Message) error {
		return handle(ctx, cfg, m)
	})
}

func handle(ctx context.Context, cfg Config, m queue.Message) error {
	if m.CorrelationID != "" {
		ctx = reqid.NewContext(ctx, m.CorrelationID)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.LedgerURL+"/internal/v1/transfers", bytes.NewReader(m.Body))
	if err != nil {
		return err
	}
	// The body is the job the ledger signed; it carries the client's
	// Idempotency-Key, so the ledger meets the same record on every run.
	req.Header.Set("Content-Type", "application/json")
	resp, err := cfg.Client.Do(req)
	if err != nil {
		cfg.Logger.WarnContext(ctx, "worker: ledger unreachable; job stays queued", "deliveries", m.Deliveries, "error", err.Error())
		return fmt.Errorf("%w: %v", ErrRetry, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode == http.StatusConflict, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		// In flight elsewhere, back-pressure, or a failure that released
		// the claim: leave the job for redelivery.
		cfg.Logger.InfoContext(ctx, "worker: job deferred", "status", resp.StatusCode, "deliveries", m.Deliveries)
		return fmt.Errorf("%w: status %d", ErrRetry, resp.StatusCode)
	default:
		cfg.Logger.InfoContext(ctx, "worker: job done", "status", resp.StatusCode, "replayed", resp.Header.Get("Idempotent-Replayed") == "true", "deliveries", m.Deliveries)
		return nil
	}
}

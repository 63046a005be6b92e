// Package worker is the reference system's asynchronous transfer worker.
// It consumes the jobs the ledger accepted and queued, and hands each back
// to the ledger's internal route with its own service token (the worker
// has its own identity and no user's token). A queued job is only an id
// and the ledger's MAC over it: the job itself is in the ledger's chain,
// and the ledger runs it at most once however often it is delivered.
//
// # Faults
//
// The worker survives its dependencies failing. A queue that errors is
// polled again after a backoff (the queue's Consume reports each failure
// to [Worker.QueueError]); a ledger that is unreachable or answers 5xx,
// 409 or 429 leaves the job queued for redelivery and slows the worker
// down (doubling pauses up to MaxBackoff) instead of hammering it.
// [Worker.Ready] says which dependency is failing and since when, for a
// readiness probe.
package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/malai-sec/malai/correlation"
	"github.com/malai-sec/malai/examples/malai/internal/queue"
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
	// MaxBackoff caps the pause after a failed hand-off. Default 5 s.
	MaxBackoff time.Duration
	// Now is the clock for Ready's "since". Default time.Now.
	Now func() time.Time
	// TracerProvider, when set, records one consumer span per delivery
	// that continues the trace the message carries (Message.TraceParent):
	// the job's log lines carry that trace id, and the call to the ledger
	// (through a correlation.Transport) propagates it. Nil: no spans.
	TracerProvider trace.TracerProvider
	// MeterProvider, when set, receives the jobs' RED series:
	// malai.worker.jobs (deliveries, by outcome: done, deferred, dropped,
	// unreachable) and malai.worker.job.duration (seconds, by outcome).
	MeterProvider metric.MeterProvider
	// Alarm, when set, counts every delivery: the ledger's status, or 503
	// when it could not be reached, so a failing hand-off fires the
	// worker's error-rate alarm like a failing request does elsewhere.
	Alarm *correlation.Alarm
}

// Job metrics (see Config.MeterProvider).
const (
	MetricJobs        = "malai.worker.jobs"
	MetricJobDuration = "malai.worker.job.duration"
)

// Outcomes of one delivery, the "outcome" attribute of the job metrics.
const (
	OutcomeDone        = "done"
	OutcomeDeferred    = "deferred"
	OutcomeDropped     = "dropped"
	OutcomeUnreachable = "unreachable"
)

// instrumentation names the worker's tracer and meter.
const instrumentation = "github.com/malai-sec/malai/examples/malai/worker"

// ErrRetry marks a job left on the queue for redelivery.
var ErrRetry = errors.New("worker: job will be retried")

// Worker consumes jobs. It is safe for concurrent use.
type Worker struct {
	cfg Config

	tracer   trace.Tracer
	jobs     metric.Int64Counter
	duration metric.Float64Histogram

	mu        sync.Mutex
	queueErr  error
	queueFrom time.Time
	ledgerErr error
	ledgerAt  time.Time
	backoff   time.Duration
}

// New validates cfg.
func New(cfg Config) (*Worker, error) {
	if cfg.Queue == nil || cfg.Client == nil || cfg.LedgerURL == "" {
		return nil, errors.New("worker: Queue, Client and LedgerURL are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Name == "" {
		cfg.Name = "worker-1"
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	tp, mp := cfg.TracerProvider, cfg.MeterProvider
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	w := &Worker{cfg: cfg, tracer: tp.Tracer(instrumentation)}
	meter := mp.Meter(instrumentation)
	var err1, err2 error
	w.jobs, err1 = meter.Int64Counter(MetricJobs, metric.WithDescription("Job deliveries handled, by outcome."))
	w.duration, err2 = meter.Float64Histogram(MetricJobDuration, metric.WithUnit("s"),
		metric.WithDescription("Time to hand one delivery to the ledger, by outcome."))
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("worker: metrics: %w", err)
	}
	return w, nil
}

// Run consumes jobs until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	w, err := New(cfg)
	if err != nil {
		return err
	}
	return w.Run(ctx)
}

// Run consumes jobs until ctx ends. It returns only then (or on a queue
// that refuses to start): a failing queue or ledger makes it wait, not
// stop.
func (w *Worker) Run(ctx context.Context) error {
	return w.cfg.Queue.Consume(ctx, w.cfg.Name, w.handle)
}

// QueueError records a queue failure (nil: the queue answers again). Pass
// it as the queue's Options.OnError.
func (w *Worker) QueueError(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case err == nil:
		if w.queueErr != nil {
			w.cfg.Logger.Info("worker: queue reachable again")
		}
		w.queueErr = nil
	case w.queueErr == nil:
		w.queueErr, w.queueFrom = err, w.cfg.Now()
		w.cfg.Logger.Warn("worker: queue unavailable; backing off", "error", err.Error())
	default:
		w.queueErr = err
	}
}

// Ready reports nil when the worker is consuming, or why not: the queue
// failing, or the ledger failing on the last hand-off.
func (w *Worker) Ready() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	var errs []error
	if w.queueErr != nil {
		errs = append(errs, fmt.Errorf("worker: queue failing since %s: %w", w.queueFrom.UTC().Format(time.RFC3339), w.queueErr))
	}
	if w.ledgerErr != nil {
		errs = append(errs, fmt.Errorf("worker: ledger failing since %s: %w", w.ledgerAt.UTC().Format(time.RFC3339), w.ledgerErr))
	}
	return errors.Join(errs...)
}

func (w *Worker) handle(ctx context.Context, m queue.Message) error {
	if m.TraceParent != "" {
		ctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": m.TraceParent})
	}
	ctx, span := w.tracer.Start(ctx, "worker job", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.Int64("malai.job.deliveries", m.Deliveries)))
	start := time.Now()
	outcome, status, err := handle(ctx, w.cfg, m)
	if w.cfg.Alarm != nil {
		w.cfg.Alarm.Record(status)
	}
	set := metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", outcome)))
	w.jobs.Add(ctx, 1, set)
	w.duration.Record(ctx, time.Since(start).Seconds(), set)
	span.SetAttributes(attribute.String("malai.job.outcome", outcome))
	if err != nil {
		span.SetStatus(codes.Error, outcome)
	}
	span.End()
	w.mu.Lock()
	if err == nil {
		w.ledgerErr, w.backoff = nil, 0
		w.mu.Unlock()
		return nil
	}
	if w.ledgerErr == nil {
		w.ledgerAt = w.cfg.Now()
	}
	w.ledgerErr = err
	w.backoff = min(max(2*w.backoff, 50*time.Millisecond), w.cfg.MaxBackoff)
	pause := w.backoff
	w.mu.Unlock()
	// The job stays queued; pause before the next one so a failing ledger
	// is not hammered.
	t := time.NewTimer(pause)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return err
}

// handle hands m to the ledger and reports the outcome (nil error:
// acknowledge).
func handle(ctx context.Context, cfg Config, m queue.Message) (string, int, error) {
	if m.CorrelationID != "" {
		ctx = correlation.NewContext(ctx, m.CorrelationID)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.LedgerURL+"/internal/v1/transfers", bytes.NewReader(m.Body))
	if err != nil {
		return OutcomeUnreachable, http.StatusServiceUnavailable, err
	}
	// The body is the job message the ledger signed; the job itself is in
	// the ledger's chain, so every delivery meets the same job.
	req.Header.Set("Content-Type", "application/json")
	resp, err := cfg.Client.Do(req)
	if err != nil {
		cfg.Logger.WarnContext(ctx, "worker: ledger unreachable; job stays queued", "deliveries", m.Deliveries, "error", err.Error())
		return OutcomeUnreachable, http.StatusServiceUnavailable, fmt.Errorf("%w: %v", ErrRetry, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode == http.StatusConflict, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		// Busy, back-pressure, or a failure: leave the job for redelivery.
		cfg.Logger.InfoContext(ctx, "worker: job deferred", "status", resp.StatusCode, "deliveries", m.Deliveries)
		return OutcomeDeferred, resp.StatusCode, fmt.Errorf("%w: status %d", ErrRetry, resp.StatusCode)
	case resp.StatusCode >= 400:
		// Unknown, forged or malformed: it can never run.
		cfg.Logger.WarnContext(ctx, "worker: job refused by the ledger; dropped", "status", resp.StatusCode, "deliveries", m.Deliveries)
		return OutcomeDropped, resp.StatusCode, nil
	default:
		cfg.Logger.InfoContext(ctx, "worker: job done", "status", resp.StatusCode, "deliveries", m.Deliveries)
		return OutcomeDone, resp.StatusCode, nil
	}
}

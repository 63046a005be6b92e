// Package platform is what every component of the reference system shares:
// telemetry (JSON logs sealed at rest, traces, RED metrics in Prometheus
// form, the error-rate alarm), the key file that stands in for a managed
// key service, and the TLS server set-up.
package platform

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"

	"github.com/malai-sec/malai/clientip"
	"github.com/malai-sec/malai/correlation"
)

// Telemetry is one component's observability.
type Telemetry struct {
	Component string
	// Logger writes JSON records carrying request_id, trace_id and span_id.
	Logger *slog.Logger
	// Tracer records spans; Spans keeps the most recent ones (a bounded
	// ring) for in-process inspection.
	Tracer *sdktrace.TracerProvider
	Spans  *SpanRing
	// Meter feeds the Prometheus registry served by Metrics.
	Meter   *sdkmetric.MeterProvider
	Metrics http.Handler
	// Alarm watches the 5xx ratio.
	Alarm *correlation.Alarm
	// Middleware is the correlation middleware wired to all of the above.
	Middleware *correlation.Middleware

	closers []func() error
}

// TelemetryConfig configures NewTelemetry.
type TelemetryConfig struct {
	Component string
	// LogDir, when set, receives <component>-<start time>.log.enc: the
	// JSON log of this run sealed with Ring, one stream per start so no
	// earlier run's log is overwritten, locked while this process writes
	// it ([StreamLive]). Nothing plaintext is written there.
	LogDir string
	Ring   *correlation.KeyRing
	// Mirror, when set, also receives the plaintext JSON log (the
	// terminal, in development).
	Mirror io.Writer
	// TrustIncoming decides which hops may set the correlation id.
	TrustIncoming func(*http.Request) bool
	// ClientIP resolves the client address for access logs (and puts it
	// in the request context for the layers inside). Nil: the TCP peer.
	ClientIP *clientip.Resolver
	// OnAlarm is called when the error-rate alarm fires.
	OnAlarm func(correlation.AlarmEvent)
	// Alarm tunes the error-rate alarm. Zero fields take the library's
	// defaults (a one-minute window, 5% of at least 20 requests, resolved
	// below half of that), except MinHold: default DefaultAlarmHold. Name,
	// Logger, MeterProvider, OnFire and OnResolve are NewTelemetry's.
	Alarm correlation.AlarmConfig
	// AlarmHook receives every state change of the alarm (fired,
	// resolved) besides its log line and its malai_alarm_firing gauge.
	AlarmHook AlarmHook
	// SpanBuffer is how many recent spans Spans keeps (0:
	// DefaultSpanBuffer).
	SpanBuffer int
	// OTLPEndpoint, when set, also exports every span to an OpenTelemetry
	// collector over OTLP/HTTP: its base URL ("http://127.0.0.1:4318",
	// "/v1/traces" appended) or the full traces URL (with a path), http
	// or https. Export is batched with a bounded queue: spans beyond it
	// are dropped, never buffered without bound. Empty: the bounded ring
	// only.
	OTLPEndpoint string
	// OTLPRoots are the roots an https OTLPEndpoint is verified with
	// (nil: the host's).
	OTLPRoots *x509.CertPool
}

// DefaultAlarmHold is how long the alarm keeps a state before it may
// change again, unless TelemetryConfig.Alarm.MinHold says otherwise.
const DefaultAlarmHold = 30 * time.Second

// NewTelemetry builds a component's telemetry.
func NewTelemetry(cfg TelemetryConfig) (*Telemetry, error) {
	if err := checkOTLPEndpoint(cfg.OTLPEndpoint); err != nil {
		return nil, err
	}
	t := &Telemetry{Component: cfg.Component}
	var sinks []io.Writer
	if cfg.LogDir != "" {
		if cfg.Ring == nil {
			return nil, errors.New("platform: a log directory needs a key ring")
		}
		if err := os.MkdirAll(cfg.LogDir, 0o700); err != nil {
			return nil, err
		}
		name := cfg.Component + "-" + time.Now().UTC().Format("20060102T150405.000000000Z") + ".log.enc"
		f, err := os.OpenFile(filepath.Join(cfg.LogDir, name), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
		if err != nil {
			return nil, err
		}
		// Held while this process writes, so "malai logs" can tell a live
		// stream from one a crash cut ([StreamLive]).
		if err := lockStream(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("platform: lock log stream: %w", err)
		}
		ew, err := correlation.NewEncryptedWriter(f, cfg.Ring)
		if err != nil {
			f.Close()
			return nil, err
		}
		sinks = append(sinks, ew)
		t.closers = append(t.closers, ew.Close, f.Close)
	}
	if cfg.Mirror != nil {
		sinks = append(sinks, cfg.Mirror)
	}
	var out io.Writer = io.Discard
	switch len(sinks) {
	case 1:
		out = sinks[0]
	case 2:
		out = &teeLines{ws: sinks}
	}
	t.Logger = slog.New(correlation.NewLogHandler(slog.NewJSONHandler(out, nil))).With("component", cfg.Component)

	res := resource.NewSchemaless(semconv.ServiceName("malai-" + cfg.Component))
	t.Spans = NewSpanRing(cfg.SpanBuffer)
	tracerOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSyncer(t.Spans)}
	if cfg.OTLPEndpoint != "" {
		// otlpQueue spans wait for the collector (a few seconds of
		// load): past it the SDK drops spans, never blocks a request.
		const otlpQueue = 4096
		// A collector that is down costs a batch a few seconds of retries,
		// never a minute, and never blocks a request (export is batched).
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(otlpTracesURL(cfg.OTLPEndpoint)), otlptracehttp.WithTimeout(5 * time.Second),
			otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: true, InitialInterval: 250 * time.Millisecond, MaxInterval: time.Second, MaxElapsedTime: 5 * time.Second})}
		if cfg.OTLPRoots != nil {
			opts = append(opts, otlptracehttp.WithTLSClientConfig(&tls.Config{RootCAs: cfg.OTLPRoots, MinVersion: tls.VersionTLS12}))
		}
		exp, err := otlptracehttp.New(context.Background(), opts...)
		if err != nil {
			for _, c := range t.closers {
				c()
			}
			return nil, fmt.Errorf("platform: OTLP exporter: %w", err)
		}
		tracerOpts = append(tracerOpts, sdktrace.WithBatcher(exp, sdktrace.WithMaxQueueSize(otlpQueue)))
	}
	t.Tracer = sdktrace.NewTracerProvider(tracerOpts...)

	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("platform: prometheus exporter: %w", err)
	}
	t.Meter = sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(exp))
	t.Metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})

	hook, err := newAlarmHook(cfg.Component, cfg.AlarmHook, t.Logger)
	if err != nil {
		return nil, err
	}
	// Closed newest first: the alarm's ticker, then the hook, then the
	// log the hook reports to.
	t.closers = append([]func() error{hook.close}, t.closers...)
	ac := cfg.Alarm
	ac.Name, ac.Logger, ac.MeterProvider = cfg.Component+"_http_error_rate", t.Logger, t.Meter
	if ac.MinHold == 0 {
		ac.MinHold = DefaultAlarmHold
	}
	ac.OnFire = func(ev correlation.AlarmEvent) {
		hook.send(ev)
		if cfg.OnAlarm != nil {
			cfg.OnAlarm(ev)
		}
	}
	ac.OnResolve = hook.send
	if t.Alarm, err = correlation.NewAlarm(ac); err != nil {
		return nil, err
	}
	// Evaluate on a ticker too, so a firing alarm resolves once traffic stops.
	actx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = t.Alarm.Run(actx, 0) }()
	t.closers = append([]func() error{func() error { stop(); <-done; return nil }}, t.closers...)
	t.Middleware, err = correlation.New(correlation.Config{
		TrustIncoming:  cfg.TrustIncoming,
		Logger:         t.Logger,
		TracerProvider: t.Tracer,
		MeterProvider:  t.Meter,
		Alarm:          t.Alarm,
		ClientIP:       cfg.ClientIP,
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Close flushes and closes the log stream and the providers.
func (t *Telemetry) Close() error {
	// Bounded: a collector that does not answer must not hold a stop.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := []error{t.Tracer.Shutdown(ctx), t.Meter.Shutdown(ctx)}
	for _, c := range t.closers {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}

// teeLines writes each log line to every sink, so one slow or failed sink
// does not reorder another.
type teeLines struct {
	mu sync.Mutex
	ws []io.Writer
}

func (t *teeLines) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var first error
	for _, w := range t.ws {
		if _, err := w.Write(p); err != nil && first == nil {
			first = err
		}
	}
	return len(p), first
}

package otelmetric

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/idempotency"
	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/ratelimit"
	"github.com/malai-sec/malai/rbac"
)

// ScopeName names the meter.
const ScopeName = "github.com/malai-sec/malai/otelmetric"

// Metrics holds the instruments. Build it with [New]; it is safe for
// concurrent use.
type Metrics struct {
	meter metric.Meter

	verifications metric.Int64Counter
	refreshes     metric.Int64Counter
	decisions     metric.Int64Counter
	auditEvents   metric.Int64Counter
	commitSize    metric.Int64Histogram
	commitTime    metric.Float64Histogram

	attrMu sync.RWMutex
	attrs  map[attrKey][]metric.AddOption

	mu      sync.Mutex
	keySets map[string]keySetState // issuer → last refresh
}

type keySetState struct {
	goodAt time.Time // when the key set in use was fetched
	keys   int
}

// New creates the instruments on mp's meter.
func New(mp metric.MeterProvider) (*Metrics, error) {
	if mp == nil {
		return nil, errors.New("otelmetric: nil MeterProvider")
	}
	m := &Metrics{meter: mp.Meter(ScopeName), keySets: map[string]keySetState{}, attrs: map[attrKey][]metric.AddOption{}}
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	var err error
	m.verifications, err = m.meter.Int64Counter("malai.jwtverify.verifications", metric.WithUnit("{token}"),
		metric.WithDescription("Bearer tokens verified or refused, by reason."))
	add(err)
	m.refreshes, err = m.meter.Int64Counter("malai.jwtverify.jwks.refreshes", metric.WithUnit("{fetch}"),
		metric.WithDescription("Key-set fetch attempts, by issuer, trigger and outcome."))
	add(err)
	m.decisions, err = m.meter.Int64Counter("malai.rbac.decisions", metric.WithUnit("{decision}"),
		metric.WithDescription("Authorisation decisions, by outcome and reason."))
	add(err)
	m.auditEvents, err = m.meter.Int64Counter("malai.auditlog.events", metric.WithUnit("{event}"),
		metric.WithDescription("Audit events committed to the store, or failed."))
	add(err)
	m.commitSize, err = m.meter.Int64Histogram("malai.auditlog.commit.size", metric.WithUnit("{event}"),
		metric.WithDescription("Events per store commit (group-commit batch size)."),
		metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096))
	add(err)
	m.commitTime, err = m.meter.Float64Histogram("malai.auditlog.commit.duration", metric.WithUnit("s"),
		metric.WithDescription("Time the store took to make a commit durable."),
		metric.WithExplicitBucketBoundaries(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1))
	add(err)
	_, err = m.meter.Float64ObservableGauge("malai.jwtverify.jwks.age", metric.WithUnit("s"),
		metric.WithDescription("Seconds since the key set in use was fetched; tokens are refused past the issuer's MaxStaleness."),
		metric.WithFloat64Callback(m.observeAge))
	add(err)
	_, err = m.meter.Int64ObservableGauge("malai.jwtverify.jwks.keys", metric.WithUnit("{key}"),
		metric.WithDescription("Usable keys in the key set in use."),
		metric.WithInt64Callback(m.observeKeys))
	add(err)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("otelmetric: %w", err)
	}
	return m, nil
}

// attrKey identifies one attribute set of one hook; looking it up in a
// map allocates nothing.
type attrKey struct {
	hook       byte
	a, b       string
	cached, ok bool
}

// set returns the cached options for k, building them with kv the first
// time. The slice is reused, so passing it to Add allocates nothing.
func (m *Metrics) set(k attrKey, kv func() []attribute.KeyValue) []metric.AddOption {
	m.attrMu.RLock()
	o, ok := m.attrs[k]
	m.attrMu.RUnlock()
	if ok {
		return o
	}
	m.attrMu.Lock()
	defer m.attrMu.Unlock()
	if o, ok := m.attrs[k]; ok {
		return o
	}
	o = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(kv()...))}
	m.attrs[k] = o
	return o
}

func outcome(ok bool, yes, no string) string {
	if ok {
		return yes
	}
	return no
}

// Verifications returns a [jwtverify.Config.Observe] hook counting every
// verification by outcome, reason and whether the cache answered.
func (m *Metrics) Verifications() func(context.Context, jwtverify.Event) {
	return func(ctx context.Context, e jwtverify.Event) {
		k := attrKey{hook: 'v', a: string(e.Reason), cached: e.Cached, ok: e.Accepted}
		m.verifications.Add(ctx, 1, m.set(k, func() []attribute.KeyValue {
			return []attribute.KeyValue{attribute.String("outcome", outcome(e.Accepted, "accepted", "refused")),
				attribute.String("reason", string(e.Reason)), attribute.Bool("cached", e.Cached)}
		})...)
	}
}

// KeySetRefreshes returns a [jwtverify.Config.OnRefresh] hook counting
// fetches and feeding the key-set age and size gauges.
func (m *Metrics) KeySetRefreshes() func(jwtverify.RefreshEvent) {
	return func(e jwtverify.RefreshEvent) {
		// The gauges' state is set before the fetch is counted, so a reader
		// that sees the fetch also sees the key set it installed.
		if e.Keys != 0 || e.Err == nil || e.Age != 0 { // else never had a key set: nothing to age
			m.mu.Lock()
			m.keySets[e.Issuer] = keySetState{goodAt: time.Now().Add(-e.Age), keys: e.Keys}
			m.mu.Unlock()
		}
		k := attrKey{hook: 'r', a: e.Issuer, b: e.Trigger, ok: e.Err == nil}
		m.refreshes.Add(context.Background(), 1, m.set(k, func() []attribute.KeyValue {
			return []attribute.KeyValue{attribute.String("issuer", e.Issuer), attribute.String("trigger", e.Trigger),
				attribute.String("outcome", outcome(e.Err == nil, "ok", "error"))}
		})...)
	}
}

func (m *Metrics) observeAge(_ context.Context, o metric.Float64Observer) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for iss, st := range m.keySets {
		o.Observe(time.Since(st.goodAt).Seconds(), metric.WithAttributes(attribute.String("issuer", iss)))
	}
	return nil
}

func (m *Metrics) observeKeys(_ context.Context, o metric.Int64Observer) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for iss, st := range m.keySets {
		o.Observe(int64(st.keys), metric.WithAttributes(attribute.String("issuer", iss)))
	}
	return nil
}

// Decisions returns a [rbac.Config.OnDecision] hook counting decisions by
// outcome, reason and cache; it then calls next (an audit hook), if any.
func (m *Metrics) Decisions(next func(*http.Request, rbac.Decision)) func(*http.Request, rbac.Decision) {
	return func(r *http.Request, d rbac.Decision) {
		k := attrKey{hook: 'd', a: string(d.Reason), cached: d.Cached, ok: d.Allowed}
		m.decisions.Add(r.Context(), 1, m.set(k, func() []attribute.KeyValue {
			return []attribute.KeyValue{attribute.String("outcome", outcome(d.Allowed, "allowed", "denied")),
				attribute.String("reason", string(d.Reason)), attribute.Bool("cached", d.Cached)}
		})...)
		if next != nil {
			next(r, d)
		}
	}
}

// Commits returns an [auditlog.Config.OnCommit] hook recording events,
// batch sizes and commit durations.
func (m *Metrics) Commits() func(auditlog.CommitEvent) {
	committed := []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "committed")))}
	failed := []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "failed")))}
	return func(e auditlog.CommitEvent) {
		ctx := context.Background()
		if e.Err != nil {
			m.auditEvents.Add(ctx, int64(e.Events), failed...)
			return
		}
		m.auditEvents.Add(ctx, int64(e.Events), committed...)
		m.commitSize.Record(ctx, int64(e.Events))
		m.commitTime.Record(ctx, e.Duration.Seconds())
	}
}

// Limiter registers counters read from l.Stats at each collection, under
// the limiter attribute name ("edge", "per-user"). It costs the request
// path nothing. Unregister the returned registration when l is closed.
func (m *Metrics) Limiter(name string, l *ratelimit.Limiter) (metric.Registration, error) {
	requests, err := m.meter.Int64ObservableCounter("malai.ratelimit.requests", metric.WithUnit("{request}"),
		metric.WithDescription("Requests decided by a rate limiter, by outcome."))
	if err != nil {
		return nil, err
	}
	storeErrs, err := m.meter.Int64ObservableCounter("malai.ratelimit.store.errors", metric.WithUnit("{error}"),
		metric.WithDescription("Rate-limit store failures, by the outage rule applied."))
	if err != nil {
		return nil, err
	}
	with := func(out string) metric.ObserveOption {
		return metric.WithAttributeSet(attribute.NewSet(attribute.String("limiter", name), attribute.String("outcome", out)))
	}
	allowed, limited, denied, exempt, bad := with("allowed"), with("limited"), with("denied"), with("exempt"), with("bad_client_address")
	open, local, closed := with("failed_open"), with("failed_local"), with("failed_closed")
	return m.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := l.Stats()
		o.ObserveInt64(requests, int64(s.Allowed), allowed)
		o.ObserveInt64(requests, int64(s.Limited), limited)
		o.ObserveInt64(requests, int64(s.Denied), denied)
		o.ObserveInt64(requests, int64(s.Exempt), exempt)
		o.ObserveInt64(requests, int64(s.BadClientAddr), bad)
		o.ObserveInt64(storeErrs, int64(s.FailedOpen), open)
		o.ObserveInt64(storeErrs, int64(s.FailedLocal), local)
		o.ObserveInt64(storeErrs, int64(s.FailedClosed), closed)
		return nil
	}, requests, storeErrs)
}

// Runner registers counters read from r.Stats at each collection, under
// the runner attribute name. Use [idempotency.Middleware.Runner] for the
// HTTP middleware's.
func (m *Metrics) Runner(name string, r *idempotency.Runner) (metric.Registration, error) {
	ops, err := m.meter.Int64ObservableCounter("malai.idempotency.operations", metric.WithUnit("{operation}"),
		metric.WithDescription("Idempotent operations by outcome: claimed (ran), replayed, refused in flight, reused key, not replayable."))
	if err != nil {
		return nil, err
	}
	releases, err := m.meter.Int64ObservableCounter("malai.idempotency.releases", metric.WithUnit("{claim}"),
		metric.WithDescription("Claims given back after an error, a panic or a 5xx, so a retry runs again."))
	if err != nil {
		return nil, err
	}
	storeErrs, err := m.meter.Int64ObservableCounter("malai.idempotency.store.errors", metric.WithUnit("{error}"),
		metric.WithDescription("Idempotency store calls that failed."))
	if err != nil {
		return nil, err
	}
	lost, err := m.meter.Int64ObservableCounter("malai.idempotency.leases.lost", metric.WithUnit("{lease}"),
		metric.WithDescription("Results not stored because another holder had taken the claim over."))
	if err != nil {
		return nil, err
	}
	runner := attribute.String("runner", name)
	with := func(out string) metric.ObserveOption {
		return metric.WithAttributeSet(attribute.NewSet(runner, attribute.String("outcome", out)))
	}
	claimed, replayed, inFlight, reused, notReplayable := with("claimed"), with("replayed"), with("in_flight"), with("reused"), with("not_replayable")
	only := metric.WithAttributeSet(attribute.NewSet(runner))
	return m.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := r.Stats()
		o.ObserveInt64(ops, int64(s.Claimed), claimed)
		o.ObserveInt64(ops, int64(s.Replayed), replayed)
		o.ObserveInt64(ops, int64(s.InFlight), inFlight)
		o.ObserveInt64(ops, int64(s.Reused), reused)
		o.ObserveInt64(ops, int64(s.NotReplayable), notReplayable)
		o.ObserveInt64(releases, int64(s.Released), only)
		o.ObserveInt64(storeErrs, int64(s.StoreErrors), only)
		o.ObserveInt64(lost, int64(s.LeaseLost), only)
		return nil
	}, ops, releases, storeErrs, lost)
}

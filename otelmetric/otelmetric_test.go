package otelmetric_test

import (
	"context"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	stringadapter "github.com/casbin/casbin/v2/persist/string-adapter"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	auditmem "github.com/malai-sec/malai/auditlog/memstore"
	"github.com/malai-sec/malai/idempotency"
	idemmem "github.com/malai-sec/malai/idempotency/memstore"
	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/jwtverify/devissuer"
	"github.com/malai-sec/malai/otelmetric"
	"github.com/malai-sec/malai/ratelimit"
	ratemem "github.com/malai-sec/malai/ratelimit/memstore"
	"github.com/malai-sec/malai/rbac"
)

type points map[string]map[string]float64 // metric → attribute set → value

func collect(t *testing.T, r *sdkmetric.ManualReader) points {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := points{}
	key := func(s attribute.Set) string { return s.Encoded(attribute.DefaultEncoder()) }
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			vals := map[string]float64{}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					vals[key(p.Attributes)] = float64(p.Value)
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					vals[key(p.Attributes)] = float64(p.Value)
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					vals[key(p.Attributes)] = p.Value
				}
			case metricdata.Histogram[int64]:
				for _, p := range d.DataPoints {
					vals[key(p.Attributes)] = float64(p.Count)
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					vals[key(p.Attributes)] = float64(p.Count)
				}
			}
			out[m.Name] = vals
		}
	}
	return out
}

func want(t *testing.T, p points, metric, attrs string, v float64) {
	t.Helper()
	if got, ok := p[metric][attrs]; !ok || got != v {
		t.Errorf("%s{%s} = %v (present %v), want %v; all: %v", metric, attrs, got, ok, v, p[metric])
	}
}

func setup(t *testing.T) (*otelmetric.Metrics, *sdkmetric.ManualReader) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	m, err := otelmetric.New(mp)
	if err != nil {
		t.Fatal(err)
	}
	return m, reader
}

func TestJWTVerifyMetrics(t *testing.T) {
	m, reader := setup(t)
	id, err := devissuer.New(devissuer.Config{Issuer: "https://id.test"})
	if err != nil {
		t.Fatal(err)
	}
	jwks := httptest.NewServer(id)
	defer jwks.Close()
	v, err := jwtverify.New(jwtverify.Config{
		Issuers:   []jwtverify.Issuer{{Issuer: "https://id.test", JWKSURL: jwks.URL, Audiences: []string{"api"}}},
		CacheSize: 10, Observe: m.Verifications(), OnRefresh: m.KeySetRefreshes(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	select {
	case <-v.Ready():
	case <-time.After(time.Minute):
		t.Fatal("no key set")
	}
	tok, _ := id.Mint(devissuer.Token{Subject: "alice", Audience: []string{"api"}})
	for range 2 {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = v.Verify(context.Background(), tok[:len(tok)-3]+"AAA")
	// Ready closes when the first key set is installed; the refresh hook
	// runs just after, on the fetching goroutine. The hook sets the gauges
	// before it counts the fetch, so seeing the count is enough.
	p := collect(t, reader)
	for i := 0; i < 200 && len(p["malai.jwtverify.jwks.refreshes"]) == 0; i++ {
		time.Sleep(5 * time.Millisecond)
		p = collect(t, reader)
	}
	want(t, p, "malai.jwtverify.verifications", "cached=false,outcome=accepted,reason=", 1)
	want(t, p, "malai.jwtverify.verifications", "cached=true,outcome=accepted,reason=", 1)
	want(t, p, "malai.jwtverify.verifications", "cached=false,outcome=refused,reason=bad_signature", 1)
	want(t, p, "malai.jwtverify.jwks.refreshes", "issuer=https://id.test,outcome=ok,trigger=start", 1)
	want(t, p, "malai.jwtverify.jwks.keys", "issuer=https://id.test", 1)
	if age := p["malai.jwtverify.jwks.age"]["issuer=https://id.test"]; age < 0 || age > 60 {
		t.Errorf("key-set age %v s", age)
	}
}

func TestRateLimitAndIdempotencyMetrics(t *testing.T) {
	m, reader := setup(t)
	st, _ := ratemem.New(ratemem.Config{})
	lim, err := ratelimit.New(ratelimit.Config{Store: st, Policies: []ratelimit.Policy{{Name: "ip", Limit: 1, Period: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	defer lim.Close()
	reg, err := m.Limiter("edge", lim)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Unregister()
	h := lim.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	for range 3 {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	}
	is, _ := idemmem.New(idemmem.Config{})
	runner, err := idempotency.NewRunner(idempotency.RunnerConfig{Store: is})
	if err != nil {
		t.Fatal(err)
	}
	reg2, err := m.Runner("worker", runner)
	if err != nil {
		t.Fatal(err)
	}
	defer reg2.Unregister()
	fp := idempotency.Fingerprint([]byte("job"), nil)
	run := func(context.Context, *idempotency.Lease) (idempotency.Result, error) {
		return idempotency.Result{Status: 200}, nil
	}
	for range 2 {
		if _, _, err := runner.Do(context.Background(), "job-1", fp, run); err != nil {
			t.Fatal(err)
		}
	}
	p := collect(t, reader)
	want(t, p, "malai.ratelimit.requests", "limiter=edge,outcome=allowed", 1)
	want(t, p, "malai.ratelimit.requests", "limiter=edge,outcome=limited", 2)
	want(t, p, "malai.ratelimit.store.errors", "limiter=edge,outcome=failed_closed", 0)
	want(t, p, "malai.idempotency.operations", "outcome=claimed,runner=worker", 1)
	want(t, p, "malai.idempotency.operations", "outcome=replayed,runner=worker", 1)
	want(t, p, "malai.idempotency.store.errors", "runner=worker", 0)
}

func TestRBACAndAuditMetrics(t *testing.T) {
	m, reader := setup(t)
	enf, err := rbac.NewEnforcer(rbac.RBAC, stringadapter.NewAdapter("p, role:a, /x, GET\ng, user:alice, role:a"))
	if err != nil {
		t.Fatal(err)
	}
	audited := 0
	authz, err := rbac.New(rbac.Config{Enforcer: enf,
		Subject: func(r *http.Request) (string, bool) {
			return "user:" + r.Header.Get("X-User"), r.Header.Get("X-User") != ""
		},
		Object:     func(r *http.Request) string { return r.URL.Path },
		OnDecision: m.Decisions(func(*http.Request, rbac.Decision) { audited++ }),
	})
	if err != nil {
		t.Fatal(err)
	}
	h := authz.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	for _, u := range []string{"alice", "alice", "bob", ""} {
		r := httptest.NewRequest("GET", "/x", nil)
		r.Header.Set("X-User", u)
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
	skey, _, _ := note.GenerateKey(rand.Reader, "t")
	signer, _ := note.NewSigner(skey)
	log, err := auditlog.New(auditlog.Config{Store: auditmem.New(), Origin: "t/audit", Signers: []note.Signer{signer}, Plaintext: true, OnCommit: m.Commits()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := log.AppendBatch(context.Background(), []auditlog.Event{{Type: "a"}, {Type: "b"}}); err != nil {
		t.Fatal(err)
	}
	log.Close()
	p := collect(t, reader)
	want(t, p, "malai.rbac.decisions", "cached=false,outcome=allowed,reason=allowed", 1)
	want(t, p, "malai.rbac.decisions", "cached=true,outcome=allowed,reason=allowed", 1)
	want(t, p, "malai.rbac.decisions", "cached=false,outcome=denied,reason=denied", 1)
	want(t, p, "malai.rbac.decisions", "cached=false,outcome=denied,reason=no_subject", 1)
	if audited != 4 {
		t.Errorf("the next hook saw %d decisions", audited)
	}
	want(t, p, "malai.auditlog.events", "outcome=committed", 2)
	if n := p["malai.auditlog.commit.duration"][""]; n < 1 {
		t.Errorf("commit durations recorded: %v", n)
	}
}

func TestHooksDoNotAllocate(t *testing.T) {
	m, _ := setup(t)
	obs := m.Verifications()
	dec := m.Decisions(nil)
	ctx := context.Background()
	e := jwtverify.Event{Accepted: true, Cached: true}
	r := httptest.NewRequest("GET", "/", nil)
	d := rbac.Decision{Allowed: true, Reason: rbac.ReasonAllowed}
	obs(ctx, e)
	dec(r, d)
	if n := testing.AllocsPerRun(100, func() { obs(ctx, e); dec(r, d) }); n != 0 {
		t.Fatalf("%v allocations per verification and decision", n)
	}
}

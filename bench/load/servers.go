package load

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/casbin/casbin/v2"
	"github.com/casbin/casbin/v2/model"
	coreruleset "github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3"
	txhttp "github.com/corazawaf/coraza/v3/http"
	"github.com/go-chi/chi/v5/middleware"
	gojwt "github.com/golang-jwt/jwt/v5"
	"github.com/ulule/limiter/v3"
	limiterhttp "github.com/ulule/limiter/v3/drivers/middleware/stdlib"
	"github.com/ulule/limiter/v3/drivers/store/memory"
	"github.com/unrolled/secure"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
	"github.com/malai-sec/malai/keyring"
)

// Target is what a started server tells the load generator.
type Target struct {
	URL   string `json:"url"`
	CA    string `json:"ca"` // PEM file the gateway's certificate chains to
	Token string `json:"token"`
	From  string `json:"from"`
	To    string `json:"to"`
	PID   int    `json:"pid"`
}

// The bench ledger's accounts: From is funded, To is not.
const (
	accountFrom = "acc-bench-from"
	accountTo   = "acc-bench-to"
	issuer      = "https://identity.bench.test"
	audience    = "ledger"
	subject     = "alice"
)

// book is the handlers both the bare server and the anchor chain serve:
// the ledger's account read and transfer, each transfer appended to a
// sealed, group-committed audit chain on disk before it is answered.
type book struct {
	mu    sync.Mutex
	bal   map[string]int64
	audit *auditlog.Log
}

func newBook(dir string) (*book, func(), error) {
	st, err := filestore.Open(filepath.Join(dir, "audit"))
	if err != nil {
		return nil, nil, err
	}
	skey, _, err := note.GenerateKey(rand.Reader, "bench-audit")
	if err != nil {
		return nil, nil, err
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, nil, err
	}
	k, err := keyring.NewKey()
	if err != nil {
		return nil, nil, err
	}
	ring, err := keyring.NewRing("k1", map[string]keyring.Key{"k1": k})
	if err != nil {
		return nil, nil, err
	}
	l, err := auditlog.New(auditlog.Config{Store: st, Origin: "bench/audit", Signers: []note.Signer{signer}, Ring: ring})
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	b := &book{bal: map[string]int64{accountFrom: 1 << 50, accountTo: 0}, audit: l}
	return b, func() { l.Close(); st.Close() }, nil
}

func (b *book) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/accounts/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		b.mu.Lock()
		bal, ok := b.bal[id]
		b.mu.Unlock()
		if !ok {
			http.Error(w, "no such account", http.StatusNotFound)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"id": id, "balance": bal})
	})
	mux.HandleFunc("POST /v1/transfers", func(w http.ResponseWriter, r *http.Request) {
		var t struct {
			From, To string
			Amount   int64
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&t); err != nil || t.Amount <= 0 || t.From == t.To {
			http.Error(w, "bad transfer", http.StatusBadRequest)
			return
		}
		b.mu.Lock()
		from, okF := b.bal[t.From]
		_, okT := b.bal[t.To]
		if !okF || !okT || from < t.Amount {
			b.mu.Unlock()
			http.Error(w, "refused", http.StatusUnprocessableEntity)
			return
		}
		b.bal[t.From] -= t.Amount
		b.bal[t.To] += t.Amount
		left := b.bal[t.From]
		b.mu.Unlock()
		payload, _ := json.Marshal(t)
		rc, err := b.audit.Append(context.WithoutCancel(r.Context()), auditlog.Event{Type: "ledger.transfer", Actor: subject,
			CorrelationID: r.Header.Get("X-Request-Id"), Payload: payload})
		if err != nil {
			http.Error(w, "audit unavailable", http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, http.StatusCreated, map[string]any{"id": rc.Seq, "from": t.From, "to": t.To, "amount": t.Amount, "balance": left})
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// pki is a throwaway CA with the certificates of one run.
type pki struct {
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	pool  *x509.CertPool
	pem   []byte
}

func newPKI() (*pki, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(der)
	p := &pki{ca: ca, caKey: key, pool: x509.NewCertPool(), pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	p.pool.AddCert(ca)
	return p, nil
}

func (p *pki) issue(name string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// serveTLS listens on loopback with cfg and serves h until ctx ends.
func serveTLS(ctx context.Context, cfg *tls.Config, h http.Handler) (string, error) {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: nil}
	go srv.Serve(ln)
	go func() { <-ctx.Done(); srv.Close() }()
	return "https://" + ln.Addr().String(), nil
}

func serverTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
}

// Serve starts the bare server ("bare": the handlers alone, over TLS) or
// the anchor chain ("anchor": a gateway and a service built from the
// usual libraries, every check on) under dir and returns its target.
func Serve(ctx context.Context, mode, dir string) (Target, func(), error) {
	p, err := newPKI()
	if err != nil {
		return Target{}, nil, err
	}
	caFile := filepath.Join(dir, "bench-ca.pem")
	if err := os.WriteFile(caFile, p.pem, 0o600); err != nil {
		return Target{}, nil, err
	}
	b, closeBook, err := newBook(dir)
	if err != nil {
		return Target{}, nil, err
	}
	gwCert, err := p.issue("gateway")
	if err != nil {
		return Target{}, nil, err
	}
	mux := http.NewServeMux()
	b.routes(mux)
	t := Target{CA: caFile, From: accountFrom, To: accountTo, PID: os.Getpid()}
	switch mode {
	case "bare":
		t.URL, err = serveTLS(ctx, serverTLS(gwCert), mux)
	case "anchor":
		t.URL, t.Token, err = anchor(ctx, dir, p, gwCert, mux)
	default:
		err = fmt.Errorf("load: unknown mode %q", mode)
	}
	if err != nil {
		closeBook()
		return Target{}, nil, err
	}
	return t, closeBook, nil
}

// corazaDirectives are the reference gateway's WAF directives (Coraza's
// recommended base, blocking, the CRS v4 at paranoia level 1, UTF-8
// validation), written out here because the bench cannot import the
// reference system.
const corazaDirectives = `Include @coraza.conf-recommended
SecRuleEngine On
SecRequestBodyAccess On
SecRequestBodyLimit 65536
SecRequestBodyInMemoryLimit 65536
SecRequestBodyLimitAction Reject
SecResponseBodyAccess On
SecAuditEngine Off
SecRuleUpdateActionById 200002 "pass"
Include @crs-setup.conf.example
SecAction "id:900000,phase:1,pass,t:none,nolog,setvar:tx.blocking_paranoia_level=1"
SecAction "id:900950,phase:1,pass,t:none,nolog,setvar:tx.crs_validate_utf8_encoding=1"
Include @owasp_crs/*.conf
`

const casbinModel = `[request_definition]
r = sub, obj, act
[policy_definition]
p = sub, obj, act
[role_definition]
g = _, _
[policy_effect]
e = some(where (p.eft == allow))
[matchers]
m = g(r.sub, p.sub) && keyMatch2(r.obj, p.obj) && r.act == p.act
`

type claimsKey struct{}

// anchor builds the chain from the usual libraries: at the gateway
// unrolled/secure, chi's RequestID, otelhttp, a slog JSON access line,
// ulule/limiter per client IP, Coraza's http middleware with the CRS, a
// golang-jwt check against the JWKS (keyfunc), then a reverse proxy over
// mutual TLS; at the service chi's RequestID, otelhttp, slog, the second
// golang-jwt check, Casbin Enforce and an Idempotency-Key store before
// the same handlers.
func anchor(ctx context.Context, dir string, p *pki, gwCert tls.Certificate, app http.Handler) (string, string, error) {
	signKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	jwks, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
		"x": b64(signKey.X.FillBytes(make([]byte, 32))), "y": b64(signKey.Y.FillBytes(make([]byte, 32))),
	}}})
	if err != nil {
		return "", "", err
	}
	kf, err := keyfunc.NewJWKSetJSON(jwks)
	if err != nil {
		return "", "", err
	}
	tok := gojwt.NewWithClaims(gojwt.SigningMethodES256, gojwt.MapClaims{"iss": issuer, "aud": audience, "sub": subject,
		"iat": time.Now().Unix(), "exp": time.Now().Add(2 * time.Hour).Unix(), "scope": "ledger:read ledger:write"})
	tok.Header["kid"] = "k1"
	token, err := tok.SignedString(signKey)
	if err != nil {
		return "", "", err
	}
	parser := gojwt.NewParser(gojwt.WithValidMethods([]string{"ES256"}), gojwt.WithIssuer(issuer), gojwt.WithAudience(audience),
		gojwt.WithExpirationRequired(), gojwt.WithLeeway(30*time.Second))
	jwtCheck := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok {
				w.Header().Set("WWW-Authenticate", "Bearer")
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			t, err := parser.Parse(raw, kf.Keyfunc)
			if err != nil || !t.Valid {
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, t.Claims)))
		})
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	logFile, err := os.OpenFile(filepath.Join(dir, "anchor-access.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return "", "", err
	}
	go func() { <-ctx.Done(); logFile.Close() }()
	logger := slog.New(slog.NewJSONHandler(logFile, nil))
	observe := func(name string, next http.Handler) http.Handler {
		access := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			next.ServeHTTP(ww, r)
			logger.LogAttrs(r.Context(), slog.LevelInfo, "request", slog.String("component", name),
				slog.String("request_id", middleware.GetReqID(r.Context())), slog.String("method", r.Method),
				slog.String("path", r.URL.Path), slog.Int("status", ww.Status()), slog.Duration("duration", time.Since(start)))
		})
		return middleware.RequestID(otelhttp.NewHandler(access, name, otelhttp.WithTracerProvider(tp), otelhttp.WithMeterProvider(mp)))
	}

	// --- service ---
	enf, err := casbinEnforcer()
	if err != nil {
		return "", "", err
	}
	authz := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, _ := r.Context().Value(claimsKey{}).(gojwt.Claims)
			sub, _ := c.GetSubject()
			ok, err := enf.Enforce(sub, r.URL.Path, r.Method)
			if err != nil || !ok {
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	svcCert, err := p.issue("service")
	if err != nil {
		return "", "", err
	}
	svcTLS := serverTLS(svcCert)
	svcTLS.ClientAuth, svcTLS.ClientCAs = tls.RequireAndVerifyClientCert, p.pool
	svcURL, err := serveTLS(ctx, svcTLS, observe("ledger", jwtCheck(authz(idempotent(app)))))
	if err != nil {
		return "", "", err
	}

	// --- gateway ---
	headers := secure.New(secure.Options{
		STSSeconds: 63072000, STSIncludeSubdomains: true, STSPreload: true, ForceSTSHeader: true,
		FrameDeny: true, ContentTypeNosniff: true, ContentSecurityPolicy: "default-src 'none'; frame-ancestors 'none'",
		ReferrerPolicy: "no-referrer", CrossOriginOpenerPolicy: "same-origin", CrossOriginResourcePolicy: "same-origin",
		PermissionsPolicy: "camera=(), microphone=(), geolocation=()",
	})
	lim := limiter.New(memory.NewStore(), limiter.Rate{Period: time.Minute, Limit: 1 << 40})
	waf, err := coraza.NewWAF(coraza.NewWAFConfig().WithDirectives(corazaDirectives).WithRootFS(coreruleset.FS))
	if err != nil {
		return "", "", err
	}
	target, _ := url.Parse(svcURL)
	clientCert, err := p.issue("gateway-client")
	if err != nil {
		return "", "", err
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{clientCert}},
		MaxIdleConnsPerHost: 256, ForceAttemptHTTP2: false}
	forward := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set("X-Request-Id", middleware.GetReqID(r.Context()))
		proxy.ServeHTTP(w, r)
	})
	gw := headers.Handler(observe("gateway", limiterhttp.NewMiddleware(lim).Handler(txhttp.WrapHandler(waf, jwtCheck(forward)))))
	gwURL, err := serveTLS(ctx, serverTLS(gwCert), gw)
	if err != nil {
		return "", "", err
	}
	return gwURL, token, nil
}

func casbinEnforcer() (*casbin.Enforcer, error) {
	m, err := model.NewModelFromString(casbinModel)
	if err != nil {
		return nil, err
	}
	e, err := casbin.NewEnforcer(m)
	if err != nil {
		return nil, err
	}
	for _, p := range [][]string{
		{"role:customer", "/v1/accounts/:id", "GET"},
		{"role:customer", "/v1/transfers", "POST"},
		{"role:teller", "/v1/deposits", "POST"},
		{"role:auditor", "/v1/audit/verify", "GET"},
	} {
		if _, err := e.AddPolicy(p[0], p[1], p[2]); err != nil {
			return nil, err
		}
	}
	if _, err := e.AddGroupingPolicy(subject, "role:customer"); err != nil {
		return nil, err
	}
	return e, nil
}

// idempotent is the usual hand-written Idempotency-Key store: the first
// request with a key runs and its response is kept; a retry with the same
// key and body gets it back, with another body 422.
func idempotent(next http.Handler) http.Handler {
	type record struct {
		body   string
		status int
		resp   []byte
		done   chan struct{}
	}
	var mu sync.Mutex
	seen := map[string]*record{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		if r.Method != http.MethodPost {
			next.ServeHTTP(w, r)
			return
		}
		if key == "" || len(key) > 255 {
			http.Error(w, "Idempotency-Key required", http.StatusBadRequest)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		if err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		c, _ := r.Context().Value(claimsKey{}).(gojwt.Claims)
		sub, _ := c.GetSubject()
		k := sub + "\x00" + key
		mu.Lock()
		rec, dup := seen[k]
		if !dup {
			rec = &record{body: string(body), done: make(chan struct{})}
			seen[k] = rec
		}
		mu.Unlock()
		if dup {
			<-rec.done
			if rec.body != string(body) {
				http.Error(w, "key reused with another body", http.StatusUnprocessableEntity)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(rec.status)
			_, _ = w.Write(rec.resp)
			return
		}
		rw := &recorder{ResponseWriter: w, status: http.StatusOK}
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		next.ServeHTTP(rw, r)
		rec.status, rec.resp = rw.status, rw.buf
		close(rec.done)
	})
}

type recorder struct {
	http.ResponseWriter
	status int
	buf    []byte
}

func (r *recorder) WriteHeader(s int) { r.status = s; r.ResponseWriter.WriteHeader(s) }
func (r *recorder) Write(p []byte) (int, error) {
	r.buf = append(r.buf, p...)
	return r.ResponseWriter.Write(p)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

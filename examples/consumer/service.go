// Command malai-consumer is a small payments API built on Malai the way a
// team outside the repository would build it, from the public packages
// and their documentation only: a chi router, bearer tokens from an
// Auth0-shaped issuer, a per-IP and a per-user rate limit stacked, Redis-
// backed idempotency that accepts the bare keys most clients send, and a
// signed, encrypted audit log of every transfer.
//
// Its module is deliberately separate: `go list -m all` in this directory
// is the module graph such a team pulls in, and CI prints it.
//
//	go run . -issuer https://tenant.eu.auth0.com/ -jwks https://tenant.eu.auth0.com/.well-known/jwks.json \
//		-audience https://api.example -redis redis://127.0.0.1:6379/0 -data ./data
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/redis/go-redis/v9"
	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
	"github.com/malai-sec/malai/clientip"
	"github.com/malai-sec/malai/idempotency"
	idemredis "github.com/malai-sec/malai/idempotency/redisstore"
	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/keyring"
	"github.com/malai-sec/malai/problem"
	"github.com/malai-sec/malai/ratelimit"
	rateredis "github.com/malai-sec/malai/ratelimit/redisstore"
	"github.com/malai-sec/malai/route"
)

// Options configure the service.
type Options struct {
	Issuer, JWKSURL, Audience string
	// Redis holds rate limits and idempotency records under Prefix.
	Redis  redis.UniversalClient
	Prefix string
	// AuditDir holds the audit log.
	AuditDir string
	// TrustedProxies are the load balancers whose X-Forwarded-For counts.
	TrustedProxies []netip.Prefix
	// PerIP and PerUser are requests per minute.
	PerIP, PerUser int
}

// Service is the API.
type Service struct {
	Handler http.Handler
	Audit   *auditlog.Log
	Origin  string
	// Verifier checks checkpoints offline, with Ring to open payloads.
	Verifier note.Verifier
	Ring     *keyring.Ring
	Store    *filestore.Store

	verifier *jwtverify.Verifier
	limits   []*ratelimit.Limiter

	mu       sync.Mutex
	balances map[string]int64
}

type transfer struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Amount int64  `json:"amount"`
}

// New builds the service.
func New(o Options) (*Service, error) {
	s := &Service{balances: map[string]int64{"alice": 1000}, Origin: "api.example/audit"}
	var err error
	s.verifier, err = jwtverify.New(jwtverify.Config{Issuers: []jwtverify.Issuer{{
		Issuer:     o.Issuer,
		JWKSURL:    o.JWKSURL,
		Audiences:  []string{o.Audience},
		Profile:    jwtverify.ProfileOIDC, // Auth0 tokens: typ JWT, azp, 24 h
		Algorithms: []string{"RS256"},
		RolesClaim: []string{"permissions"},
	}}})
	if err != nil {
		return nil, err
	}
	proxies, err := clientip.New(clientip.Config{TrustedProxies: o.TrustedProxies})
	if err != nil {
		return nil, err
	}
	rateStore, err := rateredis.New(rateredis.Config{Client: o.Redis, Prefix: o.Prefix + "rate:"})
	if err != nil {
		return nil, err
	}
	perIP, err := ratelimit.New(ratelimit.Config{
		Store:    rateStore,
		ClientIP: proxies,
		Skip:     func(r *http.Request) bool { return r.URL.Path == "/healthz" },
		Policies: []ratelimit.Policy{{Name: "ip", Limit: o.PerIP, Period: time.Minute}},
	})
	if err != nil {
		return nil, err
	}
	perUser, err := ratelimit.New(ratelimit.Config{
		Store: rateStore,
		Policies: []ratelimit.Policy{{Name: "user", Limit: o.PerUser, Period: time.Minute,
			Key: func(r *http.Request, _ netip.Addr) (string, bool) {
				c, ok := jwtverify.FromContext(r.Context())
				if !ok {
					return "", false
				}
				return c.Subject(), true
			}}},
	})
	if err != nil {
		return nil, err
	}
	s.limits = []*ratelimit.Limiter{perIP, perUser}
	idemStore, err := idemredis.New(idemredis.Config{Client: o.Redis, Prefix: o.Prefix + "idem:"})
	if err != nil {
		return nil, err
	}
	idem, err := idempotency.New(idempotency.Config{
		Store:    idemStore,
		BareKeys: true, // Idempotency-Key: 8e03978e-... as most SDKs send it
		Principal: func(r *http.Request) (string, bool) {
			c, ok := jwtverify.FromContext(r.Context())
			if !ok {
				return "", false
			}
			return c.Subject(), true
		},
	})
	if err != nil {
		return nil, err
	}
	if err := s.openAudit(o.AuditDir); err != nil {
		return nil, err
	}

	r := chi.NewRouter()
	// The route is resolved before chi routes (its Use middleware runs
	// first), with chi's own lookup, for every layer below.
	r.Use(route.Handler(func(req *http.Request) string {
		path := req.URL.RawPath
		if path == "" {
			path = req.URL.Path
		}
		return r.Find(chi.NewRouteContext(), req.Method, path)
	}))
	r.Use(proxies.Handler)
	r.Use(perIP.Handler)
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	r.Group(func(r chi.Router) {
		r.Use(s.verifier.Handler)
		r.Use(perUser.Handler)
		r.With(s.verifier.RequireUser("accounts:read")).Get("/accounts/{id}", s.account)
		r.With(s.verifier.RequireUser("transfers:write"), idem.Handler).Post("/transfers", s.transfer)
	})
	s.Handler = r
	return s, nil
}

func (s *Service) openAudit(dir string) error {
	skey, vkey, err := note.GenerateKey(rand.Reader, "api-audit")
	if err != nil {
		return err
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		return err
	}
	if s.Verifier, err = note.NewVerifier(vkey); err != nil {
		return err
	}
	k, err := keyring.NewKey()
	if err != nil {
		return err
	}
	if s.Ring, err = keyring.NewRing("dk-1", map[string]keyring.Key{"dk-1": k}); err != nil {
		return err
	}
	if s.Store, err = filestore.Open(dir); err != nil {
		return err
	}
	s.Audit, err = auditlog.New(auditlog.Config{Store: s.Store, Origin: s.Origin, Signers: []note.Signer{signer}, Ring: s.Ring})
	return err
}

// Close stops the background work.
func (s *Service) Close() error {
	var errs []error
	for _, l := range s.limits {
		errs = append(errs, l.Close())
	}
	errs = append(errs, s.verifier.Close(), s.Audit.Close(), s.Store.Close())
	return errors.Join(errs...)
}

func (s *Service) account(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	c, _ := jwtverify.FromContext(r.Context())
	if id != c.Subject() {
		problem.Write(w, r, problem.Problem{Status: http.StatusForbidden, Type: "forbidden", Title: "Forbidden"})
		return
	}
	s.mu.Lock()
	bal := s.balances[id]
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"account": id, "balance": bal})
}

func (s *Service) transfer(w http.ResponseWriter, r *http.Request) {
	c, _ := jwtverify.FromContext(r.Context())
	var t transfer
	if err := json.NewDecoder(r.Body).Decode(&t); err != nil || t.Amount <= 0 || t.To == "" {
		problem.Write(w, r, problem.Problem{Status: http.StatusUnprocessableEntity, Type: "invalid-transfer", Title: "Invalid transfer"})
		return
	}
	t.From = c.Subject()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.balances[t.From] < t.Amount {
		problem.Write(w, r, problem.Problem{Status: http.StatusConflict, Type: "insufficient-funds", Title: "Insufficient funds"})
		return
	}
	payload, _ := json.Marshal(t)
	rec, err := s.Audit.Append(r.Context(), auditlog.Event{Type: "transfer", Actor: c.Subject(), Payload: payload})
	if err != nil {
		problem.Write(w, r, problem.Unavailable)
		return
	}
	s.balances[t.From] -= t.Amount
	s.balances[t.To] += t.Amount
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Location", "/transfers/"+strconv.FormatUint(rec.Seq, 10))
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{"transfer": rec.Seq, "from": t.From, "to": t.To, "amount": t.Amount})
}

// Replay folds the audit log into balances, to compare with the service's.
func (s *Service) Replay(ctx context.Context) (map[string]int64, error) {
	b := map[string]int64{"alice": 1000}
	_, err := s.Audit.Replay(ctx, func(e auditlog.Event) error {
		var t transfer
		if err := json.Unmarshal(e.Payload, &t); err != nil {
			return fmt.Errorf("event %d: %w", e.Seq, err)
		}
		b[t.From] -= t.Amount
		b[t.To] += t.Amount
		return nil
	})
	return b, err
}

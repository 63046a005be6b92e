package idempotency_test

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/malai-sec/malai/internal/fakeclock"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malai-sec/malai/idempotency"
	"github.com/malai-sec/malai/idempotency/memstore"
	"github.com/malai-sec/malai/idempotency/redisstore"
	"github.com/malai-sec/malai/internal/servicetest"
)

// clock is a fake clock tests move by hand.
type clock = fakeclock.Clock

func newClock() *clock { return fakeclock.New(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)) }

// stores returns constructors for every store implementation, each giving
// a fresh, empty store.
func stores() map[string]func(t *testing.T) idempotency.Store {
	return map[string]func(t *testing.T) idempotency.Store{
		"memory": func(t *testing.T) idempotency.Store {
			s, err := memstore.New(memstore.Config{})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"redis": func(t *testing.T) idempotency.Store {
			r := servicetest.NewRedis(t)
			s, err := redisstore.New(redisstore.Config{Client: r.Client, Prefix: r.Prefix})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	}
}

// forEachStore runs f once per store implementation.
func forEachStore(t *testing.T, f func(t *testing.T, s idempotency.Store)) {
	for name, mk := range stores() {
		t.Run(name, func(t *testing.T) { f(t, mk(t)) })
	}
}

type principalKey struct{}

// principal reads the caller the test put in the context (standing in for
// jwtverify's verified subject).
func principal(r *http.Request) (string, bool) {
	p, ok := r.Context().Value(principalKey{}).(string)
	return p, ok && p != ""
}

func asUser(r *http.Request, user string) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), principalKey{}, user))
}

// discard is a logger that drops everything.
var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// newMiddleware builds the middleware with a fake clock, no heartbeat and
// a silent logger, then applies change.
func newMiddleware(t *testing.T, s idempotency.Store, clk *clock, change func(*idempotency.Config)) *idempotency.Middleware {
	t.Helper()
	cfg := idempotency.Config{Store: s, Principal: principal, Now: clk.Now, Heartbeat: -1, Logger: discard}
	if change != nil {
		change(&cfg)
	}
	m, err := idempotency.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

// transfers is the ledger's POST /transfers stand-in: it counts executions
// and answers 201 with a body derived from the request.
type transfers struct {
	mu      sync.Mutex
	calls   int
	gate    chan struct{} // when not nil, each call waits for it
	entered chan struct{}
}

func (h *transfers) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.calls++
	n := h.calls
	h.mu.Unlock()
	if h.entered != nil {
		h.entered <- struct{}{}
	}
	if h.gate != nil {
		<-h.gate
	}
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Location", "/transfers/1")
	w.Header().Set("Set-Cookie", "session=secret")
	w.Header().Set("X-Execution", strings.Repeat("x", n))
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{"execution": n, "request": string(body)})
}

func (h *transfers) Calls() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls
}

// route mounts m in front of h on "POST /transfers" the way the ledger
// does, behind a fake authentication step that puts the caller in the
// context from the X-Test-User header.
func route(m *idempotency.Middleware, h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /transfers", m.Handler(h))
	mux.Handle("GET /transfers", m.Handler(h))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u := r.Header.Get("X-Test-User"); u != "" {
			r = asUser(r, u)
		}
		mux.ServeHTTP(w, r)
	})
}

func post(h http.Handler, user, key, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/transfers", bytes.NewBufferString(body))
	r.Header.Set("Content-Type", "application/json")
	if user != "" {
		r.Header.Set("X-Test-User", user)
	}
	if key != "" {
		r.Header.Set(idempotency.HeaderKey, key)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// problemType decodes a problem+json response's type slug.
func problemType(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q; want application/problem+json (status %d, body %s)", ct, w.Code, w.Body)
	}
	var p struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatalf("problem body %q: %v", w.Body, err)
	}
	i := strings.LastIndexByte(p.Type, '#')
	return p.Type[i+1:]
}

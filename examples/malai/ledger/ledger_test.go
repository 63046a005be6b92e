package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	auditmem "github.com/malai-sec/malai/auditlog/memstore"
	"github.com/malai-sec/malai/examples/malai/internal/queue"
	"github.com/malai-sec/malai/idempotency"
	idemmem "github.com/malai-sec/malai/idempotency/memstore"
	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/jwtverify/jwttest"
)

const iss = "https://identity.test"

type fixture struct {
	s     *Service
	h     http.Handler
	key   *jwttest.Key
	queue *queue.Memory
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	key := jwttest.NewKey(t, "ES256", "k1")
	v, err := jwtverify.New(jwtverify.Config{Issuers: []jwtverify.Issuer{{
		Issuer: iss, Keys: jwttest.Set(t, key), Audiences: []string{"malai-api", "malai-internal"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	skey, _, err := note.GenerateKey(rand.Reader, "ledger.test/audit")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	audit, err := auditlog.New(auditlog.Config{Store: auditmem.New(), Origin: "ledger.test/audit", Signers: []note.Signer{signer}, Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { audit.Close() })
	idem, err := idemmem.New(idemmem.Config{})
	if err != nil {
		t.Fatal(err)
	}
	q := queue.NewMemory(queue.Options{}, nil)
	s, err := New(context.Background(), Config{
		Verifier: v, Audit: audit, Idempotency: idem, Queue: q,
		PolicyFile: filepath.Join(t.TempDir(), "policy.csv"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{s: s, h: s.Handler(), key: key, queue: q}
}

func (f *fixture) do(t *testing.T, method, path, tok string, body any, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	b, _ := json.Marshal(body)
	r := httptest.NewRequest(method, path, bytes.NewReader(b))
	r.Header.Set("Authorization", "Bearer "+tok)
	r.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w
}

func (f *fixture) user(t *testing.T, name string) string {
	c := jwttest.Claims(iss, "malai-api", "user:"+name, time.Now())
	c["scope"] = "ledger:read ledger:write"
	return f.key.Mint(t, c)
}

func (f *fixture) worker(t *testing.T) string {
	c := jwttest.ServiceClaims(iss, "malai-internal", "worker", time.Now())
	c["scope"] = ScopeTransfer
	return f.key.Mint(t, c)
}

// A queued transfer runs once however often the worker hands it back, and
// a synchronous retry with the same key meets the same record.
func TestQueuedJobRunsOnce(t *testing.T) {
	f := newFixture(t)
	alice := f.user(t, "alice")
	for _, id := range []string{"acc-a1", "acc-a2"} {
		if w := f.do(t, "POST", "/v1/accounts", alice, map[string]string{"id": id}, nil); w.Code != 201 {
			t.Fatalf("open %s: %d %s", id, w.Code, w.Body)
		}
	}
	body := TransferRequest{From: "acc-a1", To: "acc-a2", Amount: 300}
	key := map[string]string{"Idempotency-Key": idempotency.FormatKey("job-1")}
	if w := f.do(t, "POST", "/v1/transfers/async", alice, body, key); w.Code != 202 {
		t.Fatalf("async: %d %s", w.Code, w.Body)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var job []byte
	f.queue.Consume(ctx, "t", func(_ context.Context, m queue.Message) error { job = m.Body; cancel(); return nil })
	wk := f.worker(t)
	for i, wantReplay := range []bool{false, true} {
		w := f.do(t, "POST", "/internal/v1/transfers", wk, json.RawMessage(job), nil)
		if w.Code != 201 || (w.Header().Get("Idempotent-Replayed") == "true") != wantReplay {
			t.Fatalf("delivery %d: %d replayed=%q %s", i, w.Code, w.Header().Get("Idempotent-Replayed"), w.Body)
		}
	}
	if w := f.do(t, "POST", "/v1/transfers", alice, body, key); w.Code != 201 || w.Header().Get("Idempotent-Replayed") != "true" {
		t.Fatalf("sync retry with the job's key: %d replayed=%q", w.Code, w.Header().Get("Idempotent-Replayed"))
	}
	if got := f.s.Balances()["acc-a1"]; got != 10000-300 {
		t.Fatalf("balance %d: the transfer ran more than once", got)
	}
}

// The worker can only run jobs the ledger signed: a compromised worker
// cannot move money from an account it names itself.
func TestForgedJobRefused(t *testing.T) {
	f := newFixture(t)
	alice := f.user(t, "alice")
	for _, id := range []string{"acc-a1", "acc-m1"} {
		f.do(t, "POST", "/v1/accounts", alice, map[string]string{"id": id}, nil)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	j := Job{Principal: "user:alice", Key: "k", Body: []byte(`{"from":"acc-a1","to":"acc-m1","amount":5000}`)}
	j.Sig = ed25519.Sign(other, jobMessage(j))
	w := f.do(t, "POST", "/internal/v1/transfers", f.worker(t), j, nil)
	if w.Code != http.StatusForbidden {
		t.Fatalf("forged job: %d %s", w.Code, w.Body)
	}
	// A user token is refused on the internal route before the job is read.
	if w := f.do(t, "POST", "/internal/v1/transfers", alice, j, nil); w.Code != http.StatusForbidden && w.Code != http.StatusUnauthorized {
		t.Fatalf("user token on the internal route: %d", w.Code)
	}
	if got := f.s.Balances()["acc-a1"]; got != 10000 {
		t.Fatalf("balance moved to %d", got)
	}
}

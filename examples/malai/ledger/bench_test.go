package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
	auditmem "github.com/malai-sec/malai/auditlog/memstore"
	"github.com/malai-sec/malai/examples/malai/ledger/internal/book"
	"github.com/malai-sec/malai/idempotency"
	"github.com/malai-sec/malai/keyring"
)

// BenchmarkTransfers measures transfers per second through the ledger's
// handler (JWT check, RBAC, strict decoding, idempotency claim and
// record, plan, append, fold) beside the chain store's own group-commit
// append rate with the same number of concurrent clients and events of
// the same size, in the same run. Run with -cpu 1 so the client count is
// exactly the parallelism:
//
//	go test -run '^$' -bench Transfers -cpu 1 -benchtime 2s -count 6 ./ledger
func BenchmarkTransfers(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B) func() auditlog.Store
	}{
		{"memory", func(b *testing.B) func() auditlog.Store {
			st := auditmem.New()
			return func() auditlog.Store { return st }
		}},
		{"file", func(b *testing.B) func() auditlog.Store {
			dir := b.TempDir()
			return func() auditlog.Store {
				st, err := filestore.Open(filepath.Join(dir, "audit"))
				if err != nil {
					b.Fatal(err)
				}
				return st
			}
		}},
		{"postgres", func(b *testing.B) func() auditlog.Store {
			if os.Getenv("MALAI_TEST_POSTGRES_URL") == "" {
				b.Skip("set MALAI_TEST_POSTGRES_URL")
			}
			return newPGAudit(b).open(b)
		}},
	}
	for _, st := range stores {
		for _, clients := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("store=%s/clients=%d/path=append", st.name, clients), func(b *testing.B) {
				benchAppend(b, st.open(b), clients)
			})
			b.Run(fmt.Sprintf("store=%s/clients=%d/path=ledger", st.name, clients), func(b *testing.B) {
				benchLedger(b, st.open(b), clients)
			})
		}
	}
}

// transferEvent is a transfer_posted event as the ledger writes it.
func transferEvent() auditlog.Event {
	t := book.TransferPosted{Transfer: newID("tr-"), From: "acc-bench-00", To: "acc-bench-01", Amount: 1, By: "user:bench-00"}
	res, _ := json.Marshal(t)
	t.Op = &book.Op{Principal: "user:bench-00", Key: book.FormatKey(sha256Of("k")), FP: book.FormatFP(sha256Of("fp")), Status: 201, Body: res}
	p, _ := json.Marshal(t)
	return auditlog.Event{Type: book.TypeTransferPosted, Actor: "service:ledger", Payload: p}
}

func benchLog(b *testing.B, open func() auditlog.Store) *auditlog.Log {
	st := open()
	skey, _, _ := note.GenerateKey(nil, "ledger.test/audit")
	signer, _ := note.NewSigner(skey)
	k, _ := keyring.NewKey()
	ring, _ := keyring.NewRing("k1", map[string]keyring.Key{"k1": k})
	log, err := auditlog.New(auditlog.Config{Store: st, Origin: "ledger.test/audit", Signers: []note.Signer{signer}, Ring: ring})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { log.Close(); st.Close() })
	return log
}

// benchAppend is the store's own rate: clients goroutines appending one
// event each per operation through the log's group commit.
func benchAppend(b *testing.B, open func() auditlog.Store, clients int) {
	log := benchLog(b, open)
	ev := transferEvent()
	b.SetParallelism(clients)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := log.Append(context.Background(), ev); err != nil {
				b.Error(err)
				return
			}
		}
	})
	report(b, start, cpu0)
}

// report adds the rate and the process CPU per operation: on a shared
// machine the CPU figure is the stable one.
func report(b *testing.B, start time.Time, cpu0 time.Duration) {
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// benchLedger is the ledger's rate: clients goroutines each sending
// transfers with fresh keys between their own two accounts.
func benchLedger(b *testing.B, open func() auditlog.Store, clients int) {
	e := newEnv(b, withAudit(open))
	toks := make([]string, clients)
	for c := range clients {
		toks[c] = e.token(fmt.Sprintf("user:bench-%02d", c))
		for _, side := range []string{"a", "b"} {
			id := fmt.Sprintf("acc-bench-%02d-%s", c, side)
			if r := e.do("POST", "/v1/accounts", toks[c], `{"id":"`+id+`"}`, ""); r.code != 201 {
				b.Fatalf("open: %s", r)
			}
		}
		if _, err := e.svc().Deposit(context.Background(), "user:teller", fmt.Sprintf("acc-bench-%02d-a", c), book.MaxAmount, fmt.Sprint("fund-", c)); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	var client atomic.Int64
	h := e.handler()
	b.SetParallelism(clients)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		c := int(client.Add(1)-1) % clients
		auth := "Bearer " + toks[c]
		body := transferBody(fmt.Sprintf("acc-bench-%02d-a", c), fmt.Sprintf("acc-bench-%02d-b", c), 1)
		proto := httptest.NewRequest("POST", "/v1/transfers", nil)
		for pb.Next() {
			// What a server hands the handler: a parsed request with its
			// own header and body (httptest.NewRequest would re-parse the
			// URL each time, a cost of the client, not of the ledger).
			r := proto.Clone(context.Background())
			r.Header = http.Header{
				"Authorization":       {auth},
				"Content-Type":        {"application/json"},
				idempotency.HeaderKey: {idempotency.FormatKey("bench-" + strconv.FormatInt(next.Add(1), 10))},
			}
			r.Body = io.NopCloser(strings.NewReader(body))
			r.ContentLength = int64(len(body))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusCreated {
				b.Errorf("transfer: %d %s", w.Code, w.Body)
				return
			}
		}
	})
	report(b, start, cpu0)
	if st := e.svc().Stats(); st.Batches > 0 {
		b.ReportMetric(float64(st.Events)/float64(st.Batches), "events/commit")
	}
}

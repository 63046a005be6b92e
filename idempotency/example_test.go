package idempotency_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/malai-sec/malai/idempotency"
	"github.com/malai-sec/malai/idempotency/memstore"
)

// The ledger guards POST /transfers; the caller comes from the verified
// JWT (here a stand-in that reads the context).
func Example() {
	// Stand-in for jwtverify: authentication puts the verified subject in
	// the context; Principal reads it back.
	type subjectKey struct{}
	authenticate := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), subjectKey{}, "alice")))
		})
	}
	store, _ := memstore.New(memstore.Config{})
	idem, err := idempotency.New(idempotency.Config{
		Store: store,
		Principal: func(r *http.Request) (string, bool) {
			sub, ok := r.Context().Value(subjectKey{}).(string)
			return sub, ok
		},
	})
	if err != nil {
		panic(err)
	}
	executions := 0
	transfers := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		executions++
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"id":"tr_1"}`)
	})
	mux := http.NewServeMux()
	mux.Handle("POST /transfers", authenticate(idem.Handler(transfers)))

	for range 2 {
		r := httptest.NewRequest(http.MethodPost, "/transfers", strings.NewReader(`{"amount":"10.00"}`))
		r.Header.Set("Idempotency-Key", `"8e03978e-40d5-43e8-bc93-6894a57f9324"`)
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		fmt.Println(w.Code, w.Header().Get("Idempotent-Replayed"), w.Body.String())
	}
	fmt.Println("executions:", executions)
	// Output:
	// 201  {"id":"tr_1"}
	// 201 true {"id":"tr_1"}
	// executions: 1
}

// The worker consuming the async transfer stream computes the record key
// the HTTP middleware would have used, so a client retry and a queue
// redelivery meet one record.
func ExampleRunner_Do() {
	store, _ := memstore.New(memstore.Config{})
	runner, err := idempotency.NewRunner(idempotency.RunnerConfig{Store: store})
	if err != nil {
		panic(err)
	}
	msg := struct{ Subject, Key, Body string }{"alice", "8e03978e", `{"amount":"10.00"}`}
	key := idempotency.RecordKey(msg.Subject, http.MethodPost, "POST /transfers", msg.Key)
	fp := idempotency.Fingerprint([]byte(msg.Body), nil)

	for delivery := 1; delivery <= 2; delivery++ {
		res, replayed, err := runner.Do(context.Background(), key, fp,
			func(ctx context.Context, l *idempotency.Lease) (idempotency.Result, error) {
				// l.Token() fences the ledger write; l.Extend renews the
				// lease while the worker waits under back-pressure.
				return idempotency.Result{Status: http.StatusCreated, Body: []byte(`{"id":"tr_1"}`)}, nil
			})
		fmt.Println(delivery, res.Status, replayed, err)
	}
	// Output:
	// 1 201 false <nil>
	// 2 201 true <nil>
}

package correlation_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"time"

	"github.com/malai-sec/malai/correlation"
	"github.com/malai-sec/malai/route"
)

// Wire the middleware the way every reference service does, with a JSON
// access log. Varying fields (time, ids, duration) are dropped so the
// output is stable.
func Example() {
	stable := func(_ []string, a slog.Attr) slog.Attr {
		switch a.Key {
		case slog.TimeKey, "duration", correlation.LogKeyRequestID:
			return slog.Attr{}
		}
		return a
	}
	logger := slog.New(correlation.NewLogHandler(
		slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{ReplaceAttr: stable})))

	mw, err := correlation.New(correlation.Config{Logger: logger})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /accounts/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, _ := correlation.FromContext(r.Context())
		fmt.Println("handler sees a valid id:", correlation.ValidID(id))
		io.WriteString(w, `{"balance":10}`)
	})
	h := mw.Handler(route.RecordPattern(mux))

	req := httptest.NewRequest("GET", "/accounts/42?token=never-logged", nil)
	req.RemoteAddr = "192.0.2.7:51234"
	req.Header.Set(correlation.HeaderName, "chosen-by-the-client") // not trusted
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	fmt.Println("id replaced:", rec.Header().Get(correlation.HeaderName) != "chosen-by-the-client")
	// Output:
	// handler sees a valid id: true
	// {"level":"INFO","msg":"http request","method":"GET","route":"/accounts/{id}","status":200,"bytes":14,"client_ip":"192.0.2.7"}
	// id replaced: true
}

// Seal JSON log lines as they are written, rotate the key, and verify the
// stream when reading it back.
func ExampleNewEncryptedWriter() {
	k1, _ := correlation.NewKey()
	ring, _ := correlation.NewKeyRing("2026-11", map[string]correlation.Key{"2026-11": k1})

	var file bytes.Buffer // an *os.File in production
	w, _ := correlation.NewEncryptedWriter(&file, ring)
	logger := slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}}))
	logger.Info("transfer", "amount", 10)
	k2, _ := correlation.NewKey()
	_ = ring.Rotate("2026-12", k2)
	logger.Warn("transfer", "amount", 20)
	_ = w.Close()

	fmt.Println("plaintext on disk:", bytes.Contains(file.Bytes(), []byte("transfer")))
	r := correlation.NewEncryptedReader(&file, ring)
	for {
		rec, err := r.Next()
		if err != nil {
			fmt.Println("end:", err)
			break
		}
		fmt.Printf("#%d key %s: %s", rec.Index, rec.KeyID, rec.Data)
	}
	// Output:
	// plaintext on disk: false
	// #0 key 2026-11: {"level":"INFO","msg":"transfer","amount":10}
	// #1 key 2026-12: {"level":"WARN","msg":"transfer","amount":20}
	// end: EOF
}

// An alarm over a 1-minute window: it fires once when 5xx reach 10 % of
// at least 20 requests, and resolves once under 5 %.
func ExampleNewAlarm() {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	alarm, _ := correlation.NewAlarm(correlation.AlarmConfig{
		Threshold:    0.10,
		ResolveBelow: 0.05,
		MinRequests:  20,
		Now:          func() time.Time { return now },
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnFire: func(ev correlation.AlarmEvent) {
			fmt.Printf("FIRE %d/%d\n", ev.Errors, ev.Requests)
		},
		OnResolve: func(ev correlation.AlarmEvent) {
			fmt.Printf("RESOLVED %d/%d\n", ev.Errors, ev.Requests)
		},
	})
	for range 18 {
		alarm.Record(http.StatusOK)
	}
	for range 4 {
		alarm.Record(http.StatusBadGateway) // fires at 2/20, once
	}
	for range 60 {
		alarm.Record(http.StatusOK) // resolves when 4/n drops under 5 %
	}
	// Output:
	// FIRE 2/20
	// RESOLVED 4/81
}

// Outbound calls made while serving a request carry its id (and, with a
// TracerProvider, its trace context) to the next service.
func ExampleMiddleware_Transport() {
	ledger := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get(correlation.HeaderName))
	}))
	defer ledger.Close()

	mw, _ := correlation.New(correlation.Config{})
	client := &http.Client{Transport: mw.Transport(nil)}
	gateway := mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out, _ := http.NewRequestWithContext(r.Context(), "GET", ledger.URL, nil)
		resp, err := client.Do(out)
		if err != nil {
			http.Error(w, "ledger unavailable", http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		seen, _ := io.ReadAll(resp.Body)
		own, _ := correlation.FromContext(r.Context())
		fmt.Println("ledger saw the gateway's id:", string(seen) == own)
	}))
	gateway.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/transfers", nil))
	// Output:
	// ledger saw the gateway's id: true
}

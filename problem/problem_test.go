package problem

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/malai-sec/malai/internal/reqid"
)

func TestWrite(t *testing.T) {
	tests := []struct {
		name     string
		p        Problem
		id       string
		method   string
		wantCode int
		want     map[string]any
	}{
		{
			name:     "rate limited with correlation id",
			p:        Problem{Status: 429, Type: "rate-limited", Title: "Too many requests", Detail: "Retry later."},
			id:       "01JD8ZQ3",
			wantCode: 429,
			want: map[string]any{
				"type": DefaultTypeBase + "rate-limited", "title": "Too many requests", "status": float64(429),
				"detail": "Retry later.", "correlation_id": "01JD8ZQ3",
			},
		},
		{
			name:     "missing title and type fall back to status text and about:blank",
			p:        Problem{Status: 403},
			wantCode: 403,
			want:     map[string]any{"type": "about:blank", "title": "Forbidden", "status": float64(403)},
		},
		{
			name:     "non-error status becomes 500",
			p:        Problem{Status: 200, Type: "internal"},
			wantCode: 500,
			want:     map[string]any{"type": DefaultTypeBase + "internal", "title": "Internal Server Error", "status": float64(500)},
		},
		{
			name: "extensions cannot override standard members",
			p: Problem{Status: 429, Type: "rate-limited", Title: "Too many requests",
				Extensions: map[string]any{"retry_after": 3, "status": 200, "type": "x", "correlation_id": "forged"}},
			wantCode: 429,
			want: map[string]any{
				"type": DefaultTypeBase + "rate-limited", "title": "Too many requests", "status": float64(429), "retry_after": float64(3),
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/accounts/1", nil)
			if tc.id != "" {
				r = r.WithContext(reqid.NewContext(r.Context(), tc.id))
			}
			rec := httptest.NewRecorder()
			rec.Header().Set("WWW-Authenticate", `Bearer realm="malai"`)
			rec.Header().Set("ETag", `"stale"`)
			Write(rec, r, tc.p)
			if rec.Code != tc.wantCode {
				t.Fatalf("status = %d, want %d", rec.Code, tc.wantCode)
			}
			for k, v := range map[string]string{
				"Content-Type":           ContentType,
				"Cache-Control":          "no-store",
				"X-Content-Type-Options": "nosniff",
				"WWW-Authenticate":       `Bearer realm="malai"`,
				"ETag":                   "",
			} {
				if got := rec.Header().Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			var got map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("body is not JSON: %v: %s", err, rec.Body)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWriteNothingWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx)
	rec := httptest.NewRecorder()
	Write(rec, r, Unavailable)
	if rec.Body.Len() != 0 || len(rec.Header()) != 0 || rec.Code != 200 || rec.Flushed {
		t.Fatalf("wrote to a cancelled request: code=%d headers=%v body=%q", rec.Code, rec.Header(), rec.Body)
	}
}

func TestHeadHasNoBody(t *testing.T) {
	r := httptest.NewRequest(http.MethodHead, "/", nil)
	rec := httptest.NewRecorder()
	Write(rec, r, Unavailable)
	if rec.Code != 503 || rec.Body.Len() != 0 {
		t.Fatalf("HEAD: code=%d body=%q", rec.Code, rec.Body)
	}
}

// The writer's API takes no error at all; this test pins that the shared
// problems carry only their fixed, generic text.
func TestSharedProblemsAreGeneric(t *testing.T) {
	for _, p := range []Problem{Unavailable, Internal} {
		rec := httptest.NewRecorder()
		Write(rec, httptest.NewRequest(http.MethodGet, "/", nil), p)
		body := rec.Body.String()
		for _, bad := range []string{"dial tcp", "password", "pq:", "redis:", "panic", "goroutine"} {
			if strings.Contains(body, bad) {
				t.Errorf("%s body contains %q: %s", p.Type, bad, body)
			}
		}
	}
}

// A deployment's own type base reaches every problem written under it,
// and only an absolute URI is accepted.
func TestTypeBase(t *testing.T) {
	types, err := Handler("https://errors.example.com/")
	if err != nil {
		t.Fatal(err)
	}
	h := types(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		Write(w, r, Problem{Status: 429, Type: "rate-limited"})
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	var body struct{ Type string }
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Type != "https://errors.example.com/rate-limited" {
		t.Fatalf("type %q (%v)", body.Type, err)
	}
	if got := TypeURIFor(context.Background(), "x"); got != DefaultTypeBase+"x" {
		t.Fatalf("default base %q", got)
	}
	if got := TypeURIFor(NewContext(context.Background(), "urn:example:problem:"), "x"); got != "urn:example:problem:x" {
		t.Fatalf("URN base %q", got)
	}
	for _, bad := range []string{"", "/docs/problems#", "errors.example.com/", "https://errors.example.com/ x", "://x"} {
		if _, err := Handler(bad); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Handler(%q): %v, want ErrInvalidConfig", bad, err)
		}
	}
}

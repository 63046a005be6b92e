package identity

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

var decoderSeeds = []string{
	`{"username":"alice","password":"Tr1cky-Harbour-Lantern"}`,
	`{"username":"alice","password":"Tr1cky-Harbour-Lantern","totp_code":"123456"}`,
	`{"username":"alice","password":"p","recovery_code":"abcd-efgh-ijkl-mnop"}`,
	`{"username":"alice","username":"bob"}`,
	`{"Username":"alice"}`,
	`{"username":"alice","role":"admin"}`,
	`{"username":1}`,
	`{"username":null}`,
	`{"password":"a\ud800b"}`,
	"{\"password\":\"a\xffb\"}",
	`{"username":"a"}{"username":"b"}`,
	`[]`,
	``,
	`{"username":"` + strings.Repeat("a", 5000) + `"}`,
}

func fuzzRequest(body []byte) (*httptest.ResponseRecorder, *http.Request) {
	r := httptest.NewRequest(http.MethodPost, "/v1/sessions", strings.NewReader(string(body)))
	r.Header.Set("Content-Type", "application/json")
	return httptest.NewRecorder(), r
}

// FuzzDecodeSignIn checks that the sign-in decoder never panics, accepts
// only bodies encoding/json also accepts as an object of strings, and
// returns exactly what a plain decode of such a body yields.
func FuzzDecodeSignIn(f *testing.F) {
	for _, s := range decoderSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		w, r := fuzzRequest(body)
		req, err := decodeSignIn(w, r)
		if err != nil {
			return
		}
		if len(body) > maxJSONBody {
			t.Fatalf("accepted a %d-byte body", len(body))
		}
		var plain map[string]string
		if err := json.Unmarshal(body, &plain); err != nil {
			t.Fatalf("strict decoder accepted what encoding/json refuses: %v", err)
		}
		got := map[string]string{"username": req.Username, "password": req.Password.Reveal(),
			"totp_code": req.TOTPCode.Reveal(), "recovery_code": req.RecoveryCode.Reveal()}
		for k, v := range plain {
			if got[k] != v {
				t.Fatalf("member %q: strict %q, plain %q", k, got[k], v)
			}
		}
		for _, v := range got {
			if !utf8.ValidString(v) {
				t.Fatal("decoded invalid UTF-8")
			}
		}
	})
}

// FuzzDecodeSignUp does the same for the sign-up body, which must refuse
// the sign-in-only members.
func FuzzDecodeSignUp(f *testing.F) {
	for _, s := range decoderSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		w, r := fuzzRequest(body)
		req, err := decodeSignUp(w, r)
		if err != nil {
			return
		}
		var plain map[string]string
		if err := json.Unmarshal(body, &plain); err != nil {
			t.Fatalf("strict decoder accepted what encoding/json refuses: %v", err)
		}
		for k := range plain {
			if k != "username" && k != "password" {
				t.Fatalf("accepted member %q", k)
			}
		}
		if plain["username"] != req.Username || plain["password"] != req.Password.Reveal() {
			t.Fatal("decoded values differ from encoding/json")
		}
	})
}

// FuzzTokenEndpoint throws arbitrary Authorization headers, media types
// and bodies at POST /oauth2/token: the answer is always an RFC 6749 JSON
// body with 200, 400 or 401, and 200 only with the right credentials.
func FuzzTokenEndpoint(f *testing.F) {
	svc, err := New(Config{Issuer: testIssuer, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = svc.Close() })
	secret, _ := svc.RegisterClient("ledger", []string{"audit:append", "accounts:read"})
	good := "Basic " + base64.StdEncoding.EncodeToString([]byte("ledger:"+secret))
	h := svc.Handler()
	seeds := []struct{ auth, ct, body string }{
		{good, formCT, "grant_type=client_credentials"},
		{good, formCT, "grant_type=client_credentials&scope=audit:append"},
		{good, formCT, "grant_type=client_credentials&scope=admin"},
		{good, formCT, "grant_type=password"},
		{good, formCT, "grant_type=client_credentials&grant_type=client_credentials"},
		{good, formCT, "grant_type=%zz"},
		{good, "application/json", `{"grant_type":"client_credentials"}`},
		{"Basic bGVkZ2VyOng=", formCT, "grant_type=client_credentials"},
		{"Basic !!!", formCT, "grant_type=client_credentials"},
		{"Bearer x", formCT, "grant_type=client_credentials&client_secret=" + secret},
		{"", formCT, ""},
	}
	for _, s := range seeds {
		f.Add(s.auth, s.ct, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, auth, ct string, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/oauth2/token", bytes.NewReader(body))
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		r.Header.Set("Content-Type", ct)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch w.Code {
		case 200:
			id, sec, ok := r.BasicAuth()
			id, _ = url.QueryUnescape(id)
			sec, _ = url.QueryUnescape(sec)
			if !ok || id != "ledger" || sec != secret {
				t.Fatalf("200 for Authorization %q", auth)
			}
			if strings.Contains(w.Body.String(), secret) {
				t.Fatal("response echoes the secret")
			}
		case 400, 401:
			var e TokenError
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("%d with body %q", w.Code, w.Body)
			}
			if strings.Contains(w.Body.String(), secret) {
				t.Fatal("error echoes the secret")
			}
		default:
			t.Fatalf("status %d", w.Code)
		}
	})
}

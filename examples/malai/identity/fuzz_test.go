package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/malai-sec/malai/examples/malai/identity/clientauth"
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
	r := httptest.NewRequest(http.MethodPost, SignInPath, bytes.NewReader(body))
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
			"totp_code": req.TOTPCode.Reveal(), "recovery_code": req.RecoveryCode.Reveal(), "mfa_token": req.MFAToken.Reveal()}
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

// fuzzRoutes are the routes with a JSON body, by index.
var fuzzRoutes = []string{
	"/v1/account/password", "/v1/mfa/totp", "/v1/mfa/totp/confirm", "/v1/mfa/totp/disable",
	"/v1/mfa/recovery-codes", SignInPath + "/mfa", ClientsPath,
}

// FuzzAccountBodies throws arbitrary bodies at every JSON route a signed-in
// user (or a component, for key registration) may call: the answer is
// always a defined status with a JSON or problem+json body, never a 500,
// and never an echo of the body.
func FuzzAccountBodies(f *testing.F) {
	h := newHarness(f, nil)
	ctx := context.Background()
	if _, err := h.svc.CreateUser(ctx, "alice", strongPW); err != nil {
		f.Fatal(err)
	}
	tok := h.signInOK(creds("alice", strongPW)).token
	key, _ := clientauth.NewKey()
	seeds := []string{
		`{"password":"` + strongPW + `","new_password":"Quiet-Meadow-Walrus-42"}`,
		`{"password":"` + strongPW + `"}`,
		`{"password":"x","totp_code":"123456"}`,
		`{"password":"x","recovery_code":"abcd-efgh-ijkl-mnop"}`,
		`{"code":"123456"}`,
		`{"mfa_token":"m1.e30.AAAA","totp_code":"123456"}`,
		`{"jwk":` + string(key.PublicJWK()) + `}`,
		`{"jwk":{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}}`,
		`{"password":"a","password":"b"}`,
		`{"jwk":{},"jwk":{}}`,
		`[]`, ``, `{"password":1}`,
	}
	for i := range fuzzRoutes {
		for _, s := range seeds {
			f.Add(uint8(i), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		path := fuzzRoutes[int(route)%len(fuzzRoutes)]
		r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+tok.Reveal())
		r.Header.Set("X-Test-Peer", "worker")
		w := httptest.NewRecorder()
		h.svc.Handler().ServeHTTP(w, r)
		switch w.Code {
		case 200, 201, 204, 400, 401, 403, 409, 413, 422, 429:
		default:
			t.Fatalf("%s: status %d %s", path, w.Code, w.Body)
		}
		if w.Code >= 400 {
			if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("%s: %d with %q", path, w.Code, ct)
			}
			if len(body) > 40 && bytes.Contains(w.Body.Bytes(), body) {
				t.Fatalf("%s: the error echoes the body", path)
			}
		}
	})
}

// FuzzTokenEndpoint throws arbitrary Authorization headers, media types
// and bodies at POST /oauth2/token: the answer is always an RFC 6749 JSON
// body, never cacheable, with 200 only for a fresh assertion of the
// registered key.
func FuzzTokenEndpoint(f *testing.F) {
	h := newHarness(f, nil)
	key, _ := clientauth.NewKey()
	if _, err := h.svc.RegisterClientKey(context.Background(), "worker", key.PublicJWK()); err != nil {
		f.Fatal(err)
	}
	a, _ := key.Assertion("worker", testIssuer+TokenPath, h.clock.Now())
	good := url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {AssertionType}, "client_assertion": {a}}.Encode()
	form := "application/x-www-form-urlencoded"
	seeds := []struct{ auth, ct, body string }{
		{"", form, good},
		{"", form, good + "&scope=ledger:transfer"},
		{"", form, good + "&scope=ledger:audit"},
		{"", form, good + "&client_id=ledger"},
		{"", form, strings.Replace(good, "client_credentials", "password", 1)},
		{"", form, good + "&" + good},
		{"Basic d29ya2VyOnNlY3JldA==", form, "grant_type=client_credentials"},
		{"", form, "grant_type=client_credentials&client_id=worker&client_secret=secret"},
		{"", form, "grant_type=%zz"},
		{"", "application/json", `{"grant_type":"client_credentials"}`},
		{"", form, ""},
	}
	for _, s := range seeds {
		f.Add(s.auth, s.ct, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, auth, ct string, body []byte) {
		r := httptest.NewRequest(http.MethodPost, TokenPath, bytes.NewReader(body))
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		r.Header.Set("Content-Type", ct)
		r.Header.Set("X-Test-Peer", "worker")
		w := httptest.NewRecorder()
		h.svc.Handler().ServeHTTP(w, r)
		if w.Header().Get("Cache-Control") != "no-store" {
			t.Fatalf("%d answer is cacheable", w.Code)
		}
		switch w.Code {
		case 200:
			if !bytes.Contains(body, []byte(a)) && !bytes.Contains(body, []byte(url.QueryEscape(a))) {
				t.Fatalf("200 without the registered key's assertion: %q", body)
			}
		case 400, 401, 503:
			var e TokenError
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("%d with body %q", w.Code, w.Body)
			}
			if strings.Contains(w.Body.String(), a) {
				t.Fatal("error echoes the assertion")
			}
		default:
			t.Fatalf("status %d", w.Code)
		}
	})
}

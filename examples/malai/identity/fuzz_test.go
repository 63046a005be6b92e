package identity

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
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

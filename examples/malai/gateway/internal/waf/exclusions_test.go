package waf

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"

	"github.com/malai-sec/malai/examples/malai/identity"
	"github.com/malai-sec/malai/examples/malai/web"
)

// Every password sample passes on each credential route and field, while
// the same text in the username of that route, or in a ledger field, is
// still refused.
func TestCredentialFieldsAreNotAttacks(t *testing.T) {
	cfg := GatewayConfig()
	w := newSuiteWAF(t, cfg)
	h := w.Handler(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { rw.WriteHeader(http.StatusNoContent) }))
	post := func(path string, body map[string]string) int {
		b, _ := json.Marshal(body)
		r := httptest.NewRequest("POST", path, strings.NewReader(string(b)))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0")
		r.Header.Set("Accept", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Code
	}
	for _, route := range credentialRoutes {
		for _, field := range route.Fields {
			for _, pw := range passwordSamples {
				body := map[string]string{"username": "alice"}
				for _, f := range route.Fields {
					body[f] = "correct horse battery staple"
				}
				body[field] = pw
				if code := post(route.Path, body); code != http.StatusNoContent {
					t.Errorf("%s %s: password %q in %s refused with %d", route.Method, route.Path, pw, field, code)
				}
			}
		}
	}
	// The same text elsewhere meets the rules as before: wherever a
	// ledger field refuses it, the username of the same route does too.
	blockedInLedger := 0
	for _, pw := range passwordSamples {
		ledger := post("/v1/transfers", map[string]string{"from": "acc_1", "to": "acc_2", "memo": pw, "password": pw})
		user := post("/v1/sessions", map[string]string{"username": pw, "password": "correct horse battery staple"})
		if ledger == http.StatusForbidden {
			blockedInLedger++
			if user != http.StatusForbidden {
				t.Errorf("%q: refused in a ledger memo but not as a username (%d): the exclusion leaks", pw, user)
			}
		}
	}
	if blockedInLedger < len(passwordSamples)*3/4 {
		t.Fatalf("only %d of %d samples refused in a ledger field: the samples no longer exercise the rules", blockedInLedger, len(passwordSamples))
	}
	blockedInUsername := blockedInLedger
	t.Logf("%d samples: all pass as passwords; %d refused as usernames, %d in a ledger memo", len(passwordSamples), blockedInUsername, blockedInLedger)
}

func TestExclusionConfigErrors(t *testing.T) {
	for _, e := range []Exclusion{
		{Path: "/v1/sessions", Fields: []string{"password"}, Rules: []int{942100}},
		{Method: "POST", Path: "v1", Fields: []string{"password"}, Rules: []int{942100}},
		{Method: "POST", Path: "/v1/sessions", Fields: []string{"pass word"}, Rules: []int{942100}},
		{Method: "POST", Path: "/v1/sessions", Fields: []string{"password"}},
	} {
		if _, err := New(Config{Exclusions: []Exclusion{e}}); err == nil {
			t.Errorf("exclusion %+v accepted", e)
		}
	}
}

// The cookies identity and the web app issue are random base64url text,
// which trips the SQL rules now and then: this session value, drawn at
// random, reads to libinjection as SQL with a "--" comment (942100). With
// the issued shape it passes under every issued name; the same text in a
// cookie of another name, in a ledger field, in a second cookie of the
// name, or an attack under the name but off the shape, is refused.
func TestIssuedCookiesAreNotAttacks(t *testing.T) {
	const tripping = "0-zKB4OlDsu78M48KTlbTmvU4i6j2XmIts7--b7EQac"
	want := []OpaqueCookie{
		{Name: web.CookieName, Format: web.CookieFormat},
		{Name: identity.RefreshCookie, Format: identity.RefreshCookieFormat},
		{Name: identity.DeviceCookie, Format: identity.DeviceCookieFormat},
	}
	if diff := cmp.Diff(want, IssuedCookies()); diff != "" {
		t.Fatalf("IssuedCookies differ from the issuers' names and formats (-issuers +waf):\n%s", diff)
	}
	w := newSuiteWAF(t, GatewayConfig())
	h := w.Handler(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { rw.WriteHeader(http.StatusNoContent) }))
	send := func(method, path, body string, cookies ...string) int {
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		if body != "" {
			r.Header.Set("Content-Type", "application/json")
		}
		r.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0")
		r.Header.Set("Accept", "application/json")
		if len(cookies) > 0 {
			r.Header.Set("Cookie", strings.Join(cookies, "; "))
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Code
	}
	device := "v1.AAAAAAAAAAAAAAAAAAAAAA.AAAAAGmW1nA.-zKB4OlDsu78--b7EQac1A"
	if !regexp.MustCompile("^(?:" + identity.DeviceCookieFormat + ")$").MatchString(device) {
		t.Fatal("test device value off the format")
	}
	for _, c := range []struct {
		path, cookie string
		want         int
	}{
		{"/", web.CookieName + "=" + tripping, http.StatusNoContent},
		{"/v1/refresh", identity.RefreshCookie + "=" + tripping, http.StatusNoContent},
		{"/v1/sessions", identity.DeviceCookie + "=" + device, http.StatusNoContent},
		{"/", "other=" + tripping, http.StatusForbidden},
		{"/", web.CookieName + "=" + tripping + "; " + web.CookieName + "=" + tripping, http.StatusForbidden},
		{"/", web.CookieName + "=" + tripping + "; " + web.CookieName + "=1'%20OR%201=1--", http.StatusForbidden},
		{"/", web.CookieName + "=1'%20OR%20'1'='1'--", http.StatusForbidden},
		{"/v1/sessions", identity.DeviceCookie + "=v1.x' UNION SELECT password FROM users--", http.StatusForbidden},
	} {
		if got := send("GET", c.path, "", c.cookie); got != c.want {
			t.Errorf("GET %s Cookie: %s: %d, want %d", c.path, c.cookie, got, c.want)
		}
	}
	if got := send("POST", "/v1/transfers", `{"from":"acc_1","to":"acc_2","amount":1,"memo":"`+tripping+`"}`); got != http.StatusForbidden {
		t.Errorf("the value in a ledger field: %d, want 403", got)
	}
	// Without the issued shapes the value is refused: the sample is a
	// real trigger, not one the rules never see.
	bare := GatewayConfig()
	bare.OpaqueCookies = nil
	hb := newSuiteWAF(t, bare).Handler(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { rw.WriteHeader(http.StatusNoContent) }))
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0")
	r.Header.Set("Accept", "text/html")
	r.Header.Set("Cookie", web.CookieName+"="+tripping)
	rec := httptest.NewRecorder()
	hb.ServeHTTP(rec, r)
	if rec.Code != http.StatusForbidden {
		t.Fatalf("without OpaqueCookies the tripping value got %d, want 403", rec.Code)
	}
}

func TestOpaqueCookieConfigErrors(t *testing.T) {
	for _, c := range []OpaqueCookie{
		{Name: "a b", Format: "x"},
		{Name: "ok", Format: ""},
		{Name: "ok", Format: `x" "id:1,deny`},
		{Name: "ok", Format: "("},
	} {
		if _, err := New(Config{OpaqueCookies: []OpaqueCookie{c}, rulesOverride: "SecRuleEngine On\n"}); err == nil {
			t.Errorf("OpaqueCookie %+v accepted", c)
		}
	}
}

// A token of identity's shape passes the rules uninspected; the same
// header off the shape, under another scheme, or twice, is inspected. A
// rule tagged like the CRS's that refuses any header value beginning
// "Bearer" (any case) shows which values the rules still read; the real rules
// refuse an attack off the shape. (At paranoia level 1 no CRS rule looks
// for SQL or shell syntax in Authorization, with or without this.)
func TestIssuedBearerIsNotInspected(t *testing.T) {
	token := sampleToken()
	if n := len(token); n < 600 || n > 900 {
		t.Fatalf("sample token is %d bytes, want identity's ~700", n)
	}
	if !regexp.MustCompile("^(?:" + IssuedBearer + ")$").MatchString(token) {
		t.Fatal("sample token off IssuedBearer")
	}
	probe := GatewayConfig()
	probe.beforeCRS = `SecRule REQUEST_HEADERS "@rx (?i)^bearer " "id:939999,phase:1,deny,status:403,log,tag:'OWASP_CRS'"` + "\n" // an id among the CRS rules that read the headers
	send := func(h http.Handler, auth ...string) int {
		r := httptest.NewRequest("GET", "/v1/accounts/acc_1", nil)
		r.Header.Set("User-Agent", "Go-http-client/1.1")
		r.Header.Set("Accept", "application/json")
		for _, a := range auth {
			r.Header.Add("Authorization", a)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Code
	}
	ok := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { rw.WriteHeader(http.StatusNoContent) })
	hp := newSuiteWAF(t, probe).Handler(ok)
	parts := strings.Split(token, ".")
	for _, c := range []struct {
		name string
		auth []string
		want int
	}{
		{"issued shape", []string{"Bearer " + token}, http.StatusNoContent},
		{"second Authorization header", []string{"Bearer " + token, "Bearer " + token}, http.StatusForbidden},
		{"other scheme", []string{"bearer " + token}, http.StatusForbidden},
		{"padding", []string{"Bearer " + token + "=="}, http.StatusForbidden},
		{"fourth segment", []string{"Bearer " + token + ".eyJ"}, http.StatusForbidden},
		{"short signature", []string{"Bearer " + token[:len(token)-1]}, http.StatusForbidden},
		{"quote in the claims", []string{"Bearer " + parts[0] + "." + parts[1] + "'." + parts[2]}, http.StatusForbidden},
		{"trailing text", []string{"Bearer " + token + " eyJ"}, http.StatusForbidden},
		{"overlong", []string{"Bearer " + parts[0] + "." + parts[1] + strings.Repeat("A", MaxOpaqueBearer) + "." + parts[2]}, http.StatusForbidden},
		{"SQL injection", []string{"Bearer ' OR 1=1--"}, http.StatusForbidden},
		{"not a JWT", []string{"Bearer not.a.token"}, http.StatusForbidden},
	} {
		if got := send(hp, c.auth...); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	// The real rules still read an Authorization header off the shape.
	hg := newSuiteWAF(t, GatewayConfig()).Handler(ok)
	for _, c := range []struct {
		name string
		auth []string
	}{
		{"path traversal", []string{"Bearer ../../../../etc/passwd"}},
		{"traversal in the claims", []string{"Bearer " + parts[0] + "./../../../etc/passwd." + parts[2]}},
		{"attack in a second header", []string{"Bearer " + token, "Bearer ../../../../etc/passwd"}},
	} {
		if got := send(hg, c.auth...); got != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", c.name, got)
		}
	}
	if got := send(hg, "Bearer "+token); got != http.StatusNoContent {
		t.Errorf("issued token through the gateway's rules: %d, want 204", got)
	}
}

// The scan of the embedded CRS finds the rules that read a collection:
// a rule that reads all headers, one that reads a header by name, one
// in a chain's second rule; never one that reads neither. The cookie and
// bearer exclusions remove their targets from exactly these.
func TestCRSReaders(t *testing.T) {
	readers, err := crsReaders()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		col  string
		id   int
		want bool
	}{
		{"REQUEST_HEADERS", 930110, true},  // REQUEST_HEADERS|!REQUEST_HEADERS:Referer
		{"REQUEST_HEADERS", 920280, true},  // &REQUEST_HEADERS:Host
		{"REQUEST_HEADERS", 920180, true},  // REQUEST_HEADERS only in the chain's later rules
		{"REQUEST_HEADERS", 942140, false}, // ARGS and cookies only
		{"REQUEST_COOKIES", 942100, true},
		{"REQUEST_COOKIES", 930110, false},
	} {
		if got := slices.Contains(readers[c.col], c.id); got != c.want {
			t.Errorf("%s read by %d: %v, want %v", c.col, c.id, got, c.want)
		}
	}
	if _, err := scanCRS(fstest.MapFS{}); err == nil {
		t.Error("scan of an empty tree succeeded")
	}
	var b strings.Builder
	removeTarget(&b, "REQUEST_HEADERS:Authorization")
	if !strings.HasPrefix(b.String(), ",ctl:ruleRemoveTargetById=") {
		t.Errorf("removeTarget wrote %q", b.String())
	}
}

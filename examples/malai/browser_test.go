package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"html"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/audits"
	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/chromedp"
	goqr "github.com/piglig/go-qr"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/malai-sec/malai/examples/malai/web"
	"github.com/malai-sec/malai/internal/servicetest"
)

// chromium finds a Chromium binary, or skips (fails when services are
// required: CI installs the Debian package).
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("MALAI_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if servicetest.Required() {
		t.Fatalf("no Chromium on PATH (install the Debian package chromium; %s=1)", servicetest.EnvRequireServices)
	}
	t.Skip("browser tests skipped: no Chromium on PATH (apt-get install chromium, or set MALAI_CHROMIUM)")
	return ""
}

// screenshotDir is where the run writes one screenshot per page: the
// directory in MALAI_SCREENSHOT_DIR (the evidence pass, or docs/), else a
// fresh temporary directory that is kept for review.
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("MALAI_SCREENSHOT_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	d, err := os.MkdirTemp("", "malai-screenshots-")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// watcher collects, from one tab's DevTools events, everything the run
// must not see: CSP and Trusted Types violations (console and Audits
// issues), uncaught exceptions, and requests that failed or answered
// 5xx (a WAF or rate-limit refusal of an asset shows up here). It also
// counts the main frame's loads, so a wait for a navigation the page
// starts by itself (a reload) cannot miss it.
type watcher struct {
	mu       sync.Mutex
	changed  chan struct{} // closed at every change
	console  []string
	thrown   []string
	csp      []string
	failed   []string
	urls     map[network.RequestID]string
	loads    int
	docStats []int64 // statuses of main-frame document responses
}

func newWatcher() *watcher {
	return &watcher{changed: make(chan struct{}), urls: map[network.RequestID]string{}}
}

func (w *watcher) onEvent(ev any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch e := ev.(type) {
	case *cdplog.EventEntryAdded:
		// Error responses are logged too ("Failed to load resource: 422");
		// those are the app's answers. Keep what a policy refused.
		if e.Entry != nil && (e.Entry.Source == cdplog.EntrySourceSecurity ||
			strings.Contains(e.Entry.Text, "Content Security Policy") || strings.Contains(e.Entry.Text, "Trusted Type") ||
			strings.Contains(e.Entry.Text, "Refused to")) {
			w.console = append(w.console, e.Entry.Text)
		}
	case *cdpruntime.EventExceptionThrown:
		if e.ExceptionDetails != nil {
			w.thrown = append(w.thrown, e.ExceptionDetails.Text+" "+e.ExceptionDetails.URL)
		}
	case *audits.EventIssueAdded:
		if e.Issue == nil {
			return
		}
		switch e.Issue.Code {
		case audits.InspectorIssueCodeContentSecurityPolicyIssue:
			issue := string(e.Issue.Code)
			if d := e.Issue.Details; d != nil && d.ContentSecurityPolicyIssueDetails != nil {
				c := d.ContentSecurityPolicyIssueDetails
				issue = fmt.Sprintf("%s %s %s", c.ViolatedDirective, c.ContentSecurityPolicyViolationType, c.BlockedURL)
			}
			w.csp = append(w.csp, issue)
		case audits.InspectorIssueCodeMixedContentIssue, audits.InspectorIssueCodeBlockedByResponseIssue:
			w.csp = append(w.csp, string(e.Issue.Code))
		}
	case *network.EventRequestWillBeSent:
		if e.Request != nil {
			w.urls[e.RequestID] = e.Request.URL
		}
	case *network.EventResponseReceived:
		if e.Response == nil {
			return
		}
		if e.Response.Status >= 500 {
			w.failed = append(w.failed, fmt.Sprintf("%s answered %d", e.Response.URL, e.Response.Status))
		}
		if e.Type == network.ResourceTypeDocument {
			w.docStats = append(w.docStats, e.Response.Status)
		}
	case *network.EventLoadingFailed:
		// A navigation away cancels the page's own requests (a job
		// status poll): that is no failure.
		if !e.Canceled && e.ErrorText != "net::ERR_ABORTED" {
			w.failed = append(w.failed, fmt.Sprintf("%s failed: %s %s", w.urls[e.RequestID], e.ErrorText, e.BlockedReason))
		}
	case *page.EventLoadEventFired:
		w.loads++
	default:
		return
	}
	close(w.changed)
	w.changed = make(chan struct{})
}

// wait blocks until cond (called under the lock) holds or ctx ends.
func (w *watcher) wait(ctx context.Context, cond func(w *watcher) bool) error {
	for {
		w.mu.Lock()
		ok, ch := cond(w), w.changed
		w.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (w *watcher) snapshot() (console, thrown, csp, failed []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := func(s []string) []string { return append([]string(nil), s...) }
	return c(w.console), c(w.thrown), c(w.csp), c(w.failed)
}

// diag names what went wrong in the page so far (a refused asset explains
// a script that never ran), for a failure message.
func (w *watcher) diag() string {
	console, thrown, csp, failed := w.snapshot()
	if len(console)+len(thrown)+len(csp)+len(failed) == 0 {
		return ""
	}
	return fmt.Sprintf("; in the page: failed requests %q, CSP %q, console %q, exceptions %q", failed, csp, console, thrown)
}

func (w *watcher) loadCount() int { w.mu.Lock(); defer w.mu.Unlock(); return w.loads }

// browser is one tab of a headless Chromium against the running system.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string // https://localhost:port of the gateway
	sys  *System
	dir  string
	w    *watcher
	all  *[]*watcher // every tab's, for the end-of-run checks
	totp *totpSteps
}

// spki is the base64 SHA-256 of a server's public key, for Chromium's
// --ignore-certificate-errors-spki-list: the browser trusts exactly these
// keys and no other bad certificate.
func spki(t *testing.T, addr string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sum := sha256.Sum256(conn.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// runTimeout bounds the whole browser run; step bounds one action.
const (
	runTimeout = 4 * time.Minute
	step       = 20 * time.Second
)

func newBrowser(t *testing.T, sys *System, extraSPKI ...string) *browser {
	t.Helper()
	path := chromium(t)
	u, _ := url.Parse(sys.GatewayURL)
	pins := append([]string{spki(t, u.Host)}, extraSPKI...)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("host-resolver-rules", "MAP localhost 127.0.0.1"),
		chromedp.Flag("ignore-certificate-errors-spki-list", strings.Join(pins, ",")),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelT := context.WithTimeout(actx, runTimeout)
	ctx, cancelB := chromedp.NewContext(ctx)
	t.Cleanup(func() { cancelB(); cancelT(); cancelA() })
	b := &browser{t: t, ctx: ctx, sys: sys, dir: screenshotDir(t), base: "https://localhost:" + u.Port(), all: new([]*watcher), totp: &totpSteps{}}
	b.watch()
	return b
}

// watch starts the tab's watcher.
func (b *browser) watch() {
	b.t.Helper()
	b.w = newWatcher()
	*b.all = append(*b.all, b.w)
	if err := chromedp.Listen(b.ctx, b.w.onEvent); err != nil {
		b.t.Fatal(err)
	}
	if _, err := chromedp.Call(b.ctx, audits.Enable, cdp.Empty{}); err != nil {
		b.t.Fatal(err)
	}
}

// otherDevice opens a tab in a new browser context: its own cookie jar
// and storage, as another device would have.
func (b *browser) otherDevice(t *testing.T) *browser {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	o := &browser{t: t, ctx: ctx, base: b.base, sys: b.sys, dir: b.dir, all: b.all, totp: b.totp}
	o.watch()
	return o
}

func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, step)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v (at %s)%s", err, b.location(), b.w.diag())
	}
}

// navigate runs the actions and waits for the page they load; it
// returns that document's status.
func (b *browser) navigate(what string, steps ...chromedp.Action[chromedp.Void]) int64 {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, step)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, steps...)
	if err != nil {
		b.t.Fatalf("%s: %v (at %s)%s", what, err, b.location(), b.w.diag())
	}
	if resp == nil {
		b.t.Fatalf("%s: no document response", what)
	}
	return resp.Status
}

// eval evaluates js; compare its value, never type-assert it (see evalAs).
func (b *browser) eval(js string, opts ...chromedp.EvaluateOption) any {
	b.t.Helper()
	return evalAs[any](b, js, opts...)
}

// evalAs evaluates js and decodes its value into T; a value of another
// shape fails the test (never a panic, which would end every test of the
// binary).
func evalAs[T any](b *browser, js string, opts ...chromedp.EvaluateOption) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, step)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, opts...))
	if err != nil {
		b.t.Fatalf("evaluate %q: %v", js, err)
	}
	return v
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, step)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return v
}

func (b *browser) location() string {
	ctx, cancel := context.WithTimeout(b.ctx, step)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return "(location unknown: " + err.Error() + ")"
	}
	return v
}

func (b *browser) path() string {
	u, err := url.Parse(b.location())
	if err != nil {
		return ""
	}
	return u.Path
}

// open loads a page of the app and returns its status.
func (b *browser) open(path string) int64 {
	b.t.Helper()
	return b.navigate("open "+path, chromedp.Navigate(b.base+path))
}

// fill types into the fields (by id) as a user would.
func (b *browser) fill(fields ...string) {
	b.t.Helper()
	for i := 0; i+1 < len(fields); i += 2 {
		b.do(chromedp.WaitVisible(chromedp.CSS("#" + fields[i])))
		b.eval(`document.getElementById(` + strconv.Quote(fields[i]) + `).value = ''`)
		b.do(chromedp.SendKeys(chromedp.CSS("#"+fields[i]), fields[i+1]))
	}
}

// submit clicks the form's button and waits for the page the post
// leads to (after its redirect); it returns that page's status.
func (b *browser) submit(button string) int64 {
	b.t.Helper()
	return b.navigate("submit "+button, chromedp.Click(chromedp.CSS(button), chromedp.NodeVisible))
}

// waitFor waits, inside the page, until js is true: it is checked at
// every DOM change (no timer), for at most within.
func (b *browser) waitFor(what, js string, within time.Duration) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, within+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingMutation(), chromedp.WithPollingTimeout(within))); err != nil {
		b.t.Fatalf("waiting for %s: %v (at %s)%s", what, err, b.location(), b.w.diag())
	}
}

func (b *browser) shot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, step)
	defer cancel()
	img, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, name+".png"), img, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// totpSteps hands out TOTP codes so that identity accepts each one:
// identity refuses a time step it has seen and accepts steps within ±1
// of its clock, so a code is for the current step or the next one,
// after the last used. A code for the previous step would fail if the
// clock crossed a step boundary on the way; it is never used. That
// leaves two codes per 30 s: the run uses TOTP twice (enrolment,
// sign-in) and recovery codes for every later second factor.
type totpSteps struct{ last uint64 }

func (s *totpSteps) code(t *testing.T, secret string) string {
	t.Helper()
	now := uint64(time.Now().Unix() / 30)
	st := max(now, s.last+1)
	if st > now+1 {
		t.Fatal("no TOTP step left in the window: use a recovery code")
	}
	s.last = st
	c, err := totp.GenerateCodeCustom(secret, time.Unix(int64(st*30), 0), totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// balance reads an account's balance from the accounts page.
func (b *browser) balance(acct string) int64 {
	b.t.Helper()
	b.open("/account")
	s := strings.ReplaceAll(b.text(`[data-balance="`+acct+`"]`), ",", "")
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		b.t.Fatalf("balance of %s: %q", acct, s)
	}
	return n
}

// flash is the text of the page's status messages.
func (b *browser) flash() string {
	b.t.Helper()
	return evalAs[string](b, `[...document.querySelectorAll('main .flash')].map(f => f.textContent).join(' | ')`)
}

// described reports whether field's aria-describedby names the element
// errID and that element's text contains want (an error tied to its
// field).
func (b *browser) described(field, errID, want string) bool {
	b.t.Helper()
	js := fmt.Sprintf(`(() => { const f = document.getElementById(%q), e = document.getElementById(%q);
		return !!f && !!e && (f.getAttribute('aria-describedby') || '').split(' ').includes(%q) &&
			f.getAttribute('aria-invalid') === 'true' && e.textContent.includes(%q); })()`, field, errID, errID, want)
	return b.eval(js) == true
}

func startBrowserSystem(t *testing.T) *System {
	t.Helper()
	o := Options{Addr: "127.0.0.1:0", DataDir: t.TempDir(), PerIP: 100000}
	if p := os.Getenv("MALAI_TEST_LOG"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		o.LogMirror = f
	}
	sys, err := Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Close() })
	return sys
}

var tokenLike = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{10,}\.`)

// TestBrowser drives the customer web app in headless Chromium through
// the gateway: sign-up, MFA enrolment, sign-out, sign-in with MFA,
// transfers (a double submission applying once, an async transfer
// reaching "succeeded"), the account-security flows with their
// re-authentication (password change, sessions listed and another
// device's revoked, new recovery codes, MFA off) and sign-out, with no CSP
// violation and no failed request on the way; the browser's storage holds
// no token; and cross-origin posts to every state-changing route are
// refused. Every wait is on an event or a page condition, bounded.
func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole system and a browser")
	}
	if raceEnabled {
		t.Skip("about 45 s under -race; .ci/run runs the browser test without it")
	}
	chromium(t)
	sys := startBrowserSystem(t)
	atk := newAttacker(t, sys)
	b := newBrowser(t, sys, atk.spki)
	t.Logf("screenshots in %s", b.dir)

	suffix := strconv.FormatInt(time.Now().UnixNano()%1_000_000, 36)
	user := "alice-" + suffix
	password := "Harbour-Lantern-" + suffix + "-7Q"
	firstPassword := password
	var secret string
	var recovery, replaced []string
	// run runs one step; the first failure ends the run (later steps
	// build on it).
	run := func(name string, f func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, func(t *testing.T) { b.t = t; f(t) }) {
			t.FailNow()
		}
		b.t = t
	}

	run("sign up", func(t *testing.T) {
		b.open("/signup")
		b.fill("username", user)
		// Each rule is marked as it is met, while typing.
		b.do(chromedp.SendKeys(chromedp.CSS("#password"), "abc"))
		b.waitFor("lower-case rule met", `document.querySelector('[data-rule="missing-lowercase"]').classList.contains('met')`, step)
		if b.eval(`document.querySelector('[data-rule="too-short"]').classList.contains('met')`) == true {
			t.Fatal("length rule shown as met for 3 characters")
		}
		b.shot("signup-typing")
		// A breached password: the breach check's answer is shown.
		b.fill("password", "Password123!", "confirm", "Password123!")
		if st := b.submit("form[action='/signup'] button[type=submit]"); st != http.StatusUnprocessableEntity {
			t.Fatalf("breached password answered %d, want 422", st)
		}
		if !b.described("password", "password-error", "leaked in data breaches") {
			t.Fatalf("breach answer not shown on the field: %q", b.text("main"))
		}
		b.shot("signup-breached")
		b.fill("password", password, "confirm", password)
		b.waitFor("every rule met", `[...document.querySelectorAll('#password-rules li[data-rule]')].every(li => li.classList.contains('met'))`, step)
		b.submit("form[action='/signup'] button[type=submit]")
		if b.path() != "/mfa" {
			t.Fatalf("after sign-up at %s", b.location())
		}
		if !strings.Contains(b.text("main"), "was not in it") {
			t.Fatalf("breach check's clean answer not shown: %s", b.text("main"))
		}
	})

	run("enrol MFA", func(t *testing.T) {
		b.fill("password", password)
		b.submit("form[action='/mfa/enrol'] button[type=submit]")
		b.shot("mfa-enrol")
		secret = strings.ReplaceAll(b.text("#totp-secret"), " ", "")
		// The QR code, decoded from the rendered pixels, is the otpauth URI
		// of the same secret.
		img, err := chromedp.Run(b.ctx, chromedp.Screenshot(chromedp.CSS(".qr svg")))
		if err != nil {
			t.Fatal(err)
		}
		pic, err := png.Decode(bytes.NewReader(img))
		if err != nil {
			t.Fatal(err)
		}
		uri, err := goqr.Decode(pic)
		if err != nil {
			t.Fatalf("QR code does not decode: %v", err)
		}
		key, err := otp.NewKeyFromURL(uri)
		if err != nil || key.Secret() != secret || !strings.Contains(uri, user) {
			t.Fatalf("QR code holds %q (%v), page shows secret %q", uri, err, secret)
		}
		b.fill("code", "000000")
		b.submit("form[action='/mfa/confirm'] button[type=submit]")
		if b.eval(`document.getElementById('code').getAttribute('aria-invalid')`) != "true" {
			t.Fatal("wrong code not flagged on the field")
		}
		b.fill("code", b.totp.code(t, secret))
		b.submit("form[action='/mfa/confirm'] button[type=submit]")
		recovery = b.recoveryCodes()
		b.shot("mfa-recovery-codes")
	})

	run("sign out", func(t *testing.T) {
		b.open("/account")
		b.submit("header form[action='/signout'] button")
		if !strings.Contains(b.text("main"), "You are signed out") {
			t.Fatalf("sign-out page: %s", b.text("main"))
		}
		b.open("/account")
		if b.path() != "/signin" {
			t.Fatalf("signed-out browser reached %s", b.location())
		}
	})

	run("sign in with MFA", func(t *testing.T) {
		b.open("/signin")
		b.shot("signin")
		b.fill("username", user, "password", password)
		b.submit("form[action='/signin'] button[type=submit]")
		if b.path() != "/signin/mfa" {
			t.Fatalf("no second-factor challenge: at %s", b.location())
		}
		b.fill("code", "123456")
		if st := b.submit("form[action='/signin/mfa'] button[type=submit]"); st != http.StatusUnauthorized {
			t.Fatalf("wrong code answered %d", st)
		}
		if !b.described("code", "code-error", "not right") {
			t.Fatal("wrong code not tied to the field")
		}
		b.shot("mfa-challenge")
		b.fill("code", b.totp.code(t, secret))
		b.submit("form[action='/signin/mfa'] button[type=submit]")
		if b.path() != "/account" {
			t.Fatalf("after the second factor at %s: %s", b.location(), b.text("main"))
		}
	})

	run("storage holds no token", func(t *testing.T) { checkStorage(t, b) })

	acct, savings := "main-"+suffix, "save-"+suffix
	run("open accounts and transfer", func(t *testing.T) {
		for _, a := range []string{acct, savings} {
			b.open("/account")
			b.fill("id", a)
			b.submit("form[action='/accounts'] button")
		}
		fund(t, b, acct, 1000)
		before, beforeS := b.balance(acct), b.balance(savings)
		b.open("/transfer?from=" + acct)
		b.fill("to", savings, "amount", "250")
		b.shot("transfer")
		b.submit("#transfer-form button[type=submit]")
		if !strings.Contains(b.text("main"), "is done") {
			t.Fatalf("transfer result: %s", b.text("main"))
		}
		b.shot("account")
		if got := b.balance(acct); got != before-250 {
			t.Fatalf("balance %d, want %d", got, before-250)
		}
		if got := b.balance(savings); got != beforeS+250 {
			t.Fatalf("savings %d, want %d", got, beforeS+250)
		}
	})

	run("double submission applies once", func(t *testing.T) {
		before := b.balance(acct)
		b.open("/transfer?from=" + acct)
		b.fill("to", savings, "amount", "40")
		// The same form sent three times at once, as a double click
		// without the page's guard or a browser retry would: one key, one
		// effect, and every one of them told the outcome.
		statuses := evalAs[[]int](b, `(async () => {
			const f = document.getElementById('transfer-form');
			const body = new URLSearchParams(new FormData(f)).toString();
			const post = () => fetch('/transfer', {method: 'POST', body, headers: {'Content-Type': 'application/x-www-form-urlencoded'}}).then(r => r.status);
			return Promise.all([post(), post(), post()]); })()`, chromedp.EvalAwaitPromise)
		for _, s := range statuses {
			if s != http.StatusOK {
				t.Fatalf("statuses %v", statuses)
			}
		}
		// And a real double click on the button.
		b.open("/transfer?from=" + acct)
		b.fill("to", savings, "amount", "5")
		b.navigate("double click", chromedp.DoubleClick(chromedp.CSS("#transfer-form button[type=submit]"), chromedp.NodeVisible))
		if b.path() != "/account" {
			t.Fatalf("after the double click at %s", b.location())
		}
		if got := b.balance(acct); got != before-45 {
			t.Fatalf("balance %d after one 40 sent three times and one 5 double-clicked, want %d", got, before-45)
		}
	})

	run("async transfer succeeds", func(t *testing.T) {
		before := b.balance(acct)
		b.open("/transfer?from=" + acct)
		b.fill("to", savings, "amount", "30")
		b.do(chromedp.Click(chromedp.CSS("#async")))
		b.submit("#transfer-form button[type=submit]")
		b.waitJob("succeeded")
		b.shot("account-async")
		if got := b.balance(acct); got != before-30 {
			t.Fatalf("balance %d after the queued transfer, want %d", got, before-30)
		}
	})

	run("password change", func(t *testing.T) {
		b.open("/security")
		b.shot("security")
		next := "Quiet-Meadow-" + suffix + "-4z"
		// Re-authentication: a wrong current password is refused, on its
		// field, and changes nothing.
		b.fill("password", "Wrong-Password-"+suffix, "pw-code", recovery[0], "new_password", next, "confirm", next)
		b.waitFor("every new-password rule met", `[...document.querySelectorAll('#new-password-rules li[data-rule]')].every(li => li.classList.contains('met'))`, step)
		if st := b.submit("form[action='/security/password'] button[type=submit]"); st != http.StatusUnauthorized {
			t.Fatalf("wrong current password answered %d: %s", st, b.text("main"))
		}
		if !b.described("password", "password-error", "not right") && !b.described("password", "password-error", "Confirm it is you") {
			t.Fatalf("refused re-authentication not shown on the field: %s", b.text("main"))
		}
		// The current password and a recovery code (the app tells a
		// recovery code from a TOTP code by its form).
		b.fill("password", password, "pw-code", recovery[0], "new_password", next, "confirm", next)
		b.submit("form[action='/security/password'] button[type=submit]")
		if !strings.Contains(b.flash(), "Your password is changed") {
			t.Fatalf("password change: %s", b.text("main"))
		}
		password = next
	})

	run("sessions: another device's is listed and signed out", func(t *testing.T) {
		other := b.otherDevice(t)
		other.open("/signin")
		other.fill("username", user, "password", password)
		other.submit("form[action='/signin'] button[type=submit]")
		other.fill("code", recovery[1])
		other.submit("form[action='/signin/mfa'] button[type=submit]")
		if other.path() != "/account" || !strings.Contains(other.flash(), "recovery code") {
			t.Fatalf("recovery-code sign-in on the other device: at %s: %s", other.location(), other.text("main"))
		}
		// The other device has a transfer form open when it is revoked.
		other.open("/transfer?from=" + acct)
		other.fill("to", savings, "amount", "7")
		before := b.balance(acct)
		b.open("/security")
		rows := b.eval(`document.querySelectorAll('table.sessions tbody tr').length`)
		revoke := `table.sessions form[action='/security/sessions/revoke'] button`
		if rows != float64(2) || b.eval(`document.querySelectorAll("`+revoke+`").length`) != float64(1) {
			t.Fatalf("sessions listed: %v rows: %s", rows, b.text("table.sessions"))
		}
		b.shot("security-sessions")
		b.submit(revoke)
		if !strings.Contains(b.flash(), "That session is signed out") {
			t.Fatalf("revoke: %s", b.text("main"))
		}
		if n := b.eval(`document.querySelectorAll('table.sessions tbody tr').length`); n != float64(1) {
			t.Fatalf("%v sessions listed after the revocation", n)
		}
		// The revoked device moves no money, though its access token has
		// minutes left: it is signed out at that post, and then
		// everywhere.
		other.submit("#transfer-form button[type=submit]")
		if other.path() != "/signin" || !strings.Contains(other.flash(), "Your session has ended") {
			t.Fatalf("the revoked device's transfer reached %s: %s", other.location(), other.text("main"))
		}
		for _, p := range []string{"/account", "/security"} {
			if other.open(p); other.path() != "/signin" {
				t.Fatalf("the revoked device reached %s", other.location())
			}
		}
		if got := b.balance(acct); got != before {
			t.Fatalf("balance %d after the revoked device's transfer, want %d", got, before)
		}
		// And this browser is still signed in.
		b.open("/account")
		if b.path() != "/account" {
			t.Fatal("revoking the other session signed this browser out")
		}
	})

	run("new recovery codes", func(t *testing.T) {
		b.open("/security")
		b.fill("rc-password", password, "rc-code", recovery[2])
		b.submit("form[action='/security/recovery-codes'] button[type=submit]")
		replaced, recovery = recovery, b.recoveryCodes()
		if recovery[0] == replaced[0] {
			t.Fatal("the same recovery codes again")
		}
	})

	run("turn off MFA", func(t *testing.T) {
		b.open("/security")
		// A code of the replaced set (one never used) no longer
		// re-authenticates.
		b.fill("off-password", password, "off-code", replaced[3])
		if st := b.submit("form[action='/security/mfa/disable'] button[type=submit]"); st != http.StatusUnauthorized {
			t.Fatalf("an old recovery code answered %d: %s", st, b.text("main"))
		}
		if !b.described("off-password", "off-password-error", "") {
			t.Fatalf("refusal not shown on the form's field: %s", b.text("main"))
		}
		b.fill("off-password", password, "off-code", recovery[0])
		b.submit("form[action='/security/mfa/disable'] button[type=submit]")
		if !strings.Contains(b.flash(), "Two-step sign-in is off") || !strings.Contains(b.text("main"), "Set it up") {
			t.Fatalf("MFA off: %s", b.text("main"))
		}
	})

	run("sign out again", func(t *testing.T) {
		b.open("/account")
		b.submit("header form[action='/signout'] button")
		res, err := chromedp.CallBrowser(b.ctx, storage.GetCookies, storage.GetCookiesParams{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range res.Cookies {
			if c.Name == web.CookieName {
				b.open("/account")
				if b.path() != "/signin" {
					t.Fatal("the old session still works after sign-out")
				}
			}
		}
	})

	run("sign in with the new password, no second factor", func(t *testing.T) {
		b.open("/signin")
		b.fill("username", user, "password", firstPassword)
		if st := b.submit("form[action='/signin'] button[type=submit]"); st != http.StatusUnauthorized || !b.described("password", "password-error", "not right") {
			t.Fatalf("the password before the change answered %d: %s", st, b.text("main"))
		}
		b.fill("username", user, "password", password)
		b.submit("form[action='/signin'] button[type=submit]")
		if b.path() != "/account" {
			t.Fatalf("after sign-in at %s: %s", b.location(), b.text("main"))
		}
		checkStorage(t, b)
	})

	run("CSRF: cross-origin posts refused", func(t *testing.T) { testCSRF(t, b, sys, atk, acct) })

	run("no CSP violation, no failed request", func(t *testing.T) {
		n := sys.Web.CSPReports()
		for _, w := range *b.all {
			console, thrown, csp, failed := w.snapshot()
			if len(console)+len(thrown)+len(csp)+len(failed) > 0 || n != 0 {
				t.Fatalf("%d CSP reports %v; console %q; exceptions %q; CSP issues %q; failed requests %q",
					n, sys.Web.RecentCSPReports(), console, thrown, csp, failed)
			}
		}
		// The control: a deliberate violation is seen by the browser and
		// reported to the app, so the zeros above mean none happened. And
		// every report the app holds is the control's, so none from the
		// run arrived late.
		b.open("/signin")
		b.eval(`(() => { try { document.body.insertAdjacentHTML('beforeend', '<b>x</b>'); } catch (e) {}
			const s = document.createElement('script'); try { s.textContent = 'window.x = 1'; } catch (e) {}
			return true; })()`)
		ctx, cancel := context.WithTimeout(b.ctx, step)
		defer cancel()
		if err := sys.Web.WaitCSPReports(ctx, 1); err != nil {
			t.Fatal("a deliberate Trusted Types violation was not reported: the zero above proves nothing")
		}
		if err := b.w.wait(ctx, func(w *watcher) bool { return len(w.csp) > 0 }); err != nil {
			t.Fatal("the browser raised no CSP issue for a deliberate violation: the zeros above prove nothing")
		}
		for _, r := range sys.Web.RecentCSPReports() {
			control := strings.Contains(r.Sample, "<b>x</b>") || strings.Contains(r.Sample, "window.x = 1")
			if !control || r.EffectiveDirective != "require-trusted-types-for" {
				t.Fatalf("a report that is not the control's: %+v", r)
			}
		}
	})
}

// recoveryCodes reads the recovery codes shown once on the page.
func (b *browser) recoveryCodes() []string {
	b.t.Helper()
	codes := evalAs[[]string](b, `[...document.querySelectorAll('#recovery-codes code')].map(c => c.textContent)`)
	if len(codes) < 8 {
		b.t.Fatalf("%d recovery codes shown: %s", len(codes), b.text("main"))
	}
	return codes
}

// waitJob waits until the accounts page shows the queued transfer's
// status as want, as rendered by the server. While the job runs the page
// polls its status and, once it is final, reloads itself once; the
// watcher counts loads, so that reload is never missed whenever it comes
// (even between two of these steps).
func (b *browser) waitJob(want string) {
	b.t.Helper()
	const stateJS = `(() => { const r = document.querySelector('tr[data-job]');
		if (!r) return 'none';
		return r.hasAttribute('data-poll') ? 'polling' : r.querySelector('[data-status]').textContent; })()`
	for range 4 {
		loads := b.w.loadCount()
		ctx, cancel := context.WithTimeout(b.ctx, step)
		state, err := chromedp.Run(ctx, chromedp.Evaluate[string](stateJS))
		cancel()
		switch {
		case err != nil:
			// The page is navigating (its reload): wait for the load.
		case state == want:
			return
		case state != "polling":
			b.t.Fatalf("queued transfer: %v: %s", state, b.text("main"))
		default:
			b.t.Log("the queued transfer is running: the page polls its status")
		}
		ctx, cancel = context.WithTimeout(b.ctx, time.Minute)
		err = b.w.wait(ctx, func(w *watcher) bool { return w.loads > loads })
		cancel()
		if err != nil {
			b.t.Fatalf("the queued transfer's page did not reload within a minute (state %q)", state)
		}
	}
	b.t.Fatalf("the queued transfer never showed %s", want)
}

// checkStorage asserts the browser holds no access or refresh token:
// the only cookie (over the whole browser, via CDP) is the __Host-
// session cookie with HttpOnly, Secure, SameSite=Strict, Path=/, no
// Domain and no expiry, holding 256 random bits; localStorage,
// sessionStorage, IndexedDB and the Cache API are empty; no JWT is
// anywhere in the page.
func checkStorage(t *testing.T, b *browser) {
	t.Helper()
	res, err := chromedp.CallBrowser(b.ctx, storage.GetCookies, storage.GetCookiesParams{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Cookies) != 1 {
		var names []string
		for _, c := range res.Cookies {
			names = append(names, c.Name)
		}
		t.Fatalf("browser holds cookies %v, want only %s", names, web.CookieName)
	}
	c := res.Cookies[0]
	if c.Name != web.CookieName || !c.HTTPOnly || !c.Secure || c.SameSite != network.CookieSameSiteStrict || c.Path != "/" ||
		c.Domain != "localhost" || !c.Session {
		t.Fatalf("session cookie attributes: %+v", c)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(c.Value); err != nil || len(raw) != 32 || tokenLike.MatchString(c.Value) {
		t.Fatalf("cookie value is not 256 opaque bits: %q", c.Value)
	}
	probe := `(async () => ({Cookie: document.cookie, Local: localStorage.length, Session: sessionStorage.length,
		IDB: (await indexedDB.databases()).length, Caches: (await caches.keys()).length,
		HTML: document.documentElement.outerHTML}))()`
	v := evalAs[struct {
		Cookie                      string
		Local, Session, IDB, Caches int
		HTML                        string
	}](b, probe, chromedp.EvalAwaitPromise)
	if v.Cookie != "" || v.Local != 0 || v.Session != 0 || v.IDB != 0 || v.Caches != 0 {
		t.Fatalf("browser storage not empty: %+v", v)
	}
	if tokenLike.MatchString(v.HTML) {
		t.Fatal("the page carries a JWT")
	}
}

// fund deposits amount into acct as a teller would (accounts open at
// zero; money enters only through a teller's deposit).
func fund(t *testing.T, b *browser, acct string, amount int64) {
	t.Helper()
	if _, err := b.sys.Ledger.Deposit(context.Background(), "user:browser-test-teller", acct, amount, "fund-"+acct); err != nil {
		t.Fatalf("deposit into %s: %v", acct, err)
	}
}

// testCSRF posts, from a page of another origin on the same site (so the
// SameSite=Strict cookie IS sent: only the Origin check and the token
// stand), to every state-changing route, with the victim's real CSRF
// token in the form; every one must be refused by the Origin check (403,
// "Request refused") and change nothing.
func testCSRF(t *testing.T, b *browser, sys *System, atk *attacker, acct string) {
	token := evalAs[string](b, `document.querySelector('input[name=csrf]').value`)
	atk.setToken(token)
	before := b.balance(acct)

	for _, rt := range sys.Web.Routes() {
		if !rt.StateChanging {
			continue
		}
		path := strings.TrimPrefix(rt.Pattern, "POST ")
		t.Run(path, func(t *testing.T) {
			b.t = t
			b.navigate("the attacker's page", chromedp.Navigate(atk.base+"/?route="+url.QueryEscape(path)))
			st := b.submit("#f button")
			if !strings.HasPrefix(b.location(), b.base+path) {
				t.Fatalf("the forged post landed at %s", b.location())
			}
			title, _ := chromedp.Run(b.ctx, chromedp.Title())
			if st != http.StatusForbidden || !strings.HasPrefix(title, "Request refused") {
				t.Fatalf("cross-origin POST %s answered %d %q: %s", path, st, title, b.text("main"))
			}
		})
	}
	b.t = t
	// Nothing changed: same balance, still signed in, same token.
	if got := b.balance(acct); got != before {
		t.Fatalf("balance moved from %d to %d", before, got)
	}
	if b.path() != "/account" {
		t.Fatal("the forged sign-out ended the victim's session")
	}
	if got := b.eval(`document.querySelector('input[name=csrf]').value`); got != token {
		t.Fatal("a forged post changed the session (its CSRF token rotated)")
	}
	// The same post from the app's own origin without the token, or with
	// a wrong one, is refused too: the synchroniser token is checked on
	// its own.
	for _, body := range []string{"id=no-token-acct", "id=bad-token-acct&csrf=" + url.QueryEscape(strings.Repeat("A", len(token)))} {
		st := b.eval(`fetch('/accounts', {method: 'POST', body: `+strconv.Quote(body)+`, headers: {'Content-Type': 'application/x-www-form-urlencoded'}}).then(r => r.status)`, chromedp.EvalAwaitPromise)
		if st != float64(http.StatusForbidden) {
			t.Fatalf("same-origin POST %q answered %v", body, st)
		}
	}
}

// attacker serves, on another origin of the same site (localhost, another
// port), a page with a form posting to one of the app's routes.
type attacker struct {
	base, spki string
	mu         sync.Mutex
	token      string
}

func (a *attacker) setToken(tok string) { a.mu.Lock(); a.token = tok; a.mu.Unlock() }

func newAttacker(t *testing.T, sys *System) *attacker {
	t.Helper()
	a := &attacker{}
	u, _ := url.Parse(sys.GatewayURL)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		token := a.token
		a.mu.Unlock()
		route := r.URL.Query().Get("route")
		// Every field any route reads, with the victim's real CSRF token.
		var fields strings.Builder
		for _, kv := range [][2]string{{"csrf", token}, {"to", "attacker"}, {"from", "x"}, {"amount", "1"},
			{"idempotency_key", "AAAAAAAAAAAAAAAAAAAAAA"}, {"id", "evil-acct"}, {"password", "x"},
			{"new_password", "Attacker-Owned-99!"}, {"confirm", "Attacker-Owned-99!"}, {"session", "s1"},
			{"username", "mallory"}, {"code", "123456"}} {
			fmt.Fprintf(&fields, `<input name="%s" value="%s">`, html.EscapeString(kv[0]), html.EscapeString(kv[1]))
		}
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<!doctype html><title>Win a prize</title><form id="f" method="post" action="https://localhost:%s%s">%s<button>Claim</button></form>`,
			u.Port(), html.EscapeString(route), fields.String())
	}))
	cert, err := sys.CA.Issue("attacker", "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	a.base = "https://localhost:" + port
	a.spki = spki(t, srv.Listener.Addr().String())
	return a
}

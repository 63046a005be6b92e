package waf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	coreruleset "github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/types"

	"github.com/malai-sec/malai/problem"
)

// Config configures the WAF. The zero value blocks at paranoia level 1
// with the full CRS, inspects bodies up to 16 KiB, runs as many
// inspections at once as there are CPUs, of which one client address may
// hold half with expensive requests (see [Config.PerClient]).
type Config struct {
	// ParanoiaLevel is the CRS blocking paranoia level, 1 (default) to 4.
	ParanoiaLevel int
	// BodyLimit caps request bodies: a larger one is refused with 413
	// before any inspection (never passed uninspected). Default 16 KiB.
	// The gateway lowers it per route with [WithBodyLimit].
	BodyLimit int
	// MaxBodyArgs caps the values a body holds (JSON members and array
	// elements, form fields): each one is an argument every rule
	// inspects, so a 16 KiB body of a thousand tiny members costs the
	// rules three times what one 16 KiB string does. More is refused with
	// 400 before any inspection. Default 128.
	MaxBodyArgs int
	// ReportBodyArgs is MaxBodyArgs on the ReportPaths: a browser's
	// Reporting API batch holds up to a few dozen reports of about 15
	// values each, and a refused batch loses all of them. Default 512
	// (34 such reports; the web app keeps at most 20 of a batch).
	ReportBodyArgs int
	// Exclusions loosen named rules for named JSON fields of one route
	// each; see [Exclusion].
	Exclusions []Exclusion
	// OpaqueCookies are cookies the system issues itself whose values are
	// random or MAC-checked base64url text (see [OpaqueCookie]): no rule
	// inspects such a value when it has exactly its issued shape.
	OpaqueCookies []OpaqueCookie
	// OpaqueBearer is the exact shape of the bearer tokens the system
	// issues, an RE2 expression over the token (after "Bearer "),
	// anchored here. When a request holds exactly one Authorization
	// header, of scheme "Bearer" and a token of that shape, at most
	// [MaxOpaqueBearer] bytes in all, the header is
	// not handed to the rules at all (no CRS rule names Authorization, so
	// it is their only change: skipping it costs nothing, where a ctl
	// removing it from the rules' targets cost more than inspecting it);
	// any other value, or a second Authorization header, is inspected as
	// before. Empty: every Authorization header is
	// inspected. Only a shape whose alphabet cannot spell what the rules
	// look for belongs here (see [IssuedBearer]).
	OpaqueBearer string
	// ReportPaths receive browser reports (CSP violations): there, and
	// only there, application/csp-report and application/reports+json
	// are admitted, and their bodies are inspected as JSON.
	ReportPaths []string
	// Profiles compile extra rule sets the caller selects per request with
	// [WithProfile] (a route whose content makes whole rule families
	// meaningless). The default profile is the full rule set.
	Profiles []Profile
	// MaxConcurrent bounds inspections running at once (the CPU they may
	// take). Default runtime.GOMAXPROCS(0).
	MaxConcurrent int
	// PerClient bounds the heavy inspections one client address (an
	// IPv6 /64) may hold at once: a request with a body, or whose shape
	// exceeds the light bounds (32 headers, 8 KiB of them, 16 cookies, a
	// 1 KiB URL). Default max(1, MaxConcurrent/2), so one address never
	// holds every slot with them. Light requests (a page and its assets)
	// may take any free slot: they cost a few milliseconds each, and a
	// freed slot goes first to the client holding the fewest.
	PerClient int
	// InspectionRate is how much inspection time of heavy requests one
	// client address (an IPv6 /64) may use per second on average, and
	// InspectionBurst how much it may use at once before that rate
	// applies: past them its heavy requests are refused at once with 429
	// and Retry-After until its use has drained. PerClient bounds a
	// client's share of the slots at any moment, this its share of the
	// CPU over time: a client that keeps its slot busy would otherwise
	// hold a core for as long as it floods. A heavy request the rules
	// refuse is charged four times its inspection time. Defaults 250 ms
	// per second (a quarter of a core) and 2 s: an ordinary JSON post
	// costs 1–3 ms, a 12 KiB one 45–70 ms. A negative InspectionRate
	// turns the budget off; so does the default in a binary built with
	// the race detector, where every inspection takes about twenty times
	// its time.
	InspectionRate, InspectionBurst time.Duration
	// MaxWaiting bounds the requests waiting for a slot; one more is
	// refused at once with 503. Default 32 × MaxConcurrent.
	MaxWaiting int
	// PerClientWaiting bounds the waiting requests of one client, so one
	// address cannot fill the queue. Default 32 (a browser loads a page
	// and a few dozen assets at once).
	PerClientWaiting int
	// PerClientHeavyWaiting bounds the heavy requests of one client
	// waiting for its share: a double click, a browser's retry of a form
	// or a few parallel API writes wait their turn; the client's next one
	// is refused at once with 503. Waiting costs a goroutine and the read
	// body (at most BodyLimit each), not CPU. Default 4.
	PerClientHeavyWaiting int
	// MaxWait is how long a heavy request may wait for a slot before
	// 503. Default 1 s (under the race detector a small inspection takes
	// ~50 ms, so a client's few waiting writes are served well within it).
	MaxWait time.Duration
	// LightMaxWait is how long a light request may wait. Default 2 s: a
	// waiting request costs a goroutine, not CPU, and a browser's burst
	// of assets queues behind its own page (under the race detector an
	// inspection takes ~50 ms, a burst of a dozen ~1 s).
	LightMaxWait time.Duration
	// BodyTimeout bounds reading the request body, which happens before a
	// slot is taken (a slow client holds no slot). Default 10 s; on expiry
	// the answer is 408.
	BodyTimeout time.Duration
	// RetryAfter is the Retry-After of a 503 (busy). Default 1 s.
	RetryAfter time.Duration
	// RefusalDelay is how long after its arrival a refused request is
	// answered (429: its client is over its inspection-time budget; 503:
	// no slot for it, mostly because its client holds its share):
	// a client that retries at once without backing off then gets one
	// answer per connection per RefusalDelay, not thousands a second whose
	// answers, cheap one by one, together take the cores from every other
	// client. Holding a refusal costs a goroutine and a timer, no CPU; at
	// most MaxHeldPerClient of one client (an IPv6 /64) and MaxHeld in all
	// are held, past which refusals are answered at once. Default 1 s (as
	// RetryAfter: a client that honours Retry-After never waits for it);
	// negative: every refusal is answered at once.
	RefusalDelay time.Duration
	// MaxHeldPerClient and MaxHeld bound the refusals held at once, per
	// client and in all. Defaults 64 and 4096.
	MaxHeldPerClient, MaxHeld int
	// OnBlock is called, before the 403 is written, for every request the
	// rules refused (the gateway charges the client's rate budget more).
	// It must not block.
	OnBlock func(r *http.Request)
	// Logger receives one line per refused request with the matched rule
	// ids. Default slog.Default().
	Logger *slog.Logger

	// AfterCRS is appended after the CRS rules. The gateway sets it only
	// from its test-only Faults (a rule family removed on purpose, a false
	// positive added), whatever its caller put here.
	AfterCRS string

	// rulesOverride replaces the generated directives (tests compare
	// Coraza's own configuration with the same runner); beforeCRS is
	// placed just before the CRS rules (the regression suite's required
	// test settings).
	rulesOverride, beforeCRS string
	// keepLevels keeps the rules above the paranoia level and the
	// paranoia markers (levelPruned) in the rule set: the regression
	// suite's comparison of the two.
	keepLevels bool
}

// Exclusion removes the JSON fields Fields of the route (Method, Path)
// from the targets of each rule in Rules, and from nothing else: the same
// value in another field or on another route is inspected as before.
type Exclusion struct {
	Method, Path string
	Fields       []string
	// Form: the fields are form fields (application/x-www-form-urlencoded,
	// the web app's pages), not JSON members.
	Form bool
	// Rules are CRS rule ids; every one needs a reason in the caller's
	// table, since each one is a detection given up for these fields.
	Rules []int
}

// OpaqueCookie is a cookie the system issued: its value is random bytes
// or a MAC-signed token in base64url, which no service reads as anything
// but a lookup key or a MAC input, so no injection in it can reach an
// interpreter. Random base64url text still trips the rules now and then
// (about one 43-character value in 3,000 holds "--" where libinjection
// sees an SQL comment), which signs a user out or forgets their device at
// random. When a request holds exactly one cookie of Name and its value
// matches Format (an RE2 expression over the whole value, anchored here)
// every CRS rule skips that cookie; any other value, a second cookie of
// the name, or the same text anywhere else, is inspected as before.
type OpaqueCookie struct {
	Name   string
	Format string
}

// Profile is a rule set for routes whose content cannot carry what some
// rules look for. Remove are the CRS rules it goes without: ids
// ("933100") or inclusive ranges of ids ("933100-933999"); every one
// needs a reason in the caller's table. Keep a family's paranoia-level
// markers (its x011–x018 rules): without them its higher-level rules
// would run at every level.
type Profile struct {
	Name   string
	Remove []string
}

const (
	defaultMaxWait      = time.Second
	defaultLightMaxWait = 2 * time.Second
)

// blockedCharge is how many times its inspection time a heavy request
// the rules refused costs its client's inspection-time budget.
const blockedCharge = 4

// MaxOpaqueBearer bounds an Authorization header that [Config.OpaqueBearer]
// may leave out; a longer one is inspected. (Bounded here, not with
// repetition counts in the expression: RE2 caps them at 1000, and the
// expanded expression costs the match more.)
const MaxOpaqueBearer = 2048

// Errors reported through the log and the problem responses.
var (
	// ErrBusy: no inspection slot within MaxWait, or too many waiting.
	ErrBusy = errors.New("waf: inspection capacity exhausted")
)

// WAF is a request filter. It is safe for concurrent use.
type WAF struct {
	cfg     Config
	engines map[string]engine // "" is the default profile
	log     *slog.Logger
	pool    *admission
	budget  *budget      // nil: no inspection-time budget
	held    *refusalHold // nil: refusals are answered at once
	stats   counters
	bearer  *regexp.Regexp // nil: every Authorization header is inspected

	// observe, when set (tests), sees every finished transaction;
	// holding runs while a slot is held, before the rules.
	observe func(r *http.Request, tx types.Transaction)
	holding func(r *http.Request)
	since   func(time.Time) time.Duration // time.Since; tests fix an inspection's duration

	// The cheap refusals' log lines, each kind bounded (loglimit.go).
	busyLog, budgetLog, slowLog *logLimiter
}

// engine is one profile's compiled rule set.
type engine struct {
	coraza.WAF
	// skipUninspected: phases 3 and 4 cannot act on a response whose
	// body is not inspected, so such responses skip them (respphases.go).
	skipUninspected bool
}

// New compiles the rule set (and each profile). It takes a second or two:
// do it at start-up.
func New(cfg Config) (*WAF, error) {
	if cfg.ParanoiaLevel == 0 {
		cfg.ParanoiaLevel = 1
	}
	if cfg.ParanoiaLevel < 1 || cfg.ParanoiaLevel > 4 {
		return nil, fmt.Errorf("waf: paranoia level %d out of 1..4", cfg.ParanoiaLevel)
	}
	if cfg.BodyLimit == 0 {
		cfg.BodyLimit = 16 << 10
	}
	if cfg.BodyLimit < 0 {
		return nil, errors.New("waf: negative body limit")
	}
	if cfg.MaxBodyArgs == 0 {
		cfg.MaxBodyArgs = 128
	}
	if cfg.MaxBodyArgs < 0 {
		return nil, errors.New("waf: negative MaxBodyArgs")
	}
	if cfg.ReportBodyArgs == 0 {
		cfg.ReportBodyArgs = max(512, cfg.MaxBodyArgs)
	}
	if cfg.ReportBodyArgs < 0 {
		return nil, errors.New("waf: negative ReportBodyArgs")
	}
	for _, c := range cfg.OpaqueCookies {
		if !fieldName.MatchString(c.Name) {
			return nil, fmt.Errorf("waf: opaque cookie name %q not plain", c.Name)
		}
		if _, err := regexp.Compile(c.Format); err != nil || c.Format == "" || strings.ContainsAny(c.Format, "\"'\n\r") {
			return nil, fmt.Errorf("waf: opaque cookie %s: format must be a regular expression without quotes", c.Name)
		}
	}
	var bearer *regexp.Regexp
	if b := cfg.OpaqueBearer; b != "" {
		var err error
		if bearer, err = regexp.Compile("^Bearer (?:" + b + ")$"); err != nil {
			return nil, errors.New("waf: OpaqueBearer must be a regular expression")
		}
	}
	for _, p := range cfg.ReportPaths {
		if !directivePath.MatchString(p) {
			return nil, fmt.Errorf("waf: report path %q must be an absolute path of [A-Za-z0-9/_.-]", p)
		}
	}
	for _, e := range cfg.Exclusions {
		for _, f := range e.Fields {
			if !directivePath.MatchString(e.Path) || !fieldName.MatchString(f) {
				return nil, fmt.Errorf("waf: exclusion %s %q field %q: path or field name not plain", e.Method, e.Path, f)
			}
		}
	}
	if cfg.MaxConcurrent == 0 {
		cfg.MaxConcurrent = runtime.GOMAXPROCS(0)
	}
	if cfg.PerClient == 0 {
		cfg.PerClient = max(1, cfg.MaxConcurrent/2)
	}
	if cfg.MaxWaiting == 0 {
		cfg.MaxWaiting = 32 * cfg.MaxConcurrent
	}
	if cfg.PerClientWaiting == 0 {
		cfg.PerClientWaiting = 32
	}
	if cfg.PerClientHeavyWaiting == 0 {
		cfg.PerClientHeavyWaiting = 4
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = defaultMaxWait
	}
	if cfg.InspectionRate == 0 {
		cfg.InspectionRate = defaultInspectionRate
	}
	if cfg.InspectionBurst == 0 {
		cfg.InspectionBurst = 2 * time.Second
	}
	if cfg.InspectionBurst < 0 {
		return nil, errors.New("waf: negative InspectionBurst")
	}
	if cfg.LightMaxWait == 0 {
		cfg.LightMaxWait = defaultLightMaxWait
	}
	if cfg.BodyTimeout == 0 {
		cfg.BodyTimeout = 10 * time.Second
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = time.Second
	}
	if cfg.RefusalDelay == 0 {
		cfg.RefusalDelay = time.Second
	}
	if cfg.MaxHeldPerClient == 0 {
		cfg.MaxHeldPerClient = 64
	}
	if cfg.MaxHeld == 0 {
		cfg.MaxHeld = 4096
	}
	if cfg.MaxHeldPerClient < 0 || cfg.MaxHeld < 0 {
		return nil, errors.New("waf: negative MaxHeldPerClient or MaxHeld")
	}
	if cfg.MaxConcurrent < 1 || cfg.PerClient < 1 || cfg.PerClientWaiting < 0 || cfg.PerClientHeavyWaiting < 0 || cfg.MaxWaiting < 0 || cfg.MaxWait < 0 || cfg.LightMaxWait < 0 ||
		cfg.BodyTimeout < 0 || cfg.RetryAfter < 0 {
		return nil, errors.New("waf: MaxConcurrent and PerClient must be positive; PerClientWaiting, PerClientHeavyWaiting, MaxWaiting, MaxWait, LightMaxWait, BodyTimeout and RetryAfter not negative")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for _, e := range cfg.Exclusions {
		if e.Method == "" || !strings.HasPrefix(e.Path, "/") || len(e.Fields) == 0 || len(e.Rules) == 0 {
			return nil, fmt.Errorf("waf: exclusion %s %s: Method, Path, Fields and Rules are required", e.Method, e.Path)
		}
		for _, f := range e.Fields {
			if !validField(f) {
				return nil, fmt.Errorf("waf: exclusion %s %s: field %q must be letters, digits and _", e.Method, e.Path, f)
			}
		}
	}
	w := &WAF{cfg: cfg, engines: map[string]engine{}, log: cfg.Logger, pool: newAdmission(cfg), bearer: bearer,
		budget: newBudget(cfg.InspectionRate, cfg.InspectionBurst, time.Now),
		held:   newRefusalHold(cfg.RefusalDelay, cfg.MaxHeldPerClient, cfg.MaxHeld), since: time.Since,
		busyLog:   newLogLimiter(cfg.Logger, refusalLogBurst, time.Now),
		budgetLog: newLogLimiter(cfg.Logger, refusalLogBurst, time.Now),
		slowLog:   newLogLimiter(cfg.Logger, refusalLogBurst, time.Now)}
	profiles := append([]Profile{{}}, cfg.Profiles...)
	for _, p := range profiles {
		if _, dup := w.engines[p.Name]; dup {
			return nil, fmt.Errorf("waf: profile %q defined twice", p.Name)
		}
		for _, ids := range p.Remove {
			if !ruleIDs.MatchString(ids) {
				return nil, fmt.Errorf("waf: profile %q: %q is not a rule id or a range of ids", p.Name, ids)
			}
		}
		d := Directives(cfg, p)
		root := fs.FS(coreruleset.FS)
		if cfg.rulesOverride == "" {
			r, err := rulesFS()
			if err != nil {
				return nil, err
			}
			root = r
		}
		e, err := compile(d, root)
		if err != nil {
			return nil, err
		}
		// Coraza's own configuration (rulesOverride: the comparisons) runs
		// every phase, as Coraza's middleware does.
		inert := false
		if cfg.rulesOverride == "" {
			files, err := embeddedRules()
			if err != nil {
				return nil, err
			}
			if inert, _, err = respPhasesInert(files, d, cfg.ParanoiaLevel, p.Remove); err != nil {
				return nil, err
			}
		}
		w.engines[p.Name] = engine{WAF: e, skipUninspected: inert}
	}
	return w, nil
}

func validField(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// compile builds a rule set from directives whose includes are read
// from root: the CRS's files, or the gateway's screened copy of them.
func compile(directives string, root fs.FS) (coraza.WAF, error) {
	w, err := coraza.NewWAF(coraza.NewWAFConfig().WithDirectives(directives).WithRootFS(root))
	if err != nil {
		return nil, fmt.Errorf("waf: rules: %w", err)
	}
	return w, nil
}

// Directives returns the SecLang configuration of profile p: Coraza's
// recommended base, blocking, the CRS at the configured paranoia level,
// the exclusions placed before the CRS so they run first.
func Directives(cfg Config, p Profile) string {
	if cfg.rulesOverride != "" {
		return cfg.rulesOverride
	}
	var b strings.Builder
	// No SecRxPreFilter: it saves some CPU but misses detections the CRS
	// regression suite checks (942220 on "2.2250738585072011e-308",
	// 932311 on an IMAP STORE injection).
	fmt.Fprintf(&b, `Include @coraza.conf-recommended
SecRuleEngine On
SecRequestBodyAccess On
SecRequestBodyLimit %[1]d
SecRequestBodyInMemoryLimit %[1]d
SecRequestBodyLimitAction Reject
SecResponseBodyAccess On
SecAuditEngine Off
`, max(cfg.BodyLimit, 1))
	// A body Coraza cannot parse is not refused by the rule set: the
	// handler decides (an invalid JSON document goes to the service, which
	// answers 400 without acting on it; anything else is refused here).
	b.WriteString("SecRuleUpdateActionById 200002 \"pass\"\n")
	b.WriteString("Include @crs-setup.conf.example\n")
	fmt.Fprintf(&b, "SecAction \"id:900000,phase:1,pass,t:none,nolog,setvar:tx.blocking_paranoia_level=%d\"\n", cfg.ParanoiaLevel)
	// The services accept UTF-8 JSON only: refuse invalid UTF-8 encodings.
	b.WriteString("SecAction \"id:900950,phase:1,pass,t:none,nolog,setvar:tx.crs_validate_utf8_encoding=1\"\n")
	for i, e := range cfg.Exclusions {
		writeExclusion(&b, 10000+i*10, e)
	}
	for i, p := range cfg.ReportPaths {
		writeReportPath(&b, 10900+i, p)
	}
	for i, c := range cfg.OpaqueCookies {
		writeOpaqueCookie(&b, 10800+i*2, c)
	}
	b.WriteString(cfg.beforeCRS)
	b.WriteString("Include @owasp_crs/*.conf\n")
	for _, ids := range p.Remove {
		fmt.Fprintf(&b, "SecRuleRemoveById %s\n", ids)
	}
	writeLevelPruning(&b, cfg)
	b.WriteString(cfg.AfterCRS)
	return b.String()
}

// writeExclusion emits one phase-1 rule that, on exactly this method and
// path, removes the fields from the named rules' targets for this
// transaction only.
func writeExclusion(b *strings.Builder, id int, e Exclusion) {
	fmt.Fprintf(b, "SecRule REQUEST_METHOD \"@streq %s\" \"id:%d,phase:1,pass,nolog,t:none,chain\"\n", e.Method, id)
	fmt.Fprintf(b, "  SecRule REQUEST_FILENAME \"@streq %s\" \"t:none", e.Path)
	prefix := "json."
	if e.Form {
		prefix = ""
	}
	for _, r := range e.Rules {
		for _, f := range e.Fields {
			fmt.Fprintf(b, ",ctl:ruleRemoveTargetById=%d;ARGS:%s%s", r, prefix, f)
		}
	}
	b.WriteString("\"\n")
}

// writeReportPath admits the browsers' report media types on path, and
// only there, and inspects the bodies as JSON. It runs before the CRS,
// whose initialisation keeps an allowed list that is already set. A
// report names the document's URL, an IP-address URL when the site is
// browsed by address: remote file inclusion (931100) is no risk in a body
// that nothing fetches.
func writeReportPath(b *strings.Builder, id int, path string) {
	fmt.Fprintf(b, "SecRule REQUEST_FILENAME \"@streq %s\" \"id:%d,phase:1,pass,t:none,nolog,"+
		"ctl:requestBodyProcessor=JSON,ctl:ruleRemoveById=931100,"+
		"setvar:'tx.allowed_request_content_type=|application/csp-report| |application/reports+json|'\"\n", path, id)
}

// writeOpaqueCookie removes the cookie from the targets of every CRS rule
// that reads cookies, for this transaction, when it is present once with
// its issued shape.
func writeOpaqueCookie(b *strings.Builder, id int, c OpaqueCookie) {
	fmt.Fprintf(b, "SecRule &REQUEST_COOKIES:%s \"@eq 1\" \"id:%d,phase:1,pass,nolog,t:none,chain\"\n", c.Name, id)
	fmt.Fprintf(b, "  SecRule REQUEST_COOKIES:%s \"@rx ^(?:%s)$\" \"t:none", c.Name, c.Format)
	removeTarget(b, "REQUEST_COOKIES:"+c.Name)
	b.WriteString("\"\n")
}

var (
	directivePath = regexp.MustCompile(`^/[A-Za-z0-9/_.{}-]{0,200}$`)
	fieldName     = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
	ruleIDs       = regexp.MustCompile(`^[0-9]{1,9}(?:-[0-9]{1,9})?$`)
)

type ctxKey int

const (
	bodyLimitKey ctxKey = iota
	profileKey
)

// WithBodyLimit lowers the body cap for the request served with ctx (the
// route's own limit, which is what the service behind it accepts).
func WithBodyLimit(ctx context.Context, n int) context.Context {
	return context.WithValue(ctx, bodyLimitKey, n)
}

// WithProfile selects a [Profile] by name for the request served with ctx.
func WithProfile(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, profileKey, name)
}

// Handler filters requests before next. In order: the body is read
// (bounded in size and time, holding no slot), an inspection slot is taken
// (heavy requests bounded per client, all bounded overall, 503 when none
// frees in time), phases 1 and 2 run, and the request goes on with its
// body replayed.
func (f *WAF) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A client past its inspection-time budget is refused before its
		// body is read: each of its heavy requests then costs next to
		// nothing.
		key, arrived := clientKey(r), time.Now()
		if r.ContentLength != 0 || heavy(r, nil) {
			if ok, wait := f.budget.allow(key); !ok {
				f.refuseOverBudget(w, r, key, arrived, wait)
				return
			}
		}
		limit := f.cfg.BodyLimit
		if n, ok := r.Context().Value(bodyLimitKey).(int); ok && n >= 0 && n < limit {
			limit = n
		}
		if r.ContentLength > int64(limit) {
			f.stats.tooLarge.Add(1)
			writeTooLarge(w, r)
			return
		}
		body, err := f.readBody(w, r, limit)
		if err != nil {
			f.refuseRead(w, r, err)
			return
		}
		maxArgs := f.cfg.MaxBodyArgs
		if slices.Contains(f.cfg.ReportPaths, r.URL.Path) {
			maxArgs = f.cfg.ReportBodyArgs
		}
		if bodyArgs(r, body) > maxArgs {
			f.stats.tooLarge.Add(1)
			write(w, r, problem.Problem{Status: http.StatusBadRequest, Type: "request-too-large",
				Title: "Too many body fields", Detail: "The request body holds more values than the gateway accepts."})
			return
		}
		maxWait, expensive := f.cfg.LightMaxWait, heavy(r, body)
		if expensive {
			maxWait = f.cfg.MaxWait
		}
		release, err := f.pool.acquire(r.Context(), key, expensive, maxWait)
		if err != nil {
			f.refuseBusy(w, r, key, arrived, err)
			return
		}
		eng := f.engines[""]
		if name, ok := r.Context().Value(profileKey).(string); ok {
			if e, ok := f.engines[name]; ok {
				eng = e
			}
		}
		if f.holding != nil {
			f.holding(r)
		}
		tx := eng.NewTransactionWithID(screenTxID(key))
		defer func() {
			if reportable(tx) {
				tx.ProcessLogging()
			}
			if f.observe != nil {
				f.observe(r, tx)
			}
			_ = tx.Close()
		}()
		start := time.Now()
		it, err := inspect(tx, r, body, f.bearer)
		took := f.since(start)
		release()
		v := f.decide(tx, it, err, r, body)
		if expensive {
			if v == blocked {
				// An attack uses its client's budget up faster than
				// ordinary requests do, as it does the per-IP limit.
				took *= blockedCharge
			}
			f.budget.charge(key, took)
		}
		switch v {
		case pass:
			f.stats.passed.Add(1)
			r2 := r
			if body != nil {
				r2 = r.WithContext(r.Context())
				r2.Body = io.NopCloser(bytes.NewReader(body))
				r2.ContentLength = int64(len(body))
			}
			ri := &responseInspector{w: w, r: r, f: f, tx: tx, skipUninspected: eng.skipUninspected}
			next.ServeHTTP(ri, r2)
			ri.finish()
		case failed:
			f.stats.errors.Add(1)
			f.log.ErrorContext(r.Context(), "waf: request inspection failed; refusing", "error", err.Error())
			w.Header().Set("Retry-After", "1")
			write(w, r, problem.Unavailable)
		case malformed:
			f.stats.blocked.Add(1)
			f.log.WarnContext(r.Context(), "waf: request body could not be parsed; refusing")
			write(w, r, problem.Problem{Status: http.StatusBadRequest, Type: "malformed-request",
				Title: "Malformed request", Detail: "The request body could not be parsed."})
		case tooLarge:
			f.stats.tooLarge.Add(1)
			writeTooLarge(w, r)
		default:
			f.block(w, r, tx, it)
		}
	})
}

type verdict int

const (
	pass verdict = iota
	blocked
	failed
	malformed
	tooLarge
)

// decide turns the transaction's outcome into a verdict. A body Coraza's
// parser refused (REQBODY_ERROR) passes only when it is JSON that no JSON
// parser accepts either: the service then answers its own 400 without
// acting on it. JSON that Go's parser accepts but Coraza's refused is a
// parser differential and is refused, as is any other unparsable body.
func (f *WAF) decide(tx types.Transaction, it *types.Interruption, err error, r *http.Request, body []byte) verdict {
	if err != nil {
		return failed
	}
	if it != nil {
		if it.Status == http.StatusRequestEntityTooLarge {
			return tooLarge
		}
		return blocked
	}
	for _, m := range tx.MatchedRules() {
		if m.Rule().ID() != 200002 {
			continue
		}
		if isJSON(r.Header.Get("Content-Type")) && !jsonValid(body) {
			return pass
		}
		return malformed
	}
	return pass
}

func isJSON(ct string) bool {
	ct = strings.ToLower(strings.TrimSpace(ct))
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = strings.TrimSpace(ct[:i])
	}
	return ct == "application/json" || strings.HasPrefix(ct, "application/") && strings.HasSuffix(ct, "+json")
}

// bodyArgs counts the values the rules would inspect in body, an upper
// bound read without parsing: the fields of a form, else the commas
// outside JSON strings plus one (every member or element but the first
// follows a comma).
func bodyArgs(r *http.Request, body []byte) int {
	if len(body) == 0 {
		return 0
	}
	if ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";"); strings.EqualFold(strings.TrimSpace(ct), "application/x-www-form-urlencoded") {
		return bytes.Count(body, []byte("&")) + 1
	}
	n, inString, escaped := 1, false, false
	for _, c := range body {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case !inString && c == ',':
			n++
		}
	}
	return n
}

func writeTooLarge(w http.ResponseWriter, r *http.Request) {
	write(w, r, problem.Problem{Status: http.StatusRequestEntityTooLarge, Type: "payload-too-large",
		Title: "Request body too large", Detail: "The request body exceeds what this route accepts."})
}

// write sends p, or, when the client is already gone, only records the
// status (499, as nginx logs a client that closed the request) so the
// access log says what happened instead of a silent 200.
func write(w http.ResponseWriter, r *http.Request, p problem.Problem) {
	if r.Context().Err() != nil {
		w.WriteHeader(StatusClientClosed)
		return
	}
	problem.Write(w, r, p)
}

// StatusClientClosed is the status recorded (never seen by the client)
// for a request whose client went away before the WAF answered.
const StatusClientClosed = 499

// readBody reads the whole body, at most limit bytes, under BodyTimeout.
// It returns nil for a request without a body.
func (f *WAF) readBody(w http.ResponseWriter, r *http.Request, limit int) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	rc := http.NewResponseController(w)
	deadlineSet := rc.SetReadDeadline(time.Now().Add(f.cfg.BodyTimeout)) == nil
	var timer *time.Timer
	if !deadlineSet {
		// A transport without read deadlines: close the body on expiry,
		// which ends a blocked Read.
		timer = time.AfterFunc(f.cfg.BodyTimeout, func() { _ = r.Body.Close() })
	}
	n := 512
	if r.ContentLength > 0 {
		n = int(r.ContentLength) + 1
	}
	buf := bytes.NewBuffer(make([]byte, 0, min(n, limit+1)))
	_, err := buf.ReadFrom(io.LimitReader(r.Body, int64(limit)+1))
	if timer != nil && !timer.Stop() && err == nil {
		err = os.ErrDeadlineExceeded
	}
	if err != nil {
		// The deadline stays: the server's discard of the unread rest
		// must not wait on a stalled client either.
		return nil, err
	}
	if deadlineSet {
		_ = rc.SetReadDeadline(time.Time{})
	}
	if buf.Len() > limit {
		return nil, errTooLarge
	}
	if buf.Len() == 0 {
		return nil, nil
	}
	return buf.Bytes(), nil
}

var errTooLarge = errors.New("waf: body over the limit")

// refuseRead answers a body that could not be read: too large (413), too
// slow (408), or the client went away (recorded as 499).
func (f *WAF) refuseRead(w http.ResponseWriter, r *http.Request, err error) {
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, errTooLarge) || errors.As(err, &mbe):
		f.stats.tooLarge.Add(1)
		writeTooLarge(w, r)
	case isTimeout(err):
		// Our own read deadline fired (which also cancels the request's
		// context): the client may still be listening, so answer it.
		f.stats.slow.Add(1)
		f.slowLog.Warn(r.Context(), "waf: request body too slow; refusing", "status", http.StatusRequestTimeout)
		closeConn(w, r)
		problem.Write(w, r.WithContext(context.WithoutCancel(r.Context())), problem.Problem{Status: http.StatusRequestTimeout,
			Type: "request-timeout", Title: "Request timeout", Detail: "The request body did not arrive in time."})
	case r.Context().Err() != nil:
		f.stats.clientGone.Add(1)
		f.log.InfoContext(r.Context(), "waf: client went away while sending the body", "status", StatusClientClosed)
		w.WriteHeader(StatusClientClosed)
	default:
		f.stats.slow.Add(1)
		f.log.WarnContext(r.Context(), "waf: request body could not be read; refusing", "error", err.Error())
		closeConn(w, r)
		write(w, r, problem.Problem{Status: http.StatusBadRequest, Type: "malformed-request",
			Title: "Malformed request", Detail: "The request body could not be read."})
	}
}

// closeConn ends an HTTP/1 connection after the answer: the unread rest
// of the body cannot be skipped. HTTP/2 and HTTP/3 reset the stream
// instead, and forbid the Connection header (a client refuses the
// response).
func closeConn(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (f *WAF) refuseBusy(w http.ResponseWriter, r *http.Request, key netip.Prefix, arrived time.Time, err error) {
	if r.Context().Err() != nil || !f.held.hold(r.Context(), key, arrived) {
		f.stats.clientGone.Add(1)
		w.WriteHeader(StatusClientClosed)
		return
	}
	f.stats.busy.Add(1)
	f.busyLog.Warn(r.Context(), "waf: no inspection capacity; refusing", "error", err.Error())
	w.Header().Set("Retry-After", strconv.FormatInt(int64((f.cfg.RetryAfter+time.Second-1)/time.Second), 10))
	problem.Write(w, r, problem.Problem{Status: http.StatusServiceUnavailable, Type: "service-unavailable",
		Title: "Service temporarily unavailable", Detail: "The gateway is at capacity; retry after the delay in Retry-After."})
}

// refuseOverBudget answers a heavy request of a client that has used its
// inspection time (429, the per-IP limit's answer: it is this client's
// rate, not the gateway's capacity).
func (f *WAF) refuseOverBudget(w http.ResponseWriter, r *http.Request, key netip.Prefix, arrived time.Time, wait time.Duration) {
	if !f.held.hold(r.Context(), key, arrived) {
		f.stats.clientGone.Add(1)
		w.WriteHeader(StatusClientClosed)
		return
	}
	f.stats.overBudget.Add(1)
	f.budgetLog.Warn(r.Context(), "waf: client over its inspection-time budget; refusing", "retry_after", wait.String())
	w.Header().Set("Retry-After", strconv.FormatInt(int64((wait+time.Second-1)/time.Second), 10))
	write(w, r, problem.Problem{Status: http.StatusTooManyRequests, Type: "rate-limited",
		Title: "Too many requests", Detail: "This client has used its share of request inspection; retry after the delay in Retry-After."})
}

func (f *WAF) block(w http.ResponseWriter, r *http.Request, tx types.Transaction, it *types.Interruption) {
	f.stats.blocked.Add(1)
	f.log.WarnContext(r.Context(), "waf: request blocked", "rule", it.RuleID, "matched", matchedList(tx), "action", it.Action)
	if f.cfg.OnBlock != nil {
		f.cfg.OnBlock(r)
	}
	write(w, r, problem.Problem{Status: http.StatusForbidden, Type: "waf-blocked",
		Title: "Request blocked", Detail: "The request was refused by the web application firewall."})
}

// matchedList is the comma-separated ids of the detections matched.
func matchedList(tx types.Transaction) string {
	var ids []string
	for _, m := range tx.MatchedRules() {
		// 900000-910999 are CRS setup and initialisation, not detections.
		if id := m.Rule().ID(); id < 900000 || id >= 911000 {
			ids = append(ids, strconv.Itoa(id))
		}
	}
	return strings.Join(ids, ",")
}

// inspect runs phases 1 and 2 over the request and its already read body.
// A single Authorization header matching bearer is left out.
func inspect(tx types.Transaction, r *http.Request, body []byte, bearer *regexp.Regexp) (*types.Interruption, error) {
	host, port, _ := net.SplitHostPort(r.RemoteAddr)
	p, _ := strconv.Atoi(port)
	tx.ProcessConnection(host, p, "", 0)
	uri := r.RequestURI // as received (an absolute-form target stays one)
	if uri == "" {
		uri = r.URL.RequestURI()
	}
	tx.ProcessURI(uri, r.Method, r.Proto)
	for k, vs := range r.Header {
		if k == "Expect" {
			// Go's server answers "100-continue" itself (and refuses any
			// other expectation with 417) before the handler runs; the
			// body is already read. The CRS restricts the header (920450)
			// for servers that do not, which refused every curl upload.
			continue
		}
		if k == "Authorization" && len(vs) == 1 && bearer != nil && len(vs[0]) <= MaxOpaqueBearer && bearer.MatchString(vs[0]) {
			continue
		}
		for _, v := range vs {
			tx.AddRequestHeader(k, v)
		}
	}
	if _, ok := r.Header["Content-Length"]; !ok && len(body) > 0 && len(r.TransferEncoding) == 0 {
		// HTTP/2 and HTTP/3 carry the length in the framing.
		tx.AddRequestHeader("Content-Length", strconv.Itoa(len(body)))
	}
	if r.Host != "" {
		tx.AddRequestHeader("Host", r.Host)
		tx.SetServerName(r.Host)
	}
	for _, te := range r.TransferEncoding {
		tx.AddRequestHeader("Transfer-Encoding", te)
	}
	if it := tx.ProcessRequestHeaders(); it != nil {
		return it, nil
	}
	if len(body) > 0 && tx.IsRequestBodyAccessible() {
		it, _, err := tx.WriteRequestBody(body)
		if err != nil {
			return nil, fmt.Errorf("write body: %w", err)
		}
		if it != nil {
			return it, nil
		}
	}
	return tx.ProcessRequestBody()
}

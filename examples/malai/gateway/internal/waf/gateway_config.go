package waf

// GatewayConfig is the reference gateway's rule set: the CRS at paranoia
// level 1 with the credential exclusions of the identity routes. The
// gateway adds its runtime limits (concurrency, body caps) to it; the CRS
// regression test runs exactly these directives.
func GatewayConfig() Config {
	return Config{Exclusions: CredentialExclusions(), OpaqueCookies: IssuedCookies(), OpaqueBearer: IssuedBearer,
		Profiles: []Profile{ServiceProfile()}}
}

// Services names the profile of the routes the gateway forwards to the
// system's own services (identity, the ledger, the worker): JSON APIs
// written in Go. Everything else (the web app's pages, unknown paths)
// keeps the whole rule set.
const Services = "services"

// serviceRemovals are the rule families a service route goes without,
// each with why it protects nothing there. What they share: every
// component of the system is a Go binary; a request's text reaches Go
// code, PostgreSQL (as bound parameters), Redis (as values), the logs
// and, rendered by the web app, a browser. No PHP, JVM, Node.js, Ruby or
// Perl interpreter, no IIS, no file include exists anywhere for the text
// to reach, so detections of those technologies' injections match text
// that is inert here, and cost every API call a scan per argument. The
// families that guard what the text does reach stay: SQL injection,
// XSS, shell commands, path traversal, SSRF, template injection,
// protocol attacks and smuggling, Log4Shell (a log pipeline further on
// may run Java), the generic and SQL-error response leaks, scanners,
// and the protocol rules.
var serviceRemovals = []struct{ ids, reason string }{
	{"931100-931999", "remote file inclusion: a URL handed to PHP's include; nothing includes or fetches a URL a request names (SSRF, 934110/934120/934190, stays)"},
	{"933100-933999", "PHP injection: no PHP interpreter; PHP tags, superglobals, wrappers, serialized objects and function names are text to Go"},
	{"934100-934101", "Node.js injection: no Node.js"},
	{"934130", "JavaScript prototype pollution: Go's JSON decoding has no prototype; the services refuse unknown members"},
	{"934140", "Perl injection: no Perl"},
	{"934150", "Ruby injection: no Ruby"},
	{"934160", "Node.js DoS pattern: no Node.js event loop"},
	{"934170", "PHP data: scheme: no PHP stream wrappers"},
	{"943110-943120", "session fixation by a session-id parameter (PHPSESSID, JSESSIONID, …): no service takes a session from a parameter; 943100 (cookie-setting markup) stays"},
	{"944100-944149", "Java class, process-spawn and deserialization payloads: no JVM deserializes or loads anything"},
	{"944153-944999", "Java deserialization and class loading at paranoia levels 2-3: no JVM (Log4Shell, 944150-944152, stays)"},
	{"952100-952999", "Java error pages in responses: no Java server"},
	{"953100-953999", "PHP error and source leaks in responses: no PHP"},
	{"954100-954999", "IIS error pages in responses: no IIS"},
	{"955100-955999", "web shell pages in responses: the services serve no file a request could have placed"},
	{"956100-956999", "Ruby error pages in responses: no Ruby"},
}

// ServiceProfile is the [Services] rule set: the whole CRS without
// serviceRemovals.
func ServiceProfile() Profile {
	p := Profile{Name: Services}
	for _, r := range serviceRemovals {
		p.Remove = append(p.Remove, r.ids)
	}
	return p
}

// IssuedBearer is the shape of identity's access tokens: a compact JWS
// signed with ES256, three base64url segments without padding, a JSON
// header and JSON claims (both start with `{"`, "eyJ" encoded) and the
// 64-byte signature (86 characters); the whole header value is at most
// [MaxOpaqueBearer] bytes.
//
// Why no rule needs to read such a token: its alphabet is letters,
// digits, "-" and "_", which cannot spell a quote, a space, a bracket, a
// slash, a dot outside the two separators, "%", "<", "$" or any other
// character the header rules need to find an injection, a traversal or a
// smuggled request; the decoded bytes are read only by jwtverify, which
// refuses the token unless identity's key signed it (and then its claims
// are identity's own text). What the rules could still match in it is
// chance: random base64url holds "--" now and then, which libinjection
// reads as an SQL comment, and every ~700-byte token costs each header
// rule a scan with its transformations on every API call. A token off
// this shape (another scheme, a quote, a space, padding, a fourth
// segment, an overlong segment) and a second Authorization header are
// inspected as before.
const IssuedBearer = `eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{86}`

// IssuedCookies are the cookies identity and the web app issue, in the
// exact shapes they issue (names and shapes agreed with them; a test
// checks them against real values). Each is checked by its issuer before
// use: the web session and the refresh token are 256 random bits that
// are only hashed and looked up, the device cookie is a version, a
// 128-bit random id, a timestamp and a 128-bit HMAC.
func IssuedCookies() []OpaqueCookie {
	const b64 = "[A-Za-z0-9_-]"
	return []OpaqueCookie{
		{Name: "__Host-malai-session", Format: b64 + "{43}"},
		{Name: "__Secure-malai-refresh", Format: b64 + "{43}"},
		{Name: "__Secure-malai-device", Format: `v1\.` + b64 + `{22}\.` + b64 + `{11}\.` + b64 + "{22}"},
	}
}

// Credential routes and their password fields (JSON members). Identity
// owns the routes; the names are agreed with it.
var credentialRoutes = []struct {
	Method, Path string
	Fields       []string
}{
	{"POST", "/v1/users", []string{"password"}},                            // sign-up
	{"POST", "/v1/sessions", []string{"password"}},                         // sign-in
	{"POST", "/v1/password", []string{"current_password", "new_password"}}, // password change
}

// passwordRules are the paranoia-level-1 rules that inspect argument
// values for text a password may legitimately hold. Why each may go: a
// password is never interpreted by any service. Identity compares it with
// a memory-hard hash and stores only the hash; it never reaches SQL, a
// shell, a file path, a URL fetch, a page, a template, a header or an
// interpreter, and is never logged. A detection of those injections in a
// password therefore protects nothing, while refusing strong passwords
// that happen to contain such text (and teaching users to weaken them).
// The rules stay on for every other field of these routes (the username
// above all) and for every field of every other route.
var passwordRules = []int{
	// Protocol: bytes that matter only to a parser further on. Identity
	// checks a password's characters itself.
	920270, // null character (a literal "%00" decodes to one)
	920540, // Unicode escape "\u…" bypass
	921110, // request smuggling keywords ("GET /… HTTP/1.1" as text)
	921120, // response splitting (CR/LF + header-like text)
	921130, // response splitting (HTML after CR/LF)
	921200, // LDAP injection: no LDAP anywhere
	// Path traversal / file access: a password never names a file.
	930100, // "/../" encoded
	930110, // "/../" plain
	930120, // OS file names ("/etc/passwd", "boot.ini")
	// Remote file inclusion: a password is never fetched.
	931100, // URL with an IP address
	931120, // URL ending in "?"
	// Remote command execution: a password never reaches a shell.
	932120, // PowerShell commands
	932125, // PowerShell aliases
	932130, // Unix shell expressions ("$(…)", "${…}")
	932140, // Windows FOR/IF
	932160, // Unix shell code ("/bin/sh", "cat /etc")
	932171, // Shellshock "() {"
	932175, // shell alias invocation
	932230, // 2-3 character Unix commands after a separator
	932235, // Unix commands after a separator
	932250, // direct Unix command execution
	932260, // direct Unix command execution
	932270, // Unix shell expressions ("~+", "$((…))")
	932280, // brace expansion ("{a,b}")
	932330, // shell history invocation ("!-1")
	932340, // Unix commands without arguments
	932370, // Windows command injection
	932380, // Windows command injection
	// PHP injection: no PHP anywhere.
	933100, 933120, 933130, 933135, 933140, 933150, 933160, 933170, 933180, 933200, 933210,
	// Generic application attacks: no Node.js/Ruby evaluation, no
	// outbound fetch, no object merge of a password.
	934100, // Node.js injection
	934110, // cloud metadata URL (SSRF)
	934130, // prototype pollution ("__proto__")
	934150, // Ruby injection
	934160, // Node.js DoS pattern
	934170, // PHP data: scheme
	934190, // scheme-less internal hostnames (SSRF)
	// XSS: a password is never rendered.
	941100, 941110, 941120, 941130, 941140, 941160, 941170, 941180, 941190, 941200,
	941210, 941220, 941230, 941240, 941250, 941260, 941270, 941280, 941290, 941300,
	941310, 941350, 941360, 941370, 941390, 941400,
	// SQL injection: identity's queries take the password hash as a bound
	// parameter; the password itself is never in a query.
	942100, 942140, 942151, 942160, 942170, 942190, 942220, 942230, 942240, 942250,
	942270, 942280, 942290, 942320, 942350, 942360, 942500, 942540, 942550, 942560,
	// Session fixation: a password is never a cookie.
	943100,
	// Java injection: no Java, no log interpolation ("${jndi:…}" in a
	// password is inert text to a Go service that never logs it).
	944100, 944110, 944120, 944130, 944150,
}

// CredentialExclusions are the identity routes' password fields with
// passwordRules removed from them, route by route.
func CredentialExclusions() []Exclusion {
	out := make([]Exclusion, 0, len(credentialRoutes))
	for _, r := range credentialRoutes {
		out = append(out, Exclusion{Method: r.Method, Path: r.Path, Fields: r.Fields, Rules: passwordRules})
	}
	return out
}

// FormCredentialExclusion gives a web form's password fields (form
// fields, not JSON members) the same exclusions as the identity routes'
// password members, for the same reasons: the web app hands them to
// identity and nothing else.
func FormCredentialExclusion(method, path string, fields []string) Exclusion {
	return Exclusion{Method: method, Path: path, Fields: fields, Rules: passwordRules, Form: true}
}

// Package waf puts Coraza with the OWASP Core Rule Set in front of the
// gateway's routes, with the cost an untrusted client can make it pay
// bounded before it is paid.
//
// # What it guarantees
//
//   - A body is read whole before inspection, at most the route's limit
//     (larger: 413, never inspected) and within BodyTimeout (slower: 408).
//     Reading holds no inspection slot, so a slow client costs a
//     goroutine, not CPU. A body holding more than MaxBodyArgs values
//     (JSON members and array elements, form fields; each is an argument
//     every rule inspects) is refused with 400, never inspected.
//   - Inspections run in a bounded pool: MaxConcurrent at once, of which
//     one address holds at most PerClient with heavy requests (a body, or
//     a shape past the light bounds). Light requests (no body, a small
//     shape: a page and its assets) may use any free slot, so a browser's
//     parallel loads pass. A freed slot goes to the waiting client holding
//     the fewest, then the one served least recently: clients take turns.
//     A request that finds no slot within MaxWait (LightMaxWait for light
//     ones), or finds MaxWaiting others, or PerClientWaiting of its own
//     client's (PerClientHeavyWaiting heavy ones: a double click waits its
//     turn, a flood does not queue), already waiting, is answered 503 with Retry-After;
//     nothing queues without bound.
//   - Each address has a budget of inspection time for its heavy requests
//     (InspectionRate per second, InspectionBurst at once: a quarter of a
//     core, 2 s): past it they are refused with 429 and Retry-After
//     before their body is read, until its use drains. One the rules
//     refuse costs four times its inspection time. The pool bounds
//     an address's share of the CPU at any moment, the budget its share
//     over time.
//   - Those 429s and 503s are answered RefusalDelay (1 s) after the
//     request arrived, holding no slot and no place in the queue: a client
//     that retries at once without backing off gets one answer per
//     connection a second, not tens of thousands whose answers together
//     take the cores from everyone else. At most MaxHeldPerClient (64) of
//     one address and MaxHeld (4096) in all are held; past them a refusal
//     is answered at once. Each kind of cheap refusal (503, 429, 408) is
//     logged at most ten times a second, the next line saying how many
//     were left out; [Stats] counts every one.
//   - Any inspection error fails closed (503). An interruption is a 403
//     problem+json that names no rule; the matched rule ids go to the log
//     under the request's correlation id.
//   - A request whose client went away is recorded as 499 (it was neither
//     answered nor passed), never as a 200.
//   - An unparsable body is refused (400), except JSON that no JSON parser
//     accepts (encoding/json agrees with Coraza): that goes to the service,
//     which answers its own 400 without acting on it.
//
// It does not use coraza's http.WrapHandler: that middleware only logs when
// request processing fails and then lets the request through.
//
// # Exclusions
//
// [Exclusion] removes named JSON fields of one route from named rules, for
// that route only. It is how credential fields (a password goes to a
// password hash, never to SQL, a shell, a path or a page) stop being false
// positives while the same payload in any other field is still refused.
//
// [OpaqueCookie] does the same for the cookies the system issues itself
// (random or HMAC-signed base64url): one of exactly its issued shape is
// skipped by every rule, since random text reads as SQL to libinjection
// about once in 3,000 values and would sign a user out at random. Any
// other value under the name, a second cookie of the name, or the same
// text elsewhere is inspected as before.
//
// [Config.OpaqueBearer] does the same for the access token in
// Authorization: one header, scheme "Bearer", a token of exactly the
// issued shape ([IssuedBearer]: three bounded base64url segments) is not
// handed to the rules. Its alphabet cannot spell what the header rules
// look for, only jwtverify reads its decoded bytes, and no CRS rule names
// the header; leaving it out saves every API call a ~700-byte scan per
// header rule. Any other value, or a second Authorization header, is
// inspected as before.
//
// # Profiles
//
// A [Profile] is the rule set without named rule families, selected per
// request with [WithProfile]. The gateway runs the [Services] profile
// ([ServiceProfile]) on the routes it forwards to the system's own
// services: JSON APIs in Go, where the families that detect PHP, Java
// deserialization, Node.js, Ruby and Perl injection, remote file
// inclusion, other platforms' session-id parameters and those platforms'
// error pages in responses match text that no interpreter in the system
// reads (each family with its reason in serviceRemovals). SQL injection,
// XSS, shell commands, path traversal, SSRF, template injection, protocol
// attacks and Log4Shell stay on; the web app's pages and every other path
// get the whole rule set, which is what the CRS regression suite tests.
//
// # Responses
//
// Phases 3 and 4 run over every response whose body the configuration
// inspects (text/plain, text/html, text/xml, buffered up to 512 KiB): a
// leaked SQL error or a directory listing is withheld with 502. A
// response that names no media type is given the one net/http would
// send (http.DetectContentType of its first 512 bytes, unless it is
// encoded or has no body) before its headers are inspected, so an
// untyped error page is inspected as the text the client reads. A
// response whose body is not inspected (the services' JSON and problem
// documents, images) skips the two phases when none of the rule set's
// phase-3 and phase-4 rules, at its paranoia level, reads anything but
// the body and the transaction's own variables: nothing in them can act
// on it. That holds for the [Services] profile at level 1; the whole rule
// set (the IIS rules read the status) and every profile from level 2
// (950100 reads it too) run the phases on every response, and so does any
// rule set with a phase-3 or phase-4 rule of the caller's own, a
// response rule changed in place (SecRuleUpdateTargetById and the like),
// or a raised detection paranoia level.
//
// # Paranoia levels
//
// The CRS gates its rules by paranoia level at run time, with a marker
// rule per level and phase in every file that skips the rest of the file
// below its level: 184 markers walked by every request. When nothing but
// [Config.ParanoiaLevel] sets a transaction's levels (no rule of the
// caller's names a paranoia level), the rule set is built without the
// rules above the level and without the markers: the same rules run, in
// the same order, with none of the skipping. A caller's rule that raises
// the detection or blocking level keeps every rule and marker, so the
// raised level takes effect as in the CRS.
//
// # Regular expressions
//
// The CRS's @rx rules run through an operator that asks RE2 (go-re2, its
// DFA, at most 1 MiB per pattern) whether the pattern matches anywhere in
// the value, and answers no when RE2 says no; otherwise Go's regexp
// decides and captures, exactly as Coraza's @rx does. A value that is not
// valid UTF-8, a pattern that spells bytes (\x80 and above: Coraza's byte
// matcher) or that RE2 cannot compile within the bound, and a DFA that
// runs out of its memory go to Go's regexp alone. The CRS regression
// suite matches the same CRS rules in every test as Coraza's default
// configuration, whose @rx is Coraza's own. An API JSON POST's inspection
// costs 0.86× what it did, a request with a 16 KiB value a sixth (see
// BENCHMARKS.md).
//
// RE2's answers are remembered per client and value (up to 256 bytes,
// 4 096 values in all, dropped at random when full): a client's header
// values, JSON member names and account ids are asked of each pattern
// once, not on every request. Only RE2's answer is kept; a "yes" still
// goes to Go's regexp, which decides and captures. One client's answers
// are never another's (the client is the resolved address, or its IPv6
// /64), so how fast the WAF answers tells nobody what others sent. A
// flood of values never seen before costs what it cost without the
// cache.
//
// # Example
//
//	w, err := waf.New(waf.Config{})
//	if err != nil {
//		return err
//	}
//	http.ListenAndServe(addr, w.Handler(mux))
package waf

package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/malai-sec/malai/examples/malai/evidence"
	"github.com/malai-sec/malai/examples/malai/internal/faults"
)

// proof builds a deliberately broken system — one feature switched off —
// and names the checks that must fail on it. Every other check must still
// pass: a check that fails on a system where its feature works is as
// wrong as one that never fails.
type proof struct {
	name string
	// faults, options and pg build the broken system.
	faults  faults.Set
	options func(*Options)
	pg      func(ctx context.Context, conn *pgx.Conn, pg PGAudit) error
	// beforeRestart runs on the data directory while the system is
	// stopped for a restart.
	beforeRestart func(dataDir string) error
	// fail are the ids of the checks that must fail (usually one).
	fail []string
	// fixture, when set, is what the evidence pass's own setup must fail
	// with instead: the fault refuses what every check starts from.
	fixture string
}

func id(row, name string) string { return row + " / " + name }

func grant(sql ...string) func(context.Context, *pgx.Conn, PGAudit) error {
	return func(ctx context.Context, conn *pgx.Conn, pg PGAudit) error {
		for _, q := range sql {
			q = strings.NewReplacer("$T", pg.Schema+".audit_log", "$S", pg.Schema, "$APP", pg.AppRole).Replace(q)
			if _, err := conn.Exec(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		return nil
	}
}

var proofs = []proof{
	// TLS at the edge.
	{name: "edge accepts TLS 1.0", faults: faults.Set{faults.EdgeTLS10}, fail: []string{id(evidence.RowTLS, "TLS 1.0 refused")}},
	{name: "edge accepts TLS 1.1", faults: faults.Set{faults.EdgeTLS11}, fail: []string{id(evidence.RowTLS, "TLS 1.1 refused")}},
	{name: "edge accepts a CBC suite in TLS 1.2", faults: faults.Set{faults.EdgeCBC}, fail: []string{id(evidence.RowTLS, "TLS 1.2 with a CBC suite refused")}},
	{name: "edge refuses TLS 1.2", faults: faults.Set{faults.EdgeNoTLS12}, fail: []string{id(evidence.RowTLS, "TLS 1.2 ECDHE AEAD accepted")}},
	{name: "edge offers no h2", faults: faults.Set{faults.EdgeNoH2}, fail: []string{id(evidence.RowTLS, "TLS 1.3 accepted, h2 negotiated")}},
	{name: "edge serves no HTTP/3", faults: faults.Set{faults.EdgeNoHTTP3}, fail: []string{id(evidence.RowTLS, "HTTP/3 request over QUIC succeeds; Alt-Svc advertises it")}},
	{name: "plain HTTP redirects to any Host", faults: faults.Set{faults.EdgeOpenRedirect}, fail: []string{id(evidence.RowTLS, "plain HTTP is redirected (308) to HTTPS; a foreign Host is not")}},
	// Security headers.
	{name: "X-Frame-Options dropped on /healthz", faults: faults.Set{faults.EdgeNoXFOOnHealthz}, fail: []string{id(evidence.RowHeaders, "mandatory headers on 200 from the gateway")}},
	{name: "X-Frame-Options dropped on 404", faults: faults.Set{faults.EdgeNoXFOOn404}, fail: []string{id(evidence.RowHeaders, "mandatory headers on 404 from the mux")}},
	{name: "X-Frame-Options dropped on 401", faults: faults.Set{faults.EdgeNoXFOOn401}, fail: []string{id(evidence.RowHeaders, "mandatory headers on 401 from JWT check #1")}},
	{name: "X-Frame-Options dropped on 403", faults: faults.Set{faults.EdgeNoXFOOn403}, fail: []string{id(evidence.RowHeaders, "mandatory headers on 403 from the WAF")}},
	{name: "X-Frame-Options dropped on the JWKS", faults: faults.Set{faults.EdgeNoXFOOnJWKS}, fail: []string{id(evidence.RowHeaders, "mandatory headers on 200 proxied from identity (JWKS)")}},
	{name: "a weak CSP", faults: faults.Set{faults.EdgeWeakCSP}, fail: []string{id(evidence.RowHeaders, "Mozilla Observatory rules (offline scorer) grade the gateway's headers A+")}},
	// Managed WAF at the edge.
	// The headers check of the WAF's 403 sends an SQL injection: without
	// the rules the answer is no longer the WAF's.
	{name: "no SQL injection rules", faults: faults.Set{faults.WAFNoSQLi}, fail: []string{id(evidence.RowWAF, "SQL injection refused (OWASP CRS)"),
		id(evidence.RowHeaders, "mandatory headers on 403 from the WAF")}},
	{name: "no XSS rules", faults: faults.Set{faults.WAFNoXSS}, fail: []string{id(evidence.RowWAF, "XSS refused (OWASP CRS)")}},
	{name: "no Java / RCE rules", faults: faults.Set{faults.WAFNoJava}, fail: []string{id(evidence.RowWAF, "Log4Shell refused (known bad inputs)")}},
	{name: "a WAF false positive", faults: faults.Set{faults.WAFFalsePositive}, fail: []string{id(evidence.RowWAF, "a benign request with ordinary words passes")}},
	// The reputation list and the per-IP limit each hold two checks: the
	// refusal itself, and that it comes before the WAF.
	{name: "no reputation list", faults: faults.Set{faults.EdgeNoReputation}, fail: []string{
		id(evidence.RowWAF, "a client on the reputation deny list is refused"),
		id(evidence.RowWAF, "a deny-listed client is refused by the reputation list before the WAF inspects it")}},
	{name: "no effective per-IP limit", options: func(o *Options) { o.PerIP = 1_000_000 }, fail: []string{
		id(evidence.RowWAF, "a client over its per-IP limit gets 429 with Retry-After and RateLimit headers; another client does not"),
		id(evidence.RowWAF, "the per-IP limit runs before the WAF and counts blocked requests: an attacking client reaches 429 first")}},
	// The limit before the WAF: one switch moves the reputation list and
	// the per-IP limit behind the WAF, which both checks of the order see.
	{name: "the limits run after the WAF", faults: faults.Set{faults.EdgeLimitAfterWAF}, fail: []string{
		id(evidence.RowWAF, "the per-IP limit runs before the WAF and counts blocked requests: an attacking client reaches 429 first"),
		id(evidence.RowWAF, "a deny-listed client is refused by the reputation list before the WAF inspects it")}},
	{name: "no request-shape limits", faults: faults.Set{faults.EdgeNoShapeLimits},
		fail: []string{id(evidence.RowWAF, "oversized request shapes (2000 cookies, 200 query arguments, a 3000-byte URL) are refused before inspection")}},
	{name: "no WAF concurrency cap", faults: faults.Set{faults.EdgeNoWAFCap},
		fail: []string{id(evidence.RowWAF, "inspection is capped: a burst of 24 concurrent 12 KiB posts from one address gets 503 + Retry-After for the excess, not a queue")}},
	// Idempotency.
	{name: "job outcomes are not reported", faults: faults.Set{faults.LedgerNoJobStatus},
		fail: []string{id(evidence.RowIdempotency, "async: the job's outcome is visible at its Location (succeeded with the transfer; failed with the problem), to its owner only")}},
	// faults.LedgerAppendOnRequestContext is not a proof here: whether a
	// client's timeout lands inside an append is timing, so on a quiet
	// machine the pass may see no drift at all. The ledger's
	// TestCancelledClientWhileAppendLands holds the append and cancels
	// the client deterministically; the timeouts check is proved below by
	// a store that forgets.
	{name: "the idempotency store forgets and the chain keeps no keys", faults: faults.Set{faults.IdempotencyForgets, faults.LedgerForgetKeys},
		// With neither memory of a key, every check that retries a key
		// sees a second effect.
		fail: []string{
			id(evidence.RowIdempotency, "a replayed transfer returns the original result and moves the money once"),
			id(evidence.RowIdempotency, "the same key with another payload is refused (422)"),
			id(evidence.RowIdempotency, "async: queue, worker and a later synchronous retry with the same key make one transfer"),
			id(evidence.RowIdempotency, "clients timing out mid-transfer leave the balances equal to the chain, and each learns its outcome by retrying with the same key"),
			id(evidence.RowIdempotency, "an idempotency key survives a restart: the retry replays the first result and moves no more money")}},
	// The embedded mode keeps idempotency records in memory; only the
	// chain carries a key across a restart.
	{name: "the chain keeps no keys", faults: faults.Set{faults.LedgerForgetKeys},
		fail: []string{id(evidence.RowIdempotency, "an idempotency key survives a restart: the retry replays the first result and moves no more money")}},
	{name: "writes without Idempotency-Key run", faults: faults.Set{faults.LedgerKeyOptional},
		fail: []string{id(evidence.RowIdempotency, "a write without Idempotency-Key is refused (400)")}},
	{name: "bodies decoded leniently", faults: faults.Set{faults.LedgerLaxBodies},
		fail: []string{id(evidence.RowIdempotency, "a body with duplicate or case-variant members is refused (400) before it is fingerprinted or run, sync and async")}},
	// Append-only audit: live state that leaves the chain (a fee taken
	// outside it). The restarts that follow rebuild the chain's balances,
	// so the checks that compare a balance across a restart see it too.
	{name: "the live balances leave the chain", faults: faults.Set{faults.LedgerLiveDrift}, fail: []string{
		id(evidence.RowAudit, "replaying the chain reproduces the live balances"),
		id(evidence.RowEncryption, "data-key rotation is transparent: older rows re-encrypted, hashes and replay unchanged, writes go on"),
		id(evidence.RowIdempotency, "clients timing out mid-transfer leave the balances equal to the chain, and each learns its outcome by retrying with the same key"),
		id(evidence.RowAuthentication, "after a restart a username cannot be registered again, and its owner's account stays theirs alone")}},
	// Append-only audit.
	{name: "the audit sample names who asked", faults: faults.Set{faults.LedgerUnredactedSample},
		fail: []string{id(evidence.RowAudit, "a sanitised audit sample with inclusion proofs verifies against the signed checkpoint")}},
	// The chain's own defences: the ledger refusing to start on a
	// damaged chain, and the witness that holds its checkpoints out of
	// the operator's reach.
	{name: "the ledger starts on a damaged chain", faults: faults.Set{faults.LedgerStartsOnDamagedChain},
		fail: []string{id(evidence.RowAudit, "a corrupted row in the middle of the chain is located, and the ledger refuses to start on it")}},
	{name: "the ledger publishes to no witness", faults: faults.Set{faults.LedgerNoWitness},
		fail: []string{id(evidence.RowAudit, "offline verification of the stopped system's whole chain against the witness's checkpoints, with replay")}},
	// Encryption at rest.
	{name: "a data-key rotation re-encrypts nothing", faults: faults.Set{faults.DataKeyNoReencrypt},
		fail: []string{id(evidence.RowEncryption, "data-key rotation is transparent: older rows re-encrypted, hashes and replay unchanged, writes go on")}},
	{name: "a plaintext copy of the logs on disk", options: func(o *Options) {
		f, err := os.Create(filepath.Join(o.DataDir, "plain.log"))
		if err != nil {
			panic(err)
		}
		o.LogMirror = f
	}, fail: []string{id(evidence.RowEncryption, "no user name, account id or idempotency key in plaintext anywhere under the data directory")}},
	// Encrypted, correlated, alarmed logging.
	{name: "a client-chosen request id is kept", faults: faults.Set{faults.CorrelationTrustsClient},
		fail: []string{id(evidence.RowLogging, "a client-chosen X-Request-ID is replaced; every response carries an id")}},
	{name: "the gateway propagates no correlation", faults: faults.Set{faults.NoPropagation}, fail: []string{
		id(evidence.RowLogging, "one correlation id and one trace across gateway → ledger"),
		id(evidence.RowLogging, "every log stream on disk decrypts and verifies; gateway and ledger lines carry one correlation id")}},
	{name: "no metrics", faults: faults.Set{faults.NoMetrics},
		fail: []string{id(evidence.RowLogging, "RED metrics exported in Prometheus form by the ledger")}},
	{name: "no encrypted log streams", faults: faults.Set{faults.NoEncryptedLogs},
		fail: []string{id(evidence.RowLogging, "every log stream on disk decrypts and verifies; gateway and ledger lines carry one correlation id")}},
	// An alarm whose floor of requests no window ever reaches: the
	// metric is still exported, the alarm never fires.
	{name: "the error-rate alarm is out of reach", options: func(o *Options) { o.Alarm.MinRequests = math.MaxInt },
		fail: []string{id(evidence.RowLogging, "the error-rate alarm fires when the 5xx ratio crosses its threshold (ledger stopped)")}},
	// Authorization.
	{name: "customers may deposit", options: grantPolicy("p, role:customer, /v1/deposits, POST"),
		fail: []string{id(evidence.RowAuthorization, "a customer cannot create money: a deposit is refused at the ledger (403) without the teller role")}},
	{name: "the ledger checks no owner", faults: faults.Set{faults.LedgerNoOwnerCheck}, fail: []string{
		id(evidence.RowAuthorization, "RBAC at the API: a user cannot read another user's account (404, as if it did not exist)"),
		id(evidence.RowAuthorization, "a user cannot move money out of another user's account")}},
	// Authentication: identity's store lost at a restart (users and
	// signing keys in memory, as before persistence) lets the name pass
	// to a newcomer, and leaves the fixture's users unable to sign in for
	// the other restart check.
	{name: "identity keeps nothing across a restart", beforeRestart: func(data string) error { return os.RemoveAll(filepath.Join(data, "identity")) },
		fail: []string{
			id(evidence.RowAuthentication, "after a restart a username cannot be registered again, and its owner's account stays theirs alone"),
			id(evidence.RowIdempotency, "an idempotency key survives a restart: the retry replays the first result and moves no more money")}},
	// Token shape: every verifier requires token_class
	// (RequireClassClaim), so a user token stating none is refused
	// everywhere and the pass cannot open its fixture's accounts.
	{name: "user tokens state no class", faults: faults.Set{faults.IdentityNoTokenClass},
		fixture: "HTTP 401"},
	// Sign-in hardening.
	{name: "MFA enrolment without re-authentication", faults: faults.Set{faults.IdentityNoReauth},
		fail: []string{id(evidence.RowSignIn, "MFA enrolment with an access token alone is refused; with the current password it proceeds")}},
	{name: "a lockout an attacker can aim", faults: faults.Set{faults.IdentityHardLockout},
		fail: []string{id(evidence.RowSignIn, "5 failures from each of 4 networks do not lock the owner out on a device that signed in before")}},
	{name: "no spraying detection", faults: faults.Set{faults.IdentityNoSprayDetection},
		fail: []string{id(evidence.RowSignIn, "password spraying (one password, 30 accounts, 30 networks) is detected and slowed; other users still sign in")}},
	{name: "passwords of 8 characters accepted", faults: faults.Set{faults.IdentityShortPasswords},
		fail: []string{id(evidence.RowSignIn, "a password shorter than 12 characters is refused at sign-up")}},
	{name: "passwords without a symbol accepted", faults: faults.Set{faults.IdentityNoSymbolRequired},
		fail: []string{id(evidence.RowSignIn, "a password without a symbol is refused at sign-up")}},
	{name: "no breached-password corpus", faults: faults.Set{faults.IdentityNoBreachCorpus},
		fail: []string{id(evidence.RowSignIn, "a breached password is refused at sign-up (offline corpus)")}},
	{name: "no account-under-attack risk signal", faults: faults.Set{faults.IdentityNoRiskEngine},
		fail: []string{id(evidence.RowSignIn, "adaptive risk: 12 wrong passwords from 12 networks put the account under attack; the right password from a new network is refused")}},
	// Inter-service authentication.
	{name: "internal listeners take clients without a certificate", faults: faults.Set{faults.InternalCertOptional},
		fail: []string{id(evidence.RowInterService, "internal listeners (identity, ledger) refuse the TLS handshake of a client without a certificate")}},
	{name: "a client assertion may be replayed", faults: faults.Set{faults.IdentityNoAssertionReplayCheck},
		fail: []string{id(evidence.RowInterService, "private_key_jwt only: a fresh client assertion gets a service token once; its replay, client_secret_basic and the public gateway's /oauth2/token get none")}},
	// Defence-in-depth token verification: identity's own layer off.
	{name: "identity verifies no bearer token", faults: faults.Set{faults.IdentityNoTokenCheck}, fail: []string{
		id(evidence.RowTokens, "identity directly, as the gateway (MFA enrolment): payload altered after signing (sub and sid of another user) → 401"),
		id(evidence.RowTokens, "identity directly, as the gateway (MFA enrolment): alg none → 401"),
		id(evidence.RowTokens, "identity directly, as the gateway (MFA enrolment): signed by an attacker's key under the real kid → 401"),
		id(evidence.RowTokens, "identity directly, as the gateway: tokens signed with the real key but with bad claims (lifetime, iat, exp type, issuer, audience, class, typ, crit, duplicates, jku) → 401 or 403; valid typ spellings → 200")}},
	// Defence-in-depth token verification: the gateway's own layer off.
	// The ledger still refuses every one of these tokens; the checks see
	// that the ledger, not the gateway, was the one that did.
	{name: "the gateway verifies no bearer token", faults: faults.Set{faults.EdgeNoTokenCheck}, fail: []string{
		id(evidence.RowTokens, "gateway: no token → 401"),
		id(evidence.RowTokens, "gateway: payload altered after signing (sub and sid of another user) → 401"),
		id(evidence.RowTokens, "gateway: alg none → 401"),
		id(evidence.RowTokens, "gateway: signed by an attacker's key under the real kid → 401"),
		id(evidence.RowTokens, "gateway: tokens signed with the real key but with bad claims (lifetime, iat, exp type, issuer, audience, class, typ, crit, duplicates, jku) → 401 or 403; valid typ spellings → 200"),
		// The 401 whose headers it checks now comes from the ledger.
		id(evidence.RowHeaders, "mandatory headers on 401 from JWT check #1")}},
	// The ledger's own layer off: it believes any well-formed token.
	{name: "the ledger verifies no bearer token", faults: faults.Set{faults.LedgerNoTokenCheck}, fail: []string{
		id(evidence.RowTokens, "ledger directly, as the gateway (gateway bypassed): payload altered after signing (sub and sid of another user) → 401"),
		id(evidence.RowTokens, "ledger directly, as the gateway (gateway bypassed): alg none → 401"),
		id(evidence.RowTokens, "ledger directly, as the gateway (gateway bypassed): signed by an attacker's key under the real kid → 401"),
		id(evidence.RowTokens, "ledger directly, as the gateway: tokens signed with the real key but with bad claims (lifetime, iat, exp type, issuer, audience, class, typ, crit, duplicates, jku) → 401 or 403; valid typ spellings → 200"),
		// With no token layer the class per route goes too: only the
		// policy refuses a token of the wrong class, which both class
		// checks see.
		id(evidence.RowInterService, "a service token cannot act as a user (user route at the gateway and at the ledger)"),
		id(evidence.RowInterService, "a user token cannot reach an internal route (ledger directly; the gateway routes no /internal path)")}},
	// Token class per route.
	{name: "a service token's subject is not its client", faults: faults.Set{faults.IdentityServiceSubjectNotClient},
		fail: []string{id(evidence.RowInterService, "client credentials issue a service token (sub == client_id, token_class service)")}},
	{name: "the ledger's user routes take either class", faults: faults.Set{faults.LedgerAnyClassOnUserRoutes},
		fail: []string{id(evidence.RowInterService, "a service token cannot act as a user (user route at the gateway and at the ledger)")}},
	{name: "the ledger's internal routes take either class", faults: faults.Set{faults.LedgerAnyClassOnInternalRoutes},
		fail: []string{id(evidence.RowInterService, "a user token cannot reach an internal route (ledger directly; the gateway routes no /internal path)")}},
	// Database role separation (the roles weakened on purpose after the
	// migration; each statement runs in a transaction the check rolls
	// back). UPDATE on any column also permits SELECT … FOR UPDATE, so
	// granting UPDATE fails both.
	{name: "the app role may UPDATE", pg: grant("GRANT UPDATE ON $T TO $APP"),
		fail: []string{id(evidence.RowRoles, "the server refuses the application role's UPDATE"), id(evidence.RowRoles, "the server refuses the application role's SELECT … FOR UPDATE")}},
	{name: "the app role may lock rows", pg: grant("GRANT UPDATE (payload) ON $T TO $APP"),
		fail: []string{id(evidence.RowRoles, "the server refuses the application role's SELECT … FOR UPDATE")}},
	{name: "the app role may DELETE", pg: grant("GRANT DELETE ON $T TO $APP"),
		fail: []string{id(evidence.RowRoles, "the server refuses the application role's DELETE")}},
	{name: "the app role may TRUNCATE (and the trigger is off)", pg: grant("GRANT TRUNCATE ON $T TO $APP", "ALTER TABLE $T DISABLE TRIGGER USER"),
		fail: []string{id(evidence.RowRoles, "the server refuses the application role's TRUNCATE")}},
	{name: "the app role may create tables", pg: grant("GRANT CREATE ON SCHEMA $S TO $APP"),
		fail: []string{id(evidence.RowRoles, "the server refuses the application role's DDL (CREATE TABLE)")}},
	{name: "the app role may create TEMP tables", pg: grant("DO $$BEGIN EXECUTE format('GRANT TEMP ON DATABASE %I TO $APP', current_database()); END$$"),
		fail: []string{id(evidence.RowRoles, "the server refuses the application role's TEMP table")}},
	{name: "checkpoint rows are not checked", pg: grant("ALTER TABLE $S.audit_log_checkpoint DROP CONSTRAINT audit_log_cp_shape"),
		fail: []string{id(evidence.RowRoles, "the server refuses the application role's malformed checkpoint row")}},
	{name: "the app role may set session_replication_role", pg: grant("GRANT SET ON PARAMETER session_replication_role TO $APP"),
		fail: []string{id(evidence.RowRoles, "the server refuses the application role's session_replication_role = replica")}},
}

// grantPolicy writes the ledger's policy file before the start: the
// default policy plus lines.
func grantPolicy(lines ...string) func(*Options) {
	return func(o *Options) {
		def, err := os.ReadFile(filepath.Join("ledger", "policy.csv"))
		if err != nil {
			panic(err)
		}
		b := append(def, []byte("\n"+strings.Join(lines, "\n")+"\n")...)
		if err := os.WriteFile(filepath.Join(o.DataDir, "ledger-policy.csv"), b, 0o600); err != nil {
			panic(err)
		}
	}
}

// unproven are the checks without a can-fail proof yet, each with the
// reason: every one waits for a switch in the component that holds the
// feature.
var unproven = func() map[string]string {
	m := map[string]string{}
	set := func(why string, ids ...string) {
		for _, id := range ids {
			m[id] = why
		}
	}
	set("every verifier refuses a token whose typ, lifetime or class is wrong (the class claim is required), so no fault breaks "+
		"the token's shape without breaking the pass's sign-in first; the class is proved by the \"user tokens state no class\" proof",
		id(evidence.RowAuthentication, "sign-in issues a short-lived at+jwt user token"))
	set("a request without a token names no subject, so even with its own layer off (faults.LedgerNoTokenCheck) the ledger "+
		"refuses it; its layer is proved through the forged and bad-claim checks",
		id(evidence.RowTokens, "ledger directly, as the gateway (gateway bypassed): no token → 401"))
	set("cannot fail alone: a ledger that refuses valid user tokens fails every check that reaches it through the gateway",
		id(evidence.RowTokens, "ledger directly with a valid user token → 200 (the service verifies on its own)"))
	set("identity's sign-in admits only the gateway and the web backend, both forwarders of the client's address: no caller whose X-Forwarded-For "+
		"is untrusted reaches it (the check sees the refusal), so faults.IdentityTrustsAnyForwardedFor has nothing left to open",
		id(evidence.RowSignIn, "a caller that bypasses the gateway cannot choose its client address for risk scoring"))
	set("no tokens without a real key and ring: proved through the forged and bad-claim checks, whose proofs switch one layer off",
		id(evidence.RowTokens, "identity directly, as the gateway (MFA enrolment): no token → 401"))
	set("cannot fail alone: without SELECT the ledger cannot replay, and only the owner may DROP (which brings every other privilege)",
		id(evidence.RowRoles, "the application role may SELECT the audit log"),
		id(evidence.RowRoles, "the server refuses the application role's DDL (DROP TABLE)"))
	return m
}()

// TestEveryCheckHasAProof keeps the list honest: each proof names checks
// that exist, and each registered check has a proof or a reason it has
// none.
func TestEveryCheckHasAProof(t *testing.T) {
	known := map[string]bool{}
	for _, c := range evidence.Registry() {
		known[c.ID()] = true
	}
	proven := map[string]bool{}
	for _, p := range proofs {
		if len(p.fail) == 0 && p.fixture == "" {
			t.Errorf("proof %q expects no failure", p.name)
		}
		for _, id := range p.fail {
			if !known[id] {
				t.Errorf("proof %q names %q, which is not a registered check", p.name, id)
			}
			proven[id] = true
		}
	}
	var missing []string
	for id := range known {
		if !proven[id] && unproven[id] == "" {
			missing = append(missing, id)
		}
	}
	sort.Strings(missing)
	for _, id := range missing {
		t.Errorf("no can-fail proof, and no reason why not: %s", id)
	}
	for id := range unproven {
		if !known[id] {
			t.Errorf("unproven lists %q, which is not a registered check", id)
		} else if proven[id] {
			t.Errorf("%q has a proof and is still listed as unproven", id)
		}
	}
}

// TestEvidenceChecksCanFail runs the whole pass against each broken
// system and expects exactly the proof's checks to fail.
func TestEvidenceChecksCanFail(t *testing.T) {
	if testing.Short() {
		t.Skip("starts one whole system per proof")
	}
	if raceEnabled {
		t.Skip("one whole system per proof is too slow under -race; .ci/run runs the proofs without it")
	}
	pgURL := os.Getenv("MALAI_TEST_POSTGRES_URL")
	for _, p := range proofs {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg := localEvidenceConfig{OutDir: t.TempDir(), BeforeRestart: p.beforeRestart, Break: func(o *Options) {
				o.Faults = p.faults
				if p.options != nil {
					p.options(o)
				}
			}}
			if p.pg != nil {
				if pgURL == "" {
					if os.Getenv("MALAI_REQUIRE_SERVICES") == "1" {
						t.Fatal("MALAI_TEST_POSTGRES_URL is required")
					}
					t.Skip("MALAI_TEST_POSTGRES_URL not set")
				}
				cfg.PostgresAdmin = pgURL
				cfg.AfterMigrate = func(ctx context.Context, admin string, pg PGAudit) error {
					conn, err := pgx.Connect(ctx, admin)
					if err != nil {
						return err
					}
					defer conn.Close(context.Background())
					return p.pg(ctx, conn, pg)
				}
			}
			rep, err := runLocalEvidence(ctx, cfg, nil)
			if p.fixture != "" {
				if err == nil || !strings.Contains(err.Error(), p.fixture) {
					t.Fatalf("evidence pass: %v, want its fixture to fail with %q", err, p.fixture)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var failed []string
			for _, r := range rep.Results {
				if r.Status == evidence.Fail {
					failed = append(failed, r.ID())
				}
			}
			want := slices.Clone(p.fail)
			sort.Strings(want)
			sort.Strings(failed)
			if !slices.Equal(failed, want) {
				for _, r := range rep.Results {
					if r.Status == evidence.Fail || slices.Contains(want, r.ID()) {
						t.Logf("%s: %s: %s", r.Status, r.ID(), r.Observed)
					}
				}
				t.Fatalf("failed checks %q, want exactly %q", failed, want)
			}
		})
	}
}

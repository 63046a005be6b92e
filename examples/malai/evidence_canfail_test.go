package main

import (
	"context"
	"fmt"
	"os"
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
	// fail are the ids of the checks that must fail (usually one).
	fail []string
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
	{name: "no SQL injection rules", faults: faults.Set{faults.WAFNoSQLi}, fail: []string{id(evidence.RowWAF, "SQL injection refused (OWASP CRS)")}},
	{name: "no XSS rules", faults: faults.Set{faults.WAFNoXSS}, fail: []string{id(evidence.RowWAF, "XSS refused (OWASP CRS)")}},
	{name: "no Java / RCE rules", faults: faults.Set{faults.WAFNoJava}, fail: []string{id(evidence.RowWAF, "Log4Shell refused (known bad inputs)")}},
	{name: "a WAF false positive", faults: faults.Set{faults.WAFFalsePositive}, fail: []string{id(evidence.RowWAF, "a benign request with ordinary words passes")}},
	{name: "no reputation list", faults: faults.Set{faults.EdgeNoReputation}, fail: []string{id(evidence.RowWAF, "a client on the reputation deny list is refused")}},
	{name: "no effective per-IP limit", options: func(o *Options) { o.PerIP = 1_000_000 },
		fail: []string{id(evidence.RowWAF, "a client over its per-IP limit gets 429 with Retry-After and RateLimit headers; another client does not")}},
	// Sign-in hardening.
	{name: "identity believes any caller's X-Forwarded-For", faults: faults.Set{faults.IdentityTrustsAnyForwardedFor},
		fail: []string{id(evidence.RowSignIn, "a caller that bypasses the gateway cannot choose its client address for risk scoring")}},
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
	{name: "the app role may set session_replication_role", pg: grant("GRANT SET ON PARAMETER session_replication_role TO $APP"),
		fail: []string{id(evidence.RowRoles, "the server refuses the application role's session_replication_role = replica")}},
}

// unproven are the checks without a can-fail proof yet, each with the
// reason.
var unproven = map[string]string{}

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
		if len(p.fail) == 0 {
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
		t.Logf("no can-fail proof: %s", id)
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
			cfg := localEvidenceConfig{OutDir: t.TempDir(), Break: func(o *Options) {
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

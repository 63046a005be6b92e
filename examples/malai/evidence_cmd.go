package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/examples/malai/evidence"
	"github.com/malai-sec/malai/examples/malai/identity/clientauth"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
)

func evidenceCmd(args []string) error {
	fs := flag.NewFlagSet("evidence", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: malai evidence [flags]

Without -target: start a fresh system on free loopback ports, check every
claim of the security page against it, attacking and faulting it, and write
the report. With -target: check a running deployment through its gateway,
touching nothing but the test accounts given and the accounts the pass
creates; checks that need the system's internals are listed as not run.

`)
		fs.PrintDefaults()
	}
	out := fs.String("out", "evidence", "directory for REPORT.md, report.json, report.schema.json and the audit sample")
	redisURL := fs.String("redis-url", os.Getenv("MALAI_TEST_REDIS_URL"), "Redis URL: when set, limits, idempotency records and the queue live in Redis under a key prefix made for this pass (its keys are deleted afterwards)")
	pgAdmin := fs.String("postgres-admin-url", os.Getenv("MALAI_TEST_POSTGRES_URL"), "privileged PostgreSQL URL: when set, the audit chain runs in PostgreSQL under a least-privilege role made for this pass, and the role separation is checked (roles and schema are dropped afterwards)")
	target := fs.String("target", "", "gateway URL of a running deployment to check instead of starting one")
	endpoints := fs.String("endpoints", "", "the deployment's endpoints.json (with -target; default <dir of -credentials>/endpoints.json when it exists)")
	creds := fs.String("credentials", "", "test credentials of the deployment (demo-credentials.json form; with -target)")
	caFile := fs.String("ca", "", "CA certificate that signs the deployment's gateway certificate (with -target)")
	scans := fs.Bool("scans", false, "also run the external scanners (minutes): testssl.sh when on PATH, and MDN HTTP Observatory from -observatory")
	obs := fs.String("observatory", "node_modules/@mdn/mdn-http-observatory", "directory of an installed @mdn/mdn-http-observatory package (npm install --ignore-scripts; with -scans)")
	fs.Parse(args)
	var sc evidence.Scans
	if *scans {
		for _, name := range []string{"testssl", "testssl.sh"} {
			if p, err := exec.LookPath(name); err == nil {
				sc.TestSSL = p
				break
			}
		}
		if fileExists(filepath.Join(*obs, "package.json")) {
			sc.Observatory = *obs
		}
		if sc.TestSSL == "" && sc.Observatory == "" {
			return errors.New("-scans: neither testssl.sh on PATH nor the Observatory package at -observatory")
		}
	}
	ctx := context.Background()
	var rep *evidence.Report
	var err error
	if *target != "" || *endpoints != "" {
		ep := *endpoints
		if ep == "" && *creds != "" {
			if p := filepath.Join(filepath.Dir(*creds), "endpoints.json"); fileExists(p) {
				ep = p
			}
		}
		rep, err = runTargetEvidence(ctx, *out, ep, *creds, *target, *caFile, sc, os.Stdout)
	} else {
		rep, err = runLocalEvidence(ctx, localEvidenceConfig{OutDir: *out, PostgresAdmin: *pgAdmin, RedisURL: *redisURL, Scans: sc}, os.Stdout)
	}
	if err != nil {
		return err
	}
	fmt.Printf("\n%d checks: %d passed, %d failed, %d not run; report in %s\n", len(rep.Results), rep.Summary.Pass, rep.Summary.Fail, rep.Summary.NotRun, filepath.Join(*out, "REPORT.md"))
	if rep.Summary.Fail > 0 {
		return fmt.Errorf("%d evidence checks failed", rep.Summary.Fail)
	}
	return nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// runTargetEvidence checks a running deployment from outside.
func runTargetEvidence(ctx context.Context, outDir, endpoints, creds, gateway, caFile string, scans evidence.Scans, progress io.Writer) (*evidence.Report, error) {
	t, err := evidence.LoadTarget(endpoints, creds, gateway, caFile)
	if err != nil {
		return nil, err
	}
	f, err := evidence.NewFixture(ctx, t, nil)
	if err != nil {
		return nil, err
	}
	f.OutDir = outDir
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	results := evidence.RunAll(ctx, f, append(evidence.Registry(), scans.Checks()...), progress)
	rep := evidence.NewReport("target", "A running deployment, checked through its public gateway only.", t.Gateway, results, scans.Attachments(outDir))
	return rep, rep.Write(outDir)
}

// localEvidenceConfig configures a pass over a system it starts itself.
type localEvidenceConfig struct {
	OutDir string
	// PostgresAdmin, when set, puts the audit chain in PostgreSQL under
	// roles made for this pass.
	PostgresAdmin string
	// RedisURL, when set, puts limits, idempotency records and the queue
	// in Redis under a prefix made for this pass.
	RedisURL string
	// Checks to run; nil means every registered check.
	Checks []evidence.Check
	// Scans are external scanners run after the checks.
	Scans evidence.Scans
	// Break, in tests only, modifies the options of the system under test
	// to switch a feature off.
	Break func(*Options)
	// AfterMigrate, in tests only, runs as the privileged role after the
	// audit schema is migrated (to weaken the roles on purpose).
	AfterMigrate func(ctx context.Context, adminURL string, pg PGAudit) error
	// BeforeRestart, in tests only, runs on the data directory while the
	// system is stopped for a restart (to lose what must persist).
	BeforeRestart func(dataDir string) error
}

// runLocalEvidence starts a fresh system on free loopback ports, checks
// every claim against it, and writes the report into cfg.OutDir.
func runLocalEvidence(ctx context.Context, cfg localEvidenceConfig, progress io.Writer) (*evidence.Report, error) {
	l, err := startLocal(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer l.cleanup()
	f, err := evidence.NewFixture(ctx, l.Target(), l)
	if err != nil {
		return nil, err
	}
	f.OutDir = cfg.OutDir
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return nil, err
	}
	checks := cfg.Checks
	if checks == nil {
		checks = evidence.Registry()
	}
	results := evidence.RunAll(ctx, f, append(checks, cfg.Scans.Checks()...), progress)
	att := cfg.Scans.Attachments(cfg.OutDir)
	if fileExists(filepath.Join(cfg.OutDir, evidence.SampleFile)) {
		att = append(att, evidence.Attachment{Name: "Sanitised audit sample with inclusion proofs and the signed checkpoint", File: evidence.SampleFile,
			Summary: "Rows of the audit chain, owner fields redacted, each with its Merkle inclusion proof against the signed checkpoint it carries."},
			evidence.Attachment{Name: "Public keys of the checkpoint signers", File: evidence.VerifierFile,
				Summary: "Note verifier keys (golang.org/x/mod/sumdb/note), one a line: they verify the sample's checkpoint signature; evidence.VerifySampleFile checks signature and proofs together."})
	}
	rep := evidence.NewReport("local", l.describe(), l.Target().Gateway, results, att)
	return rep, rep.Write(cfg.OutDir)
}

// pgMigrateMu serialises the passes' PostgreSQL migrations in one process.
var pgMigrateMu sync.Mutex

// localSystem is the evidence pass's privileged access to a system it
// started: it implements evidence.Local.
type localSystem struct {
	opts Options
	sys  *System
	data string
	// pg and pgIdentity are the ledger's and identity's schemas and
	// roles when the pass runs on PostgreSQL.
	pg, pgIdentity PGAudit
	pgAdmin        string
	redisURL       string
	// beforeRestart: see localEvidenceConfig.BeforeRestart.
	beforeRestart func(dataDir string) error

	shutdownOnce sync.Once
	shutdownErr  error
}

var _ evidence.Local = (*localSystem)(nil)

func startLocal(ctx context.Context, cfg localEvidenceConfig) (_ *localSystem, err error) {
	data, err := os.MkdirTemp("", "malai-evidence-")
	if err != nil {
		return nil, err
	}
	l := &localSystem{data: data, pgAdmin: cfg.PostgresAdmin, redisURL: cfg.RedisURL, beforeRestart: cfg.BeforeRestart}
	defer func() {
		if err != nil {
			l.cleanup()
		}
	}()
	deny := filepath.Join(data, "deny.txt")
	if err := os.WriteFile(deny, []byte("# reputation list for the evidence pass\n203.0.113.0/24\n"), 0o600); err != nil {
		return nil, err
	}
	// The pass plays many clients from this machine: it trusts loopback as
	// a proxy, so X-Forwarded-For names the client. "malai run" trusts no
	// proxy unless told (-trusted-proxies).
	l.opts = Options{Addr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: data, PerIP: 300, DenyList: deny, TrustedProxies: Loopback(), Auditor: true,
		// A key-file rotation reaches the components within a fifth of a
		// second (and seals three intervals later).
		KeyReload: 200 * time.Millisecond}
	if cfg.PostgresAdmin != "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		sfx := hex.EncodeToString(b[:])
		// The ledger's audit chain and identity's data, each in its own
		// schema under its own least-privilege role, as "malai migrate"
		// makes them.
		n := pgNamesFor("malai_ev_" + sfx)
		l.pg, l.pgIdentity = n.Audit, n.Identity
		// Concurrent migrations (parallel proofs) collide on the shared
		// catalogue ("tuple concurrently updated"): one at a time.
		pgMigrateMu.Lock()
		err := n.migrate(ctx, cfg.PostgresAdmin)
		pgMigrateMu.Unlock()
		if err != nil {
			return nil, err
		}
		if cfg.AfterMigrate != nil {
			if err := cfg.AfterMigrate(ctx, cfg.PostgresAdmin, l.pg); err != nil {
				return nil, err
			}
		}
		if l.opts.Postgres.URL, err = appDSN(cfg.PostgresAdmin, l.pg.AppRole); err != nil {
			return nil, err
		}
		l.opts.Postgres.Schema = l.pg.Schema
		if l.opts.IdentityPostgres.URL, err = appDSN(cfg.PostgresAdmin, l.pgIdentity.AppRole); err != nil {
			return nil, err
		}
		l.opts.IdentityPostgres.Schema = l.pgIdentity.Schema
	}
	if cfg.RedisURL != "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		l.opts.RedisURL, l.opts.RedisPrefix = cfg.RedisURL, "malai-ev-"+hex.EncodeToString(b[:])+":"
	}
	if cfg.Break != nil {
		cfg.Break(&l.opts)
	}
	if l.sys, err = Start(ctx, l.opts); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *localSystem) describe() string {
	where := "a file store under the data directory, identity's accounts in its embedded store"
	if l.opts.Postgres.URL != "" {
		where = "PostgreSQL, connected as a least-privilege application role, and identity's accounts in PostgreSQL under a role of its own"
	}
	stores := "in memory"
	if l.opts.RedisURL != "" {
		stores = "in Redis"
	}
	return fmt.Sprintf("Gateway (with the web app), identity, ledger and worker ran in one process, each on its own loopback listener; limits, idempotency records and the queue %s; the audit chain in %s.", stores, where)
}

// cleanup stops the system and removes what the pass created.
func (l *localSystem) cleanup() {
	_ = l.Shutdown()
	for _, p := range []PGAudit{l.pg, l.pgIdentity} {
		if l.pgAdmin != "" && p.Schema != "" {
			_ = p.drop(context.Background(), l.pgAdmin)
		}
	}
	if l.opts.RedisPrefix != "" {
		_ = deleteRedisPrefix(context.Background(), l.opts.RedisURL, l.opts.RedisPrefix)
	}
	_ = os.RemoveAll(l.data)
}

// deleteRedisPrefix deletes every key under prefix (the pass's own).
func deleteRedisPrefix(ctx context.Context, url, prefix string) error {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return err
	}
	c := redis.NewClient(opt)
	defer c.Close()
	it := c.Scan(ctx, 0, prefix+"*", 500).Iterator()
	var keys []string
	for it.Next(ctx) {
		keys = append(keys, it.Val())
	}
	if err := it.Err(); err != nil {
		return err
	}
	if len(keys) > 0 {
		return c.Del(ctx, keys...).Err()
	}
	return nil
}

func (l *localSystem) Target() evidence.Target {
	return evidence.Target{Gateway: l.sys.GatewayURL, Redirect: l.sys.RedirectURL, CA: l.sys.CA.Pool(), CAFile: l.sys.CAFile, ForwardedFor: true}
}

func (l *localSystem) IdentityURL() string { return l.sys.IdentityURL }
func (l *localSystem) LedgerURL() string   { return l.sys.LedgerURL }
func (l *localSystem) DataDir() string     { return l.data }

func (l *localSystem) ClientTLS(component string) (*tls.Config, error) {
	cfg := &tls.Config{RootCAs: l.sys.CA.Pool(), MinVersion: tls.VersionTLS12}
	if component != "" {
		cert, err := l.sys.CA.Issue(component)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func (l *localSystem) AuditorToken(ctx context.Context) (string, error) {
	cfg, err := l.ClientTLS(evidence.AuditorComponent)
	if err != nil {
		return "", err
	}
	// private_key_jwt: a key pair of this pass, registered over the
	// auditor's certificate.
	src, err := clientauth.New(ctx, clientauth.Config{IdentityURL: l.sys.IdentityURL,
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}, Scopes: []string{"ledger:audit"}})
	if err != nil {
		return "", err
	}
	tok, err := src.Token()
	if err != nil {
		return "", err
	}
	return tok.AccessToken, nil
}

// SignToken signs with identity's current signing key, read from its
// store and opened with the system's key ring: what an insider holding
// both could forge. Only the evidence pass does this, to show that a
// token with a valid signature but bad claims is refused everywhere.
func (l *localSystem) SignToken(header, claims []byte) (string, error) {
	ctx := context.Background()
	ks, err := l.sys.IdentityStore.SigningKeys(ctx)
	if err != nil {
		return "", err
	}
	var priv *ecdsa.PrivateKey
	var kid string
	for _, k := range ks.Keys {
		if k.Activated.IsZero() || !k.Retired.IsZero() {
			continue
		}
		der, _, err := l.sys.Ring.Open(nil, k.Private, []byte("malai.identity.signing-key:"+k.ID))
		if err != nil {
			return "", err
		}
		pk, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			return "", err
		}
		if ec, ok := pk.(*ecdsa.PrivateKey); ok {
			priv, kid = ec, k.ID
		}
	}
	if priv == nil {
		return "", errors.New("no current signing key in identity's store")
	}
	return evidence.SignES256(priv, bytes.ReplaceAll(header, []byte("$KID"), []byte(kid)), claims)
}

func (l *localSystem) Deposit(ctx context.Context, account string, amount int64, key string) error {
	_, err := l.sys.Ledger.Deposit(ctx, "user:evidence-teller", account, amount, key)
	return err
}

func (l *localSystem) Checkpoint(ctx context.Context) error {
	_, err := l.sys.Audit.Checkpoint(ctx)
	return err
}

func (l *localSystem) AuditVerifier() (string, note.Verifier) { return l.sys.Origin, l.sys.AuditKey }

// AuditVerifierKeys reads the public verifier keys from the key file on
// disk (the running system may re-read it at any time).
func (l *localSystem) AuditVerifierKeys() ([]string, error) {
	b, err := os.ReadFile(filepath.Join(l.data, "keys.json"))
	if err != nil {
		return nil, err
	}
	var kf struct {
		SigningKeys []struct {
			Verifier string `json:"verifier"`
		} `json:"signing_keys"`
	}
	if err := json.Unmarshal(b, &kf); err != nil {
		return nil, fmt.Errorf("keys.json: %w", err)
	}
	var out []string
	for _, k := range kf.SigningKeys {
		if k.Verifier != "" {
			out = append(out, k.Verifier)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("keys.json holds no checkpoint verifier")
	}
	return out, nil
}

// RotateDataKey rotates the key file as "malai rotate-keys" does (a new
// data key sealing three key-file reload intervals later, a new checkpoint
// signing key, a token-key rotation request): the running components
// learn it through their key-file watch, and the ledger re-encrypts the
// older audit rows in the background. The PostgreSQL application role may
// not rewrite rows, so there, once the key seals, the re-encryption runs
// as the migrator, as "malai audit-rekey" does.
func (l *localSystem) RotateDataKey(ctx context.Context) (string, error) {
	w, err := platform.OpenLocalKEK(l.data)
	if err != nil {
		return "", err
	}
	reload := l.opts.KeyReload
	if reload <= 0 {
		reload = platform.DefaultKeyReload
	}
	if _, err := platform.RotateKeyFile(ctx, l.data, w, time.Now(), 3*reload, 0); err != nil {
		return "", err
	}
	keys, err := platform.LoadKeys(l.data)
	if err != nil {
		return "", err
	}
	ids := keys.DataKeyIDs()
	kid := ids[len(ids)-1]
	if l.opts.Postgres.URL == "" {
		return kid, nil
	}
	if _, err := evidence.Eventually(ctx, 30*time.Second, func() (bool, string, error) {
		return l.sys.Ring.Current() == kid, "", nil
	}); err != nil {
		return "", fmt.Errorf("the new data key does not seal: %w", err)
	}
	if _, err := l.pg.rekeyWithKeyFile(ctx, l.pgAdmin, l.data); err != nil {
		return "", err
	}
	return kid, nil
}

func (l *localSystem) TraceID(component, id string) (string, bool) {
	t, ok := l.sys.Telemetry[component]
	if !ok {
		return "", false
	}
	for _, sp := range t.Spans.GetSpans() {
		for _, a := range sp.Attributes {
			if string(a.Key) == "correlation.id" && a.Value.AsString() == id {
				return sp.SpanContext.TraceID().String(), true
			}
		}
	}
	return "", false
}

func (l *localSystem) AlarmFiring(component string) bool {
	t, ok := l.sys.Telemetry[component]
	return ok && t.Alarm.Firing()
}

func (l *localSystem) StopComponent(name string) error { return l.sys.Stop(name) }

// Restart stops the system (unless it is already stopped) and starts it
// again on the same data directory and stores. When the start fails, the
// system stays stopped.
func (l *localSystem) Restart(ctx context.Context) error {
	if err := l.Shutdown(); err != nil {
		return fmt.Errorf("restart: close: %w", err)
	}
	if l.beforeRestart != nil {
		if err := l.beforeRestart(l.data); err != nil {
			return fmt.Errorf("restart: %w", err)
		}
	}
	sys, err := Start(ctx, l.opts)
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	l.sys, l.shutdownOnce, l.shutdownErr = sys, sync.Once{}, nil
	return nil
}

func (l *localSystem) Shutdown() error {
	l.shutdownOnce.Do(func() {
		if l.sys != nil {
			l.shutdownErr = l.sys.Close()
		}
	})
	return l.shutdownErr
}

// CorruptAuditRow flips one byte in the middle of the audit chain: of the
// file store's log, or of a row's sealed payload in PostgreSQL (written as
// the privileged role with the append-only triggers off, as an intruder
// holding it could).
func (l *localSystem) CorruptAuditRow(ctx context.Context) (string, error) {
	if l.opts.Postgres.URL != "" {
		conn, err := pgx.Connect(ctx, l.pgAdmin)
		if err != nil {
			return "", err
		}
		defer conn.Close(context.Background())
		t := l.pg.Schema + ".audit_log"
		var seq int64
		if err := conn.QueryRow(ctx, "SELECT max(seq)/2 FROM "+t).Scan(&seq); err != nil {
			return "", err
		}
		for _, q := range []string{
			"ALTER TABLE " + t + " DISABLE TRIGGER USER",
			fmt.Sprintf("UPDATE %s SET payload = set_byte(payload, 0, (get_byte(payload, 0) # 1)) WHERE seq = %d", t, seq),
			"ALTER TABLE " + t + " ENABLE TRIGGER USER",
		} {
			if _, err := conn.Exec(ctx, q); err != nil {
				return "", fmt.Errorf("corrupt: %w", err)
			}
		}
		return fmt.Sprintf("one byte of row %d's payload in PostgreSQL", seq), nil
	}
	files, err := filepath.Glob(filepath.Join(l.data, "audit", "*"))
	if err != nil || len(files) == 0 {
		return "", fmt.Errorf("no audit file under %s", l.data)
	}
	var name string
	var size int64
	for _, f := range files {
		if st, err := os.Stat(f); err == nil && st.Mode().IsRegular() && st.Size() > size {
			name, size = f, st.Size()
		}
	}
	if size < 64 {
		return "", fmt.Errorf("no audit file worth corrupting under %s", l.data)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return "", err
	}
	off := len(b) / 2
	b[off] ^= 0x01
	if err := os.WriteFile(name, b, 0o600); err != nil {
		return "", err
	}
	return fmt.Sprintf("byte %d of %s (%d bytes)", off, filepath.Base(name), len(b)), nil
}

func (l *localSystem) LogStreams(fn func(name string, plaintext []byte) error) error {
	files, err := filepath.Glob(filepath.Join(l.data, "logs", "*.log.enc"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return errors.New("no log streams")
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		err = decryptLog(f, l.sys.Ring, &buf)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", filepath.Base(name), err)
		}
		if err := fn(filepath.Base(name), buf.Bytes()); err != nil {
			return err
		}
	}
	return nil
}

func (l *localSystem) VerifyOffline(ctx context.Context) (evidence.OfflineReport, error) {
	st, err := openAuditStoreReadOnly(ctx, l.data, l.opts.Postgres)
	if err != nil {
		return evidence.OfflineReport{}, err
	}
	defer st.Close()
	rep, err := verifyWith(ctx, l.data, "", st)
	if err != nil {
		return evidence.OfflineReport{}, err
	}
	out := evidence.OfflineReport{Rows: uint64(rep.Rows), Anchored: rep.Anchored, Witnessed: rep.Witnessed, Balances: rep.Balances}
	for _, f := range rep.Findings {
		out.Findings = append(out.Findings, fmt.Sprint(f))
	}
	return out, nil
}

func (l *localSystem) Postgres() (string, string, bool) {
	if l.opts.Postgres.URL == "" {
		return "", "", false
	}
	return l.opts.Postgres.URL, l.pg.Schema, true
}

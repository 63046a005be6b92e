package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/pgstore"
	"github.com/malai-sec/malai/auditlog/pgstore/internal/pgtest"
	"github.com/malai-sec/malai/auditlog/storetest"
	"github.com/malai-sec/malai/internal/servicetest"
	"github.com/malai-sec/malai/keyring"
)

type env struct {
	pg     *pgtest.Postgres
	owner  string
	app    string
	appDSN string
	table  string
}

// setup creates a schema, a migrator role and an app role (unique names,
// dropped at cleanup) and runs Migrate as the privileged test role.
func setup(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	pg := pgtest.NewPostgres(t)
	u := servicetest.Unique()
	e := &env{pg: pg, owner: "malai_audit_mig_" + u, app: "malai_audit_app_" + u, table: "audit_log"}
	for _, q := range []string{
		"CREATE ROLE " + e.owner + " NOLOGIN",
		"CREATE ROLE " + e.app + " LOGIN",
	} {
		if _, err := pg.Pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx := context.Background()
		for _, q := range []string{
			"DROP OWNED BY " + e.app + ", " + e.owner + " CASCADE",
			"DROP ROLE IF EXISTS " + e.app,
			"DROP ROLE IF EXISTS " + e.owner,
		} {
			if _, err := pg.Pool.Exec(ctx, q); err != nil {
				t.Errorf("cleanup %q: %v", q, err)
			}
		}
	})
	conn, err := pg.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if err := pgstore.Migrate(ctx, conn.Conn(), pgstore.MigrateConfig{Schema: pg.Schema, Owner: e.owner, AppRole: e.app}); err != nil {
		t.Fatal(err)
	}
	pu, err := url.Parse(pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	pu.User = url.User(e.app)
	e.appDSN = pu.String()
	return e
}

func (e *env) store(t *testing.T) *pgstore.Store {
	t.Helper()
	s, err := pgstore.New(context.Background(), pgstore.Config{DSN: e.appDSN, Schema: e.pg.Schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// ownerStore connects as the migrator role, the only one that may re-key.
func (e *env) ownerStore(t *testing.T) *pgstore.Store {
	t.Helper()
	s, err := pgstore.New(context.Background(), pgstore.Config{DSN: e.pg.URL, Schema: e.pg.Schema, Role: e.owner})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// rekeyAsOwner is the application role's store with re-keying done as
// the migrator, the way the reference system runs it (its own command).
type rekeyAsOwner struct {
	*pgstore.Store
	owner *pgstore.Store
}

func (r rekeyAsOwner) Rekey(ctx context.Context, rows []auditlog.Rekeyed) error {
	return r.owner.Rekey(ctx, rows)
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) auditlog.Store {
		e := setup(t)
		return rekeyAsOwner{Store: e.store(t), owner: e.ownerStore(t)}
	})
}

// asAdmin runs fn in a transaction as the privileged role with the
// triggers disabled: an attacker who holds the privileged role and tries
// to rewrite history.
func (e *env) asAdmin(t *testing.T, fn func(tx pgx.Tx)) {
	t.Helper()
	ctx := context.Background()
	tx, err := e.pg.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, tb := range []string{e.table, e.table + "_checkpoint"} {
		if _, err := tx.Exec(ctx, "ALTER TABLE "+tb+" DISABLE TRIGGER USER"); err != nil {
			t.Fatal(err)
		}
	}
	fn(tx)
	for _, tr := range []string{"no_update", "no_delete", "no_truncate"} {
		for _, q := range []string{
			"ALTER TABLE " + e.table + " ENABLE ALWAYS TRIGGER " + e.table + "_" + tr,
			"ALTER TABLE " + e.table + "_checkpoint ENABLE ALWAYS TRIGGER " + e.table + "_cp_" + tr,
		} {
			if _, err := tx.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestTamper(t *testing.T) {
	envs := map[auditlog.Store]*env{}
	var mu sync.Mutex
	newStore := func(t *testing.T) auditlog.Store {
		e := setup(t)
		s := e.store(t)
		mu.Lock()
		envs[s] = e
		mu.Unlock()
		return s
	}
	rewrite := func(t *testing.T, s auditlog.Store, fn func([]auditlog.Record, [][]byte) ([]auditlog.Record, [][]byte)) auditlog.Store {
		ctx := context.Background()
		mu.Lock()
		e := envs[s]
		mu.Unlock()
		exp, err := auditlog.LoadExport(ctx, s, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		rows, cps := fn(exp.Records, exp.Checkpoints)
		e.asAdmin(t, func(tx pgx.Tx) {
			for _, q := range []string{"DELETE FROM " + e.table, "DELETE FROM " + e.table + "_checkpoint"} {
				if _, err := tx.Exec(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			for _, r := range rows {
				_, err := tx.Exec(ctx, "INSERT INTO "+e.table+" VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
					int64(r.Seq), r.Time, r.Type, r.Actor, r.CorrelationID, r.Payload, r.KeyID, r.PrevHash[:], r.Hash[:])
				if err != nil {
					t.Fatal(err)
				}
			}
			for _, c := range cps {
				if _, err := tx.Exec(ctx, "INSERT INTO "+e.table+"_checkpoint (note) VALUES ($1)", c); err != nil {
					t.Fatal(err)
				}
			}
		})
		return s
	}
	storetest.RunTamper(t, newStore, rewrite, storetest.TamperOptions{SortedBySeq: true})
}

// TestAppRoleRefused checks, against the real server, that the runtime
// role can only read and insert.
func TestAppRoleRefused(t *testing.T) {
	ctx := context.Background()
	e := setup(t)
	s := e.store(t)
	storetest.NewFixture(t, s)
	conn, err := pgx.Connect(ctx, e.appDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tb := e.pg.Schema + "." + e.table
	refused := []string{
		"UPDATE " + tb + " SET actor = 'x' WHERE seq = 1",
		"UPDATE " + tb + " SET payload = '\\x00' WHERE seq = 1",
		"DELETE FROM " + tb + " WHERE seq = 1",
		"TRUNCATE " + tb,
		"SELECT seq FROM " + tb + " WHERE seq = 1 FOR UPDATE",
		"SELECT seq FROM " + tb + " WHERE seq = 1 FOR NO KEY UPDATE",
		"UPDATE " + tb + "_checkpoint SET note = '\\x00'",
		"DELETE FROM " + tb + "_checkpoint",
		"TRUNCATE " + tb + "_checkpoint",
		"CREATE TABLE " + e.pg.Schema + ".evil (x int)",
		"ALTER TABLE " + tb + " ADD COLUMN evil int",
		"ALTER TABLE " + tb + " DISABLE TRIGGER ALL",
		"DROP TABLE " + tb,
		"CREATE INDEX evil ON " + tb + " (actor)",
		"CREATE TRIGGER evil BEFORE INSERT ON " + tb + " FOR EACH ROW EXECUTE FUNCTION " + tb + "_refuse()",
		"SET session_replication_role = replica",
		"CREATE TEMP TABLE evil (x int)",
	}
	for _, q := range refused {
		t.Run(strings.Fields(q)[0]+"_"+strconv.Itoa(len(q)), func(t *testing.T) {
			_, err := conn.Exec(ctx, q)
			if !isPrivilegeError(err) {
				t.Fatalf("app role: %s → %v, want a privilege error (42501)", q, err)
			}
			t.Logf("%s → %v", q, err)
		})
	}
	// What it may do.
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+tb).Scan(&n); err != nil || n != 12 {
		t.Fatalf("app role SELECT: %d, %v", n, err)
	}
	// It holds no function that writes rows: re-keying through the
	// store fails, and no SECURITY DEFINER function in the schema is
	// executable by it.
	err = s.Rekey(ctx, []auditlog.Rekeyed{{Seq: 1, OldKeyID: "k1", KeyID: "k9", Payload: []byte{1}}})
	if !isPrivilegeError(err) {
		t.Fatalf("app role Rekey = %v, want a privilege error", err)
	}
	var definer int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = $1 AND (p.prosecdef OR p.prorettype <> 'trigger'::regtype)
		AND has_function_privilege(current_user, p.oid, 'EXECUTE')`, e.pg.Schema).Scan(&definer); err != nil || definer != 0 {
		t.Fatalf("app role may execute %d functions in the audit schema (%v), want 0", definer, err)
	}
	// A checkpoint note larger than any real one is refused by the schema.
	_, err = conn.Exec(ctx, "INSERT INTO "+tb+"_checkpoint (note) VALUES ($1)", make([]byte, 65<<10))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23514" {
		t.Fatalf("oversized checkpoint insert = %v, want a check violation (23514)", err)
	}
}

// TestMigrateRevokesTemp runs Migrate in a new database, where PUBLIC
// (and so the app role) still holds TEMPORARY, and checks the app role
// can create no temporary table afterwards.
func TestMigrateRevokesTemp(t *testing.T) {
	ctx := context.Background()
	e := setup(t)
	db := "malai_t_" + servicetest.Unique()
	if _, err := e.pg.Pool.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := e.pg.Pool.Exec(context.Background(), "DROP DATABASE "+db+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database: %v", err)
		}
	})
	adminURL, _ := url.Parse(e.pg.URL)
	adminURL.Path = "/" + db
	appURL, _ := url.Parse(e.appDSN)
	appURL.Path = "/" + db
	app, err := pgx.Connect(ctx, appURL.String())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	if _, err := app.Exec(ctx, "CREATE TEMP TABLE before_migrate (x int)"); err != nil {
		t.Fatalf("a new database grants TEMPORARY to PUBLIC; the test's premise fails: %v", err)
	}
	admin, err := pgx.Connect(ctx, adminURL.String())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA audit"); err != nil {
		t.Fatal(err)
	}
	if err := pgstore.Migrate(ctx, admin, pgstore.MigrateConfig{Schema: "audit", Owner: e.owner, AppRole: e.app}); err != nil {
		t.Fatal(err)
	}
	app2, err := pgx.Connect(ctx, appURL.String())
	if err != nil {
		t.Fatal(err)
	}
	defer app2.Close(ctx)
	if _, err := app2.Exec(ctx, "CREATE TEMP TABLE evil (x int)"); !isPrivilegeError(err) {
		t.Fatalf("app role CREATE TEMP TABLE after Migrate = %v, want a privilege error", err)
	}
}

// TestMigrateDropsTheOldRekeyFunction: a schema migrated by an earlier
// version kept a SECURITY DEFINER re-key function the app role could call;
// migrating again removes it.
func TestMigrateDropsTheOldRekeyFunction(t *testing.T) {
	ctx := context.Background()
	e := setup(t)
	tb := pgx.Identifier{e.pg.Schema, e.table}.Sanitize()
	fn := pgx.Identifier{e.pg.Schema, e.table + "_rekey"}.Sanitize()
	for _, q := range []string{
		`CREATE FUNCTION ` + fn + `(p_seq bigint, p_old text, p_key text, p_payload bytea)
		RETURNS boolean LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $$
			WITH u AS (UPDATE ` + tb + ` SET payload = p_payload, key_id = p_key
				WHERE seq = p_seq AND key_id = p_old RETURNING 1)
			SELECT count(*) = 1 FROM u $$`,
		`ALTER FUNCTION ` + fn + `(bigint, text, text, bytea) OWNER TO ` + e.owner,
		`GRANT EXECUTE ON FUNCTION ` + fn + `(bigint, text, text, bytea) TO ` + e.app,
	} {
		if _, err := e.pg.Pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := e.pg.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if err := pgstore.Migrate(ctx, conn.Conn(), pgstore.MigrateConfig{Schema: e.pg.Schema, Owner: e.owner, AppRole: e.app}); err != nil {
		t.Fatal(err)
	}
	app, err := pgx.Connect(ctx, e.appDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	_, err = app.Exec(ctx, "SELECT "+fn+"(1, 'k1', 'k9', '\\x01')")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42883" {
		t.Fatalf("calling the old re-key function after Migrate = %v, want undefined function (42883)", err)
	}
}

// TestMalformedCheckpointRowIsAFinding: the app role may insert
// checkpoints, so it can insert garbage; start-up skips it, appends
// continue, and the verifier locates it.
func TestMalformedCheckpointRowIsAFinding(t *testing.T) {
	ctx := context.Background()
	e := setup(t)
	s := e.store(t)
	f := storetest.NewFixture(t, s)
	conn, err := pgx.Connect(ctx, e.appDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tb := pgx.Identifier{e.pg.Schema, e.table + "_checkpoint"}.Sanitize()
	// Bytes that are not a signed checkpoint are refused by the schema.
	var pe *pgconn.PgError
	if _, err := conn.Exec(ctx, "INSERT INTO "+tb+" (note) VALUES ($1)", []byte("not a signed note")); !errors.As(err, &pe) || pe.Code != "23514" {
		t.Fatalf("app role inserting a checkpoint that is not a note = %v, want a check violation (23514)", err)
	}
	// What the schema cannot tell: a note of the right shape whose
	// signature does not decode, and one signed by another key.
	mkey, _, _ := note.GenerateKey(nil, "mallory")
	mallory, _ := note.NewSigner(mkey)
	// (Of the fixture's size, 12: a larger one would be ordered before
	// every later checkpoint; TestForgedLargerCheckpointIsLoud.)
	forged, err := auditlog.SignCheckpoint(auditlog.Checkpoint{Origin: f.Origin, Size: 12}, mallory)
	if err != nil {
		t.Fatal(err)
	}
	malformed := []byte(f.Origin + "\n12\n" + strings.Repeat("A", 43) + "=\n\n— mallory AAAA\n")
	for _, n := range [][]byte{malformed, forged} {
		if _, err := conn.Exec(ctx, "INSERT INTO "+tb+" (note) VALUES ($1)", n); err != nil {
			t.Fatal(err)
		}
	}
	var skipped []error
	l, err := auditlog.New(auditlog.Config{Store: s, Origin: f.Origin, Signers: []note.Signer{f.Signer}, Witness: f.Witness,
		Ring: f.Ring, OnError: func(err error) { skipped = append(skipped, err) }})
	if err != nil {
		t.Fatalf("start-up with malformed checkpoint rows = %v, want them skipped", err)
	}
	if got := l.LatestCheckpoint(); got.Size != 12 {
		t.Fatalf("adopted checkpoint size %d, want the log's own (12)", got.Size)
	}
	if _, err := l.Append(ctx, storetest.Transfer("u", "a", "b", 1)); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if len(skipped) != 1 {
		t.Fatalf("skipped checkpoints reported %d times, want once: %v", len(skipped), skipped)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+tb).Scan(&n); err != nil {
		t.Fatal(err)
	}
	rep := f.Verify(t, s, f.Trusted, nil, nil)
	bad := map[int]auditlog.FindingKind{}
	for _, fd := range rep.Findings {
		if fd.Checkpoint >= 0 && fd.Source == auditlog.SourceExport {
			bad[fd.Checkpoint] = fd.Kind
		}
	}
	// checkpoints 0–2 are the fixture's, 3 and 4 the inserted rows, 5
	// the final one of the second start
	if n != 6 || bad[3] != auditlog.FindingMalformedCheckpoint || bad[4] != auditlog.FindingUnknownKey || len(bad) != 2 {
		t.Fatalf("%d checkpoint rows; verifier findings on them %v (all: %v)", n, bad, rep.Findings)
	}
}

// TestTriggersHoldUnderReplicaRole: a superuser who sets
// session_replication_role = replica still meets the ENABLE ALWAYS
// triggers.
func TestTriggersHoldUnderReplicaRole(t *testing.T) {
	ctx := context.Background()
	e := setup(t)
	s := e.store(t)
	storetest.NewFixture(t, s)
	conn, err := e.pg.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SET session_replication_role = replica"); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, "RESET session_replication_role")
	for _, q := range []string{
		"UPDATE " + e.table + " SET actor = 'x' WHERE seq = 1",
		"DELETE FROM " + e.table + " WHERE seq = 1",
		"TRUNCATE " + e.table,
		"DELETE FROM " + e.table + "_checkpoint",
	} {
		if _, err := conn.Exec(ctx, q); !isPrivilegeError(err) {
			t.Errorf("superuser under replica role: %s → %v, want the trigger's refusal", q, err)
		}
	}
}

func TestCheckTLS(t *testing.T) {
	cases := []struct {
		dsn string
		ok  bool
	}{
		{"postgres://app@db.example.com/audit?sslmode=disable", false},
		{"postgres://app@db.example.com/audit?sslmode=prefer", false},
		{"postgres://app@db.example.com/audit?sslmode=require", false},
		{"postgres://app@db.example.com/audit?sslmode=verify-ca", false},
		{"postgres://app@db.example.com/audit", false},
		{"postgres://app@db.example.com/audit?sslmode=verify-full", true},
		{"host=db.example.com user=app sslmode=verify-full", true},
		{"host=db.example.com,10.0.0.2 user=app sslmode=verify-full", true},
		{"postgres://app@127.0.0.1/audit?sslmode=disable", true},
		{"postgres://app@[::1]/audit?sslmode=disable", true},
		{"postgres://app@localhost/audit?sslmode=disable", true},
		{"host=/var/run/postgresql user=app sslmode=disable", true},
	}
	for _, c := range cases {
		t.Run(c.dsn, func(t *testing.T) {
			cc, err := pgx.ParseConfig(c.dsn)
			if err != nil {
				t.Fatal(err)
			}
			err = pgstore.CheckTLS(cc)
			if c.ok != (err == nil) {
				t.Fatalf("CheckTLS = %v, want ok=%v", err, c.ok)
			}
			if !c.ok && !errors.Is(err, pgstore.ErrInsecureDSN) {
				t.Fatalf("error %v does not wrap ErrInsecureDSN", err)
			}
		})
	}
	_, err := pgstore.New(context.Background(), pgstore.Config{DSN: "postgres://app:secret-pw@db.example.com/audit?sslmode=require", Schema: "s"})
	if !errors.Is(err, pgstore.ErrInsecureDSN) || strings.Contains(err.Error(), "secret-pw") {
		t.Fatalf("New with an insecure DSN = %v", err)
	}
}

func TestConfigRefused(t *testing.T) {
	for name, cfg := range map[string]pgstore.Config{
		"no dsn":     {Schema: "s"},
		"no schema":  {DSN: "postgres://app@127.0.0.1/x"},
		"bad schema": {DSN: "postgres://app@127.0.0.1/x", Schema: "s; drop"},
		"bad table":  {DSN: "postgres://app@127.0.0.1/x", Schema: "s", Table: "T"},
		"bad dsn":    {DSN: "postgres://app:pw@127.0.0.1:notaport/x", Schema: "s"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := pgstore.New(context.Background(), cfg)
			if !errors.Is(err, pgstore.ErrInvalidConfig) {
				t.Fatalf("New = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

// TestPasswordPerConnection: the provider is asked for every new
// connection, so a rotated credential is used without a restart, and a
// failing provider fails the connection.
func TestPasswordPerConnection(t *testing.T) {
	ctx := context.Background()
	e := setup(t)
	var calls atomic.Int32
	s, err := pgstore.New(ctx, pgstore.Config{DSN: e.appDSN, Schema: e.pg.Schema, MaxConns: 4,
		Password: func(context.Context) (string, error) {
			return fmt.Sprintf("rotated-%d", calls.Add(1)), nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	before := calls.Load()
	var conns []interface{ Release() }
	for range 3 {
		c, err := s.Pool().Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Release()
	}
	if got := calls.Load() - before; got < 2 {
		t.Fatalf("provider called %d times for new connections, want one per connection", got)
	}
	_, err = pgstore.New(ctx, pgstore.Config{DSN: e.appDSN, Schema: e.pg.Schema,
		Password: func(context.Context) (string, error) { return "", errors.New("vault down") }})
	if err == nil {
		t.Fatal("New succeeded although the password provider failed")
	}
}

// TestTwoProcesses appends from this process and a child process at once;
// the result is one linear chain.
func TestTwoProcesses(t *testing.T) {
	ctx := context.Background()
	e := setup(t)
	s := e.store(t)
	const each = 300
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "AUDITLOG_PG_DSN="+e.appDSN, "AUDITLOG_PG_SCHEMA="+e.pg.Schema, "AUDITLOG_PG_N="+strconv.Itoa(each))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := appendN(ctx, s, "parent", each); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	head, err := auditlog.Replay(ctx, s, nil, nil)
	if err != nil || head.Size != 2*each {
		t.Fatalf("Replay = %+v, %v; want %d rows in one chain", head, err, 2*each)
	}
}

func appendN(ctx context.Context, s auditlog.Store, who string, n int) error {
	skey, _, _ := note.GenerateKey(nil, who)
	signer, _ := note.NewSigner(skey)
	l, err := auditlog.New(auditlog.Config{Store: s, Origin: "two-processes", Signers: []note.Signer{signer},
		Plaintext: true, Now: time.Now})
	if err != nil {
		return err
	}
	defer l.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 8 {
				if _, err := l.Append(ctx, auditlog.Event{Type: "t", Actor: who, Payload: []byte(strconv.Itoa(i))}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func TestHelperProcess(t *testing.T) {
	dsn := os.Getenv("AUDITLOG_PG_DSN")
	if dsn == "" {
		t.Skip("helper for TestTwoProcesses")
	}
	n, _ := strconv.Atoi(os.Getenv("AUDITLOG_PG_N"))
	ctx := context.Background()
	s, err := pgstore.New(ctx, pgstore.Config{DSN: dsn, Schema: os.Getenv("AUDITLOG_PG_SCHEMA")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := appendN(ctx, s, "child", n); err != nil {
		t.Fatal(err)
	}
}

func isPrivilegeError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42501"
}

// TestOutage: appends fail while the server is unreachable and resume
// after it returns, with the chain intact.
func TestOutage(t *testing.T) {
	ctx := context.Background()
	e := setup(t)
	pu, _ := url.Parse(e.appDSN)
	proxy := servicetest.NewProxy(t, pu.Host)
	pu.Host = proxy.Addr()
	s, err := pgstore.New(ctx, pgstore.Config{DSN: pu.String(), Schema: e.pg.Schema})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	skey, _, _ := note.GenerateKey(nil, "outage")
	signer, _ := note.NewSigner(skey)
	l, err := auditlog.New(auditlog.Config{Store: s, Origin: "outage", Signers: []note.Signer{signer}, Plaintext: true,
		CommitTimeout: 2 * time.Second, OnError: func(error) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Append(ctx, auditlog.Event{Type: "before"}); err != nil {
		t.Fatal(err)
	}
	proxy.Down()
	if _, err := l.Append(ctx, auditlog.Event{Type: "during"}); err == nil {
		t.Fatal("Append succeeded while the database was unreachable")
	}
	proxy.Up()
	r, err := l.Append(ctx, auditlog.Event{Type: "after"})
	if err != nil {
		t.Fatalf("Append after the outage: %v", err)
	}
	if r.Seq != 1 {
		t.Fatalf("seq after the outage = %d, want 1", r.Seq)
	}
	if head, err := auditlog.Replay(ctx, e.store(t), nil, nil); err != nil || head.Size != 2 {
		t.Fatalf("Replay after the outage = %+v, %v", head, err)
	}
}

// TestReencryptAsMigrator rotates the data key and re-keys every row from
// a connection as the migrator role (what the operator's command does);
// the app role's view verifies afterwards, hashes untouched.
func TestReencryptAsMigrator(t *testing.T) {
	ctx := context.Background()
	e := setup(t)
	s := e.store(t)
	f := storetest.NewFixture(t, s)
	k, err := keyring.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Ring.Rotate("k2", k); err != nil {
		t.Fatal(err)
	}
	if _, err := auditlog.Reencrypt(ctx, s, f.Ring); !isPrivilegeError(err) {
		t.Fatalf("re-keying as the app role = %v, want a privilege error", err)
	}
	n, err := auditlog.Reencrypt(ctx, e.ownerStore(t), f.Ring)
	if err != nil || n != 12 {
		t.Fatalf("Reencrypt as the migrator = %d, %v", n, err)
	}
	err = s.Scan(ctx, 0, func(r auditlog.Record) error {
		if r.KeyID != "k2" {
			return fmt.Errorf("row %d still under %q", r.Seq, r.KeyID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep := f.Verify(t, s, f.Trusted, nil, nil); len(rep.Findings) != 0 {
		t.Fatalf("re-encrypted chain does not verify: %v", rep.Findings)
	}
}

// TestLargeBatches covers the COPY path (batches of 128 rows and more)
// beside the one-round-trip INSERT the conformance suite exercises.
func TestLargeBatches(t *testing.T) {
	ctx := context.Background()
	s := setup(t).store(t)
	first := storetest.Chain(0, auditlog.Hash{}, 300)
	if err := s.Append(ctx, first); err != nil {
		t.Fatal(err)
	}
	stale := storetest.Chain(100, first[99].Hash, 200)
	if err := s.Append(ctx, stale); !errors.Is(err, auditlog.ErrConflict) {
		t.Fatalf("a large batch behind the head = %v, want ErrConflict", err)
	}
	if err := s.Append(ctx, storetest.Chain(300, first[299].Hash, 2)[1:]); !errors.Is(err, auditlog.ErrConflict) {
		t.Fatalf("a small batch past the head = %v, want ErrConflict", err)
	}
	if err := s.Append(ctx, storetest.Chain(300, auditlog.Hash{7}, 1)); !errors.Is(err, auditlog.ErrConflict) {
		t.Fatalf("a batch that does not link to the head = %v, want ErrConflict", err)
	}
	if err := s.Append(ctx, storetest.Chain(300, first[299].Hash, 150)); err != nil {
		t.Fatal(err)
	}
	head, err := auditlog.Replay(ctx, s, nil, nil)
	if err != nil || head.Size != 450 {
		t.Fatalf("Replay = %+v, %v; want 450 rows in one chain", head, err)
	}
}

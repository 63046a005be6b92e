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

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) auditlog.Store { return setup(t).store(t) })
}

// asAdmin runs fn in a transaction as the privileged role with the
// triggers disabled: the attacker the issue describes.
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
	// The rekey function changes the payload only; hashes stay.
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT "+tb+"_rekey(1, 'k1', 'k9', '\\x01')").Scan(&ok); err != nil || !ok {
		t.Fatalf("rekey function: %v, %v", ok, err)
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

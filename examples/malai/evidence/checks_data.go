package evidence

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// plaintextAllowed are the files of a data directory that are meant to be
// read by people or scripts: the CA certificate, the endpoints, the demo
// credentials (0600, generated for the operator) and the policy.
var plaintextAllowed = map[string]bool{
	"ca.pem": true, "endpoints.json": true, "demo-credentials.json": true, "ledger-policy.csv": true, "deny.txt": true,
}

// encryptionChecks: "Plaintext is not written to disk at any layer … Key
// rotation runs on a managed schedule; rotation is transparent to the
// app."
func encryptionChecks() []Check {
	return []Check{
		{Row: RowEncryption, Name: "no user name, account id or idempotency key in plaintext anywhere under the data directory", Local: true,
			Run: func(ctx context.Context, f *Fixture) (string, error) {
				needles := []string{f.Alice.Name, f.Bob.Name, f.Alice.Account, f.Bob.Account, f.Name("replay")}
				n := 0
				var hits []string
				err := filepath.WalkDir(f.Local.DataDir(), func(path string, d fs.DirEntry, err error) error {
					if err != nil || d.IsDir() || plaintextAllowed[d.Name()] {
						return err
					}
					b, err := os.ReadFile(path)
					if err != nil {
						return err
					}
					n++
					rel, _ := filepath.Rel(f.Local.DataDir(), path)
					for _, s := range needles {
						if bytes.Contains(b, []byte(s)) {
							hits = append(hits, fmt.Sprintf("%s holds %q", rel, s))
						}
					}
					// A log line in the clear, whatever it names: the
					// streams on disk are sealed, so slog's JSON keys
					// never appear in them.
					if bytes.Contains(b, []byte(`"level":"`)) && bytes.Contains(b, []byte(`"msg":"`)) {
						hits = append(hits, rel+" holds plaintext log lines")
					}
					return nil
				})
				if err != nil {
					return "", err
				}
				sort.Strings(hits)
				obs := fmt.Sprintf("%d files read", n)
				if len(hits) > 0 {
					return obs, fmt.Errorf("plaintext on disk: %s", strings.Join(hits, "; "))
				}
				if n == 0 {
					return obs, errors.New("no files found")
				}
				return obs, nil
			}},
		{Row: RowEncryption, Name: "data-key rotation is transparent: older rows re-encrypted, hashes and replay unchanged, writes go on", Local: true,
			Run: func(ctx context.Context, f *Fixture) (string, error) {
				pre, err := f.auditReplay(ctx)
				if err != nil {
					return "", err
				}
				kid, err := f.Local.RotateDataKey(ctx)
				if err != nil {
					return "", err
				}
				var older uint64
				for id, n := range pre.SealedBy {
					if id != kid {
						older += n
					}
				}
				// Writes go on while the new key takes over and the older
				// rows are re-encrypted.
				r, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/transfers", Transfer{From: f.Bob.Account, To: f.Alice.Account, Amount: 50},
					f.Bob.Auth().With("Idempotency-Key", f.Key("after-rotation")))
				if err != nil {
					return "", err
				}
				if r.Status != http.StatusCreated {
					return "", fmt.Errorf("transfer after rotation: %s", r)
				}
				// One auditor token for the whole wait: each new one
				// registers a key of its own, and identity caps them.
				tok, err := f.Local.AuditorToken(ctx)
				if err != nil {
					return "", err
				}
				c, err := f.ClientAs(AuditorComponent)
				if err != nil {
					return "", err
				}
				var rep ReplayReport
				seen, werr := Eventually(ctx, 30*time.Second, func() (bool, string, error) {
					r, err := Send(ctx, c, "GET", f.Local.LedgerURL()+"/internal/v1/audit/replay", nil, Bearer(tok))
					if err != nil {
						return false, "", err
					}
					rep = ReplayReport{}
					if r.Status != http.StatusOK || json.Unmarshal(r.Body, &rep) != nil {
						return false, "", fmt.Errorf("replay: %s", r)
					}
					return len(rep.SealedBy) == 1 && rep.SealedBy[kid] > 0,
						fmt.Sprintf("%d of %d rows sealed under the new key", rep.SealedBy[kid], rep.Events), nil
				})
				how := "in the background by the ledger"
				if _, _, ok := f.Local.Postgres(); ok {
					how = "as the migrator, as \"malai audit-rekey\" does"
				}
				obs := fmt.Sprintf("%d older rows re-encrypted %s after a key-file rotation (%s); transfer after rotation %d; replay of %d events match=%v", older, how, seen, r.Status, rep.Events, rep.Match)
				if werr != nil {
					return obs, fmt.Errorf("older rows still sealed under older keys: %w", werr)
				}
				if older == 0 || !rep.Match {
					return obs, errors.New("rotation was not transparent")
				}
				return obs, nil
			}},
	}
}

// roleChecks: "The application connects with a least-privilege role —
// INSERT/SELECT only on the audit log, no DDL anywhere." The server itself
// must refuse.
func roleChecks() []Check {
	withConn := func(ctx context.Context, f *Fixture, fn func(conn *pgx.Conn, schema string) (string, error)) (string, error) {
		dsn, schema, ok := f.Local.Postgres()
		if !ok {
			return "", NotApplicable("the audit chain of this run is not in PostgreSQL")
		}
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return "", fmt.Errorf("connect as the application role: %w", err)
		}
		defer conn.Close(context.Background())
		return fn(conn, schema)
	}
	cs := []Check{{Row: RowRoles, Name: "the application role may SELECT the audit log", Local: true, Run: func(ctx context.Context, f *Fixture) (string, error) {
		return withConn(ctx, f, func(conn *pgx.Conn, schema string) (string, error) {
			var n int64
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+schema+".audit_log").Scan(&n); err != nil {
				return "", err
			}
			return fmt.Sprintf("%d rows visible", n), nil
		})
	}}}
	for _, q := range []struct{ name, sql, code, meaning string }{
		{"UPDATE", "UPDATE %s.audit_log SET seq = seq WHERE false", "42501", "insufficient_privilege"},
		{"DELETE", "DELETE FROM %s.audit_log WHERE false", "42501", "insufficient_privilege"},
		{"TRUNCATE", "TRUNCATE %s.audit_log", "42501", "insufficient_privilege"},
		{"SELECT … FOR UPDATE", "SELECT seq FROM %s.audit_log LIMIT 1 FOR UPDATE", "42501", "insufficient_privilege"},
		{"DDL (CREATE TABLE)", "CREATE TABLE %s.evil (x int)", "42501", "insufficient_privilege"},
		{"DDL (DROP TABLE)", "DROP TABLE %s.audit_log", "42501", "insufficient_privilege"},
		{"TEMP table", "CREATE TEMP TABLE evil (x int)", "42501", "insufficient_privilege"},
		{"session_replication_role = replica", "SET session_replication_role = replica", "42501", "insufficient_privilege"},
		{"malformed checkpoint row", "INSERT INTO %s.audit_log_checkpoint (note) VALUES ('not a signed note')", "23514", "check_violation"},
	} {
		cs = append(cs, Check{Row: RowRoles, Name: "the server refuses the application role's " + q.name, Local: true, Run: func(ctx context.Context, f *Fixture) (string, error) {
			return withConn(ctx, f, func(conn *pgx.Conn, schema string) (string, error) {
				sql := q.sql
				if strings.Contains(sql, "%s") {
					sql = fmt.Sprintf(sql, schema)
				}
				// Inside a transaction rolled back at once: a statement the
				// server wrongly allows changes nothing for later checks.
				tx, err := conn.Begin(ctx)
				if err != nil {
					return "", err
				}
				defer tx.Rollback(context.Background())
				_, err = tx.Exec(ctx, sql)
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) && pgErr.Code == q.code {
					return "SQLSTATE " + q.code + " " + q.meaning, nil
				}
				if err == nil {
					return "", errors.New("allowed")
				}
				return "", fmt.Errorf("refused for another reason: %v", err)
			})
		}})
	}
	return cs
}

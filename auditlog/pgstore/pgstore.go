package pgstore

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/malai-sec/malai/auditlog"
)

// Errors returned by New.
var (
	// ErrInsecureDSN: the DSN does not verify the server (sslmode below
	// verify-full) and the host is neither loopback nor a Unix socket.
	ErrInsecureDSN = errors.New("pgstore: DSN must use sslmode=verify-full for a non-local host")
	// ErrInvalidConfig: a Config field is missing or malformed.
	ErrInvalidConfig = errors.New("pgstore: invalid config")
)

// Config configures [New]. The zero value is not usable: DSN and Schema
// are required.
type Config struct {
	// DSN is the connection string of the application role (the role
	// granted by Migrate), as a URL or keyword/value string. A password in
	// it is overridden by Password.
	DSN string
	// Password, when set, is called for every new connection and its
	// result used as the password, so a rotated credential is picked up
	// without a restart. It must not log the password.
	Password func(ctx context.Context) (string, error)
	// Schema holds the tables created by Migrate. Required.
	Schema string
	// Table is the rows table; default "audit_log". Checkpoints live in
	// Table+"_checkpoint".
	Table string
	// AllowInsecureTLS accepts a DSN without sslmode=verify-full for a
	// non-local host. Loosening; off by default.
	AllowInsecureTLS bool
	// MaxConns caps the pool; default pgxpool's.
	MaxConns int32
	// Role, when set, is assumed with SET ROLE on every connection. The
	// re-encryption command sets it to the migrator role (MigrateConfig's
	// Owner), the only role that may re-key rows; the runtime leaves it
	// empty and connects as the application role.
	Role string
}

// Store is the PostgreSQL [auditlog.Store]. It is safe for concurrent use
// by many goroutines and many processes: appends are serialised by a
// transaction-scoped advisory lock and each batch is one transaction with
// one INSERT, sent in one round trip.
type Store struct {
	pool  *pgxpool.Pool
	ident pgx.Identifier
	q     queries
}

type queries struct {
	lock, insert, begin, head, scan, cps, latestCP, addCP, addCPOrdered, rekey string
}

var (
	_ auditlog.Store              = (*Store)(nil)
	_ auditlog.LatestCheckpointer = (*Store)(nil)
)

var columns = []string{"seq", "ts", "type", "actor", "correlation_id", "payload", "key_id", "prev_hash", "hash"}

func validName(s string) bool {
	if s == "" || len(s) > 48 {
		return false
	}
	for _, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return s[0] < '0' || s[0] > '9'
}

func (c *Config) names() error {
	if c.Table == "" {
		c.Table = "audit_log"
	}
	if !validName(c.Schema) || !validName(c.Table) {
		return fmt.Errorf("%w: Schema and Table must be lowercase identifiers", ErrInvalidConfig)
	}
	return nil
}

// CheckTLS returns ErrInsecureDSN unless every host the config may connect
// to is reached over TLS that verifies the server's name
// (sslmode=verify-full), or is loopback or a Unix socket.
func CheckTLS(cc *pgx.ConnConfig) error {
	if err := checkHost(cc.Host, cc.TLSConfig == nil || cc.TLSConfig.InsecureSkipVerify); err != nil {
		return err
	}
	for _, f := range cc.Fallbacks {
		if err := checkHost(f.Host, f.TLSConfig == nil || f.TLSConfig.InsecureSkipVerify); err != nil {
			return err
		}
	}
	return nil
}

func checkHost(host string, unverified bool) error {
	if !unverified || strings.HasPrefix(host, "/") || host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w (host %s)", ErrInsecureDSN, host)
}

// New connects as the application role. It refuses a DSN that does not
// verify the server unless the host is local, and checks the tables are
// reachable.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.DSN == "" {
		return nil, fmt.Errorf("%w: DSN is required", ErrInvalidConfig)
	}
	if err := cfg.names(); err != nil {
		return nil, err
	}
	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		// pgx errors can echo the DSN, password included: say less.
		return nil, fmt.Errorf("%w: DSN does not parse", ErrInvalidConfig)
	}
	if !cfg.AllowInsecureTLS {
		if err := CheckTLS(pc.ConnConfig); err != nil {
			return nil, err
		}
	}
	if cfg.Password != nil {
		provider := cfg.Password
		pc.BeforeConnect = func(ctx context.Context, cc *pgx.ConnConfig) error {
			pw, err := provider(ctx)
			if err != nil {
				return fmt.Errorf("pgstore: password provider: %w", err)
			}
			cc.Password = pw
			return nil
		}
	}
	if cfg.MaxConns > 0 {
		pc.MaxConns = cfg.MaxConns
	}
	if cfg.Role != "" {
		setRole := "SET ROLE " + pgx.Identifier{cfg.Role}.Sanitize()
		pc.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
			if _, err := c.Exec(ctx, setRole); err != nil {
				return fmt.Errorf("pgstore: set role: %w", err)
			}
			return nil
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	s := newStore(pool, cfg.Schema, cfg.Table)
	if _, err := s.Head(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

func newStore(pool *pgxpool.Pool, schema, table string) *Store {
	h := fnv.New64a()
	h.Write([]byte("malai.auditlog:" + schema + "." + table))
	t := pgx.Identifier{schema, table}.Sanitize()
	cp := pgx.Identifier{schema, table + "_checkpoint"}.Sanitize()
	return &Store{
		pool:  pool,
		ident: pgx.Identifier{schema, table},
		q: queries{
			begin: "BEGIN; SELECT pg_advisory_xact_lock(" + strconv.FormatInt(int64(h.Sum64()), 10) + "); " +
				"SELECT seq, hash FROM " + t + " ORDER BY seq DESC LIMIT 1",
			lock: "SELECT pg_advisory_xact_lock(" + strconv.FormatInt(int64(h.Sum64()), 10) + ")",
			// The head check travels with the rows: the statement's
			// snapshot is taken after the lock is held, and it inserts
			// nothing unless the batch continues the stored chain.
			insert: "INSERT INTO " + t + " (" + strings.Join(columns, ", ") + ") " +
				"SELECT * FROM unnest($3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::bytea[], $9::text[], $10::bytea[], $11::bytea[]) " +
				"WHERE (SELECT coalesce(max(seq) + 1, 0) FROM " + t + ") = $1::bigint " +
				"AND ($1::bigint = 0 OR EXISTS (SELECT 1 FROM " + t + " WHERE seq = $1::bigint - 1 AND hash = $2::bytea))",
			head:     "SELECT seq, hash FROM " + t + " ORDER BY seq DESC LIMIT 1",
			scan:     "SELECT " + strings.Join(columns, ", ") + " FROM " + t + " WHERE seq >= $1 ORDER BY seq",
			cps:      "SELECT note FROM " + cp + " ORDER BY id",
			latestCP: "SELECT note FROM " + cp + " ORDER BY id DESC LIMIT 1",
			addCP:    "INSERT INTO " + cp + " (note) VALUES ($1)",
			// Run under the append lock, so checkpoints are numbered (id) in
			// the order of the sizes they are compared by: nothing is
			// inserted after a larger checkpoint, after one of the same size
			// with another root ($3, base64 as in the note), or after the
			// same note. The newest stored note comes back to say why.
			// Migrate's shape constraint makes every stored note parse.
			addCPOrdered: "WITH latest AS (SELECT note, split_part(convert_from(note, 'UTF8'), E'\\n', 2)::numeric AS size, " +
				"split_part(convert_from(note, 'UTF8'), E'\\n', 3) AS root FROM " + cp + " ORDER BY id DESC LIMIT 1), " +
				"ins AS (INSERT INTO " + cp + " (note) SELECT $1::bytea WHERE NOT EXISTS (SELECT 1 FROM latest WHERE " +
				"note = $1::bytea OR size > $2::numeric OR (size = $2::numeric AND root <> $3::text)) RETURNING id) " +
				"SELECT (SELECT count(*) FROM ins), (SELECT note FROM latest)",
			rekey: "UPDATE " + t + " SET payload = $1, key_id = $2 WHERE seq = $3 AND key_id = $4",
		},
	}
}

// Pool returns the store's connection pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

func headOf(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, sql string) (auditlog.Head, error) {
	var seq int64
	var hash []byte
	err := q.QueryRow(ctx, sql).Scan(&seq, &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return auditlog.Head{}, nil
	}
	if err != nil {
		return auditlog.Head{}, fmt.Errorf("pgstore: head: %w", err)
	}
	if seq < 0 || len(hash) != 32 {
		return auditlog.Head{}, fmt.Errorf("pgstore: head row is malformed")
	}
	h := auditlog.Head{Size: uint64(seq) + 1}
	copy(h.Last[:], hash)
	return h, nil
}

// copyRows is the batch size from which Append uses COPY: its three
// round trips cost less than an INSERT's per-row work past it.
const copyRows = 128

// Append implements auditlog.Store. A batch of fewer than copyRows rows
// takes one round trip: a pipeline of pg_advisory_xact_lock and one
// INSERT of the whole batch whose WHERE clause is the head check,
// committed together as one implicit transaction at the pipeline's end.
// A larger batch is COPYed in a transaction holding the lock. A batch
// that does not continue the stored chain appends nothing and returns
// ErrConflict.
func (s *Store) Append(ctx context.Context, recs []auditlog.Record) error {
	if len(recs) == 0 {
		return nil
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].Seq != recs[i-1].Seq+1 || recs[i].PrevHash != recs[i-1].Hash {
			return fmt.Errorf("pgstore: batch is not consecutive at %d: %w", recs[i].Seq, auditlog.ErrConflict)
		}
	}
	if recs[0].Seq > 1<<62 {
		return fmt.Errorf("pgstore: sequence number %d out of range", recs[0].Seq)
	}
	if len(recs) >= copyRows {
		return s.appendCopy(ctx, recs)
	}
	n := len(recs)
	var (
		seqs, times                = make([]int64, n), make([]int64, n)
		types, actors, corrs, kids = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		payloads, prevs, hashes    = make([][]byte, n), make([][]byte, n), make([][]byte, n)
	)
	for i := range recs {
		r := &recs[i]
		seqs[i], times[i] = int64(r.Seq), r.Time
		types[i], actors[i], corrs[i], kids[i] = r.Type, r.Actor, r.CorrelationID, r.KeyID
		payloads[i], prevs[i], hashes[i] = r.Payload, r.PrevHash[:], r.Hash[:]
		if payloads[i] == nil {
			payloads[i] = []byte{}
		}
	}
	b := &pgx.Batch{}
	b.Queue(s.q.lock)
	b.Queue(s.q.insert, int64(recs[0].Seq), recs[0].PrevHash[:], seqs, times, types, actors, corrs, payloads, kids, prevs, hashes)
	br := s.pool.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		br.Close()
		return fmt.Errorf("pgstore: lock: %w", err)
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr // the commit's own error
	}
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe) && pe.Code == "23505": // unique_violation: another writer won
		return fmt.Errorf("pgstore: batch starts at %d, which is taken: %w", recs[0].Seq, auditlog.ErrConflict)
	case err != nil:
		return fmt.Errorf("pgstore: append: %w", err)
	case tag.RowsAffected() == 0:
		return fmt.Errorf("pgstore: batch starts at %d, which does not continue the stored chain: %w", recs[0].Seq, auditlog.ErrConflict)
	case tag.RowsAffected() != int64(n):
		return fmt.Errorf("pgstore: inserted %d of %d rows", tag.RowsAffected(), n)
	}
	return nil
}

// appendCopy appends a large batch: BEGIN, the lock and the head query in
// one simple-protocol message (each statement takes a fresh snapshot, so
// the head is read after the lock is held), one COPY, COMMIT.
func (s *Store) appendCopy(ctx context.Context, recs []auditlog.Record) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("pgstore: acquire: %w", err)
	}
	// A connection left inside a transaction is destroyed by Release.
	defer conn.Release()
	pc := conn.Conn().PgConn()
	results, err := pc.Exec(ctx, s.q.begin).ReadAll()
	if err != nil {
		return fmt.Errorf("pgstore: lock: %w", err)
	}
	head, err := parseHead(results)
	if err != nil {
		return err
	}
	if recs[0].Seq != head.Size || recs[0].PrevHash != head.Last {
		return fmt.Errorf("pgstore: batch starts at %d, store holds %d: %w", recs[0].Seq, head.Size, auditlog.ErrConflict)
	}
	n, err := conn.CopyFrom(ctx, s.ident, columns, pgx.CopyFromSlice(len(recs), func(i int) ([]any, error) {
		r := &recs[i]
		p := r.Payload
		if p == nil {
			p = []byte{}
		}
		return []any{int64(r.Seq), r.Time, r.Type, r.Actor, r.CorrelationID, p, r.KeyID, r.PrevHash[:], r.Hash[:]}, nil
	}))
	if err != nil {
		return fmt.Errorf("pgstore: copy: %w", err)
	}
	if n != int64(len(recs)) {
		return fmt.Errorf("pgstore: copied %d of %d rows", n, len(recs))
	}
	if _, err := pc.Exec(ctx, "COMMIT").ReadAll(); err != nil {
		return fmt.Errorf("pgstore: commit: %w", err)
	}
	if pc.TxStatus() != 'I' {
		return fmt.Errorf("pgstore: commit did not end the transaction")
	}
	return nil
}

// parseHead reads the head row from the text-format result of the begin
// message.
func parseHead(results []*pgconn.Result) (auditlog.Head, error) {
	if len(results) != 3 {
		return auditlog.Head{}, fmt.Errorf("pgstore: lock: %d results", len(results))
	}
	rows := results[2].Rows
	if len(rows) == 0 {
		return auditlog.Head{}, nil
	}
	if len(rows) != 1 || len(rows[0]) != 2 {
		return auditlog.Head{}, fmt.Errorf("pgstore: head row is malformed")
	}
	seq, err := strconv.ParseInt(string(rows[0][0]), 10, 64)
	hx := string(rows[0][1])
	if err != nil || seq < 0 || !strings.HasPrefix(hx, `\x`) || len(hx) != 2+64 {
		return auditlog.Head{}, fmt.Errorf("pgstore: head row is malformed")
	}
	h := auditlog.Head{Size: uint64(seq) + 1}
	if _, err := hex.Decode(h.Last[:], []byte(hx[2:])); err != nil {
		return auditlog.Head{}, fmt.Errorf("pgstore: head row is malformed")
	}
	return h, nil
}

// Head implements auditlog.Store.
func (s *Store) Head(ctx context.Context) (auditlog.Head, error) {
	return headOf(ctx, s.pool, s.q.head)
}

// Scan implements auditlog.Store; one query, one snapshot.
func (s *Store) Scan(ctx context.Context, from uint64, fn func(auditlog.Record) error) error {
	if from > 1<<62 {
		return nil
	}
	rows, err := s.pool.Query(ctx, s.q.scan, int64(from))
	if err != nil {
		return fmt.Errorf("pgstore: scan: %w", err)
	}
	defer rows.Close()
	var (
		r          auditlog.Record
		seq        int64
		prev, hash []byte
	)
	for rows.Next() {
		if err := rows.Scan(&seq, &r.Time, &r.Type, &r.Actor, &r.CorrelationID, &r.Payload, &r.KeyID, &prev, &hash); err != nil {
			return fmt.Errorf("pgstore: scan: %w", err)
		}
		if seq < 0 || len(prev) != 32 || len(hash) != 32 {
			return fmt.Errorf("pgstore: row %d is malformed", seq)
		}
		r.Seq = uint64(seq)
		copy(r.PrevHash[:], prev)
		copy(r.Hash[:], hash)
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("pgstore: scan: %w", err)
	}
	return nil
}

// AddCheckpoint implements auditlog.Store. It takes the append lock and
// inserts the checkpoint in the same statement that compares it with the
// newest stored one, in one round trip and one transaction, so replicas
// sharing the table store their checkpoints in size order whatever their
// timing; a checkpoint refused for that returns an error wrapping
// auditlog.ErrStaleCheckpoint or auditlog.ErrFork.
func (s *Store) AddCheckpoint(ctx context.Context, signed []byte) error {
	next, err := auditlog.ParseSignedCheckpoint(signed)
	if err != nil {
		// not ordered; Migrate's shape constraint refuses it
		if _, err := s.pool.Exec(ctx, s.q.addCP, signed); err != nil {
			return fmt.Errorf("pgstore: checkpoint: %w", err)
		}
		return nil
	}
	b := &pgx.Batch{}
	b.Queue(s.q.lock)
	b.Queue(s.q.addCPOrdered, signed, strconv.FormatUint(next.Size, 10), base64.StdEncoding.EncodeToString(next.Root[:]))
	br := s.pool.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		br.Close()
		return fmt.Errorf("pgstore: lock: %w", err)
	}
	var (
		inserted int64
		latest   []byte
	)
	err = br.QueryRow().Scan(&inserted, &latest)
	if cerr := br.Close(); err == nil {
		err = cerr // the commit's own error
	}
	if err != nil {
		return fmt.Errorf("pgstore: checkpoint: %w", err)
	}
	if inserted == 1 || bytes.Equal(latest, signed) {
		return nil
	}
	prev, err := auditlog.ParseSignedCheckpoint(latest)
	if err != nil {
		return fmt.Errorf("pgstore: checkpoint: the newest stored checkpoint does not parse: %w", err)
	}
	if err := auditlog.CheckCheckpointOrder(prev, next); err != nil {
		return fmt.Errorf("pgstore: checkpoint: %w", err)
	}
	return fmt.Errorf("pgstore: checkpoint of size %d not stored after the newest of size %d", next.Size, prev.Size)
}

// Checkpoints implements auditlog.Store.
func (s *Store) Checkpoints(ctx context.Context, fn func([]byte) error) error {
	rows, err := s.pool.Query(ctx, s.q.cps)
	if err != nil {
		return fmt.Errorf("pgstore: checkpoints: %w", err)
	}
	defer rows.Close()
	var note []byte
	for rows.Next() {
		if err := rows.Scan(&note); err != nil {
			return fmt.Errorf("pgstore: checkpoints: %w", err)
		}
		if err := fn(note); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("pgstore: checkpoints: %w", err)
	}
	return nil
}

// LatestCheckpoint implements auditlog.LatestCheckpointer.
func (s *Store) LatestCheckpoint(ctx context.Context) ([]byte, error) {
	var note []byte
	err := s.pool.QueryRow(ctx, s.q.latestCP).Scan(&note)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pgstore: checkpoint: %w", err)
	}
	return note, nil
}

// Rekey implements auditlog.Store. It needs a connection as the tables'
// owner (Config.Role set to the migrator role): the application role may
// not rewrite rows, and the update trigger lets even the owner change
// nothing but the sealed payload and key id. All rows change in one
// transaction or none do.
func (s *Store) Rekey(ctx context.Context, rows []auditlog.Rekeyed) error {
	if len(rows) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, r := range rows {
		b.Queue(s.q.rekey, r.Payload, r.KeyID, int64(r.Seq), r.OldKeyID)
	}
	res := s.pool.SendBatch(ctx, b)
	var conflict error
	for _, r := range rows {
		tag, err := res.Exec()
		if err != nil {
			res.Close()
			return fmt.Errorf("pgstore: rekey row %d: %w", r.Seq, err)
		}
		if tag.RowsAffected() != 1 {
			conflict = fmt.Errorf("pgstore: rekey row %d: %w", r.Seq, auditlog.ErrConflict)
		}
	}
	if err := res.Close(); err != nil {
		return fmt.Errorf("pgstore: rekey: %w", err)
	}
	return conflict
}

// Close closes the pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

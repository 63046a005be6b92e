// Package pgstore is the identity domain's PostgreSQL store, for
// distributed mode: any number of identity replicas share one schema.
// Every compare-and-set the [store.Store] contract names is one
// transaction: usernames are claimed by a primary key that a trigger
// keeps forever, a refresh token rotates under a row lock, an assertion
// id is used once by a primary key, versioned records change with
// "UPDATE … WHERE version = $n".
//
// Run [Migrate] once as a privileged role; the runtime connects as the
// application role, which holds no DDL and may only read and insert
// usernames.
package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	auditpg "github.com/malai-sec/malai/auditlog/pgstore"
	"github.com/malai-sec/malai/examples/malai/identity/store"
)

// ErrInvalidConfig reports a missing or malformed Config field.
var ErrInvalidConfig = errors.New("pgstore: invalid config")

// maxScan bounds how many events one count reads per key (see
// boltstore).
const maxScan = 4096

// Config configures [New].
type Config struct {
	// DSN is the application role's connection string. Required.
	DSN string
	// Password, when set, supplies the password for every new connection
	// (a rotated credential is picked up without a restart).
	Password func(ctx context.Context) (string, error)
	// Schema holds the tables created by [Migrate]. Required.
	Schema string
	// AllowInsecureTLS accepts a DSN without sslmode=verify-full for a
	// non-local host. Loosening; off by default.
	AllowInsecureTLS bool
	// MaxConns caps the pool; default pgxpool's.
	MaxConns int32
}

// Store is the PostgreSQL [store.Store]. It is safe for concurrent use by
// many goroutines and many processes.
type Store struct {
	pool   *pgxpool.Pool
	n      tableNames
	closed atomic.Bool
}

var _ store.Store = (*Store)(nil)

type tableNames struct {
	usernames, users, sessions, refresh, events, keys, secrets, clientKeys, assertions string
}

func (n tableNames) list() []string {
	return []string{n.usernames, n.users, n.sessions, n.refresh, n.events, n.keys, n.secrets, n.clientKeys, n.assertions}
}

func names(schema string) tableNames {
	t := func(name string) string { return pgx.Identifier{schema, name}.Sanitize() }
	return tableNames{
		usernames: t("usernames"), users: t("users"), sessions: t("sessions"), refresh: t("refresh_tokens"),
		events: t("risk_events"), keys: t("signing_keys"), secrets: t("secrets"),
		clientKeys: t("client_keys"), assertions: t("client_assertions"),
	}
}

func validName(s string) bool {
	if s == "" || len(s) > 48 || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// New connects as the application role and checks that the tables are
// reachable. A DSN that does not verify the server is refused for a host
// that is not local.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.DSN == "" || !validName(cfg.Schema) {
		return nil, fmt.Errorf("%w: DSN and a lowercase Schema are required", ErrInvalidConfig)
	}
	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		// pgx errors can echo the DSN, password included: say less.
		return nil, fmt.Errorf("%w: DSN does not parse", ErrInvalidConfig)
	}
	if !cfg.AllowInsecureTLS {
		if err := auditpg.CheckTLS(pc.ConnConfig); err != nil {
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
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	s := &Store{pool: pool, n: names(cfg.Schema)}
	if _, err := s.SigningKeys(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the pool. It is idempotent.
func (s *Store) Close() error {
	if !s.closed.Swap(true) {
		s.pool.Close()
	}
	return nil
}

func (s *Store) wrap(err error) error {
	if err == nil {
		return nil
	}
	if s.closed.Load() {
		return store.ErrClosed
	}
	return fmt.Errorf("pgstore: %w", err)
}

func (s *Store) tx(ctx context.Context, f func(pgx.Tx) error) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return pgx.BeginFunc(ctx, s.pool, f)
}

// isUnique reports a unique-violation (23505) on the named constraint, or
// on any constraint when name is empty.
func isUnique(err error, name string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && (name == "" || pe.ConstraintName == name)
}

// --- users ---

// CreateUser implements [store.Store].
func (s *Store) CreateUser(ctx context.Context, u store.User) (store.User, error) {
	u.Version = 1
	doc, err := json.Marshal(u)
	if err != nil {
		return store.User{}, err
	}
	err = s.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO `+s.n.usernames+` (name_key, user_id) VALUES ($1, $2)
			ON CONFLICT (name_key) DO NOTHING`, u.NameKey, u.ID)
		if err != nil {
			if isUnique(err, "") {
				return store.ErrExists // the id, under another name
			}
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrUsernameTaken
		}
		_, err = tx.Exec(ctx, `INSERT INTO `+s.n.users+` (id, name_key, version, doc) VALUES ($1, $2, 1, $3)`, u.ID, u.NameKey, doc)
		return err
	})
	if errors.Is(err, store.ErrUsernameTaken) || errors.Is(err, store.ErrExists) {
		return store.User{}, err
	}
	if err != nil {
		return store.User{}, s.wrap(err)
	}
	return u, nil
}

func (s *Store) userWhere(ctx context.Context, where string, arg string) (store.User, bool, error) {
	if s.closed.Load() {
		return store.User{}, false, store.ErrClosed
	}
	var doc []byte
	var version int64
	err := s.pool.QueryRow(ctx, `SELECT doc, version FROM `+s.n.users+` WHERE `+where+` = $1`, arg).Scan(&doc, &version)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.User{}, false, nil
	}
	if err != nil {
		return store.User{}, false, s.wrap(err)
	}
	var u store.User
	if err := json.Unmarshal(doc, &u); err != nil {
		return store.User{}, false, fmt.Errorf("pgstore: corrupt user record: %w", err)
	}
	u.Version = version
	return u, true, nil
}

// UserByID implements [store.Store].
func (s *Store) UserByID(ctx context.Context, id string) (store.User, bool, error) {
	return s.userWhere(ctx, "id", id)
}

// UserByName implements [store.Store].
func (s *Store) UserByName(ctx context.Context, nameKey string) (store.User, bool, error) {
	return s.userWhere(ctx, "name_key", nameKey)
}

// UpdateUser implements [store.Store].
func (s *Store) UpdateUser(ctx context.Context, u store.User) (store.User, error) {
	if s.closed.Load() {
		return store.User{}, store.ErrClosed
	}
	prev := u.Version
	u.Version++
	doc, err := json.Marshal(u)
	if err != nil {
		return store.User{}, err
	}
	tag, err := s.pool.Exec(ctx, `UPDATE `+s.n.users+` SET doc = $1, version = version + 1
		WHERE id = $2 AND version = $3 AND name_key = $4`, doc, u.ID, prev, u.NameKey)
	if err != nil {
		return store.User{}, s.wrap(err)
	}
	if tag.RowsAffected() == 1 {
		return u, nil
	}
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+s.n.users+` WHERE id = $1)`, u.ID).Scan(&exists); err != nil {
		return store.User{}, s.wrap(err)
	}
	if !exists {
		return store.User{}, store.ErrNotFound
	}
	return store.User{}, store.ErrConflict
}

// DeleteUser implements [store.Store].
func (s *Store) DeleteUser(ctx context.Context, id string) error {
	var found bool
	err := s.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM `+s.n.users+` WHERE id = $1`, id)
		if err != nil {
			return err
		}
		found = tag.RowsAffected() == 1
		_, err = tx.Exec(ctx, `DELETE FROM `+s.n.sessions+` WHERE user_id = $1`, id)
		return err
	})
	if err != nil {
		return s.wrap(err)
	}
	if !found {
		return store.ErrNotFound
	}
	return nil
}

// --- sessions ---

func scanSession(row pgx.Row) (store.Session, error) {
	var doc []byte
	var revoked bool
	var current []byte
	var lastUsed time.Time
	if err := row.Scan(&doc, &revoked, &current, &lastUsed); err != nil {
		return store.Session{}, err
	}
	var sess store.Session
	if err := json.Unmarshal(doc, &sess); err != nil {
		return store.Session{}, fmt.Errorf("pgstore: corrupt session: %w", err)
	}
	if len(current) != len(sess.Current) {
		return store.Session{}, errors.New("pgstore: corrupt session digest")
	}
	sess.Revoked = revoked
	copy(sess.Current[:], current)
	sess.LastUsed = lastUsed
	return sess, nil
}

const sessionCols = `doc, revoked, current, last_used`

// CreateSession implements [store.Store].
func (s *Store) CreateSession(ctx context.Context, sess store.Session, max int) error {
	doc, err := json.Marshal(sess)
	if err != nil {
		return err
	}
	err = s.tx(ctx, func(tx pgx.Tx) error {
		// One user's sign-ins take turns, so eviction counts right.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, "malai.identity.sessions:"+sess.UserID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+s.n.sessions+` (id, user_id, created, last_used, revoked, current, doc)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, sess.ID, sess.UserID, sess.Created, sess.LastUsed, sess.Revoked, sess.Current[:], doc); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+s.n.refresh+` (digest, session_id) VALUES ($1, $2)`, sess.Current[:], sess.ID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM `+s.n.sessions+` WHERE id IN (
			SELECT id FROM `+s.n.sessions+` WHERE user_id = $1 AND NOT revoked
			ORDER BY created DESC, id DESC OFFSET $2)`, sess.UserID, max)
		return err
	})
	if isUnique(err, "") {
		return store.ErrExists
	}
	return s.wrap(err)
}

// RotateSession implements [store.Store].
func (s *Store) RotateSession(ctx context.Context, rot store.Rotation) (store.Session, error) {
	var out store.Session
	var verdict error
	err := s.tx(ctx, func(tx pgx.Tx) error {
		verdict = nil
		var sid string
		err := tx.QueryRow(ctx, `SELECT session_id FROM `+s.n.refresh+` WHERE digest = $1`, rot.Presented[:]).Scan(&sid)
		if errors.Is(err, pgx.ErrNoRows) {
			verdict = store.ErrNotFound
			return nil
		}
		if err != nil {
			return err
		}
		// The row lock makes concurrent rotations of one session take
		// turns; the loser then sees the rotated token.
		sess, err := scanSession(tx.QueryRow(ctx, `SELECT `+sessionCols+` FROM `+s.n.sessions+` WHERE id = $1 FOR UPDATE`, sid))
		if errors.Is(err, pgx.ErrNoRows) {
			verdict = store.ErrNotFound
			return nil
		}
		if err != nil {
			return err
		}
		out = sess
		if sess.Current != rot.Presented {
			out.Revoked = true
			verdict = store.ErrReused
			_, err := tx.Exec(ctx, `UPDATE `+s.n.sessions+` SET revoked = true WHERE id = $1`, sid)
			return err
		}
		if sess.Revoked || sess.Expired(rot.Now, rot.Idle, rot.MaxAge) {
			verdict = store.ErrExpired
			return nil
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+s.n.refresh+` (digest, session_id) VALUES ($1, $2)`, rot.Next[:], sid); err != nil {
			return err
		}
		out.Current, out.LastUsed = rot.Next, rot.Now
		_, err = tx.Exec(ctx, `UPDATE `+s.n.sessions+` SET current = $1, last_used = $2 WHERE id = $3`, rot.Next[:], rot.Now, sid)
		return err
	})
	if isUnique(err, "") {
		return store.Session{}, store.ErrExists
	}
	if err != nil {
		return store.Session{}, s.wrap(err)
	}
	return out, verdict
}

// Sessions implements [store.Store].
func (s *Store) Sessions(ctx context.Context, userID string) ([]store.Session, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	rows, err := s.pool.Query(ctx, `SELECT `+sessionCols+` FROM `+s.n.sessions+` WHERE user_id = $1 ORDER BY created, id`, userID)
	if err != nil {
		return nil, s.wrap(err)
	}
	defer rows.Close()
	var out []store.Session
	for rows.Next() {
		sess, err := scanSession(rows)
		if err != nil {
			return nil, s.wrap(err)
		}
		out = append(out, sess)
	}
	return out, s.wrap(rows.Err())
}

// RevokeSession implements [store.Store].
func (s *Store) RevokeSession(ctx context.Context, userID, sessionID string) (bool, error) {
	if s.closed.Load() {
		return false, store.ErrClosed
	}
	tag, err := s.pool.Exec(ctx, `UPDATE `+s.n.sessions+` SET revoked = true WHERE id = $1 AND user_id = $2 AND NOT revoked`, sessionID, userID)
	if err != nil {
		return false, s.wrap(err)
	}
	return tag.RowsAffected() == 1, nil
}

// RevokeSessionByToken implements [store.Store].
func (s *Store) RevokeSessionByToken(ctx context.Context, current store.Digest) (store.Session, bool, error) {
	if s.closed.Load() {
		return store.Session{}, false, store.ErrClosed
	}
	sess, err := scanSession(s.pool.QueryRow(ctx, `UPDATE `+s.n.sessions+` SET revoked = true
		WHERE current = $1 AND NOT revoked RETURNING `+sessionCols, current[:]))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Session{}, false, nil
	}
	if err != nil {
		return store.Session{}, false, s.wrap(err)
	}
	return sess, true, nil
}

// RevokeSessions implements [store.Store].
func (s *Store) RevokeSessions(ctx context.Context, userID, except string) (int, error) {
	if s.closed.Load() {
		return 0, store.ErrClosed
	}
	tag, err := s.pool.Exec(ctx, `UPDATE `+s.n.sessions+` SET revoked = true WHERE user_id = $1 AND id <> $2 AND NOT revoked`, userID, except)
	if err != nil {
		return 0, s.wrap(err)
	}
	return int(tag.RowsAffected()), nil
}

// --- risk events ---

// AddEvents implements [store.Store].
func (s *Store) AddEvents(ctx context.Context, events []store.Event) error {
	if len(events) == 0 {
		return nil
	}
	if s.closed.Load() {
		return store.ErrClosed
	}
	keys := make([]string, len(events))
	members := make([]string, len(events))
	ats := make([]time.Time, len(events))
	for i, e := range events {
		keys[i], members[i], ats[i] = e.Key, e.Member, e.At
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO `+s.n.events+` (key, member, at)
		SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])`, keys, members, ats)
	return s.wrap(err)
}

// CountEvents implements [store.Store].
func (s *Store) CountEvents(ctx context.Context, queries []store.Query) ([]store.Tally, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	if len(queries) == 0 {
		return nil, nil
	}
	keys := make([]string, len(queries))
	sinces := make([]time.Time, len(queries))
	for i, q := range queries {
		keys[i], sinces[i] = q.Key, q.Since
	}
	rows, err := s.pool.Query(ctx, `SELECT q.ord, t.n, t.m, t.last
		FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS q(key, since, ord)
		CROSS JOIN LATERAL (
			SELECT count(*) AS n, count(DISTINCT e.member) AS m, max(e.at) AS last
			FROM (SELECT member, at FROM `+s.n.events+` WHERE key = q.key AND at > q.since
				ORDER BY at DESC LIMIT `+fmt.Sprint(maxScan)+`) e) t`, keys, sinces)
	if err != nil {
		return nil, s.wrap(err)
	}
	defer rows.Close()
	out := make([]store.Tally, len(queries))
	for rows.Next() {
		var ord, n, m int64
		var last *time.Time
		if err := rows.Scan(&ord, &n, &m, &last); err != nil {
			return nil, s.wrap(err)
		}
		if ord < 1 || int(ord) > len(out) {
			return nil, errors.New("pgstore: count out of range")
		}
		t := store.Tally{Events: int(n), Members: int(m)}
		if last != nil {
			t.Last = *last
		}
		out[ord-1] = t
	}
	return out, s.wrap(rows.Err())
}

// ClearEvents implements [store.Store].
func (s *Store) ClearEvents(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	if s.closed.Load() {
		return store.ErrClosed
	}
	_, err := s.pool.Exec(ctx, `DELETE FROM `+s.n.events+` WHERE key = ANY($1)`, keys)
	return s.wrap(err)
}

// --- signing keys and secrets ---

// SigningKeys implements [store.Store].
func (s *Store) SigningKeys(ctx context.Context) (store.KeySet, error) {
	if s.closed.Load() {
		return store.KeySet{}, store.ErrClosed
	}
	var doc []byte
	var version int64
	err := s.pool.QueryRow(ctx, `SELECT doc, version FROM `+s.n.keys+` WHERE id = 1`).Scan(&doc, &version)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.KeySet{}, nil
	}
	if err != nil {
		return store.KeySet{}, s.wrap(err)
	}
	var ks store.KeySet
	if err := json.Unmarshal(doc, &ks); err != nil {
		return store.KeySet{}, fmt.Errorf("pgstore: corrupt key set: %w", err)
	}
	ks.Version = version
	return ks, nil
}

// SaveSigningKeys implements [store.Store].
func (s *Store) SaveSigningKeys(ctx context.Context, ks store.KeySet) (store.KeySet, error) {
	if s.closed.Load() {
		return store.KeySet{}, store.ErrClosed
	}
	prev := ks.Version
	ks.Version++
	doc, err := json.Marshal(ks)
	if err != nil {
		return store.KeySet{}, err
	}
	var tag pgconn.CommandTag
	if prev == 0 {
		tag, err = s.pool.Exec(ctx, `INSERT INTO `+s.n.keys+` (id, version, doc) VALUES (1, 1, $1) ON CONFLICT (id) DO NOTHING`, doc)
	} else {
		tag, err = s.pool.Exec(ctx, `UPDATE `+s.n.keys+` SET doc = $1, version = version + 1 WHERE id = 1 AND version = $2`, doc, prev)
	}
	if err != nil {
		return store.KeySet{}, s.wrap(err)
	}
	if tag.RowsAffected() != 1 {
		return store.KeySet{}, store.ErrConflict
	}
	return ks, nil
}

// Secret implements [store.Store].
func (s *Store) Secret(ctx context.Context, name string, fresh []byte) ([]byte, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	// Two statements: the SELECT takes a new snapshot, so it sees a value
	// a concurrent first writer committed while the INSERT waited.
	if _, err := s.pool.Exec(ctx, `INSERT INTO `+s.n.secrets+` (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, name, fresh); err != nil {
		return nil, s.wrap(err)
	}
	var out []byte
	if err := s.pool.QueryRow(ctx, `SELECT value FROM `+s.n.secrets+` WHERE name = $1`, name).Scan(&out); err != nil {
		return nil, s.wrap(err)
	}
	return out, nil
}

// --- clients ---

// AddClientKey implements [store.Store].
func (s *Store) AddClientKey(ctx context.Context, k store.ClientKey) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	doc, err := json.Marshal(k)
	if err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO `+s.n.clientKeys+` (client_id, kid, doc) VALUES ($1, $2, $3)
		ON CONFLICT (client_id, kid) DO NOTHING`, k.ClientID, k.KeyID, doc)
	if err != nil {
		return s.wrap(err)
	}
	if tag.RowsAffected() == 0 {
		return store.ErrExists
	}
	return nil
}

// ClientKeys implements [store.Store].
func (s *Store) ClientKeys(ctx context.Context, clientID string) ([]store.ClientKey, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	rows, err := s.pool.Query(ctx, `SELECT doc, revoked FROM `+s.n.clientKeys+` WHERE client_id = $1 ORDER BY kid`, clientID)
	if err != nil {
		return nil, s.wrap(err)
	}
	defer rows.Close()
	var out []store.ClientKey
	for rows.Next() {
		var doc []byte
		var revoked *time.Time
		if err := rows.Scan(&doc, &revoked); err != nil {
			return nil, s.wrap(err)
		}
		var k store.ClientKey
		if err := json.Unmarshal(doc, &k); err != nil {
			return nil, fmt.Errorf("pgstore: corrupt client key: %w", err)
		}
		k.Revoked = time.Time{}
		if revoked != nil {
			k.Revoked = *revoked
		}
		out = append(out, k)
	}
	return out, s.wrap(rows.Err())
}

// RevokeClientKeys implements [store.Store].
func (s *Store) RevokeClientKeys(ctx context.Context, clientID, kid string, at time.Time) (int, error) {
	if s.closed.Load() {
		return 0, store.ErrClosed
	}
	tag, err := s.pool.Exec(ctx, `UPDATE `+s.n.clientKeys+` SET revoked = $1
		WHERE client_id = $2 AND ($3 = '' OR kid = $3) AND revoked IS NULL`, at, clientID, kid)
	if err != nil {
		return 0, s.wrap(err)
	}
	return int(tag.RowsAffected()), nil
}

// UseAssertion implements [store.Store].
func (s *Store) UseAssertion(ctx context.Context, clientID, jti string, expires time.Time) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO `+s.n.assertions+` (client_id, jti, expires) VALUES ($1, $2, $3)
		ON CONFLICT (client_id, jti) DO NOTHING`, clientID, jti, expires)
	if err != nil {
		return s.wrap(err)
	}
	if tag.RowsAffected() == 0 {
		return store.ErrReplay
	}
	return nil
}

// --- housekeeping ---

// Prune implements [store.Store].
func (s *Store) Prune(ctx context.Context, p store.Prune) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM `+s.n.events+` WHERE at < $1`, p.EventsBefore); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM `+s.n.assertions+` WHERE expires < $1`, p.Now); err != nil {
			return err
		}
		if p.Idle <= 0 || p.MaxAge <= 0 {
			return nil
		}
		_, err := tx.Exec(ctx, `DELETE FROM `+s.n.sessions+` WHERE last_used <= $1 OR created <= $2`,
			p.Now.Add(-p.Idle), p.Now.Add(-p.MaxAge))
		return err
	})
	return s.wrap(err)
}

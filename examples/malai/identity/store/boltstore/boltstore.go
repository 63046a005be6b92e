// Package boltstore is the identity domain's embedded store: one bbolt
// file (a copy-on-write B+tree) under the data directory. Every write is
// one serialisable transaction, fsynced before it returns, so a crash
// loses nothing that was acknowledged and never leaves a half-applied
// change: there is no write-ahead log to replay, the previous root stays
// valid until the new one is durable.
//
// bbolt holds an exclusive lock on its file: one process at a time opens
// a data directory. Several identity replicas need the PostgreSQL store.
package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/malai-sec/malai/examples/malai/identity/store"
)

// Bucket names.
var (
	bUsers        = []byte("users")         // id → User JSON
	bUsernames    = []byte("usernames")     // name key → id, never deleted
	bSessions     = []byte("sessions")      // id → session record JSON
	bUserSessions = []byte("user_sessions") // userID 0 sessionID → ""
	bRefresh      = []byte("refresh")       // digest → session id
	bEvents       = []byte("events")        // len(key) key at seq → member
	bEventTimes   = []byte("event_times")   // at seq → events key
	bMeta         = []byte("meta")          // signing keys, secrets
	bClientKeys   = []byte("client_keys")   // len(client) client kid → ClientKey JSON
	bAssertions   = []byte("assertions")    // len(client) client jti → expiry
	bAssertTimes  = []byte("assert_times")  // expiry seq → assertions key
	allBuckets    = [][]byte{bUsers, bUsernames, bSessions, bUserSessions, bRefresh, bEvents, bEventTimes, bMeta, bClientKeys, bAssertions, bAssertTimes}
	keySigning    = []byte("signing_keys")
	secretPrefix  = "secret:"
)

// maxScan bounds how many events one count reads per key: the thresholds
// that use counts are far lower, so a saturated count decides the same.
const maxScan = 4096

// FileName is the database file inside the directory given to [Open].
const FileName = "identity.db"

// Store is a bbolt-backed [store.Store]. It is safe for concurrent use.
type Store struct {
	db     *bolt.DB
	closed atomic.Bool
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) dir/identity.db with mode 0600, waiting
// at most lockTimeout for another process to release it (0: 5 seconds).
func Open(dir string, lockTimeout time.Duration) (*Store, error) {
	if lockTimeout <= 0 {
		lockTimeout = 5 * time.Second
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("boltstore: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{Timeout: lockTimeout})
	if err != nil {
		return nil, fmt.Errorf("boltstore: open %s: %w", dir, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("boltstore: %w", err)
	}
	return &Store{db: db}, nil
}

// Close closes the file. It is idempotent.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.db.Close()
}

func (s *Store) update(ctx context.Context, f func(*bolt.Tx) error) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(f)
}

func (s *Store) view(ctx context.Context, f func(*bolt.Tx) error) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(f)
}

func getJSON(b *bolt.Bucket, k []byte, v any) (bool, error) {
	raw := b.Get(k)
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("boltstore: corrupt record: %w", err)
	}
	return true, nil
}

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, raw)
}

// lp returns a length-prefixed key part, so no value can forge another's
// prefix.
func lp(parts ...string) []byte {
	var out []byte
	for _, p := range parts {
		out = binary.BigEndian.AppendUint32(out, uint32(len(p)))
		out = append(out, p...)
	}
	return out
}

// --- users ---

// CreateUser implements [store.Store].
func (s *Store) CreateUser(ctx context.Context, u store.User) (store.User, error) {
	u.Version = 1
	err := s.update(ctx, func(tx *bolt.Tx) error {
		names := tx.Bucket(bUsernames)
		if names.Get([]byte(u.NameKey)) != nil {
			return store.ErrUsernameTaken
		}
		users := tx.Bucket(bUsers)
		if users.Get([]byte(u.ID)) != nil {
			return store.ErrExists
		}
		if err := names.Put([]byte(u.NameKey), []byte(u.ID)); err != nil {
			return err
		}
		return putJSON(users, []byte(u.ID), u)
	})
	if err != nil {
		return store.User{}, err
	}
	return u, nil
}

// UserByID implements [store.Store].
func (s *Store) UserByID(ctx context.Context, id string) (u store.User, ok bool, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		ok, err = getJSON(tx.Bucket(bUsers), []byte(id), &u)
		return err
	})
	return u, ok, err
}

// UserByName implements [store.Store].
func (s *Store) UserByName(ctx context.Context, nameKey string) (u store.User, ok bool, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		id := tx.Bucket(bUsernames).Get([]byte(nameKey))
		if id == nil {
			return nil
		}
		ok, err = getJSON(tx.Bucket(bUsers), id, &u)
		return err
	})
	return u, ok, err
}

// UpdateUser implements [store.Store].
func (s *Store) UpdateUser(ctx context.Context, u store.User) (store.User, error) {
	err := s.update(ctx, func(tx *bolt.Tx) error {
		users := tx.Bucket(bUsers)
		var cur store.User
		ok, err := getJSON(users, []byte(u.ID), &cur)
		if err != nil {
			return err
		}
		if !ok {
			return store.ErrNotFound
		}
		if cur.Version != u.Version || cur.NameKey != u.NameKey {
			return store.ErrConflict
		}
		u.Version++
		return putJSON(users, []byte(u.ID), u)
	})
	if err != nil {
		return store.User{}, err
	}
	return u, nil
}

// DeleteUser implements [store.Store].
func (s *Store) DeleteUser(ctx context.Context, id string) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		users := tx.Bucket(bUsers)
		if users.Get([]byte(id)) == nil {
			return store.ErrNotFound
		}
		if err := users.Delete([]byte(id)); err != nil {
			return err
		}
		ids, err := userSessionIDs(tx, id)
		if err != nil {
			return err
		}
		for _, sid := range ids {
			if err := dropSession(tx, sid); err != nil {
				return err
			}
		}
		return nil
	})
}

// --- sessions ---

// record is a session with the digests of its rotated tokens.
type record struct {
	store.Session
	Used []store.Digest `json:"used,omitempty"`
}

func userSessionKey(userID, sessionID string) []byte { return lp(userID, sessionID) }

func userSessionIDs(tx *bolt.Tx, userID string) ([]string, error) {
	prefix := lp(userID)
	c := tx.Bucket(bUserSessions).Cursor()
	var ids []string
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		rest := k[len(prefix):]
		if len(rest) < 4 {
			return nil, errors.New("boltstore: corrupt session index")
		}
		ids = append(ids, string(rest[4:]))
	}
	return ids, nil
}

func loadSession(tx *bolt.Tx, id string) (record, bool, error) {
	var r record
	ok, err := getJSON(tx.Bucket(bSessions), []byte(id), &r)
	return r, ok, err
}

func dropSession(tx *bolt.Tx, id string) error {
	r, ok, err := loadSession(tx, id)
	if err != nil || !ok {
		return err
	}
	refresh := tx.Bucket(bRefresh)
	for _, d := range append(slices.Clone(r.Used), r.Current) {
		if err := refresh.Delete(d[:]); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bUserSessions).Delete(userSessionKey(r.UserID, id)); err != nil {
		return err
	}
	return tx.Bucket(bSessions).Delete([]byte(id))
}

// CreateSession implements [store.Store].
func (s *Store) CreateSession(ctx context.Context, sess store.Session, max int) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		if tx.Bucket(bSessions).Get([]byte(sess.ID)) != nil {
			return store.ErrExists
		}
		if tx.Bucket(bRefresh).Get(sess.Current[:]) != nil {
			return store.ErrExists
		}
		if err := putJSON(tx.Bucket(bSessions), []byte(sess.ID), record{Session: sess}); err != nil {
			return err
		}
		if err := tx.Bucket(bRefresh).Put(sess.Current[:], []byte(sess.ID)); err != nil {
			return err
		}
		if err := tx.Bucket(bUserSessions).Put(userSessionKey(sess.UserID, sess.ID), nil); err != nil {
			return err
		}
		return evict(tx, sess.UserID, max)
	})
}

// evict drops the oldest live sessions beyond max.
func evict(tx *bolt.Tx, userID string, max int) error {
	ids, err := userSessionIDs(tx, userID)
	if err != nil {
		return err
	}
	var live []store.Session
	for _, id := range ids {
		r, ok, err := loadSession(tx, id)
		if err != nil {
			return err
		}
		if ok && !r.Revoked {
			live = append(live, r.Session)
		}
	}
	if len(live) <= max {
		return nil
	}
	slices.SortFunc(live, func(a, b store.Session) int { return a.Created.Compare(b.Created) })
	for _, old := range live[:len(live)-max] {
		if err := dropSession(tx, old.ID); err != nil {
			return err
		}
	}
	return nil
}

// RotateSession implements [store.Store].
func (s *Store) RotateSession(ctx context.Context, rot store.Rotation) (store.Session, error) {
	var out store.Session
	var reused bool
	err := s.update(ctx, func(tx *bolt.Tx) error {
		refresh := tx.Bucket(bRefresh)
		sid := refresh.Get(rot.Presented[:])
		if sid == nil {
			return store.ErrNotFound
		}
		r, ok, err := loadSession(tx, string(sid))
		if err != nil {
			return err
		}
		if !ok {
			return store.ErrNotFound
		}
		if r.Current != rot.Presented {
			// A rotated token: someone else holds the chain. Revoke and
			// commit that, then report it.
			r.Revoked = true
			out, reused = r.Session, true
			return putJSON(tx.Bucket(bSessions), sid, r)
		}
		if r.Revoked || r.Expired(rot.Now, rot.Idle, rot.MaxAge) {
			out = r.Session
			return store.ErrExpired
		}
		if refresh.Get(rot.Next[:]) != nil {
			return store.ErrExists
		}
		r.Used = append(r.Used, r.Current)
		r.Current = rot.Next
		r.LastUsed = rot.Now
		if err := refresh.Put(rot.Next[:], sid); err != nil {
			return err
		}
		out = r.Session
		return putJSON(tx.Bucket(bSessions), sid, r)
	})
	if err == nil && reused {
		return out, store.ErrReused
	}
	return out, err
}

// Sessions implements [store.Store].
func (s *Store) Sessions(ctx context.Context, userID string) ([]store.Session, error) {
	var out []store.Session
	err := s.view(ctx, func(tx *bolt.Tx) error {
		ids, err := userSessionIDs(tx, userID)
		if err != nil {
			return err
		}
		for _, id := range ids {
			r, ok, err := loadSession(tx, id)
			if err != nil {
				return err
			}
			if ok {
				out = append(out, r.Session)
			}
		}
		return nil
	})
	slices.SortStableFunc(out, func(a, b store.Session) int { return a.Created.Compare(b.Created) })
	return out, err
}

// RevokeSession implements [store.Store].
func (s *Store) RevokeSession(ctx context.Context, userID, sessionID string) (bool, error) {
	var done bool
	err := s.update(ctx, func(tx *bolt.Tx) error {
		r, ok, err := loadSession(tx, sessionID)
		if err != nil || !ok || r.UserID != userID || r.Revoked {
			return err
		}
		r.Revoked, done = true, true
		return putJSON(tx.Bucket(bSessions), []byte(sessionID), r)
	})
	return done, err
}

// RevokeSessionByToken implements [store.Store].
func (s *Store) RevokeSessionByToken(ctx context.Context, current store.Digest) (store.Session, bool, error) {
	var out store.Session
	var done bool
	err := s.update(ctx, func(tx *bolt.Tx) error {
		sid := tx.Bucket(bRefresh).Get(current[:])
		if sid == nil {
			return nil
		}
		r, ok, err := loadSession(tx, string(sid))
		if err != nil || !ok || r.Current != current || r.Revoked {
			return err
		}
		r.Revoked, done = true, true
		out = r.Session
		return putJSON(tx.Bucket(bSessions), sid, r)
	})
	return out, done, err
}

// RevokeSessions implements [store.Store].
func (s *Store) RevokeSessions(ctx context.Context, userID, except string) (int, error) {
	n := 0
	err := s.update(ctx, func(tx *bolt.Tx) error {
		n = 0
		ids, err := userSessionIDs(tx, userID)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if id == except {
				continue
			}
			r, ok, err := loadSession(tx, id)
			if err != nil {
				return err
			}
			if !ok || r.Revoked {
				continue
			}
			r.Revoked = true
			n++
			if err := putJSON(tx.Bucket(bSessions), []byte(id), r); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// --- risk events ---

// AddEvents implements [store.Store].
func (s *Store) AddEvents(ctx context.Context, events []store.Event) error {
	if len(events) == 0 {
		return nil
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		eb, tb := tx.Bucket(bEvents), tx.Bucket(bEventTimes)
		for _, e := range events {
			seq, err := eb.NextSequence()
			if err != nil {
				return err
			}
			suffix := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(e.At.UnixNano())), seq)
			k := append(lp(e.Key), suffix...)
			if err := eb.Put(k, []byte(e.Member)); err != nil {
				return err
			}
			if err := tb.Put(suffix, k); err != nil {
				return err
			}
		}
		return nil
	})
}

// CountEvents implements [store.Store].
func (s *Store) CountEvents(ctx context.Context, queries []store.Query) ([]store.Tally, error) {
	out := make([]store.Tally, len(queries))
	err := s.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(bEvents).Cursor()
		for i, q := range queries {
			prefix := lp(q.Key)
			since := uint64(q.Since.UnixNano())
			members := map[string]struct{}{}
			t := &out[i]
			// Walk back from the newest event of the key.
			end := append(slices.Clone(prefix), bytes.Repeat([]byte{0xff}, 16)...)
			k, _ := c.Seek(end)
			var v []byte
			if k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev()
			}
			for ; k != nil && bytes.HasPrefix(k, prefix) && t.Events < maxScan; k, v = c.Prev() {
				rest := k[len(prefix):]
				if len(rest) != 16 {
					return errors.New("boltstore: corrupt event key")
				}
				at := binary.BigEndian.Uint64(rest)
				if at <= since {
					break
				}
				if t.Events == 0 {
					t.Last = time.Unix(0, int64(at))
				}
				t.Events++
				members[string(v)] = struct{}{}
			}
			t.Members = len(members)
		}
		return nil
	})
	return out, err
}

// ClearEvents implements [store.Store].
func (s *Store) ClearEvents(ctx context.Context, keys []string) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		eb, tb := tx.Bucket(bEvents), tx.Bucket(bEventTimes)
		for _, key := range keys {
			prefix := lp(key)
			c := eb.Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
				if err := tb.Delete(k[len(prefix):]); err != nil {
					return err
				}
				if err := eb.Delete(k); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// --- signing keys and secrets ---

// SigningKeys implements [store.Store].
func (s *Store) SigningKeys(ctx context.Context) (store.KeySet, error) {
	var ks store.KeySet
	err := s.view(ctx, func(tx *bolt.Tx) error {
		_, err := getJSON(tx.Bucket(bMeta), keySigning, &ks)
		return err
	})
	return ks, err
}

// SaveSigningKeys implements [store.Store].
func (s *Store) SaveSigningKeys(ctx context.Context, ks store.KeySet) (store.KeySet, error) {
	err := s.update(ctx, func(tx *bolt.Tx) error {
		var cur store.KeySet
		if _, err := getJSON(tx.Bucket(bMeta), keySigning, &cur); err != nil {
			return err
		}
		if cur.Version != ks.Version {
			return store.ErrConflict
		}
		ks.Version++
		return putJSON(tx.Bucket(bMeta), keySigning, ks)
	})
	if err != nil {
		return store.KeySet{}, err
	}
	return ks, nil
}

// Secret implements [store.Store].
func (s *Store) Secret(ctx context.Context, name string, fresh []byte) ([]byte, error) {
	var out []byte
	err := s.update(ctx, func(tx *bolt.Tx) error {
		k := []byte(secretPrefix + name)
		if v := tx.Bucket(bMeta).Get(k); v != nil {
			out = slices.Clone(v)
			return nil
		}
		out = slices.Clone(fresh)
		return tx.Bucket(bMeta).Put(k, out)
	})
	return out, err
}

// --- clients ---

// AddClientKey implements [store.Store].
func (s *Store) AddClientKey(ctx context.Context, k store.ClientKey) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bClientKeys)
		key := lp(k.ClientID, k.KeyID)
		if b.Get(key) != nil {
			return store.ErrExists
		}
		return putJSON(b, key, k)
	})
}

// ClientKeys implements [store.Store].
func (s *Store) ClientKeys(ctx context.Context, clientID string) ([]store.ClientKey, error) {
	var out []store.ClientKey
	err := s.view(ctx, func(tx *bolt.Tx) error {
		prefix := lp(clientID)
		c := tx.Bucket(bClientKeys).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var ck store.ClientKey
			if err := json.Unmarshal(v, &ck); err != nil {
				return fmt.Errorf("boltstore: corrupt client key: %w", err)
			}
			out = append(out, ck)
		}
		return nil
	})
	return out, err
}

// RevokeClientKeys implements [store.Store].
func (s *Store) RevokeClientKeys(ctx context.Context, clientID, kid string, at time.Time) (int, error) {
	n := 0
	err := s.update(ctx, func(tx *bolt.Tx) error {
		n = 0
		b := tx.Bucket(bClientKeys)
		prefix := lp(clientID)
		c := b.Cursor()
		var changed []store.ClientKey
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var ck store.ClientKey
			if err := json.Unmarshal(v, &ck); err != nil {
				return fmt.Errorf("boltstore: corrupt client key: %w", err)
			}
			if (kid == "" || ck.KeyID == kid) && ck.Revoked.IsZero() {
				ck.Revoked = at
				changed = append(changed, ck)
			}
		}
		for _, ck := range changed {
			if err := putJSON(b, lp(ck.ClientID, ck.KeyID), ck); err != nil {
				return err
			}
		}
		n = len(changed)
		return nil
	})
	return n, err
}

// UseAssertion implements [store.Store].
func (s *Store) UseAssertion(ctx context.Context, clientID, jti string, expires time.Time) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bAssertions)
		key := lp(clientID, jti)
		if b.Get(key) != nil {
			return store.ErrReplay
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		t := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(expires.UnixNano())), seq)
		if err := b.Put(key, t); err != nil {
			return err
		}
		return tx.Bucket(bAssertTimes).Put(t, key)
	})
}

// --- housekeeping ---

// Prune implements [store.Store].
func (s *Store) Prune(ctx context.Context, p store.Prune) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		if err := pruneByTime(tx.Bucket(bEventTimes), tx.Bucket(bEvents), p.EventsBefore); err != nil {
			return err
		}
		if err := pruneByTime(tx.Bucket(bAssertTimes), tx.Bucket(bAssertions), p.Now); err != nil {
			return err
		}
		if p.Idle <= 0 || p.MaxAge <= 0 {
			return nil
		}
		var expired []string
		err := tx.Bucket(bSessions).ForEach(func(k, v []byte) error {
			var r record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("boltstore: corrupt session: %w", err)
			}
			if r.Expired(p.Now, p.Idle, p.MaxAge) {
				expired = append(expired, string(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, id := range expired {
			if err := dropSession(tx, id); err != nil {
				return err
			}
		}
		return nil
	})
}

// pruneByTime deletes, oldest first, the entries of a time index whose
// time (its first 8 bytes) is before t, and the primary rows they name.
func pruneByTime(index, primary *bolt.Bucket, t time.Time) error {
	limit := uint64(t.UnixNano())
	c := index.Cursor()
	for k, v := c.First(); k != nil; k, v = c.First() {
		if len(k) < 8 || binary.BigEndian.Uint64(k) >= limit {
			return nil
		}
		if err := primary.Delete(v); err != nil {
			return err
		}
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// Package store defines where the identity domain keeps its state: the
// [Store] interface, the records it holds, and the errors every
// implementation returns. Two implementations sit beside it and pass the
// one conformance suite in package storetest:
//
//   - boltstore, the embedded default: one bbolt file under the data
//     directory, every write an fsynced transaction.
//   - pgstore, for distributed mode: PostgreSQL, every replica of the
//     identity component sharing one schema.
//
// The store is deliberately dumb about security decisions: it keeps what
// it is given and performs the few compare-and-set steps that must be
// atomic across replicas (a username is claimed once, a refresh token
// rotates once, an assertion id is used once, a record changes only from
// the version it was read at). Secrets arrive already sealed or hashed:
// password hashes, sealed TOTP secrets and private keys, SHA-256 digests of
// refresh tokens and recovery codes. A leaked store therefore holds no
// password, code or key in the clear.
package store

import (
	"context"
	"encoding/base64"
	"errors"
	"time"
)

// Errors returned by every implementation (possibly wrapped).
var (
	// ErrNotFound: no such record.
	ErrNotFound = errors.New("store: not found")
	// ErrUsernameTaken: the username was registered before, by anyone,
	// even if that account has since been deleted.
	ErrUsernameTaken = errors.New("store: username taken")
	// ErrExists: a record with this identifier already exists (a user id,
	// a client key id).
	ErrExists = errors.New("store: already exists")
	// ErrConflict: the record changed since it was read (its Version).
	ErrConflict = errors.New("store: record changed concurrently")
	// ErrReused: a refresh token that was already rotated was presented;
	// its session is now revoked.
	ErrReused = errors.New("store: refresh token reused")
	// ErrExpired: the session is past its idle or absolute lifetime, or
	// revoked.
	ErrExpired = errors.New("store: session expired or revoked")
	// ErrReplay: the client assertion id was used before.
	ErrReplay = errors.New("store: assertion replayed")
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("store: closed")
)

// Digest is a SHA-256 digest (refresh tokens, recovery codes). It
// encodes as unpadded base64url text.
type Digest [32]byte

// MarshalText implements encoding.TextMarshaler.
func (d Digest) MarshalText() ([]byte, error) {
	return base64.RawURLEncoding.AppendEncode(nil, d[:]), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Digest) UnmarshalText(b []byte) error {
	var out [32]byte
	if len(b) != base64.RawURLEncoding.EncodedLen(len(out)) {
		return errors.New("store: malformed digest")
	}
	n, err := base64.RawURLEncoding.Strict().Decode(out[:], b)
	if err != nil || n != len(out) {
		return errors.New("store: malformed digest")
	}
	*d = out
	return nil
}

// Seen is something remembered with the last time it was seen (a network
// an account signed in from, a device).
type Seen struct {
	Key string    `json:"key"`
	At  time.Time `json:"at"`
}

// User is one account. ID is its stable opaque subject. NameKey is the
// caller's index of the username (a keyed digest, so the store holds no
// username in the clear) and is unique forever; Name is the username
// sealed by the caller, for display.
type User struct {
	ID              string    `json:"id"`
	NameKey         string    `json:"name_key"`
	Name            []byte    `json:"name"`
	PasswordHash    string    `json:"password_hash"`
	MustReset       bool      `json:"must_reset,omitempty"`
	Roles           []string  `json:"roles,omitempty"`
	Created         time.Time `json:"created"`
	PasswordChanged time.Time `json:"password_changed"`
	// TOTP is the sealed secret of a confirmed enrolment, nil when none.
	TOTP []byte `json:"totp,omitempty"`
	// TOTPPending is the sealed secret of an enrolment not yet confirmed,
	// started at TOTPPendingAt by session TOTPPendingSession.
	TOTPPending        []byte    `json:"totp_pending,omitempty"`
	TOTPPendingAt      time.Time `json:"totp_pending_at"`
	TOTPPendingSession string    `json:"totp_pending_session,omitempty"`
	// TOTPLastStep is the last TOTP time step accepted (replay refusal).
	TOTPLastStep uint64   `json:"totp_last_step,omitempty"`
	Recovery     []Digest `json:"recovery,omitempty"`
	// Networks and Devices the account signed in from, newest last (as
	// keyed digests: membership is all the caller asks).
	Networks []Seen `json:"networks,omitempty"`
	Devices  []Seen `json:"devices,omitempty"`
	// Version is set by the store: UpdateUser succeeds only when it equals
	// the stored version.
	Version int64 `json:"version"`
}

// Session is one refresh session (a family of refresh tokens descending
// from one sign-in). Only Current is valid; a rotated token is remembered
// so that presenting it again revokes the session.
type Session struct {
	ID       string    `json:"id"`
	UserID   string    `json:"user_id"`
	AMR      []string  `json:"amr"`
	AuthTime time.Time `json:"auth_time"`
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"last_used"`
	Current  Digest    `json:"current"`
	Revoked  bool      `json:"revoked,omitempty"`
	// Client describes where the session was started (network, user
	// agent), sealed by the caller.
	Client   []byte `json:"client,omitempty"`
	DeviceID string `json:"device_id,omitempty"`
}

// Expired reports whether s is past its idle or absolute lifetime at now.
func (s Session) Expired(now time.Time, idle, maxAge time.Duration) bool {
	return now.Sub(s.LastUsed) >= idle || now.Sub(s.Created) >= maxAge
}

// Rotation asks to exchange the refresh token whose digest is Presented
// for Next, atomically, at Now, for a session within Idle and MaxAge.
type Rotation struct {
	Presented, Next Digest
	Now             time.Time
	Idle, MaxAge    time.Duration
}

// Event is one risk observation: a failed sign-in or code under Key, with
// Member counted for distinct-member signals (the account under a network
// key, the network under an account key).
type Event struct {
	Key    string
	Member string
	At     time.Time
}

// Query asks for the events under Key after Since.
type Query struct {
	Key   string
	Since time.Time
}

// Tally answers a [Query].
type Tally struct {
	Events  int       // events after Since
	Members int       // distinct members among them
	Last    time.Time // the newest one; zero when none
}

// SigningKey is one token-signing key. Private is sealed by the caller.
type SigningKey struct {
	ID      string    `json:"id"`
	Private []byte    `json:"private"`
	Public  []byte    `json:"public"` // the public JWK, JSON
	Created time.Time `json:"created"`
	// Activated is when the key began signing; zero for the next key,
	// which is published before it signs.
	Activated time.Time `json:"activated"`
	// Retired is when it stopped signing; zero while it signs.
	Retired time.Time `json:"retired"`
	// PublishUntil is when it leaves the JWKS: after every token it
	// signed has expired.
	PublishUntil time.Time `json:"publish_until"`
}

// KeySet is the whole signing-key state, replaced as one record.
type KeySet struct {
	Keys []SigningKey `json:"keys"`
	// Request is the newest numbered rotation request the set has
	// answered (an operator's on-demand rotation; see
	// signkeys.Keys.RotateOnce); zero for none.
	Request uint64 `json:"request,omitempty"`
	// Version is set by the store; SaveSigningKeys succeeds only when it
	// equals the stored version (0 when none is stored).
	Version int64 `json:"version"`
}

// ClientKey is one public key a component registered for private_key_jwt.
type ClientKey struct {
	ClientID   string    `json:"client_id"`
	KeyID      string    `json:"kid"`
	JWK        []byte    `json:"jwk"`
	Registered time.Time `json:"registered"`
	Expires    time.Time `json:"expires"`
	// Revoked is when an operator revoked it; zero while valid.
	Revoked time.Time `json:"revoked"`
}

// Prune names what may be forgotten: risk events before EventsBefore;
// sessions past Idle or MaxAge at Now (revoked ones included, which is
// why a revoked session is kept until then: its tokens' reuse is still
// recognised); assertion ids whose expiry is before Now.
type Prune struct {
	EventsBefore time.Time
	Now          time.Time
	Idle, MaxAge time.Duration
}

// Store is the identity domain's state. Implementations are safe for
// concurrent use, by several processes when the engine allows it, and
// make every successful write durable before returning.
type Store interface {
	// CreateUser stores a new account. It fails with ErrUsernameTaken if
	// its NameKey was ever registered, ErrExists if the id is in use.
	CreateUser(ctx context.Context, u User) (User, error)
	// UserByID and UserByName (by NameKey) return (zero, false, nil)
	// when absent.
	UserByID(ctx context.Context, id string) (User, bool, error)
	UserByName(ctx context.Context, nameKey string) (User, bool, error)
	// UpdateUser replaces the account if its stored Version equals
	// u.Version, and returns it with the new Version; ErrConflict
	// otherwise, ErrNotFound when deleted.
	UpdateUser(ctx context.Context, u User) (User, error)
	// DeleteUser removes the account and its sessions. The username stays
	// reserved forever.
	DeleteUser(ctx context.Context, id string) error

	// CreateSession stores a new session; when the user then has more
	// than max live sessions the oldest are dropped.
	CreateSession(ctx context.Context, s Session, max int) error
	// RotateSession exchanges a refresh token atomically: exactly one of
	// any number of concurrent calls presenting the same current token
	// succeeds. A token rotated before revokes its session (ErrReused,
	// with the session); an unknown token is ErrNotFound; a session past
	// its lifetime or revoked is ErrExpired.
	RotateSession(ctx context.Context, r Rotation) (Session, error)
	// Sessions lists the user's sessions, revoked ones included, oldest
	// first.
	Sessions(ctx context.Context, userID string) ([]Session, error)
	// RevokeSession revokes one of the user's sessions; false when the
	// user has no such session or it was already revoked.
	RevokeSession(ctx context.Context, userID, sessionID string) (bool, error)
	// RevokeSessionByToken revokes the session whose current token has
	// this digest (sign-out).
	RevokeSessionByToken(ctx context.Context, current Digest) (Session, bool, error)
	// RevokeSessions revokes every session of the user except the one
	// with id except, and returns how many it revoked.
	RevokeSessions(ctx context.Context, userID, except string) (int, error)

	// AddEvents records risk events.
	AddEvents(ctx context.Context, events []Event) error
	// CountEvents answers each query, in order.
	CountEvents(ctx context.Context, queries []Query) ([]Tally, error)
	// ClearEvents forgets every event under the keys.
	ClearEvents(ctx context.Context, keys []string) error

	// SigningKeys returns the key set (Version 0 and no keys when none
	// was saved).
	SigningKeys(ctx context.Context) (KeySet, error)
	// SaveSigningKeys replaces the key set if its stored Version equals
	// ks.Version and returns it with the new Version; ErrConflict
	// otherwise.
	SaveSigningKeys(ctx context.Context, ks KeySet) (KeySet, error)

	// AddClientKey registers a component's public key; ErrExists when the
	// client already has this key id.
	AddClientKey(ctx context.Context, k ClientKey) error
	// ClientKeys lists the client's keys, revoked and expired included.
	ClientKeys(ctx context.Context, clientID string) ([]ClientKey, error)
	// RevokeClientKeys revokes the client's key kid, or every key of the
	// client when kid is empty, at the given time, and returns how many
	// keys it revoked.
	RevokeClientKeys(ctx context.Context, clientID, kid string, at time.Time) (int, error)
	// UseAssertion records a client assertion id until expires; a second
	// use of the same (client, jti) before then is ErrReplay.
	UseAssertion(ctx context.Context, clientID, jti string, expires time.Time) error

	// Secret returns the value stored under name, storing fresh first
	// when there is none, so every replica ends up with the same value.
	Secret(ctx context.Context, name string, fresh []byte) ([]byte, error)

	// Prune forgets what p names.
	Prune(ctx context.Context, p Prune) error
	// Close releases the store. It is idempotent.
	Close() error
}

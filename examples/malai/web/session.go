package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/malai-sec/malai/examples/malai/web/internal/sessionstore"
	"github.com/malai-sec/malai/keyring"
)

// lockTTL bounds how long one request may hold a session's lease (a token
// refresh runs under it); lockWait is how long another waits for it.
const (
	lockTTL  = 15 * time.Second
	lockWait = 10 * time.Second
	// touchEvery: the idle clock is written at most this often, so a page
	// view is not a store write every time.
	touchEvery = time.Minute
	// maxJobs and maxFlash bound what a session record carries.
	maxJobs  = 10
	maxFlash = 4
)

var (
	errNoSession  = errors.New("web: no session")
	errSignedOut  = errors.New("web: signed out")
	errUnavailble = errors.New("web: session store unavailable")
)

// session is the server-side state behind one cookie. It is sealed with
// the key ring before it reaches the store.
type session struct {
	Created  time.Time `json:"created"`
	LastSeen time.Time `json:"seen"`
	CSRF     string    `json:"csrf"`

	// Signed-in state. The tokens never leave the server.
	User      string    `json:"user,omitempty"`
	SignedIn  time.Time `json:"signed_in,omitzero"`
	Access    string    `json:"access,omitempty"`
	AccessExp time.Time `json:"access_exp,omitzero"`
	Refresh   string    `json:"refresh,omitempty"`
	MFA       bool      `json:"mfa,omitempty"`

	// Pending is a sign-in waiting for its second factor.
	Pending *pendingMFA `json:"pending,omitempty"`
	// Enrol is a TOTP enrolment waiting for its confirmation code.
	Enrol *enrolment `json:"enrol,omitempty"`

	Flash []flash `json:"flash,omitempty"`
	Jobs  []job   `json:"jobs,omitempty"`
}

// pendingMFA is a sign-in whose password was right, waiting for its
// second factor: identity's one-use mfa_token, never the password.
type pendingMFA struct {
	User    string    `json:"user"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

type enrolment struct {
	Secret string `json:"secret"`
	URL    string `json:"url"`
}

type flash struct {
	Kind string `json:"kind"` // "ok" or "error"
	Text string `json:"text"`
}

type job struct {
	ID       string    `json:"id"`
	Location string    `json:"location,omitempty"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Amount   int64     `json:"amount"`
	Queued   time.Time `json:"queued"`
}

func (s *session) signedIn() bool { return s.User != "" && s.Refresh != "" }

func (s *session) addFlash(kind, text string) {
	s.Flash = append(s.Flash, flash{kind, text})
	if len(s.Flash) > maxFlash {
		s.Flash = s.Flash[len(s.Flash)-maxFlash:]
	}
}

// sessions loads, seals and stores session records.
type sessions struct {
	store          sessionstore.Store
	ring           *keyring.Ring
	now            func() time.Time
	idle, absolute time.Duration
	log            *slog.Logger
}

// handle is one request's view of its session: the cookie's id, the
// store key derived from it, and the record as loaded.
type handle struct {
	id   string // cookie value (256 random bits, base64url)
	key  string // hex SHA-256 of id: a store dump holds no usable cookie
	sess *session
}

func newID() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func storeKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// cookieID returns the session cookie's value when exactly one well-formed
// cookie is present.
func cookieID(r *http.Request) (string, bool) {
	cs := r.CookiesNamed(CookieName)
	if len(cs) != 1 || len(cs[0].Value) != 43 {
		return "", false
	}
	if _, err := base64.RawURLEncoding.DecodeString(cs[0].Value); err != nil {
		return "", false
	}
	return cs[0].Value, true
}

func (m *sessions) cookie(id string) *http.Cookie {
	return &http.Cookie{Name: CookieName, Value: id, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode}
}

func (m *sessions) clearCookie() *http.Cookie {
	c := m.cookie("")
	c.MaxAge = -1
	return c
}

// expired reports whether s has passed its idle or absolute timeout.
func (m *sessions) expired(s *session, now time.Time) bool {
	abs, idle := m.absolute, m.idle
	if !s.signedIn() {
		abs, idle = AnonymousTimeout, AnonymousTimeout
	}
	return now.Sub(s.LastSeen) >= idle || now.Sub(s.Created) >= abs
}

// ttl is how long the store keeps s: until the first timeout that can end
// it, so an idle record disappears by itself.
func (m *sessions) ttl(s *session, now time.Time) time.Duration {
	abs, idle := m.absolute, m.idle
	if !s.signedIn() {
		abs, idle = AnonymousTimeout, AnonymousTimeout
	}
	return max(min(idle, abs-now.Sub(s.Created)), time.Second)
}

// load reads the record for id. A missing, expired or unreadable record
// is errNoSession (an unreadable one is also deleted and logged).
func (m *sessions) load(ctx context.Context, id string) (*handle, error) {
	h := &handle{id: id, key: storeKey(id)}
	raw, ok, err := m.store.Get(ctx, h.key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUnavailble, err)
	}
	if !ok {
		return nil, errNoSession
	}
	plain, _, err := m.ring.Open(nil, raw, []byte(h.key))
	if err == nil {
		h.sess = new(session)
		err = json.Unmarshal(plain, h.sess)
	}
	if err != nil {
		m.log.LogAttrs(ctx, slog.LevelWarn, "web: unreadable session record dropped", slog.String("error", err.Error()))
		_ = m.store.Delete(ctx, h.key)
		return nil, errNoSession
	}
	if m.expired(h.sess, m.now()) {
		_ = m.store.Delete(ctx, h.key)
		return nil, errNoSession
	}
	return h, nil
}

func (m *sessions) save(ctx context.Context, h *handle) error {
	b, err := json.Marshal(h.sess)
	if err != nil {
		return err
	}
	rec, err := m.ring.Seal(nil, b, []byte(h.key))
	if err != nil {
		return err
	}
	if err := m.store.Set(ctx, h.key, rec, m.ttl(h.sess, m.now())); err != nil {
		return fmt.Errorf("%w: %w", errUnavailble, err)
	}
	return nil
}

// create starts a new anonymous session and sets its cookie.
func (m *sessions) create(ctx context.Context, w http.ResponseWriter) (*handle, error) {
	id, err := newID()
	if err != nil {
		return nil, err
	}
	csrf, err := newID()
	if err != nil {
		return nil, err
	}
	now := m.now()
	h := &handle{id: id, key: storeKey(id), sess: &session{Created: now, LastSeen: now, CSRF: csrf}}
	if err := m.save(ctx, h); err != nil {
		return nil, err
	}
	http.SetCookie(w, m.cookie(id))
	return h, nil
}

// rotate moves the session to a new id and a new CSRF token (on every
// change of privilege: sign-in, MFA, password change), so an id or token
// seen before the change is worthless after it. The old record is deleted.
func (m *sessions) rotate(ctx context.Context, w http.ResponseWriter, h *handle) error {
	id, err := newID()
	if err != nil {
		return err
	}
	csrf, err := newID()
	if err != nil {
		return err
	}
	old := h.key
	h.id, h.key = id, storeKey(id)
	h.sess.CSRF = csrf
	if err := m.save(ctx, h); err != nil {
		return err
	}
	if err := m.store.Delete(ctx, old); err != nil {
		m.log.LogAttrs(ctx, slog.LevelWarn, "web: old session record not deleted", slog.String("error", err.Error()))
	}
	http.SetCookie(w, m.cookie(id))
	return nil
}

// destroy deletes the record and clears the cookie.
func (m *sessions) destroy(ctx context.Context, w http.ResponseWriter, h *handle) error {
	http.SetCookie(w, m.clearCookie())
	if h == nil {
		return nil
	}
	return m.store.Delete(ctx, h.key)
}

// update runs fn on a fresh copy of the record under the session's lease
// and stores the result, so concurrent requests of one session (two tabs,
// two replicas) never overwrite each other's changes — above all a
// rotated refresh token. fn returning an error stores nothing.
func (m *sessions) update(ctx context.Context, h *handle, fn func(*session) error) error {
	lctx, cancel := context.WithTimeout(ctx, lockWait)
	defer cancel()
	unlock, err := m.store.Lock(lctx, h.key, lockTTL)
	if err != nil {
		return fmt.Errorf("%w: %w", errUnavailble, err)
	}
	defer unlock()
	fresh, err := m.load(ctx, h.id)
	if err != nil {
		return err
	}
	if err := fn(fresh.sess); err != nil {
		return err
	}
	fresh.sess.LastSeen = m.now()
	if err := m.save(ctx, fresh); err != nil {
		return err
	}
	h.sess = fresh.sess
	return nil
}

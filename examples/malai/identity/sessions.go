package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// maxFamiliesPerUser bounds the refresh sessions one account holds; a new
// sign-in beyond it revokes the oldest.
const maxFamiliesPerUser = 16

// family is one refresh session: a chain of refresh tokens descending from
// one sign-in. Only the newest token is valid; presenting an older one
// means two parties hold the chain, so the whole family is revoked.
type family struct {
	user     string
	amr      []string
	authTime time.Time
	created  time.Time
	lastUsed time.Time
	current  [32]byte
	used     [][32]byte
	revoked  bool
}

// sessionStore keeps refresh sessions in memory, tokens as SHA-256 digests
// (the tokens carry 256 random bits, so a fast hash suffices). It is safe
// for concurrent use.
type sessionStore struct {
	mu      sync.Mutex
	now     func() time.Time
	idle    time.Duration
	maxAge  time.Duration
	current map[[32]byte]*family
	used    map[[32]byte]*family
	byUser  map[string][]*family
	ops     int
}

func newSessionStore(now func() time.Time, idle, maxAge time.Duration) *sessionStore {
	return &sessionStore{
		now: now, idle: idle, maxAge: maxAge,
		current: make(map[[32]byte]*family),
		used:    make(map[[32]byte]*family),
		byUser:  make(map[string][]*family),
	}
}

func newRefreshToken() (string, [32]byte, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", [32]byte{}, err
	}
	tok := base64.RawURLEncoding.EncodeToString(raw)
	return tok, sha256.Sum256([]byte(tok)), nil
}

// create starts a family and returns its first refresh token.
func (st *sessionStore) create(user string, amr []string, authTime time.Time) (string, error) {
	tok, digest, err := newRefreshToken()
	if err != nil {
		return "", err
	}
	now := st.now()
	f := &family{user: user, amr: amr, authTime: authTime, created: now, lastUsed: now, current: digest}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.sweepLocked(now)
	fams := st.byUser[user]
	if len(fams) >= maxFamiliesPerUser {
		st.dropLocked(fams[0])
		fams = st.byUser[user]
	}
	st.byUser[user] = append(fams, f)
	st.current[digest] = f
	return tok, nil
}

// rotation is the outcome of presenting a refresh token.
type rotation struct {
	token    string
	user     string
	amr      []string
	authTime time.Time
}

// rotate exchanges a refresh token for the next one. A token that was
// already rotated revokes its family and returns ErrRefreshReused.
func (st *sessionStore) rotate(tok string) (rotation, error) {
	digest := sha256.Sum256([]byte(tok))
	next, nextDigest, err := newRefreshToken()
	if err != nil {
		return rotation{}, err
	}
	now := st.now()
	st.mu.Lock()
	defer st.mu.Unlock()
	if f, ok := st.used[digest]; ok {
		if !f.revoked {
			f.revoked = true
			delete(st.current, f.current)
		}
		return rotation{user: f.user}, ErrRefreshReused
	}
	f, ok := st.current[digest]
	if !ok || f.revoked {
		return rotation{}, ErrInvalidRefresh
	}
	if st.expired(f, now) {
		st.dropLocked(f)
		return rotation{}, ErrInvalidRefresh
	}
	delete(st.current, digest)
	f.used = append(f.used, digest)
	st.used[digest] = f
	f.current = nextDigest
	f.lastUsed = now
	st.current[nextDigest] = f
	return rotation{token: next, user: f.user, amr: f.amr, authTime: f.authTime}, nil
}

// revoke ends the family of tok (sign-out). Unknown tokens are ignored.
func (st *sessionStore) revoke(tok string) {
	digest := sha256.Sum256([]byte(tok))
	st.mu.Lock()
	defer st.mu.Unlock()
	if f, ok := st.current[digest]; ok {
		f.revoked = true
		delete(st.current, digest)
	}
}

// revokeUser ends every family of the user.
func (st *sessionStore) revokeUser(user string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, f := range st.byUser[user] {
		f.revoked = true
		delete(st.current, f.current)
	}
}

func (st *sessionStore) clear() {
	st.mu.Lock()
	defer st.mu.Unlock()
	clear(st.current)
	clear(st.used)
	clear(st.byUser)
}

func (st *sessionStore) expired(f *family, now time.Time) bool {
	return now.Sub(f.lastUsed) >= st.idle || now.Sub(f.created) >= st.maxAge
}

// dropLocked forgets a family entirely, including its used tokens.
func (st *sessionStore) dropLocked(f *family) {
	delete(st.current, f.current)
	for _, d := range f.used {
		delete(st.used, d)
	}
	fams := st.byUser[f.user]
	for i, g := range fams {
		if g == f {
			fams = append(fams[:i:i], fams[i+1:]...)
			break
		}
	}
	if len(fams) == 0 {
		delete(st.byUser, f.user)
	} else {
		st.byUser[f.user] = fams
	}
}

// sweepLocked drops expired families now and then. A revoked family is
// kept until it would have expired, so reuse of its tokens is still seen.
func (st *sessionStore) sweepLocked(now time.Time) {
	st.ops++
	if st.ops%256 != 0 {
		return
	}
	for _, fams := range st.byUser {
		for _, f := range fams {
			if st.expired(f, now) {
				st.dropLocked(f)
			}
		}
	}
}

func refreshCookie(tok string, ttl time.Duration) *http.Cookie {
	return &http.Cookie{
		Name:     RefreshCookie,
		Value:    tok,
		Path:     RefreshPath,
		MaxAge:   int(ttl / time.Second),
		HttpOnly: true,
		Secure:   true,
		SameSite: http.SameSiteStrictMode,
	}
}

func clearRefreshCookie() *http.Cookie {
	return &http.Cookie{Name: RefreshCookie, Value: "", Path: RefreshPath, MaxAge: -1,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode}
}

// refreshToken reads the single refresh cookie.
func refreshToken(r *http.Request) (string, bool) {
	cs := r.CookiesNamed(RefreshCookie)
	if len(cs) != 1 || cs[0].Value == "" || len(cs[0].Value) > 128 {
		return "", false
	}
	return cs[0].Value, true
}

func (s *Service) serveRefresh(w http.ResponseWriter, r *http.Request) {
	tok, ok := refreshToken(r)
	if !ok {
		s.fail(w, r, ErrInvalidRefresh)
		return
	}
	rot, err := s.sessions.rotate(tok)
	if err != nil {
		if errors.Is(err, ErrRefreshReused) {
			s.log.LogAttrs(r.Context(), slog.LevelWarn, "identity: refresh token reused; session family revoked",
				slog.String("user", rot.user))
		}
		s.fail(w, r, err)
		return
	}
	s.mu.Lock()
	u, exists := s.users[rot.user]
	blocked := !exists || u.mustReset
	s.mu.Unlock()
	if blocked {
		s.sessions.revoke(rot.token)
		s.fail(w, r, ErrInvalidRefresh)
		return
	}
	res, err := s.mint(grant{class: ClassUser, subject: UserSubject(rot.user), clientID: s.cfg.UserClientID,
		scopes: s.cfg.UserScopes, amr: rot.amr, authTime: rot.authTime})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	http.SetCookie(w, refreshCookie(rot.token, s.cfg.RefreshTTL))
	writeJSON(w, http.StatusOK, marshalToken(res))
}

func (s *Service) serveSignOut(w http.ResponseWriter, r *http.Request) {
	if tok, ok := refreshToken(r); ok {
		s.sessions.revoke(tok)
	}
	http.SetCookie(w, clearRefreshCookie())
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

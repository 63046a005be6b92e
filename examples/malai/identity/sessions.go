package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/malai-sec/malai/examples/malai/identity/store"
)

func newRefreshToken() (string, store.Digest, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", store.Digest{}, err
	}
	tok := base64.RawURLEncoding.EncodeToString(raw)
	return tok, sha256.Sum256([]byte(tok)), nil
}

func newSessionID() (string, error) {
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(raw), nil
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

// checkCSRF guards the cookie-authenticated routes (refresh, sign-out):
// the request must carry CSRFHeader: 1, which a cross-site form cannot
// send and a cross-site script cannot send without a CORS preflight this
// service never answers, and an Origin header naming an allowed origin
// (browsers send it on every POST and DELETE). A component listed in
// OriginExemptPeers, proven by its certificate, is a server-side client
// and needs no Origin.
func (s *Service) checkCSRF(r *http.Request) error {
	if vs := r.Header.Values(CSRFHeader); len(vs) != 1 || vs[0] != "1" {
		return ErrCSRF
	}
	if peer := s.cfg.PeerComponent(r); peer != "" && slices.Contains(s.cfg.OriginExemptPeers, peer) {
		return nil
	}
	os := r.Header.Values("Origin")
	if len(os) != 1 || !slices.Contains(s.origins, os[0]) {
		return ErrCSRF
	}
	return nil
}

func (s *Service) serveRefresh(w http.ResponseWriter, r *http.Request) {
	if err := s.checkCSRF(r); err != nil {
		s.fail(w, r, err)
		return
	}
	tok, ok := refreshToken(r)
	if !ok {
		s.fail(w, r, ErrInvalidRefresh)
		return
	}
	next, nextDigest, err := newRefreshToken()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := durable(r.Context())
	defer cancel()
	sess, err := s.st.RotateSession(ctx, store.Rotation{Presented: sha256.Sum256([]byte(tok)), Next: nextDigest,
		Now: s.cfg.Now(), Idle: s.cfg.RefreshTTL, MaxAge: s.cfg.SessionMaxAge})
	switch {
	case errors.Is(err, store.ErrReused):
		// Two parties hold the chain: the whole session is revoked.
		s.log.LogAttrs(r.Context(), slog.LevelWarn, "identity: refresh token reused; session revoked",
			slog.String("sub", UserSubject(sess.UserID)), slog.String("session", sess.ID))
		s.auditEvent(r.Context(), AuditRefreshReused, map[string]any{"sub": UserSubject(sess.UserID), "session": sess.ID})
		s.fail(w, r, ErrRefreshReused)
		return
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrExpired):
		s.fail(w, r, ErrInvalidRefresh)
		return
	case err != nil:
		s.fail(w, r, storeErr(err))
		return
	}
	u, exists, err := s.st.UserByID(ctx, sess.UserID)
	if err != nil {
		s.fail(w, r, storeErr(err))
		return
	}
	if !exists || u.MustReset {
		_, _, _ = s.st.RevokeSessionByToken(ctx, nextDigest)
		s.fail(w, r, ErrInvalidRefresh)
		return
	}
	res, err := s.mintUser(ctx, u, sess)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	http.SetCookie(w, refreshCookie(next, s.cfg.RefreshTTL))
	writeJSON(w, http.StatusOK, marshalToken(res))
}

func (s *Service) serveSignOut(w http.ResponseWriter, r *http.Request) {
	if err := s.checkCSRF(r); err != nil {
		s.fail(w, r, err)
		return
	}
	if tok, ok := refreshToken(r); ok {
		ctx, cancel := durable(r.Context())
		defer cancel()
		sess, revoked, err := s.st.RevokeSessionByToken(ctx, sha256.Sum256([]byte(tok)))
		if err != nil {
			s.fail(w, r, storeErr(err))
			return
		}
		if revoked {
			s.auditEvent(r.Context(), AuditSignOut, map[string]any{"sub": UserSubject(sess.UserID), "session": sess.ID})
		}
	}
	http.SetCookie(w, clearRefreshCookie())
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// SessionInfo is one entry of GET /v1/sessions.
type SessionInfo struct {
	ID        string    `json:"id"`
	Created   time.Time `json:"created_at"`
	LastUsed  time.Time `json:"last_used_at"`
	AMR       []string  `json:"amr"`
	Network   string    `json:"network,omitempty"`
	UserAgent string    `json:"user_agent,omitempty"`
	Current   bool      `json:"current"`
}

func (s *Service) serveListSessions(w http.ResponseWriter, r *http.Request, c caller) {
	ss, err := s.st.Sessions(r.Context(), c.user.ID)
	if err != nil {
		s.fail(w, r, storeErr(err))
		return
	}
	now := s.cfg.Now()
	out := []SessionInfo{}
	for _, x := range ss {
		if x.Revoked || x.Expired(now, s.cfg.RefreshTTL, s.cfg.SessionMaxAge) {
			continue
		}
		where := s.openClient(x)
		out = append(out, SessionInfo{ID: x.ID, Created: x.Created.UTC(), LastUsed: x.LastUsed.UTC(), AMR: x.AMR,
			Network: where.Network, UserAgent: where.UserAgent, Current: x.ID == c.session})
	}
	b, _ := json.Marshal(map[string]any{"sessions": out})
	writeJSON(w, http.StatusOK, b)
}

func (s *Service) serveRevokeSession(w http.ResponseWriter, r *http.Request, c caller) {
	id := r.PathValue("id")
	if len(id) == 0 || len(id) > 64 {
		s.fail(w, r, ErrNotFound)
		return
	}
	ctx, cancel := durable(r.Context())
	defer cancel()
	ok, err := s.st.RevokeSession(ctx, c.user.ID, id)
	if err != nil {
		s.fail(w, r, storeErr(err))
		return
	}
	if !ok {
		s.fail(w, r, ErrNotFound)
		return
	}
	s.auditEvent(r.Context(), AuditSessionRevoked, map[string]any{"sub": UserSubject(c.user.ID), "session": id, "by_session": c.session})
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// sessionClient is where a session started, sealed in the store.
type sessionClient struct {
	Network   string `json:"n,omitempty"`
	UserAgent string `json:"ua,omitempty"`
}

func clientAAD(sid string) []byte { return []byte("malai.identity.session-client:" + sid) }

func (s *Service) sealClient(sid string, c sessionClient) ([]byte, error) {
	b, _ := json.Marshal(c)
	return s.ring.Seal(nil, b, clientAAD(sid))
}

func (s *Service) openClient(x store.Session) sessionClient {
	var c sessionClient
	if len(x.Client) == 0 {
		return c
	}
	b, _, err := s.ring.Open(nil, x.Client, clientAAD(x.ID))
	if err == nil {
		_ = json.Unmarshal(b, &c)
	}
	return c
}

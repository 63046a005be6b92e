package identity

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/malai-sec/malai/examples/malai/identity/internal/otpcode"
	"github.com/malai-sec/malai/examples/malai/identity/internal/password"
	"github.com/malai-sec/malai/examples/malai/identity/internal/risk"
)

// maxKnownNetworks bounds the networks remembered per account for the
// new-network signal.
const maxKnownNetworks = 32

// user is an account. Fields are guarded by Service.mu.
type user struct {
	name      string
	hash      string
	mustReset bool
	networks  map[netip.Prefix]time.Time

	totpSecret   string // confirmed enrolment; "" when none
	totpPending  string
	totpLastStep uint64
	recovery     [][32]byte
}

func (u *user) rememberNetwork(n netip.Prefix, now time.Time) {
	if !n.IsValid() {
		return
	}
	if _, ok := u.networks[n]; !ok && len(u.networks) >= maxKnownNetworks {
		var oldest netip.Prefix
		var ot time.Time
		for k, t := range u.networks {
			if !oldest.IsValid() || t.Before(ot) {
				oldest, ot = k, t
			}
		}
		delete(u.networks, oldest)
	}
	u.networks[n] = now
}

// signUpRequest is the body of POST /v1/users.
type signUpRequest struct {
	Username string
	Password Secret
}

func decodeSignUp(w http.ResponseWriter, r *http.Request) (signUpRequest, error) {
	var username, pw string
	err := decodeJSON(w, r, map[string]*string{"username": &username, "password": &pw})
	return signUpRequest{Username: username, Password: Secret(pw)}, err
}

// signInRequest is the body of POST /v1/sessions.
type signInRequest struct {
	Username     string
	Password     Secret
	TOTPCode     Secret
	RecoveryCode Secret
}

func decodeSignIn(w http.ResponseWriter, r *http.Request) (signInRequest, error) {
	var username, pw, code, rc string
	err := decodeJSON(w, r, map[string]*string{
		"username": &username, "password": &pw, "totp_code": &code, "recovery_code": &rc,
	})
	return signInRequest{Username: username, Password: Secret(pw), TOTPCode: Secret(code), RecoveryCode: Secret(rc)}, err
}

func (s *Service) serveSignUp(w http.ResponseWriter, r *http.Request) {
	req, err := decodeSignUp(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var network netip.Prefix
	if ip, err := s.cfg.ClientIP(r); err == nil {
		network = risk.Network(ip)
	}
	if err := s.signUp(r.Context(), req.Username, req.Password.Reveal(), network); err != nil {
		s.fail(w, r, err)
		return
	}
	name, _ := normalizeUsername(req.Username)
	b, _ := json.Marshal(map[string]string{"username": name})
	writeJSON(w, http.StatusCreated, b)
}

// CreateUser creates an account the way POST /v1/users does (for seeding
// and operator tools), with no known network yet: the first sign-in from
// any network counts as a new network. It returns ErrInvalidUsername, a
// *PolicyError, ErrPasswordCompromised, ErrUsernameTaken, ErrUnavailable
// or ErrClosed.
func (s *Service) CreateUser(ctx context.Context, username, password string) error {
	return s.signUp(ctx, username, password, netip.Prefix{})
}

// signUp creates an account; network, when valid, is remembered as the
// account's first known network.
func (s *Service) signUp(ctx context.Context, username, pw string, network netip.Prefix) error {
	if s.isClosed() {
		return ErrClosed
	}
	name, ok := normalizeUsername(username)
	if !ok {
		return ErrInvalidUsername
	}
	s.mu.Lock()
	_, taken := s.users[name]
	s.mu.Unlock()
	if taken {
		return ErrUsernameTaken
	}
	hash, err := s.newPasswordHash(ctx, name, pw)
	if err != nil {
		if errors.Is(err, ErrPasswordCompromised) {
			s.log.LogAttrs(ctx, slog.LevelInfo, "identity: sign-up refused a compromised password")
		}
		return err
	}
	u := &user{name: name, hash: hash, networks: make(map[netip.Prefix]time.Time)}
	u.rememberNetwork(network, s.cfg.Now())
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, taken := s.users[name]; taken {
		return ErrUsernameTaken
	}
	s.users[name] = u
	return nil
}

func (s *Service) serveSignIn(w http.ResponseWriter, r *http.Request) {
	req, err := decodeSignIn(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ip, err := s.cfg.ClientIP(r)
	if err != nil || !ip.IsValid() {
		s.fail(w, r, ErrClientIP)
		return
	}
	res, err := s.signIn(r.Context(), req, risk.Network(ip))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	cookie, err := s.sessions.create(res.user, res.amr, res.authTime)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	http.SetCookie(w, refreshCookie(cookie, s.cfg.RefreshTTL))
	writeJSON(w, http.StatusOK, marshalToken(res.token))
}

type signInResult struct {
	user     string
	amr      []string
	authTime time.Time
	token    TokenResponse
}

// signIn runs the sign-in decision. Every refusal that could tell an
// unknown account from a wrong password is ErrInvalidCredentials, and an
// unknown account costs the same argon2id computation as a known one.
func (s *Service) signIn(ctx context.Context, req signInRequest, network netip.Prefix) (signInResult, error) {
	name, valid := normalizeUsername(req.Username)
	if !valid {
		// Count failures under the raw (bounded) name so a malformed
		// username is still rate-limited; it can never exist.
		name = req.Username
		if len(name) > 64 {
			name = name[:64]
		}
	}
	event := func(level slog.Level, outcome string, a risk.Assessment, exists bool) {
		attrs := []slog.Attr{
			slog.String("outcome", outcome),
			slog.String("network", network.String()),
			slog.Int("risk_score", a.Score),
			slog.Any("risk_reasons", a.Reasons),
			slog.String("decision", a.Decision.String()),
		}
		if exists { // never log an unknown username: it may be a mistyped password
			attrs = append(attrs, slog.String("user", name))
		}
		s.log.LogAttrs(ctx, level, "identity: sign-in", attrs...)
	}

	pre := s.risk.Assess(name, network)
	if pre.Decision == risk.Block {
		// Blocked before the password is looked at: the answer depends on
		// the name and network only, so it reveals nothing about the
		// account, and a flood costs no argon2id work.
		event(slog.LevelWarn, "blocked", pre, false)
		return signInResult{}, ErrSignInBlocked
	}

	s.mu.Lock()
	u, exists := s.users[name]
	hash := s.dummy
	var known bool
	if exists {
		hash = u.hash
		_, known = u.networks[network]
	}
	s.mu.Unlock()

	pw := password.Normalize(req.Password.Reveal())
	if err := s.acquireHash(ctx); err != nil {
		return signInResult{}, err
	}
	ok, stale, err := password.Verify(pw, hash, s.argon)
	s.releaseHash()
	if err == nil {
		s.hashes.Add(1)
	}
	if err != nil || !ok || !exists {
		s.risk.Failure(name, network)
		event(slog.LevelInfo, "invalid-credentials", pre, exists)
		return signInResult{}, ErrInvalidCredentials
	}

	breached, err := s.cfg.Breach.Breached(ctx, pw)
	if err != nil {
		return signInResult{}, ErrUnavailable
	}
	sig := pre.Signals
	sig.NewNetwork = !known
	// The breach signal forces a reset rather than weighing in the score,
	// so the score decides the factors and the reset flag decides whether
	// a token may be issued at all.
	post := risk.Score(sig)
	sig.Breached = breached
	logged := risk.Score(sig)

	s.mu.Lock()
	if breached {
		u.mustReset = true
	}
	mustReset := u.mustReset
	enrolled := u.totpSecret != ""
	s.mu.Unlock()
	if breached {
		s.log.LogAttrs(ctx, slog.LevelWarn, "identity: password found in compromised corpus; reset required",
			slog.String("user", name))
	}

	needFactor := enrolled || post.Decision == risk.StepUp
	if post.Decision == risk.Block || needFactor && !enrolled || mustReset && !enrolled {
		// High risk, a second factor the account cannot give, or a
		// password that must be reset with no second factor to prove the
		// owner: refuse with the same answer as a wrong password, so a
		// credential stuffer does not learn that this pair was right.
		s.risk.Failure(name, network)
		event(slog.LevelWarn, "blocked-after-password", logged, true)
		return signInResult{}, ErrInvalidCredentials
	}
	factor := ""
	if needFactor {
		if req.TOTPCode == "" && req.RecoveryCode == "" {
			event(slog.LevelInfo, "mfa-required", logged, true)
			return signInResult{}, ErrMFARequired
		}
		f, err := s.checkSecondFactor(name, req)
		if err != nil {
			s.risk.Failure(name, network)
			event(slog.LevelInfo, "invalid-second-factor", logged, true)
			return signInResult{}, ErrInvalidCredentials
		}
		factor = f
	}
	if mustReset {
		// Both factors are proven: it is the owner, tell them.
		event(slog.LevelWarn, "reset-required", logged, true)
		return signInResult{}, ErrPasswordResetRequired
	}

	now := s.cfg.Now()
	s.risk.Success(name, network)
	s.mu.Lock()
	u.rememberNetwork(network, now)
	s.mu.Unlock()
	if stale {
		s.rehash(ctx, name, pw)
	}
	amr := amrFor(factor)
	tok, err := s.mint(grant{class: ClassUser, subject: UserSubject(name), clientID: s.cfg.UserClientID,
		scopes: s.cfg.UserScopes, amr: amr, authTime: now})
	if err != nil {
		return signInResult{}, err
	}
	event(slog.LevelInfo, "success", logged, true)
	return signInResult{user: name, amr: amr, authTime: now, token: tok}, nil
}

// checkSecondFactor validates a TOTP code (refusing replays) or consumes a
// recovery code. It returns "otp" or "recovery".
func (s *Service) checkSecondFactor(name string, req signInRequest) (string, error) {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[name]
	if u == nil || u.totpSecret == "" {
		return "", otpcode.ErrInvalid
	}
	if req.TOTPCode != "" {
		step, err := otpcode.Validate(req.TOTPCode.Reveal(), u.totpSecret, now, u.totpLastStep)
		if err != nil {
			return "", err
		}
		u.totpLastStep = step
		return "otp", nil
	}
	i := otpcode.MatchRecovery(req.RecoveryCode.Reveal(), u.recovery)
	if i < 0 {
		return "", otpcode.ErrInvalid
	}
	u.recovery = append(u.recovery[:i:i], u.recovery[i+1:]...)
	return "recovery", nil
}

// rehash upgrades a hash made with older argon2 parameters after a
// successful sign-in. Failure is harmless: the old hash still verifies.
func (s *Service) rehash(ctx context.Context, name, pw string) {
	if err := s.acquireHash(ctx); err != nil {
		return
	}
	h, err := password.Hash(pw, s.argon)
	s.releaseHash()
	if err != nil {
		return
	}
	s.mu.Lock()
	if u := s.users[name]; u != nil {
		u.hash = h
	}
	s.mu.Unlock()
}

package identity

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"
	"unicode"

	"github.com/malai-sec/malai/examples/malai/identity/internal/lockout"
	"github.com/malai-sec/malai/examples/malai/identity/internal/otpcode"
	"github.com/malai-sec/malai/examples/malai/identity/internal/password"
	"github.com/malai-sec/malai/examples/malai/identity/store"
)

// maxSessionsPerUser bounds the refresh sessions one account holds; a new
// sign-in beyond it drops the oldest.
const maxSessionsPerUser = 16

// Network maps an address to the unit lockout counts: the address itself
// for IPv4 (and IPv4-mapped IPv6), its /64 for IPv6, so an attacker
// holding a whole IPv6 /64 cannot rotate addresses to reset the counts.
func Network(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, err := ip.Prefix(64)
	if err != nil { // the zero Addr
		return netip.Prefix{}
	}
	return p
}

// mac is a keyed digest of length-prefixed parts, hex, 128 bits: the
// store's risk keys never hold a username, an address or a password.
func (s *Service) mac(key []byte, parts ...string) string {
	m := hmac.New(sha256.New, key)
	var n [4]byte
	for _, p := range parts {
		binary.BigEndian.PutUint32(n[:], uint32(len(p)))
		m.Write(n[:])
		m.Write([]byte(p))
	}
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// riskKeys names the counters of one attempt.
type riskKeys struct {
	account, pair, network, spray, device string
	accountMember, networkMember          string
}

func (s *Service) riskKeysFor(name string, network netip.Prefix, pw string, deviceID string) riskKeys {
	net := network.String()
	k := riskKeys{
		account:       "a:" + s.mac(s.riskKey, "account", name),
		pair:          "p:" + s.mac(s.riskKey, "pair", name, net),
		network:       "n:" + s.mac(s.riskKey, "network", net),
		accountMember: s.mac(s.riskKey, "account", name),
		networkMember: s.mac(s.riskKey, "network", net),
	}
	if !s.cfg.Faults.NoSprayDetection {
		k.spray = "s:" + s.mac(s.riskKey, "password", password.Normalize(pw))
	}
	if deviceID != "" {
		k.device = "d:" + s.mac(s.riskKey, "device", deviceID)
	}
	return k
}

// codeKey counts one-time-code failures per account and device class.
func (s *Service) codeKey(userID, deviceID string) string {
	class := "unknown-device"
	if deviceID != "" {
		class = s.mac(s.riskKey, "device", deviceID)
	}
	return "c:" + userID + ":" + class
}

// signInRequest is the body of POST /v1/sessions: a username and
// password (and optionally a code), or the mfa_token of a first step and
// a code.
type signInRequest struct {
	Username     string
	Password     Secret
	TOTPCode     Secret
	RecoveryCode Secret
	MFAToken     Secret
}

func decodeSignIn(w http.ResponseWriter, r *http.Request) (signInRequest, error) {
	var username, pw, code, rc, mt string
	err := decodeJSON(w, r, map[string]*string{
		"username": &username, "password": &pw, "totp_code": &code, "recovery_code": &rc, "mfa_token": &mt,
	})
	if err == nil && mt != "" && (username != "" || pw != "") {
		err = ErrMalformedRequest // one step or the other, not both
	}
	return signInRequest{Username: username, Password: Secret(pw), TOTPCode: Secret(code), RecoveryCode: Secret(rc), MFAToken: Secret(mt)}, err
}

// MFARequiredError answers a right password on an account with a second
// factor when no code came with it. Token is the one-use mfa_token that
// POST /v1/sessions/mfa accepts instead of the password. It wraps
// [ErrMFARequired], or, when Retry is set (a wrong code at the second
// step, answered with a fresh token), [ErrInvalidCredentials].
type MFARequiredError struct {
	Token Secret
	Retry bool
}

func (e *MFARequiredError) Error() string { return e.Unwrap().Error() }
func (e *MFARequiredError) Unwrap() error {
	if e.Retry {
		return ErrInvalidCredentials
	}
	return ErrMFARequired
}

// client is what the service knows about the caller of a sign-in.
type client struct {
	network   netip.Prefix
	device    string // the device id of a well-signed device cookie for this name, or ""
	userAgent string
}

// signedIn is a completed sign-in.
type signedIn struct {
	token   TokenResponse
	refresh string
	device  string // the device cookie to set
}

func (s *Service) clientOf(r *http.Request, username string) (client, error) {
	ip, err := s.cfg.ClientIP(r)
	if err != nil || !ip.IsValid() {
		return client{}, ErrClientIP
	}
	c := client{network: Network(ip), userAgent: cleanUserAgent(r.UserAgent())}
	if name, ok := normalizeUsername(username); ok {
		c.device = s.deviceFromCookie(r, name)
	}
	return c, nil
}

func (s *Service) serveSignIn(w http.ResponseWriter, r *http.Request) {
	req, err := decodeSignIn(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if req.MFAToken != "" {
		res, err := s.signInMFA(r.Context(), r, req.MFAToken, req.TOTPCode, req.RecoveryCode)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.writeSignedIn(w, res)
		return
	}
	c, err := s.clientOf(r, req.Username)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.signIn(r.Context(), req, c)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeSignedIn(w, res)
}

func (s *Service) writeSignedIn(w http.ResponseWriter, res signedIn) {
	http.SetCookie(w, refreshCookie(res.refresh, s.cfg.RefreshTTL))
	http.SetCookie(w, deviceCookie(res.device))
	writeJSON(w, http.StatusOK, marshalToken(res.token))
}

// signIn runs the sign-in decision. Every refusal that could tell an
// unknown account from a wrong password is ErrInvalidCredentials, and an
// unknown account costs the same argon2id computation as a known one.
func (s *Service) signIn(ctx context.Context, req signInRequest, c client) (signedIn, error) {
	if s.isClosed() {
		return signedIn{}, ErrClosed
	}
	name, valid := normalizeUsername(req.Username)
	if !valid {
		// Count failures under the raw (bounded) name so a malformed
		// username is still throttled; it can never exist.
		name = req.Username
		if len(name) > 64 {
			name = name[:64]
		}
	}
	now := s.cfg.Now()
	pw := req.Password.Reveal()
	known := c.device != "" && !s.cfg.Faults.HardLockout
	keys := s.riskKeysFor(name, c.network, pw, c.device)
	before, err := s.assess(ctx, keys, known, now)
	if err != nil {
		return signedIn{}, err
	}
	attrs := []slog.Attr{slog.String("network", c.network.String()), slog.Bool("known_device", known), reasonsAttr(before.Reasons)}
	audit := func(extra map[string]any) map[string]any {
		p := map[string]any{"network": c.network.String(), "known_device": known, "reasons": before.Reasons}
		for k, v := range extra {
			p[k] = v
		}
		return p
	}
	if s.cfg.Faults.HardLockout && before.UnderAttack {
		// The lockout an attacker can aim: refuse everyone, the owner too.
		s.decision(ctx, slog.LevelWarn, "blocked", keys.account, attrs, audit(nil))
		return signedIn{}, &ThrottleError{RetryAfter: s.lock.MaxDelay, Reasons: before.Reasons}
	}
	if before.Decision == lockout.Throttle {
		// Refused before the password is looked at: the answer depends on
		// what the client sent only, so it reveals nothing about the
		// account, and a flood costs no argon2id work.
		s.decision(ctx, slog.LevelWarn, "throttled", keys.account+strings.Join(before.Reasons, ","),
			append(attrs, slog.Duration("retry_after", before.RetryAfter)), audit(map[string]any{"retry_after_s": int(before.RetryAfter.Seconds())}))
		return signedIn{}, &ThrottleError{RetryAfter: before.RetryAfter, Reasons: before.Reasons}
	}

	var u store.User
	var exists bool
	if valid {
		if u, exists, err = s.st.UserByName(ctx, s.nameKey(name)); err != nil {
			return signedIn{}, storeErr(err)
		}
	}
	ok, stale, err := s.verifyPassword(ctx, pw, u.PasswordHash)
	if errors.Is(err, ErrUnavailable) {
		return signedIn{}, err
	}
	if err != nil || !ok || !exists {
		s.recordFailure(ctx, keys, known)
		s.log.LogAttrs(ctx, slog.LevelInfo, "identity: sign-in", append(attrs, slog.String("outcome", "invalid-credentials"))...)
		return signedIn{}, ErrInvalidCredentials
	}
	attrs = append(attrs, slog.String("sub", UserSubject(u.ID)))
	breached, err := s.cfg.Breach.Breached(ctx, password.Normalize(pw))
	if err != nil {
		return signedIn{}, ErrUnavailable
	}
	knownHere := known && knows(u.Devices, s.seen("device", c.device))
	newNetwork := !knows(u.Networks, s.seen("network", c.network.String()))
	enrolled := u.TOTP != nil
	after := s.lock.After(before, knownHere, newNetwork, enrolled)
	attrs = append(attrs, slog.Bool("new_network", newNetwork), slog.String("decision", after.Decision.String()))
	if breached && !u.MustReset {
		if u, err = s.updateUser(ctx, u.ID, func(su *store.User) error { su.MustReset = true; return nil }); err != nil {
			return signedIn{}, err
		}
		s.log.LogAttrs(ctx, slog.LevelWarn, "identity: password found in compromised corpus; reset required", attrs...)
	}
	if after.Decision == lockout.Block || u.MustReset && !enrolled {
		// High risk, or a password that must be reset with no second
		// factor to prove the owner: the same answer as a wrong password,
		// so a credential stuffer does not learn that this pair was right.
		s.recordFailure(ctx, keys, known)
		s.decision(ctx, slog.LevelWarn, "blocked-after-password", keys.account, attrs,
			audit(map[string]any{"sub": UserSubject(u.ID), "new_network": newNetwork, "reasons": after.Reasons}))
		return signedIn{}, ErrInvalidCredentials
	}
	amr := []string{"pwd"}
	device := ""
	if knownHere {
		device = c.device
	}
	if after.Decision == lockout.StepUp {
		if req.TOTPCode == "" && req.RecoveryCode == "" {
			tok, err := s.newMFAToken(u.ID, device, now)
			if err != nil {
				return signedIn{}, err
			}
			s.log.LogAttrs(ctx, slog.LevelInfo, "identity: sign-in", append(attrs, slog.String("outcome", "mfa-required"))...)
			return signedIn{}, &MFARequiredError{Token: Secret(tok)}
		}
		factor, err := s.secondFactor(ctx, u.ID, device, req.TOTPCode.Reveal(), req.RecoveryCode.Reveal())
		if err != nil {
			s.log.LogAttrs(ctx, slog.LevelInfo, "identity: sign-in", append(attrs, slog.String("outcome", "invalid-second-factor"))...)
			if errors.Is(err, ErrInvalidCode) {
				return signedIn{}, ErrInvalidCredentials
			}
			return signedIn{}, err
		}
		amr = amrFor(factor)
	}
	if u.MustReset {
		// Both factors are proven: it is the owner, tell them.
		s.log.LogAttrs(ctx, slog.LevelWarn, "identity: sign-in", append(attrs, slog.String("outcome", "reset-required"))...)
		return signedIn{}, ErrPasswordResetRequired
	}
	var rehash string
	if stale {
		if h, err := s.hashAgain(ctx, pw); err == nil {
			rehash = h
		}
	}
	res, err := s.complete(ctx, u.ID, amr, c, device, rehash)
	if err != nil {
		return signedIn{}, err
	}
	// Forget the failures this client caused, and only those: the owner
	// signing in on her device must not reset an attacker's counts.
	if known {
		_ = s.st.ClearEvents(ctx, nonEmpty(keys.device))
	} else {
		_ = s.st.ClearEvents(ctx, nonEmpty(keys.pair))
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "identity: sign-in", append(attrs, slog.String("outcome", "success"))...)
	return res, nil
}

func nonEmpty(keys ...string) []string {
	var out []string
	for _, k := range keys {
		if k != "" {
			out = append(out, k)
		}
	}
	return out
}

// assess reads the counters of an attempt and decides before the
// password is checked.
func (s *Service) assess(ctx context.Context, k riskKeys, known bool, now time.Time) (lockout.Verdict, error) {
	since := now.Add(-s.lock.Window)
	q := []store.Query{{Key: k.pair, Since: since}, {Key: k.network, Since: since}, {Key: k.account, Since: since}}
	if k.spray != "" {
		q = append(q, store.Query{Key: k.spray, Since: since})
	}
	if known {
		q = append(q, store.Query{Key: k.device, Since: since})
	}
	t, err := s.st.CountEvents(ctx, q)
	if err != nil {
		return lockout.Verdict{}, storeErr(err)
	}
	in := lockout.Before{KnownDevice: known, Pair: t[0], Network: t[1], Account: t[2]}
	if s.cfg.Faults.NoRiskEngine {
		// Blind to the account under attack: no throttle on it, and
		// After never sees UnderAttack to block a new network.
		in.Account = store.Tally{}
	}
	if k.spray != "" {
		in.Spray = t[3]
	}
	if known {
		in.Device = t[len(t)-1]
	}
	return s.lock.Before(in, now), nil
}

// recordFailure counts a failed attempt. A known device's failures count
// against that device only, so the owner's typos never put the account
// under attack for everyone else.
func (s *Service) recordFailure(ctx context.Context, k riskKeys, known bool) {
	now := s.cfg.Now()
	var ev []store.Event
	if known {
		ev = []store.Event{{Key: k.device, Member: k.accountMember, At: now}}
	} else {
		ev = []store.Event{
			{Key: k.pair, Member: k.networkMember, At: now},
			{Key: k.network, Member: k.accountMember, At: now},
			{Key: k.account, Member: k.networkMember, At: now},
		}
		if k.spray != "" {
			ev = append(ev, store.Event{Key: k.spray, Member: k.accountMember, At: now})
		}
	}
	dctx, cancel := durable(ctx)
	defer cancel()
	if err := s.st.AddEvents(dctx, ev); err != nil {
		s.log.ErrorContext(ctx, "identity: recording a sign-in failure", "error", err.Error())
	}
}

func (s *Service) hashAgain(ctx context.Context, pw string) (string, error) {
	if err := s.acquireHash(ctx); err != nil {
		return "", err
	}
	defer s.releaseHash()
	return password.Hash(password.Normalize(pw), s.argon)
}

// secondFactor checks a TOTP code (refusing replays) or consumes a
// recovery code, under the per-account, per-device-class back-off. It
// returns "otp" or "recovery".
func (s *Service) secondFactor(ctx context.Context, userID, device, code, recovery string) (string, error) {
	key := s.codeKey(userID, device)
	now := s.cfg.Now()
	t, err := s.st.CountEvents(ctx, []store.Query{{Key: key, Since: now.Add(-s.lock.CodeWindow)}})
	if err != nil {
		return "", storeErr(err)
	}
	if v := s.lock.Codes(t[0], now); v.Decision == lockout.Throttle {
		s.decision(ctx, slog.LevelWarn, "code-throttled", key, []slog.Attr{slog.String("sub", UserSubject(userID)), slog.Duration("retry_after", v.RetryAfter)},
			map[string]any{"sub": UserSubject(userID), "reasons": v.Reasons, "retry_after_s": int(v.RetryAfter.Seconds())})
		return "", &ThrottleError{RetryAfter: v.RetryAfter, Reasons: v.Reasons}
	}
	factor := ""
	dctx, cancel := durable(ctx)
	defer cancel()
	_, err = s.updateUser(dctx, userID, func(u *store.User) error {
		if u.TOTP == nil {
			return ErrInvalidCode
		}
		if code != "" {
			secret, err := s.openTOTP(u.ID, u.TOTP)
			if err != nil {
				return err
			}
			step, err := otpcode.Validate(code, secret, now, u.TOTPLastStep)
			if err != nil {
				return ErrInvalidCode
			}
			u.TOTPLastStep, factor = step, "otp"
			return nil
		}
		digests := make([][32]byte, len(u.Recovery))
		for i, d := range u.Recovery {
			digests[i] = d
		}
		i := otpcode.MatchRecovery(recovery, digests)
		if i < 0 {
			return ErrInvalidCode
		}
		u.Recovery = append(u.Recovery[:i:i], u.Recovery[i+1:]...)
		factor = "recovery"
		return nil
	})
	if errors.Is(err, ErrInvalidCode) {
		if err := s.st.AddEvents(dctx, []store.Event{{Key: key, Member: "code", At: now}}); err != nil {
			s.log.ErrorContext(ctx, "identity: recording a code failure", "error", err.Error())
		}
		return "", ErrInvalidCode
	}
	if err != nil {
		return "", err
	}
	_ = s.st.ClearEvents(dctx, []string{key})
	return factor, nil
}

func totpAAD(userID string) []byte { return []byte("malai.identity.totp:" + userID) }

func (s *Service) openTOTP(userID string, sealed []byte) (string, error) {
	b, _, err := s.ring.Open(nil, sealed, totpAAD(userID))
	if err != nil {
		return "", storeErr(err)
	}
	return string(b), nil
}

// complete finishes a sign-in: remembers the network and device, stores
// the session and mints the token.
func (s *Service) complete(ctx context.Context, userID string, amr []string, c client, device, rehash string) (signedIn, error) {
	now := s.cfg.Now()
	if device == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return signedIn{}, err
		}
		device = base64.RawURLEncoding.EncodeToString(b[:])
	}
	dctx, cancel := durable(ctx)
	defer cancel()
	u, err := s.updateUser(dctx, userID, func(u *store.User) error {
		u.Networks = remember(u.Networks, s.seen("network", c.network.String()), now)
		u.Devices = remember(u.Devices, s.seen("device", device), now)
		if rehash != "" {
			u.PasswordHash = rehash
		}
		return nil
	})
	if err != nil {
		return signedIn{}, err
	}
	refresh, digest, err := newRefreshToken()
	if err != nil {
		return signedIn{}, err
	}
	sid, err := newSessionID()
	if err != nil {
		return signedIn{}, err
	}
	where, err := s.sealClient(sid, sessionClient{Network: c.network.String(), UserAgent: c.userAgent})
	if err != nil {
		return signedIn{}, err
	}
	sess := store.Session{ID: sid, UserID: u.ID, AMR: amr, AuthTime: now, Created: now, LastUsed: now, Current: digest,
		Client: where, DeviceID: device}
	if err := s.st.CreateSession(dctx, sess, maxSessionsPerUser); err != nil {
		return signedIn{}, storeErr(err)
	}
	tok, err := s.mintUser(ctx, u, sess)
	if err != nil {
		return signedIn{}, err
	}
	s.auditEvent(ctx, AuditSignIn, map[string]any{"sub": UserSubject(u.ID), "session": sid, "amr": amr, "network": c.network.String()})
	return signedIn{token: tok, refresh: refresh, device: s.deviceToken(s.username(u), device, now)}, nil
}

// cleanUserAgent keeps a short printable label for the session list.
func cleanUserAgent(ua string) string {
	ua = strings.Map(func(r rune) rune {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, ua)
	if len(ua) > 128 {
		ua = ua[:128]
	}
	return ua
}

// --- the two-step sign-in ---

// mfaToken is the payload of an mfa_token: a right password for this
// account, from this device class, until exp.
type mfaToken struct {
	UserID string `json:"u"`
	Device string `json:"d,omitempty"`
	Exp    int64  `json:"e"`
	Nonce  string `json:"n"`
}

func (s *Service) newMFAToken(userID, device string, now time.Time) (string, error) {
	var n [16]byte
	if _, err := rand.Read(n[:]); err != nil {
		return "", err
	}
	b, _ := json.Marshal(mfaToken{UserID: userID, Device: device, Exp: now.Add(MFATokenTTL).Unix(), Nonce: base64.RawURLEncoding.EncodeToString(n[:])})
	body := base64.RawURLEncoding.EncodeToString(b)
	return "m1." + body + "." + s.sign("mfa", body), nil
}

// sign is a MAC over a token body under the device key, for one purpose.
func (s *Service) sign(purpose, body string) string {
	m := hmac.New(sha256.New, s.deviceKey)
	m.Write([]byte(purpose + "|" + body))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
}

func (s *Service) parseMFAToken(tok string, now time.Time) (mfaToken, bool) {
	parts := strings.Split(tok, ".")
	if len(tok) > 512 || len(parts) != 3 || parts[0] != "m1" {
		return mfaToken{}, false
	}
	if !hmac.Equal([]byte(parts[2]), []byte(s.sign("mfa", parts[1]))) {
		return mfaToken{}, false
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(parts[1])
	if err != nil {
		return mfaToken{}, false
	}
	var m mfaToken
	if json.Unmarshal(b, &m) != nil || m.UserID == "" || m.Nonce == "" || now.Unix() >= m.Exp {
		return mfaToken{}, false
	}
	return m, true
}

func (s *Service) serveSignInMFA(w http.ResponseWriter, r *http.Request) {
	var tok, code, rc string
	if err := decodeJSON(w, r, map[string]*string{"mfa_token": &tok, "totp_code": &code, "recovery_code": &rc}); err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.signInMFA(r.Context(), r, Secret(tok), Secret(code), Secret(rc))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeSignedIn(w, res)
}

func (s *Service) signInMFA(ctx context.Context, r *http.Request, tok, code, rc Secret) (signedIn, error) {
	now := s.cfg.Now()
	m, ok := s.parseMFAToken(tok.Reveal(), now)
	if !ok || code == "" && rc == "" {
		return signedIn{}, ErrInvalidMFAToken
	}
	ip, err := s.cfg.ClientIP(r)
	if err != nil || !ip.IsValid() {
		return signedIn{}, ErrClientIP
	}
	c := client{network: Network(ip), userAgent: cleanUserAgent(r.UserAgent())}
	u, exists, err := s.st.UserByID(ctx, m.UserID)
	if err != nil {
		return signedIn{}, storeErr(err)
	}
	if !exists {
		return signedIn{}, ErrInvalidMFAToken
	}
	// One use: a token buys one code attempt. A wrong code is answered
	// with a fresh token (the password stays proven), so a typo costs no
	// re-entry of the password while every attempt still meets the code
	// back-off, and two concurrent requests cannot both sign in.
	dctx, cancel := durable(ctx)
	defer cancel()
	if err := s.st.UseAssertion(dctx, "mfa:"+u.ID, m.Nonce, time.Unix(m.Exp, 0).Add(time.Minute)); err != nil {
		if errors.Is(err, store.ErrReplay) {
			return signedIn{}, ErrInvalidMFAToken
		}
		return signedIn{}, storeErr(err)
	}
	factor, err := s.secondFactor(ctx, u.ID, m.Device, code.Reveal(), rc.Reveal())
	if err != nil {
		if errors.Is(err, ErrInvalidCode) {
			next, err := s.newMFAToken(u.ID, m.Device, now)
			if err != nil {
				return signedIn{}, err
			}
			return signedIn{}, &MFARequiredError{Token: Secret(next), Retry: true}
		}
		return signedIn{}, err
	}
	if u.MustReset {
		// Both factors are proven: it is the owner, tell them.
		return signedIn{}, ErrPasswordResetRequired
	}
	return s.complete(ctx, u.ID, amrFor(factor), c, m.Device, "")
}

// --- device cookies ---

// deviceToken is "v1.<device id>.<issued unix>.<mac>", the MAC binding the
// username: a cookie from one account's sign-in means nothing for
// another, and usernames are never registered twice.
func (s *Service) deviceToken(username, device string, now time.Time) string {
	body := device + "." + base64.RawURLEncoding.EncodeToString(binary.BigEndian.AppendUint64(nil, uint64(now.Unix())))
	return "v1." + body + "." + s.sign("device|"+username, body)
}

// deviceFromCookie returns the device id of a well-signed, unexpired
// device cookie for username, or "".
func (s *Service) deviceFromCookie(r *http.Request, username string) string {
	cs := r.CookiesNamed(DeviceCookie)
	if len(cs) != 1 || len(cs[0].Value) > 256 {
		return ""
	}
	parts := strings.Split(cs[0].Value, ".")
	if len(parts) != 4 || parts[0] != "v1" || len(parts[1]) != 22 {
		return ""
	}
	body := parts[1] + "." + parts[2]
	if !hmac.Equal([]byte(parts[3]), []byte(s.sign("device|"+username, body))) {
		return ""
	}
	ts, err := base64.RawURLEncoding.Strict().DecodeString(parts[2])
	if err != nil || len(ts) != 8 {
		return ""
	}
	issued := time.Unix(int64(binary.BigEndian.Uint64(ts)), 0)
	if s.cfg.Now().Sub(issued) >= DeviceCookieTTL {
		return ""
	}
	return parts[1]
}

func deviceCookie(v string) *http.Cookie {
	return &http.Cookie{Name: DeviceCookie, Value: v, Path: SignInPath, MaxAge: int(DeviceCookieTTL / time.Second),
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode}
}

package identity

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/malai-sec/malai/examples/malai/identity/store"
)

// maxKnown bounds the networks and devices remembered per account.
const maxKnown = 32

// User is an account as the service shows it.
type User struct {
	// ID is the stable opaque account id; Subject ("user:" + ID) is the
	// "sub" of its tokens and the subject other domains key on.
	ID, Subject string
	Username    string
	Roles       []string
	Created     time.Time
	MFA         bool
}

func (s *Service) publicUser(u store.User) User {
	return User{ID: u.ID, Subject: UserSubject(u.ID), Username: s.username(u), Roles: slices.Clone(u.Roles), Created: u.Created, MFA: u.TOTP != nil}
}

// The store holds no username, address or device id in the clear: a
// username is indexed by a keyed digest and kept sealed for display; the
// networks and devices an account used are kept as keyed digests, since
// membership is all that is asked of them.

func (s *Service) nameKey(name string) string { return "u1:" + s.mac(s.riskKey, "username", name) }

func nameAAD(id string) []byte { return []byte("malai.identity.username:" + id) }

func (s *Service) sealName(id, name string) ([]byte, error) {
	return s.ring.Seal(nil, []byte(name), nameAAD(id))
}

// username opens an account's sealed username ("" if it does not open).
func (s *Service) username(u store.User) string {
	b, _, err := s.ring.Open(nil, u.Name, nameAAD(u.ID))
	if err != nil {
		s.log.Error("identity: a stored username does not open", "sub", UserSubject(u.ID), "error", err.Error())
		return ""
	}
	return string(b)
}

// seen is the digest under which a network or device is remembered.
func (s *Service) seen(kind, v string) string {
	if v == "" {
		return ""
	}
	return s.mac(s.riskKey, "seen-"+kind, v)
}

// remember moves key to the end of list with time now, dropping the
// oldest entries beyond maxKnown.
func remember(list []store.Seen, key string, now time.Time) []store.Seen {
	if key == "" {
		return list
	}
	out := slices.DeleteFunc(slices.Clone(list), func(s store.Seen) bool { return s.Key == key })
	out = append(out, store.Seen{Key: key, At: now})
	if len(out) > maxKnown {
		out = out[len(out)-maxKnown:]
	}
	return out
}

func knows(list []store.Seen, key string) bool {
	return key != "" && slices.ContainsFunc(list, func(s store.Seen) bool { return s.Key == key })
}

// updateUser applies f to the current record and stores it, retrying when
// another request changed the account in between. f may abort with an
// error, which is returned as is.
func (s *Service) updateUser(ctx context.Context, id string, f func(*store.User) error) (store.User, error) {
	for attempt := 0; ; attempt++ {
		u, ok, err := s.st.UserByID(ctx, id)
		if err != nil {
			return store.User{}, storeErr(err)
		}
		if !ok {
			return store.User{}, ErrUnknownUser
		}
		if err := f(&u); err != nil {
			return store.User{}, err
		}
		saved, err := s.st.UpdateUser(ctx, u)
		if errors.Is(err, store.ErrConflict) && attempt < 8 {
			continue
		}
		if errors.Is(err, store.ErrNotFound) {
			return store.User{}, ErrUnknownUser
		}
		if err != nil {
			return store.User{}, storeErr(err)
		}
		return saved, nil
	}
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

func (s *Service) serveSignUp(w http.ResponseWriter, r *http.Request) {
	req, err := decodeSignUp(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var network netip.Prefix
	if ip, err := s.cfg.ClientIP(r); err == nil {
		network = Network(ip)
	}
	u, err := s.signUp(r.Context(), req.Username, req.Password.Reveal(), network, nil)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	b, _ := json.Marshal(map[string]string{"id": u.ID, "sub": u.Subject, "username": u.Username})
	writeJSON(w, http.StatusCreated, b)
}

// CreateUser creates an account the way POST /v1/users does (for seeding
// and operator tools), with the given roles and no known network yet. It
// returns ErrInvalidUsername, a *PolicyError, ErrPasswordCompromised,
// ErrUsernameTaken, ErrUnavailable or ErrClosed.
func (s *Service) CreateUser(ctx context.Context, username, password string, roles ...string) (User, error) {
	for _, r := range roles {
		if !scopeRE.MatchString(r) {
			return User{}, ErrMalformedRequest
		}
	}
	return s.signUp(ctx, username, password, netip.Prefix{}, roles)
}

// signUp creates an account; network, when valid, is remembered as its
// first known network.
func (s *Service) signUp(ctx context.Context, username, pw string, network netip.Prefix, roles []string) (User, error) {
	if s.isClosed() {
		return User{}, ErrClosed
	}
	name, ok := normalizeUsername(username)
	if !ok {
		return User{}, ErrInvalidUsername
	}
	// A cheap early answer; the store decides for real below.
	if _, taken, err := s.st.UserByName(ctx, s.nameKey(name)); err != nil {
		return User{}, storeErr(err)
	} else if taken {
		return User{}, ErrUsernameTaken
	}
	hash, err := s.newPasswordHash(ctx, name, pw)
	if err != nil {
		if errors.Is(err, ErrPasswordCompromised) {
			s.log.LogAttrs(ctx, slog.LevelInfo, "identity: sign-up refused a compromised password")
		}
		return User{}, err
	}
	id, err := newUserID()
	if err != nil {
		return User{}, err
	}
	now := s.cfg.Now()
	sealed, err := s.sealName(id, name)
	if err != nil {
		return User{}, err
	}
	u := store.User{ID: id, NameKey: s.nameKey(name), Name: sealed, PasswordHash: hash, Roles: slices.Clone(roles), Created: now, PasswordChanged: now}
	if network.IsValid() {
		u.Networks = remember(nil, s.seen("network", network.String()), now)
	}
	dctx, cancel := durable(ctx)
	defer cancel()
	created, err := s.st.CreateUser(dctx, u)
	switch {
	case errors.Is(err, store.ErrUsernameTaken):
		return User{}, ErrUsernameTaken
	case err != nil:
		return User{}, storeErr(err)
	}
	s.auditEvent(ctx, AuditUserCreated, map[string]any{"sub": UserSubject(created.ID), "roles": roles})
	return s.publicUser(created), nil
}

// LookupUser returns the account with this username.
func (s *Service) LookupUser(ctx context.Context, username string) (User, error) {
	name, ok := normalizeUsername(username)
	if !ok {
		return User{}, ErrInvalidUsername
	}
	u, found, err := s.st.UserByName(ctx, s.nameKey(name))
	if err != nil {
		return User{}, storeErr(err)
	}
	if !found {
		return User{}, ErrUnknownUser
	}
	return s.publicUser(u), nil
}

// DeleteUser deletes an account and its sessions (an operator action).
// Its username stays reserved forever: nobody can register it again, so
// nothing that refers to the old account (its subject in other domains,
// its device cookies) can ever pass to someone else.
func (s *Service) DeleteUser(ctx context.Context, username string) error {
	u, err := s.LookupUser(ctx, username)
	if err != nil {
		return err
	}
	dctx, cancel := durable(ctx)
	defer cancel()
	if err := s.st.DeleteUser(dctx, u.ID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return ErrUnknownUser
		}
		return storeErr(err)
	}
	s.auditEvent(ctx, AuditUserDeleted, map[string]any{"sub": u.Subject})
	return nil
}

// ResetPassword sets a new password out of band (the reference system's
// stand-in for an e-mailed reset link, or an operator action). The
// password must meet the policy and not be compromised. It clears the
// forced-reset flag and revokes every refresh session of the account.
func (s *Service) ResetPassword(ctx context.Context, username, newPassword string) error {
	u, err := s.LookupUser(ctx, username)
	if err != nil {
		return err
	}
	hash, err := s.newPasswordHash(ctx, u.Username, newPassword)
	if err != nil {
		return err
	}
	dctx, cancel := durable(ctx)
	defer cancel()
	now := s.cfg.Now()
	if _, err := s.updateUser(dctx, u.ID, func(su *store.User) error {
		su.PasswordHash, su.MustReset, su.PasswordChanged = hash, false, now
		return nil
	}); err != nil {
		return err
	}
	n, err := s.st.RevokeSessions(dctx, u.ID, "")
	if err != nil {
		return storeErr(err)
	}
	s.auditEvent(ctx, AuditPasswordReset, map[string]any{"sub": u.Subject, "sessions_revoked": n})
	return nil
}

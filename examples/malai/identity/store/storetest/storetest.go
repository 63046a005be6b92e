// Package storetest is the conformance suite every identity
// [store.Store] implementation runs:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) storetest.Open {
//			dir := t.TempDir()
//			return func() store.Store { s, _ := boltstore.Open(dir, 0); return s }
//		})
//	}
//
// The factory is called once per subtest and returns an Open function
// that opens the same backing data each time it is called: the suite
// closes a store and opens it again to check that what was acknowledged
// survives a restart.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/malai-sec/malai/examples/malai/identity/store"
)

// Open opens the subtest's backing data; each call returns a new handle.
type Open func() store.Store

// Factory prepares fresh backing data for one subtest.
type Factory func(t *testing.T) Open

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// Run runs the suite.
func Run(t *testing.T, newStore Factory) {
	tests := []struct {
		name string
		f    func(*testing.T, Open)
	}{
		{"users", testUsers},
		{"usernames-forever", testUsernamesForever},
		{"user-version", testUserVersion},
		{"user-concurrency", testUserConcurrency},
		{"sessions-rotate", testSessionsRotate},
		{"sessions-concurrent-rotate", testSessionsConcurrentRotate},
		{"sessions-expiry", testSessionsExpiry},
		{"sessions-revoke", testSessionsRevoke},
		{"sessions-evict-and-prune", testSessionsEvictPrune},
		{"events", testEvents},
		{"signing-keys", testSigningKeys},
		{"client-keys", testClientKeys},
		{"assertions", testAssertions},
		{"secrets", testSecrets},
		{"restart", testRestart},
		{"closed", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			open := newStore(t)
			tc.f(t, open)
		})
	}
}

func ctx() context.Context { return context.Background() }

func openT(t *testing.T, open Open) store.Store {
	t.Helper()
	s := open()
	if s == nil {
		t.Fatal("open returned nil")
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func user(id, name string) store.User {
	return store.User{ID: id, NameKey: name, Name: []byte("sealed:" + name), PasswordHash: "$argon2id$hash-of-" + name, Created: t0, PasswordChanged: t0}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want %v", err, want)
	}
}

func testUsers(t *testing.T, open Open) {
	s := openT(t, open)
	u := user("u-1", "alice")
	u.Roles = []string{"teller"}
	u.TOTP = []byte{1, 2, 3}
	u.Recovery = []store.Digest{{1}, {2}}
	u.Networks = []store.Seen{{Key: "192.0.2.1/32", At: t0}}
	got, err := s.CreateUser(ctx(), u)
	must(t, err)
	if got.Version == 0 {
		t.Fatal("CreateUser returned version 0")
	}
	for _, lookup := range []func() (store.User, bool, error){
		func() (store.User, bool, error) { return s.UserByID(ctx(), "u-1") },
		func() (store.User, bool, error) { return s.UserByName(ctx(), "alice") },
	} {
		back, ok, err := lookup()
		must(t, err)
		if !ok || back.ID != "u-1" || back.NameKey != "alice" || string(back.Name) != "sealed:alice" || back.PasswordHash != u.PasswordHash ||
			!slices.Equal(back.Roles, u.Roles) || !slices.Equal(back.TOTP, u.TOTP) ||
			!slices.Equal(back.Recovery, u.Recovery) || len(back.Networks) != 1 || !back.Networks[0].At.Equal(t0) ||
			back.Version != got.Version {
			t.Fatalf("read back %+v, want %+v", back, got)
		}
	}
	if _, ok, err := s.UserByName(ctx(), "bob"); err != nil || ok {
		t.Fatalf("missing user: ok=%v err=%v", ok, err)
	}
	if _, ok, err := s.UserByID(ctx(), "u-404"); err != nil || ok {
		t.Fatalf("missing id: ok=%v err=%v", ok, err)
	}
	_, err = s.CreateUser(ctx(), user("u-2", "alice"))
	wantErr(t, err, store.ErrUsernameTaken)
	_, err = s.CreateUser(ctx(), user("u-1", "carol"))
	wantErr(t, err, store.ErrExists)
	if _, ok, _ := s.UserByName(ctx(), "carol"); ok {
		t.Fatal("a refused create left the username behind")
	}
	// carol is still free: the refused create claimed nothing.
	_, err = s.CreateUser(ctx(), user("u-3", "carol"))
	must(t, err)
}

func testUsernamesForever(t *testing.T, open Open) {
	s := openT(t, open)
	_, err := s.CreateUser(ctx(), user("u-1", "alice"))
	must(t, err)
	must(t, s.CreateSession(ctx(), session("s-1", "u-1", 1), 16))
	must(t, s.DeleteUser(ctx(), "u-1"))
	if _, ok, _ := s.UserByID(ctx(), "u-1"); ok {
		t.Fatal("deleted user still readable by id")
	}
	if _, ok, _ := s.UserByName(ctx(), "alice"); ok {
		t.Fatal("deleted user still readable by name")
	}
	_, err = s.CreateUser(ctx(), user("u-2", "alice"))
	wantErr(t, err, store.ErrUsernameTaken)
	wantErr(t, s.DeleteUser(ctx(), "u-1"), store.ErrNotFound)
	_, err = s.UpdateUser(ctx(), store.User{ID: "u-1", NameKey: "alice", Version: 1})
	wantErr(t, err, store.ErrNotFound)
	if ss, err := s.Sessions(ctx(), "u-1"); err != nil || len(ss) != 0 {
		t.Fatalf("deleted user's sessions: %v %v", ss, err)
	}
	_, err = s.RotateSession(ctx(), rotation(1, 2, t0))
	wantErr(t, err, store.ErrNotFound)
	// After a restart the name is still reserved.
	s.Close()
	s2 := openT(t, open)
	_, err = s2.CreateUser(ctx(), user("u-3", "alice"))
	wantErr(t, err, store.ErrUsernameTaken)
}

func testUserVersion(t *testing.T, open Open) {
	s := openT(t, open)
	u, err := s.CreateUser(ctx(), user("u-1", "alice"))
	must(t, err)
	u.MustReset = true
	u2, err := s.UpdateUser(ctx(), u)
	must(t, err)
	if u2.Version == u.Version {
		t.Fatal("version unchanged by update")
	}
	// A writer holding the old version loses.
	u.PasswordHash = "stale"
	_, err = s.UpdateUser(ctx(), u)
	wantErr(t, err, store.ErrConflict)
	back, _, _ := s.UserByID(ctx(), "u-1")
	if back.PasswordHash == "stale" || !back.MustReset || back.Version != u2.Version {
		t.Fatalf("after a conflicting update: %+v", back)
	}
	// The username cannot change through an update.
	u2.NameKey = "mallory"
	_, err = s.UpdateUser(ctx(), u2)
	wantErr(t, err, store.ErrConflict)
	if _, ok, _ := s.UserByName(ctx(), "mallory"); ok {
		t.Fatal("update renamed the user")
	}
}

func testUserConcurrency(t *testing.T, open Open) {
	s := openT(t, open)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.CreateUser(ctx(), user(fmt.Sprintf("u-%d", i), "alice"))
		}()
	}
	wg.Wait()
	if ok := count(errs, nil); ok != 1 {
		t.Fatalf("%d concurrent creates of one name succeeded: %v", ok, errs)
	}
	winner, _, _ := s.UserByName(ctx(), "alice")
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := winner
			u.TOTPLastStep = uint64(100 + i)
			_, errs[i] = s.UpdateUser(ctx(), u)
		}()
	}
	wg.Wait()
	if ok := count(errs, nil); ok != 1 {
		t.Fatalf("%d concurrent updates from one version succeeded: %v", ok, errs)
	}
	if c := count(errs, store.ErrConflict); c != n-1 {
		t.Fatalf("%d conflicts, want %d: %v", c, n-1, errs)
	}
}

func count(errs []error, want error) int {
	n := 0
	for _, e := range errs {
		if want == nil && e == nil || want != nil && errors.Is(e, want) {
			n++
		}
	}
	return n
}

func digest(b byte) store.Digest { return store.Digest{b, 0xd1} }

func session(id, userID string, tok byte) store.Session {
	return store.Session{ID: id, UserID: userID, AMR: []string{"pwd"}, AuthTime: t0, Created: t0, LastUsed: t0,
		Current: digest(tok), Client: []byte("sealed-client"), DeviceID: "d-1"}
}

func rotation(from, to byte, now time.Time) store.Rotation {
	return store.Rotation{Presented: digest(from), Next: digest(to), Now: now, Idle: time.Hour, MaxAge: 24 * time.Hour}
}

func testSessionsRotate(t *testing.T, open Open) {
	s := openT(t, open)
	must(t, s.CreateSession(ctx(), session("s-1", "u-1", 1), 16))
	wantErr(t, s.CreateSession(ctx(), session("s-1", "u-1", 9), 16), store.ErrExists)
	now := t0.Add(time.Minute)
	got, err := s.RotateSession(ctx(), rotation(1, 2, now))
	must(t, err)
	if got.ID != "s-1" || got.UserID != "u-1" || got.Current != digest(2) || !got.LastUsed.Equal(now) ||
		!slices.Equal(got.AMR, []string{"pwd"}) || !got.AuthTime.Equal(t0) || got.DeviceID != "d-1" || string(got.Client) != "sealed-client" {
		t.Fatalf("rotated session %+v", got)
	}
	got, err = s.RotateSession(ctx(), rotation(2, 3, now.Add(time.Minute)))
	must(t, err)
	if got.Current != digest(3) {
		t.Fatalf("second rotation: %+v", got)
	}
	// Presenting an older token: reuse, and the session is revoked.
	got, err = s.RotateSession(ctx(), rotation(1, 4, now.Add(2*time.Minute)))
	wantErr(t, err, store.ErrReused)
	if got.ID != "s-1" || got.UserID != "u-1" {
		t.Fatalf("reuse reported session %+v", got)
	}
	_, err = s.RotateSession(ctx(), rotation(3, 5, now.Add(3*time.Minute)))
	wantErr(t, err, store.ErrExpired)
	ss, err := s.Sessions(ctx(), "u-1")
	must(t, err)
	if len(ss) != 1 || !ss[0].Revoked {
		t.Fatalf("after reuse: %+v", ss)
	}
	_, err = s.RotateSession(ctx(), rotation(77, 78, now))
	wantErr(t, err, store.ErrNotFound)
}

func testSessionsConcurrentRotate(t *testing.T, open Open) {
	s := openT(t, open)
	must(t, s.CreateSession(ctx(), session("s-1", "u-1", 1), 16))
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.RotateSession(ctx(), rotation(1, byte(10+i), t0.Add(time.Second)))
		}()
	}
	wg.Wait()
	if ok := count(errs, nil); ok != 1 {
		t.Fatalf("%d concurrent rotations of one token succeeded: %v", ok, errs)
	}
	if r := count(errs, store.ErrReused); r != n-1 {
		t.Fatalf("%d reuses, want %d: %v", r, n-1, errs)
	}
	ss, _ := s.Sessions(ctx(), "u-1")
	if len(ss) != 1 || !ss[0].Revoked {
		t.Fatalf("a raced refresh left the session live: %+v", ss)
	}
}

func testSessionsExpiry(t *testing.T, open Open) {
	s := openT(t, open)
	must(t, s.CreateSession(ctx(), session("s-1", "u-1", 1), 16))
	_, err := s.RotateSession(ctx(), rotation(1, 2, t0.Add(time.Hour))) // idle is one hour
	wantErr(t, err, store.ErrExpired)
	must(t, s.CreateSession(ctx(), session("s-2", "u-1", 3), 16))
	now := t0
	for i := byte(0); i < 30; i++ {
		now = now.Add(59 * time.Minute)
		_, err = s.RotateSession(ctx(), rotation(3+i, 4+i, now))
		if now.Sub(t0) >= 24*time.Hour {
			wantErr(t, err, store.ErrExpired)
			return
		}
		must(t, err)
	}
	t.Fatal("the absolute lifetime never ended the session")
}

func testSessionsRevoke(t *testing.T, open Open) {
	s := openT(t, open)
	for i, id := range []string{"s-1", "s-2", "s-3"} {
		sess := session(id, "u-1", byte(1+i))
		sess.Created = t0.Add(time.Duration(i) * time.Second)
		must(t, s.CreateSession(ctx(), sess, 16))
	}
	must(t, s.CreateSession(ctx(), session("s-9", "u-2", 9), 16))
	ss, err := s.Sessions(ctx(), "u-1")
	must(t, err)
	if len(ss) != 3 || ss[0].ID != "s-1" || ss[2].ID != "s-3" {
		t.Fatalf("sessions %+v", ss)
	}
	if ok, err := s.RevokeSession(ctx(), "u-2", "s-1"); err != nil || ok {
		t.Fatalf("another user revoked s-1: %v %v", ok, err)
	}
	if ok, err := s.RevokeSession(ctx(), "u-1", "s-1"); err != nil || !ok {
		t.Fatalf("revoke s-1: %v %v", ok, err)
	}
	if ok, _ := s.RevokeSession(ctx(), "u-1", "s-1"); ok {
		t.Fatal("revoked twice")
	}
	_, err = s.RotateSession(ctx(), rotation(1, 20, t0.Add(time.Minute)))
	wantErr(t, err, store.ErrExpired)
	// Sign-out by token.
	sess, ok, err := s.RevokeSessionByToken(ctx(), digest(2))
	must(t, err)
	if !ok || sess.ID != "s-2" {
		t.Fatalf("revoke by token: %v %+v", ok, sess)
	}
	if _, ok, _ := s.RevokeSessionByToken(ctx(), digest(2)); ok {
		t.Fatal("revoked by token twice")
	}
	if _, ok, _ := s.RevokeSessionByToken(ctx(), digest(55)); ok {
		t.Fatal("unknown token revoked something")
	}
	// A rotated token cannot sign the session out.
	_, err = s.RotateSession(ctx(), rotation(3, 30, t0.Add(time.Minute)))
	must(t, err)
	if _, ok, _ := s.RevokeSessionByToken(ctx(), digest(3)); ok {
		t.Fatal("a rotated token signed the session out")
	}
	must(t, s.CreateSession(ctx(), session("s-4", "u-1", 40), 16))
	n, err := s.RevokeSessions(ctx(), "u-1", "s-4")
	must(t, err)
	if n != 1 { // s-3; s-1 and s-2 were already revoked
		t.Fatalf("RevokeSessions revoked %d, want 1", n)
	}
	if _, err := s.RotateSession(ctx(), rotation(40, 41, t0.Add(time.Minute))); err != nil {
		t.Fatalf("the kept session: %v", err)
	}
	if _, err := s.RotateSession(ctx(), rotation(9, 10, t0.Add(time.Minute))); err != nil {
		t.Fatalf("another user's session: %v", err)
	}
}

func testSessionsEvictPrune(t *testing.T, open Open) {
	s := openT(t, open)
	for i := range 4 {
		sess := session(fmt.Sprintf("s-%d", i), "u-1", byte(1+i))
		sess.Created = t0.Add(time.Duration(i) * time.Second)
		must(t, s.CreateSession(ctx(), sess, 3))
	}
	ss, _ := s.Sessions(ctx(), "u-1")
	if len(ss) != 3 || ss[0].ID != "s-1" {
		t.Fatalf("after eviction: %+v", ss)
	}
	_, err := s.RotateSession(ctx(), rotation(1, 50, t0.Add(time.Minute)))
	wantErr(t, err, store.ErrNotFound)

	must(t, s.Prune(ctx(), store.Prune{Now: t0.Add(2 * time.Hour), Idle: time.Hour, MaxAge: 24 * time.Hour, EventsBefore: t0}))
	ss, _ = s.Sessions(ctx(), "u-1")
	if len(ss) != 0 {
		t.Fatalf("prune kept %+v", ss)
	}
	_, err = s.RotateSession(ctx(), rotation(2, 51, t0.Add(2*time.Hour)))
	wantErr(t, err, store.ErrNotFound)
}

func testEvents(t *testing.T, open Open) {
	s := openT(t, open)
	var evs []store.Event
	for i := range 10 {
		evs = append(evs, store.Event{Key: "net:a", Member: fmt.Sprintf("acct-%d", i%4), At: t0.Add(time.Duration(i) * time.Minute)})
	}
	evs = append(evs, store.Event{Key: "acct:b", Member: "net:a", At: t0})
	must(t, s.AddEvents(ctx(), evs))
	must(t, s.AddEvents(ctx(), nil))
	got, err := s.CountEvents(ctx(), []store.Query{
		{Key: "net:a", Since: t0.Add(-time.Second)},
		{Key: "net:a", Since: t0.Add(4*time.Minute + 30*time.Second)},
		{Key: "acct:b", Since: t0.Add(-time.Second)},
		{Key: "nothing", Since: t0.Add(-time.Hour)},
		{Key: "net:", Since: t0.Add(-time.Hour)}, // a prefix of a key is another key
	})
	must(t, err)
	want := []store.Tally{
		{Events: 10, Members: 4, Last: t0.Add(9 * time.Minute)},
		{Events: 5, Members: 4, Last: t0.Add(9 * time.Minute)},
		{Events: 1, Members: 1, Last: t0},
		{},
		{},
	}
	for i := range want {
		if got[i].Events != want[i].Events || got[i].Members != want[i].Members || !got[i].Last.Equal(want[i].Last) {
			t.Fatalf("query %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	must(t, s.ClearEvents(ctx(), []string{"acct:b"}))
	got, _ = s.CountEvents(ctx(), []store.Query{{Key: "acct:b", Since: t0.Add(-time.Hour)}, {Key: "net:a", Since: t0.Add(-time.Hour)}})
	if got[0].Events != 0 || got[1].Events != 10 {
		t.Fatalf("after clear: %+v", got)
	}
	must(t, s.Prune(ctx(), store.Prune{EventsBefore: t0.Add(5 * time.Minute), Now: t0}))
	got, _ = s.CountEvents(ctx(), []store.Query{{Key: "net:a", Since: t0.Add(-time.Hour)}})
	if got[0].Events != 5 {
		t.Fatalf("after prune: %+v", got)
	}
}

func testSigningKeys(t *testing.T, open Open) {
	s := openT(t, open)
	ks, err := s.SigningKeys(ctx())
	must(t, err)
	if ks.Version != 0 || len(ks.Keys) != 0 {
		t.Fatalf("empty store: %+v", ks)
	}
	ks.Keys = []store.SigningKey{{ID: "k1", Private: []byte("sealed"), Public: []byte(`{"kty":"EC"}`), Created: t0, Activated: t0}}
	ks.Request = 7
	saved, err := s.SaveSigningKeys(ctx(), ks)
	must(t, err)
	if saved.Version == 0 {
		t.Fatal("saved version 0")
	}
	_, err = s.SaveSigningKeys(ctx(), ks) // stale (version 0)
	wantErr(t, err, store.ErrConflict)
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := saved
			next.Keys = append(slices.Clone(saved.Keys), store.SigningKey{ID: fmt.Sprintf("k%d", 10+i), Created: t0})
			_, errs[i] = s.SaveSigningKeys(ctx(), next)
		}()
	}
	wg.Wait()
	if ok := count(errs, nil); ok != 1 {
		t.Fatalf("%d concurrent rotations from one version succeeded: %v", ok, errs)
	}
	back, _ := s.SigningKeys(ctx())
	if len(back.Keys) != 2 || back.Keys[0].ID != "k1" || !slices.Equal(back.Keys[0].Private, []byte("sealed")) || !back.Keys[0].Activated.Equal(t0) || back.Request != 7 {
		t.Fatalf("read back %+v", back)
	}
}

func testClientKeys(t *testing.T, open Open) {
	s := openT(t, open)
	k := store.ClientKey{ClientID: "worker", KeyID: "a", JWK: []byte(`{"kty":"EC"}`), Registered: t0, Expires: t0.Add(time.Hour)}
	must(t, s.AddClientKey(ctx(), k))
	wantErr(t, s.AddClientKey(ctx(), k), store.ErrExists)
	k.KeyID = "b"
	must(t, s.AddClientKey(ctx(), k))
	must(t, s.AddClientKey(ctx(), store.ClientKey{ClientID: "ledger", KeyID: "a", JWK: []byte(`{}`), Registered: t0}))
	n, err := s.RevokeClientKeys(ctx(), "worker", "a", t0.Add(time.Minute))
	must(t, err)
	if n != 1 {
		t.Fatalf("revoked %d", n)
	}
	if n, _ := s.RevokeClientKeys(ctx(), "worker", "a", t0.Add(2*time.Minute)); n != 0 {
		t.Fatalf("revoked a revoked key again: %d", n)
	}
	keys, err := s.ClientKeys(ctx(), "worker")
	must(t, err)
	if len(keys) != 2 || keys[0].KeyID != "a" || !keys[0].Revoked.Equal(t0.Add(time.Minute)) || !keys[1].Revoked.IsZero() ||
		!keys[1].Expires.Equal(t0.Add(time.Hour)) || string(keys[1].JWK) != `{"kty":"EC"}` {
		t.Fatalf("worker keys %+v", keys)
	}
	if n, _ := s.RevokeClientKeys(ctx(), "worker", "", t0.Add(3*time.Minute)); n != 1 {
		t.Fatalf("revoke all: %d", n)
	}
	other, _ := s.ClientKeys(ctx(), "ledger")
	if len(other) != 1 || !other[0].Revoked.IsZero() {
		t.Fatalf("revoking the worker touched the ledger: %+v", other)
	}
	if none, _ := s.ClientKeys(ctx(), "nobody"); len(none) != 0 {
		t.Fatalf("unknown client: %+v", none)
	}
}

func testAssertions(t *testing.T, open Open) {
	s := openT(t, open)
	exp := t0.Add(time.Minute)
	must(t, s.UseAssertion(ctx(), "worker", "j1", exp))
	wantErr(t, s.UseAssertion(ctx(), "worker", "j1", exp), store.ErrReplay)
	must(t, s.UseAssertion(ctx(), "ledger", "j1", exp))
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = s.UseAssertion(ctx(), "worker", "j2", exp) }()
	}
	wg.Wait()
	if ok := count(errs, nil); ok != 1 {
		t.Fatalf("%d concurrent uses of one assertion succeeded: %v", ok, errs)
	}
	must(t, s.Prune(ctx(), store.Prune{Now: exp.Add(time.Second), EventsBefore: t0}))
	must(t, s.UseAssertion(ctx(), "worker", "j1", exp.Add(time.Hour)))
}

func testSecrets(t *testing.T, open Open) {
	s := openT(t, open)
	var wg sync.WaitGroup
	got := make([][]byte, 8)
	errs := make([]error, 8)
	for i := range got {
		wg.Add(1)
		go func() { defer wg.Done(); got[i], errs[i] = s.Secret(ctx(), "device-mac", []byte{byte(i + 1)}) }()
	}
	wg.Wait()
	for i := range got {
		must(t, errs[i])
		if !slices.Equal(got[i], got[0]) || len(got[i]) != 1 {
			t.Fatalf("replicas disagree on the secret: %v", got)
		}
	}
	again, err := s.Secret(ctx(), "device-mac", []byte{99})
	must(t, err)
	if !slices.Equal(again, got[0]) {
		t.Fatal("a second call replaced the secret")
	}
	other, _ := s.Secret(ctx(), "spray", []byte{42})
	if !slices.Equal(other, []byte{42}) {
		t.Fatalf("another name: %v", other)
	}
}

// testRestart checks that every kind of record survives a close and a
// reopen, and that the one-use rules still hold afterwards.
func testRestart(t *testing.T, open Open) {
	s := open()
	u, err := s.CreateUser(ctx(), user("u-1", "alice"))
	must(t, err)
	u.TOTP = []byte("sealed-secret")
	u, err = s.UpdateUser(ctx(), u)
	must(t, err)
	must(t, s.CreateSession(ctx(), session("s-1", "u-1", 1), 16))
	_, err = s.RotateSession(ctx(), rotation(1, 2, t0.Add(time.Minute)))
	must(t, err)
	must(t, s.AddEvents(ctx(), []store.Event{{Key: "acct:alice", Member: "n", At: t0}}))
	_, err = s.SaveSigningKeys(ctx(), store.KeySet{Keys: []store.SigningKey{{ID: "k1", Private: []byte("p"), Created: t0}}})
	must(t, err)
	must(t, s.AddClientKey(ctx(), store.ClientKey{ClientID: "worker", KeyID: "a", JWK: []byte(`{}`), Registered: t0}))
	must(t, s.UseAssertion(ctx(), "worker", "j1", t0.Add(time.Hour)))
	sec, err := s.Secret(ctx(), "x", []byte("first"))
	must(t, err)
	must(t, s.Close())

	s = openT(t, open)
	back, ok, err := s.UserByName(ctx(), "alice")
	must(t, err)
	if !ok || back.ID != "u-1" || string(back.TOTP) != "sealed-secret" || back.Version != u.Version {
		t.Fatalf("user after restart: %+v", back)
	}
	_, err = s.CreateUser(ctx(), user("u-2", "alice"))
	wantErr(t, err, store.ErrUsernameTaken)
	_, err = s.RotateSession(ctx(), rotation(2, 3, t0.Add(2*time.Minute)))
	must(t, err)
	_, err = s.RotateSession(ctx(), rotation(1, 4, t0.Add(3*time.Minute)))
	wantErr(t, err, store.ErrReused)
	if c, _ := s.CountEvents(ctx(), []store.Query{{Key: "acct:alice", Since: t0.Add(-time.Second)}}); c[0].Events != 1 {
		t.Fatalf("events after restart: %+v", c)
	}
	if ks, _ := s.SigningKeys(ctx()); len(ks.Keys) != 1 || string(ks.Keys[0].Private) != "p" {
		t.Fatalf("keys after restart: %+v", ks)
	}
	if ck, _ := s.ClientKeys(ctx(), "worker"); len(ck) != 1 {
		t.Fatalf("client keys after restart: %+v", ck)
	}
	wantErr(t, s.UseAssertion(ctx(), "worker", "j1", t0.Add(time.Hour)), store.ErrReplay)
	if again, _ := s.Secret(ctx(), "x", []byte("second")); !slices.Equal(again, sec) {
		t.Fatalf("secret after restart: %q", again)
	}
}

func testClosed(t *testing.T, open Open) {
	s := open()
	must(t, s.Close())
	must(t, s.Close())
	_, err := s.CreateUser(ctx(), user("u-1", "alice"))
	if err == nil {
		t.Fatal("CreateUser on a closed store succeeded")
	}
	if _, _, err := s.UserByName(ctx(), "alice"); err == nil {
		t.Fatal("UserByName on a closed store succeeded")
	}
}

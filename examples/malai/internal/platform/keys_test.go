package platform

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/keyring"
)

func TestKeyFileLifecycle(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadKeys(dir); err == nil {
		t.Fatal("LoadKeys created a key file")
	}
	k, err := LoadOrCreateKeys(dir, "example.test/log")
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "keys.json"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	ring, err := k.Ring()
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := ring.Seal(nil, []byte("before rotation"), nil)
	if err := k.Rotate(time.Now().Add(time.Second), ring); err != nil {
		t.Fatal(err)
	}
	if ring.Current() != k.DataKeys[1].ID {
		t.Fatalf("live ring seals with %q, want the new key %q", ring.Current(), k.DataKeys[1].ID)
	}
	again, err := LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	ring2, err := again.Ring()
	if err != nil {
		t.Fatal(err)
	}
	if ring2.Current() != ring.Current() {
		t.Fatal("the saved key file and the live ring disagree on the sealing key")
	}
	if pt, _, err := ring2.Open(nil, rec, nil); err != nil || string(pt) != "before rotation" {
		t.Fatalf("old record after rotation: %q %v", pt, err)
	}
	if _, _, err := again.Signer(); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("keys", "k", again)
	out := buf.String() + fmt.Sprint(again)
	if strings.Contains(out, "PRIVATE") || !strings.Contains(out, "REDACTED") {
		t.Fatalf("keys leak into logs: %s", out)
	}
}

// A first-format key file (plaintext keys) is read and rewritten wrapped
// by the KEK: its records still open, the file no longer holds the key.
func TestLegacyKeyFileIsWrapped(t *testing.T) {
	dir := t.TempDir()
	key, _ := keyring.NewKey()
	skey, vkey, _ := note.GenerateKey(rand.Reader, "example.test/log")
	legacy, _ := json.Marshal(map[string]any{"data": map[string][]byte{"old": key[:]}, "order": []string{"old"}, "audit_signer": skey, "audit_verifier": vkey})
	if err := os.WriteFile(filepath.Join(dir, "keys.json"), legacy, 0o600); err != nil {
		t.Fatal(err)
	}
	old, _ := keyring.NewRing("old", map[string]keyring.Key{"old": key})
	rec, _ := old.Seal(nil, []byte("sealed by the first format"), nil)
	k, err := LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := k.Ring()
	if err != nil {
		t.Fatal(err)
	}
	if pt, _, err := ring.Open(nil, rec, nil); err != nil || string(pt) != "sealed by the first format" {
		t.Fatalf("old record: %q %v", pt, err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "keys.json"))
	if bytes.Contains(b, []byte(base64.StdEncoding.EncodeToString(key[:]))) || bytes.Contains(b, []byte("PRIVATE+KEY")) {
		t.Fatal("the rewritten key file still holds a plaintext key")
	}
	if s, v, err := k.Signer(); err != nil || s.Name() != "example.test/log" || v.KeyHash() != s.KeyHash() {
		t.Fatalf("signer after upgrade: %v", err)
	}
}

// A wrapped key moved to another id does not unwrap: the id is bound.
func TestWrappedKeyBoundToID(t *testing.T) {
	w, err := OpenLocalKEK(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	wrapped, err := w.Wrap(ctx, "k1", []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Unwrap(ctx, "k2", wrapped); err == nil {
		t.Fatal("a key wrapped as k1 unwrapped as k2")
	}
	if b, err := w.Unwrap(ctx, "k1", wrapped); err != nil || string(b) != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("unwrap: %v", err)
	}
}

// Two processes share a data directory. A rotation announces a key that
// both hold before either seals with it; the first to switch seals with
// it and the other, not yet switched, opens that record; old records keep
// opening; the new signing key signs alongside the old one and every
// checkpoint signed before the rotation still verifies.
func TestRotationReachesEveryProcess(t *testing.T) {
	dir := t.TempDir()
	a, err := LoadOrCreateKeys(dir, "example.test/log")
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	ra, _ := a.Ring()
	rb, _ := b.Ring()
	before, _ := ra.Seal(nil, []byte("before"), nil)
	oldSigner, _, _ := a.Signer()
	cp, err := note.Sign(&note.Note{Text: "checkpoint before the rotation\n"}, oldSigner)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now()
	w, _ := OpenLocalKEK(dir)
	if ok, err := RotateKeyFile(ctx, dir, w, now, time.Minute, time.Hour); err != nil || ok {
		t.Fatalf("a rotation not yet due ran: %v, %v", ok, err)
	}
	if ok, err := RotateKeyFile(ctx, dir, w, now, time.Minute, 0); err != nil || !ok {
		t.Fatalf("rotate: %v, %v", ok, err)
	}
	if ok, _ := RotateKeyFile(ctx, dir, w, now, time.Minute, time.Hour); ok {
		t.Fatal("a second process's schedule rotated again")
	}
	oldID := ra.Current()
	for _, p := range []struct {
		k *KeyFile
		r *keyring.Ring
	}{{a, ra}, {b, rb}} {
		if err := p.k.sync(ctx, p.r, now); err != nil {
			t.Fatal(err)
		}
		if p.r.Current() != oldID {
			t.Fatal("the new key sealed before its activation time")
		}
	}
	if err := a.sync(ctx, ra, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if ra.Current() == oldID {
		t.Fatal("the new key did not take over at its activation time")
	}
	after, _ := ra.Seal(nil, []byte("after"), nil)
	for _, rec := range [][]byte{before, after} {
		if _, _, err := rb.Open(nil, rec, nil); err != nil {
			t.Fatalf("the other process cannot open a record: %v", err)
		}
	}
	if err := b.sync(ctx, rb, now.Add(time.Minute)); err != nil || rb.Current() != ra.Current() {
		t.Fatalf("the other process seals with %q, want %q (%v)", rb.Current(), ra.Current(), err)
	}

	restarted, err := LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	signers, err := restarted.Signers()
	if err != nil || len(signers) != 2 || signers[1].KeyHash() != oldSigner.KeyHash() || signers[0].Name() != oldSigner.Name() {
		t.Fatalf("signers after rotation: %d, %v; want the new key then the old, same origin", len(signers), err)
	}
	vs, err := restarted.Verifiers()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(cp, note.VerifierList(vs...)); err != nil {
		t.Fatalf("a checkpoint signed before the rotation no longer verifies: %v", err)
	}
}

// Watch runs the schedule while the system runs: the ring switches to a
// new key on its own, and what it sealed before still opens.
func TestWatchRotatesOnSchedule(t *testing.T) {
	dir := t.TempDir()
	k, err := LoadOrCreateKeys(dir, "example.test/log")
	if err != nil {
		t.Fatal(err)
	}
	ring, _ := k.Ring()
	first := ring.Current()
	rec, _ := ring.Seal(nil, []byte("first"), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.Watch(ctx, ring, 10*time.Millisecond, 30*time.Millisecond, func(err error) { t.Error(err) })
	}()
	deadline := time.Now().Add(10 * time.Second)
	for ring.Current() == first && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if ring.Current() == first {
		t.Fatal("no scheduled rotation within 10 s")
	}
	if pt, _, err := ring.Open(nil, rec, nil); err != nil || string(pt) != "first" {
		t.Fatalf("record sealed before the rotation: %q %v", pt, err)
	}
}

// testKMS is a KeyWrapper as a KMS client would be: its own KEK, and a
// count of unwraps (a KMS call each).
type testKMS struct {
	kek     *keyring.Ring
	unwraps int
}

func (m *testKMS) Name() string { return "test-kms/projects/p/keys/k" }
func (m *testKMS) Wrap(_ context.Context, id string, key []byte) ([]byte, error) {
	return m.kek.Seal(nil, key, []byte(id))
}
func (m *testKMS) Unwrap(_ context.Context, id string, wrapped []byte) ([]byte, error) {
	m.unwraps++
	b, _, err := m.kek.Open(nil, wrapped, []byte(id))
	return b, err
}

// Another KeyWrapper takes the local KEK's place: the file is created,
// rotated and reloaded through it alone, the local KEK refuses a file it
// did not wrap, and no kek.key appears.
func TestKeyWrapperIsReplaceable(t *testing.T) {
	dir := t.TempDir()
	k0, _ := keyring.NewKey()
	kek, _ := keyring.NewRing("v1", map[string]keyring.Key{"v1": k0})
	kms := &testKMS{kek: kek}
	ctx := context.Background()
	k, err := OpenKeys(ctx, dir, "example.test/log", kms)
	if err != nil {
		t.Fatal(err)
	}
	ring, _ := k.Ring()
	rec, _ := ring.Seal(nil, []byte("under the KMS"), nil)
	if ok, err := RotateKeyFile(ctx, dir, kms, time.Now(), 0, 0); err != nil || !ok {
		t.Fatalf("rotate through the KMS: %v %v", ok, err)
	}
	before := kms.unwraps
	if err := k.sync(ctx, ring, time.Now()); err != nil {
		t.Fatal(err)
	}
	if kms.unwraps != before+1 {
		t.Fatalf("reload unwrapped %d keys, want only the new one", kms.unwraps-before)
	}
	if pt, _, err := ring.Open(nil, rec, nil); err != nil || string(pt) != "under the KMS" {
		t.Fatalf("old record: %q %v", pt, err)
	}
	if _, err := LoadKeys(dir); err == nil || !strings.Contains(err.Error(), "wrapped by") {
		t.Fatalf("the local KEK opened a file the KMS wrapped: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, KEKFile)); err == nil {
		t.Fatal("a local KEK file was written although a KMS wraps the keys")
	}
}

// Processes creating the local KEK at once end up with one key.
func TestLocalKEKCreatedOnce(t *testing.T) {
	dir := t.TempDir()
	keks := make([]*LocalKEK, 8)
	errs := make(chan error, len(keks))
	for i := range keks {
		go func() {
			var err error
			keks[i], err = OpenLocalKEK(dir)
			errs <- err
		}()
	}
	for range keks {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	w, _ := keks[0].Wrap(ctx, "k", []byte("0123456789abcdef0123456789abcdef"))
	for i, k := range keks {
		if _, err := k.Unwrap(ctx, "k", w); err != nil {
			t.Fatalf("KEK %d differs: %v", i, err)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, KEKFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("kek.key mode %v, %v", st.Mode().Perm(), err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, KEKFile+".tmp*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// TestRotationReachesRunningSigners: a process's Signers and Verifiers
// follow the key file as it re-reads it (a running audit log signs with
// the new key, beside the previous one), each signing key is unwrapped
// once, and an on-demand rotation, not a scheduled one, counts a
// token-key rotation request that closes the TokenKeyRotation channel.
func TestRotationReachesRunningSigners(t *testing.T) {
	dir := t.TempDir()
	k0, _ := keyring.NewKey()
	kek, _ := keyring.NewRing("v1", map[string]keyring.Key{"v1": k0})
	kms := &testKMS{kek: kek}
	ctx := context.Background()
	k, err := OpenKeys(ctx, dir, "example.test/log", kms)
	if err != nil {
		t.Fatal(err)
	}
	ring, _ := k.Ring()
	first, _ := k.Signers()
	before := kms.unwraps
	if again, _ := k.Signers(); len(again) != 1 || again[0] != first[0] || kms.unwraps != before {
		t.Fatalf("Signers again: %d signers, %d unwraps; want the same signer, no unwrap", len(again), kms.unwraps-before)
	}
	requests, changed := k.TokenKeyRotation()
	if requests != 0 {
		t.Fatalf("a new key file counts %d token-key rotation requests", requests)
	}
	now := time.Now()
	if ok, err := RotateKeyFile(ctx, dir, kms, now, 0, time.Nanosecond); err != nil || !ok {
		t.Fatalf("scheduled rotation: %v %v", ok, err)
	}
	if err := k.sync(ctx, ring, now); err != nil {
		t.Fatal(err)
	}
	ss, _ := k.Signers()
	if len(ss) != 2 || ss[1] != first[0] || ss[0].KeyHash() == first[0].KeyHash() {
		t.Fatal("after a reload Signers is not the new key then the previous one")
	}
	if vs, _ := k.Verifiers(); len(vs) != 2 {
		t.Fatalf("after a reload %d verifiers, want 2", len(vs))
	}
	select {
	case <-changed:
		t.Fatal("a scheduled rotation asked identity to rotate its token key")
	default:
	}
	if ok, err := RotateKeyFile(ctx, dir, kms, now, 0, 0); err != nil || !ok {
		t.Fatalf("on-demand rotation: %v %v", ok, err)
	}
	// (The file's modification time must differ for the reload to see it.)
	later := time.Now().Add(time.Second)
	_ = os.Chtimes(filepath.Join(dir, "keys.json"), later, later)
	if err := k.sync(ctx, ring, now); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("the reload of an on-demand rotation did not signal the token-key request")
	}
	if requests, _ := k.TokenKeyRotation(); requests != 1 {
		t.Fatalf("%d token-key rotation requests after one rotate-keys, want 1", requests)
	}
	if ss, _ := k.Signers(); len(ss) != 2 || ss[0].KeyHash() == ss[1].KeyHash() {
		t.Fatal("after the second rotation Signers is not two keys")
	}
}

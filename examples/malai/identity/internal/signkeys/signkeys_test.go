package signkeys

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/malai-sec/malai/examples/malai/identity/store"
	"github.com/malai-sec/malai/examples/malai/identity/store/boltstore"
	"github.com/malai-sec/malai/internal/fakeclock"
	"github.com/malai-sec/malai/keyring"
)

func ring(t *testing.T) *keyring.Ring {
	t.Helper()
	k, err := keyring.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	r, err := keyring.NewRing("k1", map[string]keyring.Key{"k1": k})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

type fixture struct {
	dir   string
	st    store.Store
	ring  *keyring.Ring
	clock *fakeclock.Clock
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), ring: ring(t), clock: fakeclock.New(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))}
	f.reopen(t)
	return f
}

func (f *fixture) reopen(t *testing.T) {
	t.Helper()
	if f.st != nil {
		f.st.Close()
	}
	st, err := boltstore.Open(f.dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f.st = st
	t.Cleanup(func() { st.Close() })
}

func (f *fixture) keys(t *testing.T) *Keys {
	t.Helper()
	k, err := New(context.Background(), Config{Store: f.st, Ring: f.ring, Interval: 24 * time.Hour, Overlap: 20 * time.Minute, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func published(t *testing.T, k *Keys) []string {
	t.Helper()
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(k.JWKS(), &doc); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, key := range doc.Keys {
		if _, private := key["d"]; private {
			t.Fatal("the JWKS publishes a private key")
		}
		if key["alg"] != "ES256" || key["use"] != "sig" || key["crv"] != "P-256" {
			t.Fatalf("key parameters %v", key)
		}
		ids = append(ids, key["kid"].(string))
	}
	slices.Sort(ids)
	return ids
}

func signerID(t *testing.T, k *Keys) string {
	t.Helper()
	s, err := k.Signer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s.KeyID()
}

// TestRestartKeepsKeysAndSchedule: a restart signs with the same key and
// keeps the rotation date; the rotation happens when it is due, not at
// every start.
func TestRestartKeepsKeysAndSchedule(t *testing.T) {
	f := newFixture(t)
	k := f.keys(t)
	first := signerID(t, k)
	jwks := published(t, k)
	if len(jwks) != 2 {
		t.Fatalf("a fresh set publishes %v, want current and next", jwks)
	}
	f.clock.Advance(23 * time.Hour)
	f.reopen(t)
	k = f.keys(t)
	if got := signerID(t, k); got != first {
		t.Fatalf("after a restart the signer changed: %s → %s", first, got)
	}
	if !slices.Equal(published(t, k), jwks) {
		t.Fatal("after a restart the JWKS changed")
	}
	f.clock.Advance(time.Hour)
	f.reopen(t)
	k = f.keys(t)
	second := signerID(t, k)
	if second == first {
		t.Fatal("no rotation after the interval")
	}
	if !slices.Contains(jwks, second) {
		t.Fatal("the new signer was not published before it signed")
	}
	after := published(t, k)
	if len(after) != 3 || !slices.Contains(after, first) {
		t.Fatalf("the retired key left the JWKS at once: %v", after)
	}
	// The retired key stays until every token it signed has expired.
	f.clock.Advance(19 * time.Minute)
	if !slices.Contains(published(t, k), first) {
		t.Fatal("retired key dropped early")
	}
	f.clock.Advance(2 * time.Minute)
	_ = signerID(t, k) // the next use refreshes
	if slices.Contains(published(t, k), first) {
		t.Fatal("retired key still published after its overlap")
	}
}

// TestRotationRunsWhileServing: a long-running replica rotates on its
// own when the key's time is up.
func TestRotationRunsWhileServing(t *testing.T) {
	f := newFixture(t)
	k := f.keys(t)
	first := signerID(t, k)
	f.clock.Advance(24*time.Hour + time.Second)
	if signerID(t, k) == first {
		t.Fatal("a due rotation did not happen at signing time")
	}
}

// TestReplicasRotateOnce: two replicas over one store that both see a
// rotation due produce one rotation and converge on one signer.
func TestReplicasRotateOnce(t *testing.T) {
	f := newFixture(t)
	a, b := f.keys(t), f.keys(t)
	if signerID(t, a) != signerID(t, b) {
		t.Fatal("replicas disagree on the first key")
	}
	f.clock.Advance(25 * time.Hour)
	var wg sync.WaitGroup
	for _, k := range []*Keys{a, b, f.keys(t), f.keys(t)} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = k.Refresh(context.Background()) }()
	}
	wg.Wait()
	if err := a.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if signerID(t, a) != signerID(t, b) {
		t.Fatal("replicas disagree after rotating")
	}
	ks, _ := f.st.SigningKeys(context.Background())
	if len(ks.Keys) != 3 {
		t.Fatalf("concurrent rotations left %d keys, want 3 (retired, current, next)", len(ks.Keys))
	}
}

func TestEmergencyRotation(t *testing.T) {
	f := newFixture(t)
	k := f.keys(t)
	old := published(t, k)
	if err := k.Rotate(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	for _, id := range published(t, k) {
		if slices.Contains(old, id) {
			t.Fatalf("emergency rotation kept key %s", id)
		}
	}
}

// TestPrivateKeysSealed: the store holds no private key in the clear,
// and a store copied without the key ring cannot sign.
func TestPrivateKeysSealed(t *testing.T) {
	f := newFixture(t)
	k := f.keys(t)
	ks, _ := f.st.SigningKeys(context.Background())
	for _, key := range ks.Keys {
		if _, err := keyring.KeyID(key.Private); err != nil {
			t.Fatalf("private key %s is not a sealed record", key.ID)
		}
	}
	_ = k
	if _, err := New(context.Background(), Config{Store: f.st, Ring: ring(t), Interval: 24 * time.Hour, Overlap: time.Minute, Now: f.clock.Now}); err == nil {
		t.Fatal("another key ring opened the signing key")
	}
}

// TestRotateOnceAnswersEachRequestOnce: a numbered rotation request
// rotates once however many replicas answer it and however often (also
// concurrently and after a restart); the previous key stays published;
// a scheduled or emergency rotation keeps the answered request.
func TestRotateOnceAnswersEachRequestOnce(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	a, b := f.keys(t), f.keys(t)
	first := signerID(t, a)
	if rotated, err := a.RotateOnce(ctx, 0); err != nil || rotated {
		t.Fatalf("request 0 (none made) = %v, %v; want no rotation", rotated, err)
	}
	var wg sync.WaitGroup
	results := make([]bool, 6)
	for i := range results {
		k := a
		if i%2 == 1 {
			k = b
		}
		wg.Go(func() {
			r, err := k.RotateOnce(ctx, 1)
			if err != nil {
				t.Error(err)
			}
			results[i] = r
		})
	}
	wg.Wait()
	if n := len(slices.DeleteFunc(slices.Clone(results), func(r bool) bool { return !r })); n != 1 {
		t.Fatalf("%d answers to one request rotated, want 1: %v", n, results)
	}
	second := signerID(t, a)
	if second == first || signerID(t, b) != second {
		t.Fatalf("after request 1: a signs %s, b %s, first was %s", second, signerID(t, b), first)
	}
	if !slices.Contains(published(t, a), first) {
		t.Fatal("the key rotated out on request left the JWKS at once")
	}
	ks, _ := f.st.SigningKeys(ctx)
	if len(ks.Keys) != 3 || ks.Request != 1 {
		t.Fatalf("after one request: %d keys, request %d; want 3 keys, request 1", len(ks.Keys), ks.Request)
	}
	// A restart does not answer the same request again.
	f.reopen(t)
	c := f.keys(t)
	if rotated, err := c.RotateOnce(ctx, 1); err != nil || rotated || signerID(t, c) != second {
		t.Fatalf("request 1 after a restart = %v, %v (signer %s); want nothing", rotated, err, signerID(t, c))
	}
	// The schedule and an emergency keep the answered request.
	f.clock.Advance(25 * time.Hour)
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Rotate(ctx, true); err != nil {
		t.Fatal(err)
	}
	if ks, _ := f.st.SigningKeys(ctx); ks.Request != 1 {
		t.Fatalf("a scheduled and an emergency rotation reset the answered request to %d", ks.Request)
	}
	before := signerID(t, c)
	if rotated, err := c.RotateOnce(ctx, 1); err != nil || rotated {
		t.Fatalf("request 1 after other rotations = %v, %v", rotated, err)
	}
	if rotated, err := c.RotateOnce(ctx, 2); err != nil || !rotated || signerID(t, c) == before {
		t.Fatalf("request 2 = %v, %v; want a rotation", rotated, err)
	}
}

package keyring

import (
	"encoding/json"
	"testing"
	"time"
)

type jwks struct {
	Keys []map[string]any `json:"keys"`
}

func kids(t *testing.T, r *Ring) []string {
	t.Helper()
	var set jwks
	if err := json.Unmarshal(r.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range set.Keys {
		if _, private := k["d"]; private {
			t.Fatal("JWKS publishes a private key")
		}
		if k["use"] != "sig" || k["alg"] != "ES256" || k["kty"] != "EC" || k["crv"] != "P-256" {
			t.Fatalf("key parameters: %v", k)
		}
		out = append(out, k["kid"].(string))
	}
	return out
}

func TestRotation(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r, err := New(func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	k0, _, _ := r.Signer()
	initial := kids(t, r) // current, next
	if len(initial) != 2 || initial[0] != k0.KeyID() {
		t.Fatalf("initial JWKS kids %v, signer %s", initial, k0.KeyID())
	}
	if err := r.Rotate(); err != nil {
		t.Fatal(err)
	}
	k1, _, _ := r.Signer()
	if k1.KeyID() != initial[1] {
		t.Fatal("rotation did not promote the pre-published next key")
	}
	after := kids(t, r) // current, previous, next
	if len(after) != 3 || after[0] != k1.KeyID() || after[1] != k0.KeyID() {
		t.Fatalf("after rotation: %v", after)
	}
	if err := r.Rotate(); err != nil {
		t.Fatal(err)
	}
	for _, kid := range kids(t, r) {
		if kid == k0.KeyID() {
			t.Fatal("key two rotations old is still published")
		}
	}
}

func TestRotateIfOlder(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r, _ := New(func() time.Time { return now })
	k0, _, _ := r.Signer()
	_ = r.RotateIfOlder(time.Hour)
	if k, _, _ := r.Signer(); k.KeyID() != k0.KeyID() {
		t.Fatal("rotated a young key")
	}
	now = now.Add(time.Hour)
	_ = r.RotateIfOlder(time.Hour)
	k1, since, _ := r.Signer()
	if k1.KeyID() == k0.KeyID() || !since.Equal(now) {
		t.Fatal("did not rotate an old key")
	}
	_ = r.RotateIfOlder(time.Hour)
	if k, _, _ := r.Signer(); k.KeyID() != k1.KeyID() {
		t.Fatal("second caller rotated again")
	}
}

func TestClose(t *testing.T) {
	r, _ := New(time.Now)
	r.Close()
	if _, _, err := r.Signer(); err != ErrClosed {
		t.Fatalf("Signer after Close: %v", err)
	}
	if err := r.Rotate(); err != ErrClosed {
		t.Fatalf("Rotate after Close: %v", err)
	}
}

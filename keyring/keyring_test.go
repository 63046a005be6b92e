package keyring

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func mustKey(t testing.TB) Key {
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRoundTripAndRotation(t *testing.T) {
	k1 := mustKey(t)
	r, err := NewRing("k1", map[string]Key{"k1": k1})
	if err != nil {
		t.Fatal(err)
	}
	rec1, err := r.Seal(nil, []byte("balance=10"), []byte("seq=1"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(rec1, []byte("balance")) {
		t.Fatal("plaintext visible in the record")
	}
	if err := r.Rotate("k2", mustKey(t)); err != nil {
		t.Fatal(err)
	}
	if r.Current() != "k2" {
		t.Fatalf("current = %q after rotate", r.Current())
	}
	rec2, _ := r.Seal(nil, []byte("balance=20"), []byte("seq=2"))
	for _, tc := range []struct {
		rec, aad []byte
		want     string
		wantKey  string
	}{{rec1, []byte("seq=1"), "balance=10", "k1"}, {rec2, []byte("seq=2"), "balance=20", "k2"}} {
		got, id, err := r.Open(nil, tc.rec, tc.aad)
		if err != nil || string(got) != tc.want || id != tc.wantKey {
			t.Fatalf("Open = %q, %q, %v; want %q, %q", got, id, err, tc.want, tc.wantKey)
		}
	}
	if err := r.Rotate("k1", mustKey(t)); err == nil {
		t.Fatal("re-using a key id was accepted")
	}
}

func TestOpenRejects(t *testing.T) {
	r, _ := NewRing("a", map[string]Key{"a": mustKey(t)})
	other, _ := NewRing("b", map[string]Key{"b": mustKey(t)})
	rec, _ := r.Seal(nil, []byte("payload"), []byte("aad"))
	flipped := bytes.Clone(rec)
	flipped[len(flipped)-1] ^= 1
	tests := []struct {
		name string
		ring *Ring
		rec  []byte
		aad  string
		want error
	}{
		{"altered ciphertext", r, flipped, "aad", ErrAuth},
		{"moved record (other aad)", r, rec, "other", ErrAuth},
		{"unknown key", other, rec, "aad", ErrUnknownKey},
		{"truncated", r, rec[:10], "aad", ErrMalformed},
		{"empty", r, nil, "aad", ErrMalformed},
		{"wrong version", r, append([]byte{9}, rec[1:]...), "aad", ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := tc.ring.Open(nil, tc.rec, []byte(tc.aad))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := NewRing("x", map[string]Key{"y": mustKey(t)}); err == nil {
		t.Error("missing current key accepted")
	}
	if _, err := NewRing("z", map[string]Key{"z": {}}); err == nil {
		t.Error("all-zero key accepted")
	}
	if _, err := NewRing("", map[string]Key{"": mustKey(t)}); err == nil {
		t.Error("empty key id accepted")
	}
}

func TestKeyRedacts(t *testing.T) {
	k := mustKey(t)
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "key", k)
	out := buf.String() + fmt.Sprintf("%v %+v %#v %s", k, k, k, k)
	if strings.Count(out, "REDACTED") != 5 {
		t.Fatalf("key not redacted everywhere: %s", out)
	}
}

// fuzzGood is "hello" sealed under key {1,2,3} with id "k" and no AAD. It
// is fixed so every fuzz worker agrees on the one record that may open.
const fuzzGood = "01016bdae330cd8a2943b483e949a3e35d8903e371001e433f98664fd9ae74062fde4713"

func FuzzOpen(f *testing.F) {
	r, _ := NewRing("k", map[string]Key{"k": {1, 2, 3}})
	good, _ := hex.DecodeString(fuzzGood)
	if pt, _, err := r.Open(nil, good, nil); err != nil || string(pt) != "hello" {
		f.Fatalf("fixed record does not open: %q %v", pt, err)
	}
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{1, 255})
	f.Fuzz(func(t *testing.T, rec []byte) {
		_, _, err := r.Open(nil, rec, nil)
		if err == nil && !bytes.Equal(rec, good) {
			t.Fatalf("a record nobody sealed opened: %x", rec)
		}
	})
}

func BenchmarkSeal1KiB(b *testing.B) {
	r, _ := NewRing("k", map[string]Key{"k": mustKey(b)})
	pt := bytes.Repeat([]byte("x"), 1024)
	buf := make([]byte, 0, 2048)
	b.ReportAllocs()
	b.SetBytes(1024)
	for b.Loop() {
		buf, _ = r.Seal(buf[:0], pt, nil)
	}
}

func TestConfigErrorsMatch(t *testing.T) {
	k, _ := NewKey()
	for name, f := range map[string]func() error{
		"missing current": func() error { _, err := NewRing("b", map[string]Key{"a": k}); return err },
		"empty id":        func() error { _, err := NewRing("", map[string]Key{"": k}); return err },
		"zero key":        func() error { _, err := NewRing("a", map[string]Key{"a": {}}); return err },
		"id used twice": func() error {
			r, _ := NewRing("a", map[string]Key{"a": k})
			return r.Rotate("a", k)
		},
	} {
		if err := f(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", name, err)
		}
	}
}

// Two replicas share keys: the second adds a key the first will seal with
// before the first switches, so it opens the first's records at once;
// Use then switches it too.
func TestAddThenUse(t *testing.T) {
	k1, k2 := mustKey(t), mustKey(t)
	a, _ := NewRing("k1", map[string]Key{"k1": k1})
	b, _ := NewRing("k1", map[string]Key{"k1": k1})
	if err := b.Add("k2", k2); err != nil {
		t.Fatal(err)
	}
	if b.Current() != "k1" {
		t.Fatalf("Add changed the sealing key to %q", b.Current())
	}
	if err := a.Rotate("k2", k2); err != nil {
		t.Fatal(err)
	}
	rec, _ := a.Seal(nil, []byte("x"), nil)
	if got, id, err := b.Open(nil, rec, nil); err != nil || string(got) != "x" || id != "k2" {
		t.Fatalf("the added key does not open: %q %q %v", got, id, err)
	}
	if err := b.Use("k2"); err != nil || b.Current() != "k2" {
		t.Fatalf("Use = %v, current %q", err, b.Current())
	}
	if err := b.Use("k3"); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Use of an unknown key = %v", err)
	}
	if err := b.Add("k1", mustKey(t)); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Add of an existing id = %v", err)
	}
}

package platform

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	if ring.Current() != k.Order[1] {
		t.Fatalf("live ring seals with %q, want the new key %q", ring.Current(), k.Order[1])
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

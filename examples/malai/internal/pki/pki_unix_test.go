//go:build unix

package pki

import (
	"os"
	"path/filepath"
	"testing"
)

// Windows file modes do not say who may read a file (perm_windows.go), so
// this refusal exists on Unix only.
func TestCAKeyReadableByOthersIsRefused(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreate(dir, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, CAKeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(dir, nil); err == nil {
		t.Fatal("a world-readable CA key was used")
	}
}

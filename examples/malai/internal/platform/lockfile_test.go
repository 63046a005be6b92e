package platform

import (
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// TestLockFileExclusive: while one holder has the lock a second open of
// the same file (in this process too) cannot take it; a waiting LockFile
// gets it only after the holder unlocks, and then a fresh try succeeds.
func TestLockFileExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.lock")
	unlock, err := LockFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := lockFile(path, false); !errors.Is(err, errLocked) {
		if u != nil {
			u()
		}
		t.Fatalf("second lock while held = %v, want errLocked", err)
	}

	var released atomic.Bool
	got := make(chan bool)
	go func() {
		u, err := LockFile(path)
		if err != nil {
			t.Error(err)
			got <- true
			return
		}
		ok := released.Load()
		u()
		got <- ok
	}()
	released.Store(true)
	unlock()
	if !<-got {
		t.Fatal("a waiting LockFile took the lock before the holder released it")
	}

	u, err := lockFile(path, false)
	if err != nil {
		t.Fatalf("lock after every holder released = %v", err)
	}
	u()
}

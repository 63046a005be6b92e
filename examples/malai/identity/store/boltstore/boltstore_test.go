package boltstore_test

import (
	"testing"
	"time"

	"github.com/malai-sec/malai/examples/malai/identity/store"
	"github.com/malai-sec/malai/examples/malai/identity/store/boltstore"
	"github.com/malai-sec/malai/examples/malai/identity/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Open {
		dir := t.TempDir()
		return func() store.Store {
			s, err := boltstore.Open(dir, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	})
}

// TestOneProcessAtATime: a second open of the same directory waits for
// the lock and then fails, instead of two writers sharing one file.
func TestOneProcessAtATime(t *testing.T) {
	dir := t.TempDir()
	s, err := boltstore.Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s2, err := boltstore.Open(dir, 50*time.Millisecond); err == nil {
		s2.Close()
		t.Fatal("a second open of a locked store succeeded")
	}
}

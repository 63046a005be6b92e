package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/malai-sec/malai/examples/malai/identity/clientauth"
)

// A component that starts before identity waits for it; one that
// identity refuses stops at once; one whose peer never comes gives up
// after the wait, naming the peer.
func TestWaitForPeer(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	down := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")

	calls := 0
	err := waitForPeer(ctx, time.Minute, log, "identity", func() error {
		if calls++; calls < 3 {
			return down
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("peer up at the third try: err %v after %d calls", err, calls)
	}

	calls = 0
	refused := fmt.Errorf("%w: register: status 403", clientauth.ErrRefused)
	if err := waitForPeer(ctx, time.Minute, log, "identity", func() error { calls++; return refused }); !errors.Is(err, clientauth.ErrRefused) || calls != 1 {
		t.Fatalf("a refusal: err %v after %d calls, want it returned at once", err, calls)
	}

	calls = 0
	err = waitForPeer(ctx, 600*time.Millisecond, log, "identity", func() error { calls++; return down })
	if !errors.Is(err, down) || calls < 2 || calls > 4 {
		t.Fatalf("a peer that never comes: err %v after %d calls", err, calls)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := waitForPeer(cctx, time.Minute, log, "identity", func() error { return down }); err == nil {
		t.Fatal("a cancelled start kept waiting")
	}
}

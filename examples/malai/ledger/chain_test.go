package ledger

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
)

func chainEnv(t *testing.T) *platform.Env {
	t.Helper()
	dir := t.TempDir()
	keys, err := platform.LoadOrCreateKeys(dir, AuditOrigin)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := keys.Ring()
	if err != nil {
		t.Fatal(err)
	}
	return &platform.Env{DataDir: dir, Keys: keys, Ring: ring, Telemetry: &platform.Telemetry{Logger: slog.New(slog.DiscardHandler)}}
}

// appendAndClose appends n events to a chain opened over env's store and
// closes it (which checkpoints).
func appendAndClose(t *testing.T, env *platform.Env, witnessed bool, n int) {
	t.Helper()
	ch, err := openChain(context.Background(), env, witnessed)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := ch.log.Append(context.Background(), auditlog.Event{Type: "test.event", Actor: "test", Payload: fmt.Appendf(nil, `{"i":%d}`, i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.close(); err != nil {
		t.Fatal(err)
	}
}

func witnessCheckpoints(t *testing.T, env *platform.Env) int {
	t.Helper()
	wst, err := filestore.OpenReadOnly(filepath.Join(env.DataDir, "witness"))
	if err != nil {
		t.Fatal(err)
	}
	defer wst.Close()
	n := 0
	if err := wst.Checkpoints(context.Background(), func([]byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// The NoWitness switch: the chain's checkpoints reach the witness only
// when it is off; the witness's store exists either way.
func TestChainWitnessSwitch(t *testing.T) {
	for _, witnessed := range []bool{true, false} {
		env := chainEnv(t)
		appendAndClose(t, env, witnessed, 5)
		if n := witnessCheckpoints(t, env); (n > 0) != witnessed {
			t.Errorf("witnessed=%v: the witness holds %d checkpoints", witnessed, n)
		}
	}
}

// A corrupt chain does not open, is recognised as damage (the
// StartOnDamagedChain switch acts on nothing else), and the empty chain
// that switch starts on opens beside it.
func TestDamagedChainRecognised(t *testing.T) {
	env := chainEnv(t)
	appendAndClose(t, env, true, 20)
	name := filepath.Join(env.DataDir, "audit", filestore.LogFile)
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(name, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = openChain(context.Background(), env, true)
	if err == nil || !damagedChain(err) {
		t.Fatalf("openChain on a corrupt chain: %v (damaged=%v)", err, err != nil && damagedChain(err))
	}
	ch, err := emptyChain(env)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.close()
	if h := ch.log.Head(); h.Size != 0 {
		t.Fatalf("the empty chain holds %d rows", h.Size)
	}
	// An unreachable store is not damage: the switch must not start on it.
	if damagedChain(os.ErrPermission) {
		t.Fatal("a store error taken for damage")
	}
}

package auditlog_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
	"github.com/malai-sec/malai/auditlog/memstore"
	"github.com/malai-sec/malai/keyring"
)

// The reference ledger appends every event with the request's correlation
// id, publishes checkpoints to a witness on a separate store, replays the
// chain into balances to compare with its own state, and verifies an
// export offline with the public key.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "audit")
	defer os.RemoveAll(dir)

	// Keys: a checkpoint signing key (its public half goes to auditors) and
	// a data key ring for encryption at rest.
	skey, vkey, _ := note.GenerateKey(rand.Reader, "ledger-audit-2026")
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	dataKey, _ := keyring.NewKey()
	ring, _ := keyring.NewRing("dk-1", map[string]keyring.Key{"dk-1": dataKey})

	const origin = "ledger.example.com/audit"
	witness, _ := auditlog.NewWitness(ctx, auditlog.WitnessConfig{
		Store: memstore.New(), Origin: origin, Verifiers: []note.Verifier{verifier}})

	store, err := filestore.Open(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()
	log, err := auditlog.New(auditlog.Config{
		Store: store, Origin: origin, Signers: []note.Signer{signer},
		Witness: witness, Ring: ring,
		Now: func() time.Time { return time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC) },
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	type transfer struct {
		From, To string
		Amount   int64
	}
	appendTransfer := func(reqID string, t transfer) {
		p, _ := json.Marshal(t)
		r, err := log.Append(ctx, auditlog.Event{Type: "ledger.transfer", Actor: "svc-worker", CorrelationID: reqID, Payload: p})
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println("appended", r.Seq)
	}
	appendTransfer("req-1", transfer{"bank", "alice", 100})
	appendTransfer("req-2", transfer{"alice", "bob", 30})
	if _, err := log.Checkpoint(ctx); err != nil {
		fmt.Println(err)
	}

	// Replay: fold the chain into balances and compare with the ledger's.
	balances := map[string]int64{}
	head, err := log.Replay(ctx, func(e auditlog.Event) error {
		var t transfer
		if err := json.Unmarshal(e.Payload, &t); err != nil {
			return err
		}
		balances[t.From] -= t.Amount
		balances[t.To] += t.Amount
		return nil
	})
	fmt.Println("replayed", head.Size, "alice", balances["alice"], "bob", balances["bob"], err)
	log.Close()

	// Offline: export (opened with the ring), then verify with the public
	// key and the witness's checkpoint.
	exp, _ := auditlog.LoadExport(ctx, store, origin, ring)
	var file bytes.Buffer
	exp.WriteTo(&file)
	back, _ := auditlog.ReadExport(&file)
	trusted, _ := witness.Latest(ctx)
	rep := auditlog.Verify(ctx, back, auditlog.VerifyConfig{
		Origin: origin, Verifiers: []note.Verifier{verifier}, Trusted: [][]byte{trusted}})
	fmt.Println("rows", rep.Rows, "anchored", rep.Anchored, "ok", rep.OK())
	// Output:
	// appended 0
	// appended 1
	// replayed 2 alice 70 bob 30 <nil>
	// rows 2 anchored 2 ok true
}

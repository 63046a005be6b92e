package memstore_test

import (
	"context"
	"fmt"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/memstore"
)

// The memory store backs tests and a witness's checkpoint store.
func Example() {
	ctx := context.Background()
	skey, _, _ := note.GenerateKey(nil, "test")
	signer, _ := note.NewSigner(skey)
	st := memstore.New()
	log, _ := auditlog.New(auditlog.Config{Store: st, Origin: "test/audit", Signers: []note.Signer{signer}, Plaintext: true})
	log.Append(ctx, auditlog.Event{Type: "ledger.transfer", Payload: []byte(`{"amount":5}`)})
	log.Close()
	head, err := auditlog.Replay(ctx, st, nil, nil)
	fmt.Println(head.Size, err)
	// Output: 1 <nil>
}

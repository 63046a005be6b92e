package filestore_test

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
	"github.com/malai-sec/malai/keyring"
)

// The embedded default: the audit log under the service's data directory,
// reopened after a restart.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "audit")
	defer os.RemoveAll(dir)
	skey, _, _ := note.GenerateKey(nil, "ledger-audit")
	signer, _ := note.NewSigner(skey)
	k, _ := keyring.NewKey()
	ring, _ := keyring.NewRing("dk-1", map[string]keyring.Key{"dk-1": k})

	for run := range 2 {
		st, err := filestore.Open(dir)
		if err != nil {
			fmt.Println(err)
			return
		}
		log, err := auditlog.New(auditlog.Config{Store: st, Origin: "ledger.example.com/audit",
			Signers: []note.Signer{signer}, Ring: ring})
		if err != nil {
			fmt.Println(err)
			return
		}
		r, err := log.Append(ctx, auditlog.Event{Type: "ledger.account_opened", Actor: "alice",
			CorrelationID: fmt.Sprintf("req-%d", run), Payload: []byte(`{"account":"acc-1"}`)})
		fmt.Println("run", run, "appended seq", r.Seq, err)
		log.Close()
		st.Close()
	}
	// Output:
	// run 0 appended seq 0 <nil>
	// run 1 appended seq 1 <nil>
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"path/filepath"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
	"github.com/malai-sec/malai/examples/malai/ledger"
)

// verifyCmd verifies the audit chain of a stopped system offline: hash
// chain, Merkle roots against every signed checkpoint and the witness's
// checkpoints, and the replay of the ledger's events into balances.
func verifyCmd(args []string) error {
	fs := flag.NewFlagSet("verify", flag.ExitOnError)
	dataDir := fs.String("data", "malai-data", "data directory of a stopped system")
	var pg platform.Postgres
	server := fs.String("postgres-url", "", "PostgreSQL server of the audit chain, as the components get it (connects as <prefix>_ledger_app unless the URL names a user)")
	prefix := fs.String("postgres-prefix", defaultPGPrefix, "prefix of the PostgreSQL schemas and roles")
	fs.StringVar(&pg.URL, "audit-dsn", "", "PostgreSQL DSN of the audit chain (overrides -postgres-url; default: the file store under -data)")
	fs.StringVar(&pg.Schema, "audit-schema", "", "PostgreSQL schema of the audit chain (default <prefix>_audit)")
	fs.StringVar(&pg.PasswordFile, "audit-password-file", "", "file holding the audit role's password")
	witness := fs.String("witness-dir", "", "the witness whose checkpoints anchor the chain: any ledger's -witness-dir (default <data>/witness)")
	usage(fs, "verify [-data DIR] [-postgres-url URL | -audit-dsn URL] [-witness-dir DIR]", `Verifies a stopped system's audit chain offline: the hash chain, the Merkle
roots against every signed checkpoint and the witness's checkpoints, and
the replay of the ledger's events into balances (printed as JSON). Exits 1
when the chain does not verify. "sealed_by" counts the rows under each data
key id: after a rotation and its re-encryption (background on the file
store, "malai audit-rekey" with PostgreSQL) the chain no longer needs a key
no row names.`)
	fs.Parse(args)
	n := pgNamesFor(*prefix)
	if pg.Schema == "" {
		pg.Schema = n.Audit.Schema
	}
	if pg.URL == "" && *server != "" {
		var err error
		if pg.URL, err = asRole(*server, n.Audit.AppRole); err != nil {
			return fmt.Errorf("-postgres-url: %w", err)
		}
	}
	ctx := context.Background()
	st, err := openAuditStoreReadOnly(ctx, *dataDir, pg)
	if err != nil {
		return fmt.Errorf("open audit store (is the system still running?): %w", err)
	}
	defer st.Close()
	rep, err := verifyWith(ctx, *dataDir, *witness, st)
	if err != nil {
		return err
	}
	sealedBy, err := auditlog.SealedBy(ctx, st)
	if err != nil {
		return err
	}
	out, _ := json.MarshalIndent(map[string]any{"rows": rep.Rows, "anchored": rep.Anchored, "witnessed": rep.Witnessed, "findings": rep.Findings, "balances": rep.Balances, "sealed_by": sealedBy}, "", "  ")
	fmt.Println(string(out))
	if !rep.OK() {
		return errors.New("the audit chain does not verify")
	}
	return nil
}

// openAuditStoreReadOnly opens the audit chain for offline verification:
// the file store read-only (nothing is written, a torn tail is not cut,
// damage is located rather than refused), PostgreSQL as the app role.
func openAuditStoreReadOnly(ctx context.Context, dataDir string, pg platform.Postgres) (auditlog.Store, error) {
	if pg.URL == "" {
		return filestore.OpenReadOnly(filepath.Join(dataDir, "audit"))
	}
	return ledger.OpenAuditStore(ctx, dataDir, pg)
}

// verifyData verifies the chain in st with the keys and the witness under
// dataDir.
func verifyData(ctx context.Context, dataDir string, st auditlog.Store) (auditlog.Report, map[string]int64, error) {
	rep, err := verifyWith(ctx, dataDir, "", st)
	return rep.Report, rep.Balances, err
}

// offlineReport is an offline verification's outcome.
type offlineReport struct {
	auditlog.Report
	// Balances are the accounts replayed from the chain.
	Balances map[string]int64
	// Witnessed is the largest size covered by a checkpoint of the
	// witness's that the log's keys sign (0: the witness holds none).
	// Report's findings say whether the rows match it.
	Witnessed uint64
}

// verifyWith is verifyData with the witness in witnessDir (default
// <dataDir>/witness).
func verifyWith(ctx context.Context, dataDir, witnessDir string, st auditlog.Store) (offlineReport, error) {
	origin := auditOrigin
	keys, err := platform.LoadKeys(dataDir)
	if err != nil {
		return offlineReport{}, err
	}
	ring, err := keys.Ring()
	if err != nil {
		return offlineReport{}, err
	}
	verifiers, err := keys.Verifiers()
	if err != nil {
		return offlineReport{}, err
	}
	exp, err := auditlog.LoadExport(ctx, st, origin, ring)
	if err != nil {
		return offlineReport{}, err
	}
	if witnessDir == "" {
		witnessDir = filepath.Join(dataDir, "witness")
	}
	wst, err := filestore.OpenReadOnly(witnessDir)
	if err != nil {
		return offlineReport{}, err
	}
	defer wst.Close()
	var trusted [][]byte
	if err := wst.Checkpoints(ctx, func(b []byte) error { trusted = append(trusted, append([]byte(nil), b...)); return nil }); err != nil {
		return offlineReport{}, err
	}
	var witnessed uint64
	for _, b := range trusted {
		if c, _, err := auditlog.OpenCheckpoint(b, origin, note.VerifierList(verifiers...)); err == nil {
			witnessed = max(witnessed, c.Size)
		}
	}
	fold, balances := ledger.Fold()
	rep := auditlog.Verify(ctx, exp, auditlog.VerifyConfig{Origin: origin, Verifiers: verifiers, Trusted: trusted, Ring: ring, Fold: fold})
	return offlineReport{Report: rep, Balances: balances(), Witnessed: witnessed}, nil
}

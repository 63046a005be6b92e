package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/malai-sec/malai/examples/malai/internal/platform"
)

// openKeys opens the key file under o.DataDir with o.KeyWrapper, or the
// local key-encryption key when none is given.
func openKeys(o Options) (*platform.KeyFile, error) {
	if o.KeyWrapper == nil {
		return platform.LoadOrCreateKeys(o.DataDir, auditOrigin)
	}
	return platform.OpenKeys(context.Background(), o.DataDir, auditOrigin, o.KeyWrapper)
}

// watchKeys keeps the process's data-key ring in step with the key file
// (so a rotation by "malai rotate-keys" or by another process reaches
// it) and runs the rotation schedule, until the system closes. Failures
// are logged by the first component's logger; the ring keeps its keys.
func (s *System) watchKeys(o Options, names []string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	onErr := func(err error) {
		for _, n := range names {
			if t := s.Telemetry[n]; t != nil {
				t.Logger.Error("keys: "+err.Error(), "component", n)
				return
			}
		}
	}
	go func() {
		defer close(done)
		s.Keys.Watch(ctx, s.Ring, o.KeyReload, o.RotateKeysEvery, onErr)
	}()
	s.onClose(func() error { cancel(); <-done; return nil })
}

// rotateKeysCmd rotates the key file under -data now: a new data key that
// every running process using that directory learns within one reload
// interval and starts sealing with after platform.ActivationDelay, a new
// checkpoint signing key that the running audit logs sign their next
// checkpoint with once they have re-read the file (alongside the previous
// one), and a token-key rotation request that identity answers once,
// running or at its next start, by rotating its token-signing key. Old
// keys stay: old records open, old checkpoints verify and tokens signed
// before keep working until they expire. Once the new data key seals, a
// running ledger on the embedded file store re-encrypts the audit rows
// sealed under older keys in the background (and resumes at its next
// start if stopped first); with the audit chain in PostgreSQL, follow with
// "malai audit-rekey" as the migrator. "malai verify" and GET
// /v1/audit/verify count the rows each key seals ("sealed_by"): the chain
// no longer needs a key no row names (log streams and identity's data
// sealed under it are not re-encrypted; the key file keeps every key).
func rotateKeysCmd(args []string) error {
	fs := flag.NewFlagSet("rotate-keys", flag.ExitOnError)
	usage(fs, "rotate-keys [-data DIR] [-activate-in D]", "Rotates the keys in the key file while the system runs, or before it starts:\n"+
		"  - a new data key (log streams, audit payloads, identity secrets): running\n"+
		"    processes on that data directory read it within "+platform.DefaultKeyReload.String()+" and seal with it\n"+
		"    -activate-in after the rotation;\n"+
		"  - a new audit checkpoint signing key: each running audit log signs its next\n"+
		"    checkpoint with it, beside the previous one, once its process has read it;\n"+
		"  - identity's token-signing key: identity rotates once (its running replicas\n"+
		"    between them, or at its next start); a new sign-in's token has a new kid,\n"+
		"    and the JWKS keeps the previous key until every token it signed expired.\n"+
		"Old keys stay: old records open, old checkpoints verify, old tokens work.\n"+
		"Once the new data key seals, a running ledger on the embedded file store\n"+
		"re-encrypts the audit rows sealed under older keys in the background (its\n"+
		"log says how many, and how long it took; a ledger stopped first does it at\n"+
		"its next start). With the audit chain in PostgreSQL the ledger's role may\n"+
		"not rewrite rows: run \"malai audit-rekey\" as the migrator after the key\n"+
		"seals. \"malai verify\" and GET /v1/audit/verify report \"sealed_by\", the\n"+
		"rows under each data key id: the chain no longer needs a key no row names\n"+
		"(log streams and identity's data sealed under it are not re-encrypted, and\n"+
		"the key file keeps every key).")
	dataDir := fs.String("data", "malai-data", "data directory holding the key file")
	activateIn := fs.Duration("activate-in", platform.ActivationDelay, "when the new data key starts sealing: at least three key-file reload intervals of the running processes, so that all of them hold it first")
	fs.Parse(args)
	if fs.NArg() > 0 {
		return fmt.Errorf("rotate-keys: unexpected arguments %q", fs.Args())
	}
	if _, err := platform.LoadKeys(*dataDir); err != nil {
		return err
	}
	w, err := platform.OpenLocalKEK(*dataDir)
	if err != nil {
		return err
	}
	now := time.Now()
	if *activateIn < 0 {
		return fmt.Errorf("rotate-keys: negative -activate-in")
	}
	if _, err := platform.RotateKeyFile(context.Background(), *dataDir, w, now, *activateIn, 0); err != nil {
		return err
	}
	fmt.Printf("keys rotated: the new data key seals from %s; the new checkpoint signing key and identity's new token-signing key take over within %s in running components, or at their next start\n",
		now.Add(*activateIn).UTC().Format(time.RFC3339Nano), platform.DefaultKeyReload)
	return nil
}

// rotationFlags registers -rotate-keys-every on a component command.
func rotationFlags(fs *flag.FlagSet, o *Options, name string) {
	def := time.Duration(0)
	if name == "all" {
		def = 30 * 24 * time.Hour
	}
	fs.DurationVar(&o.RotateKeysEvery, "rotate-keys-every", def, "rotate the data and checkpoint signing keys on this schedule while running (0: only with \"malai rotate-keys\"); processes sharing -data rotate once between them. Identity's token-signing key keeps its own schedule (24h). Split processes on several machines: rotate where the key file is shared")
}

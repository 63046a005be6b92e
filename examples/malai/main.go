// Command malai runs the Malai reference system and its evidence pass.
//
//	go run ./examples/malai                 # the whole system in one process
//	go run ./examples/malai ledger -h       # one component per process: gateway, identity, ledger, worker
//	go run ./examples/malai evidence        # start it, test every claim, write the report
//	go run ./examples/malai verify -data D  # verify the audit chain offline
//	go run ./examples/malai logs -data D    # every log stream (or C's: logs -data D C), verified; live and cut streams reported
//	go run ./examples/malai migrate -admin-url U  # PostgreSQL schemas, least-privilege roles
//	go run ./examples/malai rotate-keys -data D  # new data and signing keys; running processes pick them up
//	go run ./examples/malai audit-rekey -admin-url U -data D  # after a data-key rotation, as the migrator
//	go run ./examples/malai revoke-client -identity U worker  # revoke one component's keys at identity
//
// Everything listens on loopback. The gateway serves HTTPS (TLS 1.2+, h2)
// and HTTP/3 on -addr and redirects plain HTTP from -http-addr. The
// development CA (created on first start, kept across restarts) is
// <data>/pki/ca.pem: trust it with curl --cacert. On first start the
// all-in-one command seeds demo users (-demo=false: none), their generated
// passwords only in <data>/demo-credentials.json, and writes
// <data>/endpoints.json for scripts.
package main

import (
	"fmt"
	"os"

	"github.com/malai-sec/malai/examples/malai/internal/platform"
)

func main() {
	args := os.Args[1:]
	cmd := "all"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "all", "run", platform.Gateway, platform.Identity, platform.Ledger, platform.Worker:
		if cmd == "run" {
			cmd = "all"
		}
		err = componentCmd(cmd, args)
	case "evidence":
		err = evidenceCmd(args)
	case "verify":
		err = verifyCmd(args)
	case "logs":
		err = logsCmd(args)
	case "migrate":
		err = migrateCmd(args)
	case "audit-rekey":
		err = auditRekeyCmd(args)
	case "revoke-client":
		err = revokeClientCmd(args)
	case "rotate-keys":
		err = rotateKeysCmd(args)
	case "help":
		fmt.Println(commandList)
	default:
		err = fmt.Errorf("unknown command %q\n%s", cmd, commandList)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "malai:", err)
		os.Exit(1)
	}
}

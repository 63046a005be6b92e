// Command malai runs the Malai reference system and its evidence pass.
//
//	go run ./examples/malai                 # the whole system on this machine
//	go run ./examples/malai evidence        # start it, test every claim, write the report
//	go run ./examples/malai verify -data D  # verify the audit chain offline
//	go run ./examples/malai logs -data D C  # decrypt component C's log stream
//	go run ./examples/malai migrate -admin-url U  # audit chain in PostgreSQL, least-privilege roles
//	go run ./examples/malai audit-rekey -admin-url U -data D  # after a data-key rotation, as the migrator
//
// Everything listens on loopback. The gateway serves HTTPS (TLS 1.2+, h2)
// and HTTP/3 on -addr and redirects plain HTTP from -http-addr. The
// development CA (created on first start, kept across restarts) is
// <data>/pki/ca.pem: trust it with curl --cacert.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	args := os.Args[1:]
	cmd := "run"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "run":
		err = runCmd(args)
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
	default:
		err = fmt.Errorf("unknown command %q (run, evidence, verify, logs, migrate, audit-rekey)", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "malai:", err)
		os.Exit(1)
	}
}

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	o := Options{}
	fs.StringVar(&o.Addr, "addr", "127.0.0.1:8443", "gateway HTTPS and HTTP/3 address")
	fs.StringVar(&o.HTTPAddr, "http-addr", "127.0.0.1:8080", "plain-HTTP redirect address (empty: none)")
	fs.StringVar(&o.DataDir, "data", "malai-data", "data directory")
	fs.StringVar(&o.Issuer, "issuer", "", "the stable public URL tokens name as \"iss\" (default: the gateway's URL, https://localhost:<port> on a loopback or wildcard -addr)")
	fs.StringVar(&o.RedisURL, "redis-url", "", "Redis URL for limits, idempotency and the queue (default: in memory)")
	fs.StringVar(&o.RedisPrefix, "redis-prefix", "malai:", "prefix of every Redis key the system writes (several systems can share one Redis)")
	fs.StringVar(&o.DenyList, "deny-list", "", "IP reputation deny list file (reloaded on SIGHUP)")
	fs.StringVar(&o.Postgres.URL, "audit-dsn", "", "PostgreSQL DSN of the audit app role (see the migrate command); default: file store under -data")
	fs.StringVar(&o.Postgres.Schema, "audit-schema", defaultPGAudit.Schema, "PostgreSQL schema of the audit chain")
	fs.StringVar(&o.Postgres.PasswordFile, "audit-password-file", "", "file holding the audit app role's password, re-read for every new connection")
	fs.IntVar(&o.PerIP, "per-ip", 0, "requests per minute per client network at the gateway (default 600)")
	fs.IntVar(&o.PerPrincipal, "per-principal", 0, "requests per minute per signed-in principal at the gateway (default 300)")
	proxies := fs.String("trusted-proxies", "", "comma-separated CIDRs of proxies in front of the gateway whose X-Forwarded-For is believed (default: none)")
	hosts := fs.String("allowed-hosts", "localhost,127.0.0.1,::1", "comma-separated host names and addresses the gateway answers for (others: 421)")
	quiet := fs.Bool("quiet", false, "do not mirror the JSON logs to stderr (they are always written encrypted under -data)")
	fs.Parse(args)
	for _, p := range strings.FieldsFunc(*proxies, func(r rune) bool { return r == ',' || r == ' ' }) {
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			return fmt.Errorf("-trusted-proxies: %w", err)
		}
		o.TrustedProxies = append(o.TrustedProxies, pfx)
	}
	o.AllowedHosts = strings.FieldsFunc(*hosts, func(r rune) bool { return r == ',' || r == ' ' })
	if !*quiet {
		o.LogMirror = os.Stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sys, err := Start(ctx, o)
	if err != nil {
		return err
	}
	defer sys.Close()
	fmt.Printf(`Malai reference system is up.
  gateway   %s   (TLS 1.2+, h2, HTTP/3 on the same UDP port)
  redirect  %s
  identity  %s   (internal)
  ledger    %s   (internal)
  CA cert   %s

Try:
  curl --cacert %[5]s %[1]s/healthz
  curl --cacert %[5]s -H 'Content-Type: application/json' -d '{"username":"alice","password":"Correct-Horse-42!"}' %[1]s/v1/users
  go run ./examples/malai evidence     # the evidence pass, on its own ports
`, sys.GatewayURL, sys.RedirectURL, sys.IdentityURL, sys.LedgerURL, sys.CAFile)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	for {
		select {
		case <-ctx.Done():
			fmt.Println("shutting down")
			return nil
		case <-hup:
			if err := sys.Reload(); err != nil {
				fmt.Fprintln(os.Stderr, "reload failed, keeping the old policy or deny list:", err)
			}
		}
	}
}

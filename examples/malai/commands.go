package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"

	"github.com/malai-sec/malai/examples/malai/internal/platform"
)

// defaultIssuer is the gateway's public URL with the default -addr: the
// "iss" of every token unless -issuer says otherwise.
const defaultIssuer = "https://localhost:8443"

// defaultListen are the one-component commands' internal listen
// addresses, so that on one machine the peers' default URLs find them.
var defaultListen = map[string]string{
	platform.Identity: "127.0.0.1:7001",
	platform.Ledger:   "127.0.0.1:7002",
	platform.Worker:   "127.0.0.1:7003",
	platform.Gateway:  "127.0.0.1:7004",
}

// Flag groups of the commands that run components.
const (
	gEdge     = 1 << iota // the gateway's public side and limits
	gRedis                // limits, idempotency, queue
	gIdentity             // identity's store
	gLedger               // the audit chain and witness
	gPeers                // -<peer>-url flags
	gSplit                // -listen, certificate files
)

// commandGroups are each component command's flag groups, and the peers
// it calls.
var commandGroups = map[string]struct {
	groups int
	peers  []string
	about  string
}{
	"all": {gEdge | gRedis | gIdentity | gLedger, nil,
		"Runs every component (identity, ledger, worker, gateway with the web app) in\nthis process, each on its own loopback listener, over mutual TLS.\n\n" + commandList},
	platform.Gateway: {gEdge | gRedis | gPeers | gSplit, []string{platform.Identity, platform.Ledger},
		"Runs the gateway (and the customer web app) alone: the public HTTPS, HTTP/3\nand redirect listeners, forwarding to identity and the ledger over mutual\nTLS. Any number can run side by side with -redis-url (shared limits and\nweb sessions)."},
	platform.Identity: {gIdentity | gSplit, nil,
		"Runs identity alone on its internal listener. With -postgres-url any number\ncan run side by side (accounts, sessions, keys and security events in\nPostgreSQL)."},
	platform.Ledger: {gRedis | gLedger | gPeers | gSplit, []string{platform.Identity},
		"Runs the ledger alone on its internal listener. With -postgres-url and\n-redis-url any number can run side by side (the audit chain in PostgreSQL,\nidempotency records and the queue in Redis); each needs its own\n-witness-dir."},
	platform.Worker: {gRedis | gPeers | gSplit, []string{platform.Identity, platform.Ledger},
		"Runs the worker alone: it consumes the Redis queue (-redis-url is required)\nand hands each job to the ledger with its own service token."},
}

// commandList is every command, for -h.
const commandList = `Commands:
  all (or none)  every component in this process
  gateway        the gateway and web app alone
  identity       identity alone
  ledger         the ledger alone
  worker         the worker alone
  migrate        PostgreSQL schemas and least-privilege roles
  verify         verify a stopped system's audit chain offline
  logs           decrypt and verify the log streams (live and cut ones too)
  evidence       start a system, test every claim, write the report
  rotate-keys    rotate the data and checkpoint signing keys now
  audit-rekey    re-encrypt PostgreSQL audit rows after a key rotation
  revoke-client  revoke a component's keys at identity (operator)
Run "malai COMMAND -h" for a command's flags.`

// usage sets fs's -h text: the synopsis, what the command does, the flags.
func usage(fs *flag.FlagSet, synopsis, about string) {
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: malai %s\n\n%s\n\nFlags:\n", synopsis, about)
		fs.PrintDefaults()
	}
}

// componentCmd runs the command name ("all" or one component) until
// one of stopSignals (SIGINT or SIGTERM); reloadSignals (SIGHUP on Unix,
// none on Windows) reload the policy and the deny list.
func componentCmd(name string, args []string) error {
	spec, ok := commandGroups[name]
	if !ok {
		return fmt.Errorf("unknown command %q", name)
	}
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	synopsis := name + " [flags]"
	if name == "all" {
		synopsis = "[all] [flags]"
	}
	usage(fs, synopsis, spec.about)
	o := Options{Listen: map[string]string{}, Peers: map[string]string{}}
	if name != "all" {
		o.Components = []string{name}
	}
	fs.StringVar(&o.DataDir, "data", "malai-data", "data directory: the key file, the development CA, the encrypted logs and the embedded stores (processes on one machine may share it)")
	rotationFlags(fs, &o, name)
	quiet := fs.Bool("quiet", false, "do not mirror the JSON logs to stderr (they are always written encrypted under -data)")
	telemetryFlags(fs, &o)
	var demo *bool
	if name == "all" {
		demo = fs.Bool("demo", true, "seed demo users and funded accounts on first start (passwords in <data>/demo-credentials.json)")
	}
	g := spec.groups
	if g&(gEdge|gIdentity|gLedger) != 0 {
		issuer := defaultIssuer
		if g&gEdge != 0 {
			issuer = ""
		}
		fs.StringVar(&o.Issuer, "issuer", issuer, "the stable public URL tokens name as \"iss\" (default: the gateway's URL, https://localhost:<port> on a loopback or wildcard -addr); every component of a system must agree")
	}
	var proxies, hosts *string
	if g&gEdge != 0 {
		fs.StringVar(&o.Addr, "addr", "127.0.0.1:8443", "gateway HTTPS and HTTP/3 address")
		fs.StringVar(&o.HTTPAddr, "http-addr", "127.0.0.1:8080", "plain-HTTP redirect address (empty: none)")
		fs.StringVar(&o.DenyList, "deny-list", "", "IP reputation deny list file (reloaded on SIGHUP)")
		fs.IntVar(&o.PerIP, "per-ip", 0, "requests per minute per client network at the gateway (default 600)")
		fs.IntVar(&o.PerPrincipal, "per-principal", 0, "requests per minute per signed-in principal at the gateway (default 300)")
		fs.DurationVar(&o.InspectionRate, "waf-inspection-rate", 0, "WAF inspection time per second one client network may use for requests with a body, past a 2s burst (default 250ms; negative: no budget)")
		proxies = fs.String("trusted-proxies", "", "comma-separated CIDRs of proxies in front of the gateway whose X-Forwarded-For is believed (default: none)")
		hosts = fs.String("allowed-hosts", "localhost,127.0.0.1,::1", "comma-separated host names and addresses the gateway answers for (others: 421)")
	}
	if g&gRedis != 0 {
		fs.StringVar(&o.RedisURL, "redis-url", "", "Redis URL for limits, idempotency records, web sessions and the queue (default: in memory)")
		fs.StringVar(&o.RedisPrefix, "redis-prefix", "malai:", "prefix of every Redis key the system writes (several systems can share one Redis)")
	}
	var pgURL, pgPrefix, pgPassword *string
	if g&(gIdentity|gLedger) != 0 {
		pgURL = fs.String("postgres-url", "", "PostgreSQL server and database (postgres://host:port/db?sslmode=...) for identity's data and the ledger's audit chain; each component connects as its own role created by \"malai migrate\" (<prefix>_identity_app, <prefix>_ledger_app) unless the URL names a user. Default: embedded stores under -data")
		pgPrefix = fs.String("postgres-prefix", defaultPGPrefix, "prefix of the PostgreSQL schemas and roles (the migrate command's -prefix)")
		pgPassword = fs.String("postgres-password-file", "", "file holding the application role's password, re-read for every new connection")
	}
	if g&gLedger != 0 {
		fs.StringVar(&o.Postgres.URL, "audit-dsn", "", "PostgreSQL URL of the audit chain's app role (overrides -postgres-url for the ledger)")
		fs.StringVar(&o.Postgres.Schema, "audit-schema", "", "PostgreSQL schema of the audit chain (default <prefix>_audit)")
		fs.StringVar(&o.Postgres.PasswordFile, "audit-password-file", "", "file holding the audit app role's password (default: -postgres-password-file)")
		fs.StringVar(&o.WitnessDir, "witness-dir", "", "the ledger's witness store, one per ledger process (default <data>/witness)")
	}
	var listen *string
	var files CertFiles
	if g&gSplit != 0 {
		listen = fs.String("listen", defaultListen[name], "internal listener address (mutual TLS; /metrics and /healthz live here)")
		fs.StringVar(&files.Cert, "cert", "", "the component's certificate file (PEM, common name = component); with -key and -ca. Default: issued by the development CA under -data")
		fs.StringVar(&files.Key, "key", "", "the component's private key file (PEM)")
		fs.StringVar(&files.CA, "ca", "", "the roots trusted for peers and clients (PEM)")
		if name == platform.Gateway {
			fs.StringVar(&files.WebCert, "web-cert", "", "the web app's certificate file (common name \"web\"), with -cert")
			fs.StringVar(&files.WebKey, "web-key", "", "the web app's private key file")
		}
	} else {
		for _, c := range []string{platform.Gateway, platform.Identity, platform.Ledger, platform.Worker} {
			listenFlag(fs, o.Listen, c)
		}
	}
	for _, p := range spec.peers {
		o.Peers[p] = "https://" + defaultListen[p]
		peerFlag(fs, o.Peers, p)
	}
	fs.Parse(args)
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected arguments %q", name, fs.Args())
	}

	if proxies != nil {
		for _, p := range strings.FieldsFunc(*proxies, func(r rune) bool { return r == ',' || r == ' ' }) {
			pfx, err := netip.ParsePrefix(p)
			if err != nil {
				return fmt.Errorf("-trusted-proxies: %w", err)
			}
			o.TrustedProxies = append(o.TrustedProxies, pfx)
		}
		o.AllowedHosts = strings.FieldsFunc(*hosts, func(r rune) bool { return r == ',' || r == ' ' })
	}
	if pgURL != nil {
		if err := o.postgres(*pgURL, *pgPrefix, *pgPassword, g); err != nil {
			return err
		}
	}
	if listen != nil {
		o.Listen[name] = *listen
	}
	if files != (CertFiles{}) {
		if files.Cert == "" || files.Key == "" || files.CA == "" {
			return fmt.Errorf("%s: -cert, -key and -ca go together", name)
		}
		o.CertFiles = &files
	}
	if name == platform.Worker && o.RedisURL == "" {
		return fmt.Errorf("worker: -redis-url is required (the queue it consumes)")
	}
	if name == platform.Ledger && o.RedisURL == "" {
		return fmt.Errorf("ledger: -redis-url is required when the worker runs in another process (the queue)")
	}
	if !*quiet {
		o.LogMirror = os.Stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), stopSignals()...)
	defer stop()
	// The reload signal is caught from the start: one that arrives while
	// the system starts or seeds its demo data (the gateway already
	// answers) must not kill the process, which is SIGHUP's default.
	var hup chan os.Signal // nil, never ready, without a reload signal
	if sigs := reloadSignals(); len(sigs) > 0 {
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, sigs...)
		defer signal.Stop(hup)
	}
	sys, err := Start(ctx, o)
	if err != nil {
		return err
	}
	defer sys.Close()
	if name == "all" {
		if err := startEmbedded(ctx, sys, *demo); err != nil {
			return err
		}
		printBanner(os.Stdout, sys, *demo)
	} else {
		line := fmt.Sprintf("%s ready: internal %s", name, sys.URLs[name])
		if sys.GatewayURL != "" {
			line += ", public " + sys.GatewayURL
		}
		fmt.Println(line)
	}
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

func listenFlag(fs *flag.FlagSet, m map[string]string, c string) {
	fs.Func(c+"-listen", c+"'s internal listen address (default: a free loopback port)", func(v string) error { m[c] = v; return nil })
}

func peerFlag(fs *flag.FlagSet, m map[string]string, p string) {
	fs.Func(p+"-url", fmt.Sprintf("%s's internal base URL (default https://%s)", p, defaultListen[p]), func(v string) error {
		if !strings.HasPrefix(v, "https://") {
			return fmt.Errorf("%q is not an https:// URL", v)
		}
		m[p] = strings.TrimRight(v, "/")
		return nil
	})
}

// postgres fills the PostgreSQL settings of the components in groups g
// from -postgres-url: each component connects as its own role. An
// explicit -audit-dsn keeps the ledger's.
func (o *Options) postgres(server, prefix, passwordFile string, g int) error {
	if !pgName.MatchString(prefix + "_identity_owner") {
		return fmt.Errorf("invalid -postgres-prefix %q", prefix)
	}
	n := pgNamesFor(prefix)
	if o.Postgres.Schema == "" {
		o.Postgres.Schema = n.Audit.Schema
	}
	if o.Postgres.PasswordFile == "" {
		o.Postgres.PasswordFile = passwordFile
	}
	if server == "" {
		return nil
	}
	var err error
	if g&gLedger != 0 && o.Postgres.URL == "" {
		if o.Postgres.URL, err = asRole(server, n.Audit.AppRole); err != nil {
			return fmt.Errorf("-postgres-url: %w", err)
		}
	}
	if g&gIdentity != 0 {
		o.IdentityPostgres = platform.Postgres{Schema: n.Identity.Schema, PasswordFile: passwordFile}
		if o.IdentityPostgres.URL, err = asRole(server, n.Identity.AppRole); err != nil {
			return fmt.Errorf("-postgres-url: %w", err)
		}
	}
	return nil
}

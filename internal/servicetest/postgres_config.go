package servicetest

// EnvPostgresBin names the directory holding initdb and postgres for
// [NewPostgresServer]; by default PATH, then the newest
// /usr/lib/postgresql/*/bin.
const EnvPostgresBin = "MALAI_TEST_POSTGRES_BIN"

// PostgresConfig shapes a server [NewPostgresServer] starts.
type PostgresConfig struct {
	// Settings are appended to postgresql.conf, one "name = value" each.
	Settings []string
	// HBA replaces pg_hba.conf when set. The bootstrap superuser is
	// "postgres"; keep a "local all postgres trust" line to reach it over
	// the Unix socket ([PostgresServer.SocketDir]).
	HBA string
	// Files are written into the data directory, 0600 and owned by the
	// server's user (a server key and certificate, say).
	Files map[string][]byte
}

// PostgresServer is a PostgreSQL cluster a test initialised and started
// on a free loopback port, in a temporary directory removed at cleanup.
type PostgresServer struct {
	// Port is the TCP port on 127.0.0.1.
	Port int
	// SocketDir holds the Unix socket (the data directory): a DSN with
	// host=SocketDir reaches the server without TCP.
	SocketDir string
}

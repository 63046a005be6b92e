//go:build unix

package servicetest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// NewPostgresServer runs initdb (as the "postgres" user when the test runs
// as root: the server refuses to run as root) and starts the server with
// cfg, waiting until it accepts connections. Without the binaries it
// skips (fails under MALAI_REQUIRE_SERVICES=1). It takes one to three
// seconds.
func NewPostgresServer(t testing.TB, cfg PostgresConfig) *PostgresServer {
	t.Helper()
	bin := postgresBin(t)
	cred := serverCredential(t)
	base, err := os.MkdirTemp("", "malai-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	// The server's user must reach its data directory inside base.
	if err := os.Chmod(base, 0o711); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(base, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	chown := func(p string) {
		if cred != nil {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				t.Fatal(err)
			}
		}
	}
	chown(data)
	run := func(name string, args ...string) {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir, cmd.SysProcAttr = base, &syscall.SysProcAttr{Credential: cred}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
	}
	run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-instructions", "--no-sync")
	write := func(name string, b []byte) {
		p := filepath.Join(data, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		chown(p)
	}
	conf, err := os.ReadFile(filepath.Join(data, "postgresql.conf"))
	if err != nil {
		t.Fatal(err)
	}
	settings := append([]string{"fsync = off", "log_min_messages = warning"}, cfg.Settings...)
	write("postgresql.conf", append(conf, []byte("\n"+strings.Join(settings, "\n")+"\n")...))
	if cfg.HBA != "" {
		write("pg_hba.conf", []byte(cfg.HBA))
	}
	for name, b := range cfg.Files {
		write(name, b)
	}
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		out := &syncBuffer{}
		cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data,
			"-c", "listen_addresses=127.0.0.1", "-c", "port="+strconv.Itoa(port), "-c", "unix_socket_directories="+data)
		cmd.Stdout, cmd.Stderr, cmd.Dir = out, out, base
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		setDeathSignal(cmd)
		if err := cmd.Start(); err != nil {
			t.Fatalf("postgres: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		if err := waitReady(out, exited); err != nil {
			_ = cmd.Process.Kill()
			<-exited
			lastErr = err
			continue
		}
		t.Cleanup(func() {
			// SIGINT is PostgreSQL's fast shutdown.
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		})
		return &PostgresServer{Port: port, SocketDir: data}
	}
	t.Fatalf("postgres did not start after 5 attempts: %v", lastErr)
	return nil
}

// postgresBin finds the directory of initdb and postgres.
func postgresBin(t testing.TB) string {
	t.Helper()
	if d := os.Getenv(EnvPostgresBin); d != "" {
		return d
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return va - vb
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i]
		}
	}
	Unavailable(t, "PostgreSQL server test skipped: no initdb on PATH or under /usr/lib/postgresql (set %s)", EnvPostgresBin)
	return ""
}

// serverCredential is the user the server runs as: nil (the test's own)
// unless the test runs as root, then "postgres".
func serverCredential(t testing.TB) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		Unavailable(t, "PostgreSQL server test skipped: running as root and no \"postgres\" user to run the server as: %v", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitReady waits up to 20 s for the server's "ready to accept
// connections" line, or for it to exit.
func waitReady(out *syncBuffer, exited <-chan struct{}) error {
	deadline := time.After(20 * time.Second)
	for {
		if strings.Contains(out.String(), "ready to accept connections") {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("postgres exited: %s", strings.TrimSpace(out.String()))
		case <-deadline:
			return fmt.Errorf("postgres not ready after 20 s: %s", strings.TrimSpace(out.String()))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the writer goroutines exec starts
// and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
	"github.com/malai-sec/malai/examples/malai/identity"
	"github.com/malai-sec/malai/examples/malai/internal/faults"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
)

// TestKeyRotationWhileRunning: the data keys rotate on a schedule while
// the system serves, identity's token-signing key and the key file's
// signing key rotate on demand (Service.RotateKey, "malai rotate-keys"),
// and none of it shows: a token signed before the rotations still works
// through the gateway, accounts opened under every data key read back,
// every encrypted log stream decrypts, and the audit chain verifies and
// replays offline and again after a restart that signs with the rotated
// checkpoint key.
func TestKeyRotationWhileRunning(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole system")
	}
	ctx := context.Background()
	data := t.TempDir()
	o := Options{Addr: "127.0.0.1:0", DataDir: data, PerIP: 100_000, RotateKeysEvery: 300 * time.Millisecond, KeyReload: 30 * time.Millisecond}
	sys, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { sys.Close() }()
	if _, err := sys.Identity.CreateUser(ctx, "rotor", "Tr1cky-Harbour-Lantern"); err != nil {
		t.Fatal(err)
	}
	c := sys.HTTPClient()
	call := func(method, path, tok, body string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, sys.GatewayURL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		if path == "/v1/accounts" && method == "POST" {
			req.Header.Set("Idempotency-Key", fmt.Sprintf("%q", "open-"+body[7:12]))
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.Bytes()
	}
	signIn := func() string {
		t.Helper()
		code, b := call("POST", identity.SignInPath, "", `{"username":"rotor","password":"Tr1cky-Harbour-Lantern"}`)
		var tr struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.Unmarshal(b, &tr); code != 200 || err != nil {
			t.Fatalf("sign-in: %d %s", code, b)
		}
		return tr.AccessToken
	}
	before := signIn()
	if code, b := call("POST", "/v1/accounts", before, `{"id":"rot-1"}`); code != 201 {
		t.Fatalf("open before the rotation: %d %s", code, b)
	}

	// The schedule rotates twice while the system runs.
	first := sys.Ring.Current()
	seen := map[string]bool{first: true}
	deadline := time.Now().Add(20 * time.Second)
	for len(seen) < 3 && time.Now().Before(deadline) {
		seen[sys.Ring.Current()] = true
		time.Sleep(10 * time.Millisecond)
	}
	if len(seen) < 3 {
		t.Fatalf("the data key sealed with %d keys in 20 s; want two scheduled rotations", len(seen))
	}
	// On demand: the token-signing key and the key file (new data and
	// checkpoint keys) now.
	if err := sys.Identity.RotateKey(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := rotateKeysCmd([]string{"-data", data, "-activate-in", "100ms"}); err != nil {
		t.Fatal(err)
	}
	// The running system seals with the command's key (or a later one the
	// schedule added) once it is active.
	keys, err := platform.LoadKeys(data)
	if err != nil {
		t.Fatal(err)
	}
	onDemand := len(keys.DataKeyIDs()) - 1
	deadline = time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		keys, err := platform.LoadKeys(data)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Index(keys.DataKeyIDs(), sys.Ring.Current()) >= onDemand {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if keys, _ := platform.LoadKeys(data); slices.Index(keys.DataKeyIDs(), sys.Ring.Current()) < onDemand {
		t.Fatal("the running system never sealed with the key rotate-keys added")
	}
	if code, b := call("POST", "/v1/accounts", before, `{"id":"rot-2"}`); code != 201 {
		t.Fatalf("the token signed before the rotations, after them: %d %s", code, b)
	}
	after := signIn()
	if headerKid(t, after) == headerKid(t, before) {
		t.Fatal("identity signs with the same key after RotateKey")
	}
	code, b := call("GET", "/v1/accounts", after, "")
	if code != 200 || !bytes.Contains(b, []byte("rot-1")) || !bytes.Contains(b, []byte("rot-2")) {
		t.Fatalf("accounts opened under different data keys: %d %s", code, b)
	}

	// (An idle keep-alive connection holds up the gateway's shutdown.)
	c.CloseIdleConnections()
	sys.Close()
	checkStopped(t, data, 2, "rot-1", "rot-2")
	// A restart signs checkpoints with the rotated key beside the old one.
	sys, err = Start(ctx, Options{Addr: "127.0.0.1:0", DataDir: data, PerIP: 100_000})
	if err != nil {
		t.Fatalf("restart after the rotations: %v", err)
	}
	if code, b := call("POST", "/v1/accounts", signIn(), `{"id":"rot-3"}`); code != 201 {
		t.Fatalf("open after the restart: %d %s", code, b)
	}
	c.CloseIdleConnections()
	sys.Close()
	checkStopped(t, data, 2, "rot-1", "rot-2", "rot-3")
}

// checkStopped verifies a stopped system's data directory offline: the
// chain verifies and replays, it holds records of at least minKeys data
// keys, the replay holds the accounts, and every encrypted log stream
// decrypts.
func checkStopped(t *testing.T, data string, signers int, accounts ...string) {
	t.Helper()
	ctx := context.Background()
	st, err := filestore.OpenReadOnly(filepath.Join(data, "audit"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rep, balances, err := verifyData(ctx, data, st)
	if err != nil || !rep.OK() || rep.Rows == 0 || rep.Anchored == 0 {
		t.Fatalf("offline verify after rotation: %+v, %v", rep, err)
	}
	for _, id := range accounts {
		if _, ok := balances[id]; !ok {
			t.Fatalf("the replay lost account %s: %v", id, balances)
		}
	}
	keys, err := platform.LoadKeys(data)
	if err != nil {
		t.Fatal(err)
	}
	if vs, _ := keys.Verifiers(); len(vs) < signers {
		t.Fatalf("%d checkpoint keys, want >= %d", len(vs), signers)
	}
	ring, _ := keys.Ring()
	files, _ := filepath.Glob(filepath.Join(data, "logs", "*.log.enc"))
	if len(files) == 0 {
		t.Fatal("no log streams")
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		err = decryptLog(f, ring, &out)
		f.Close()
		if err != nil {
			t.Fatalf("%s does not decrypt after rotation: %v", filepath.Base(name), err)
		}
	}
}

func headerKid(t *testing.T, tok string) string {
	t.Helper()
	h, _, _ := strings.Cut(tok, ".")
	var v struct {
		Kid string `json:"kid"`
	}
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil || json.Unmarshal(b, &v) != nil || v.Kid == "" {
		t.Fatalf("token header %q", h)
	}
	return v.Kid
}

// TestRotateDataKeyReencrypts: System.RotateDataKey re-seals the rows
// written under the older key, and under faults.DataKeyNoReencrypt (the
// evidence proof's switch) it leaves them as they were.
func TestRotateDataKeyReencrypts(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole system")
	}
	for _, fs := range []faults.Set{nil, {faults.DataKeyNoReencrypt}} {
		t.Run(fmt.Sprint(fs), func(t *testing.T) {
			ctx := context.Background()
			sys, err := Start(ctx, Options{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Faults: fs})
			if err != nil {
				t.Fatal(err)
			}
			defer sys.Close()
			if _, err := sys.Audit.Append(ctx, auditlog.Event{Type: "test.row", Actor: "test", Payload: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
			old := sys.Ring.Current()
			n, err := sys.RotateDataKey(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if sys.Ring.Current() == old {
				t.Fatal("the data key did not rotate")
			}
			switch off := fs.On(faults.DataKeyNoReencrypt); {
			case off && n != 0:
				t.Fatalf("%d rows re-encrypted under the switch", n)
			case !off && n == 0:
				t.Fatal("no row re-encrypted")
			}
		})
	}
}

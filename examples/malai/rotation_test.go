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

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
	"github.com/malai-sec/malai/examples/malai/identity"
	"github.com/malai-sec/malai/examples/malai/internal/faults"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
)

// TestKeyRotationWhileRunning: the data and checkpoint keys rotate on a
// schedule while the system serves, and "malai rotate-keys" rotates all
// of them and identity's token-signing key on demand, in the running
// system and again while it is stopped. None of it shows: a token signed
// before the rotations still works through the gateway while a new
// sign-in's token has a new kid and the JWKS lists both; the next
// checkpoints of the running ledger and identity (and the ledger's
// witness) are signed by the new checkpoint key; accounts opened under
// every data key read back, every encrypted log stream decrypts, and the
// audit chain verifies and replays offline, also after the restart.
func TestKeyRotationWhileRunning(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole system")
	}
	ctx := context.Background()
	data := t.TempDir()
	// (A fixed issuer: a token outlives the restart's new gateway port.)
	const issuer = "https://rotation.malai.test"
	o := Options{Addr: "127.0.0.1:0", DataDir: data, PerIP: 100_000, RotateKeysEvery: 300 * time.Millisecond, KeyReload: 30 * time.Millisecond, Issuer: issuer}
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
	// On demand: "malai rotate-keys" (new data, checkpoint and token keys)
	// while the system runs.
	jwksBefore := sys.Identity.JWKS()
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
	fileVerifiers, _ := keys.Verifiers()
	onDemandSigner := len(fileVerifiers) - 1
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
	// Identity answers the command's token-key request by itself.
	deadline = time.Now().Add(20 * time.Second)
	for bytes.Equal(sys.Identity.JWKS(), jwksBefore) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// The running ledger holds the command's checkpoint key before the
	// next append.
	deadline = time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if vs, _ := sys.Keys.Verifiers(); len(vs) > onDemandSigner {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, b := call("POST", "/v1/accounts", before, `{"id":"rot-2"}`); code != 201 {
		t.Fatalf("the token signed before the rotations, after them: %d %s", code, b)
	}
	cp, err := sys.Audit.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkSignedSince(t, data, "the ledger's next checkpoint", cp.Note, sys.Origin, onDemandSigner)
	after := signIn()
	if headerKid(t, after) == headerKid(t, before) {
		t.Fatal("a new sign-in's token has the old kid after rotate-keys: identity did not rotate its token-signing key")
	}
	checkJWKS(t, call, headerKid(t, before), headerKid(t, after))
	code, b := call("GET", "/v1/accounts", after, "")
	if code != 200 || !bytes.Contains(b, []byte("rot-1")) || !bytes.Contains(b, []byte("rot-2")) {
		t.Fatalf("accounts opened under different data keys: %d %s", code, b)
	}
	if code, b := call("GET", "/v1/accounts", before, ""); code != 200 {
		t.Fatalf("the token signed before rotate-keys, after it: %d %s", code, b)
	}

	// (An idle keep-alive connection holds up the gateway's shutdown.)
	c.CloseIdleConnections()
	sys.Close()
	checkStopped(t, data, 2, "rot-1", "rot-2")
	// The witness took the checkpoints the rotated keys signed, and
	// identity's chain was checkpointed with them too.
	checkSignedSince(t, data, "the witness's newest checkpoint", newestCheckpoint(t, data, "witness"), auditOrigin, onDemandSigner)
	checkSignedSince(t, data, "identity's newest checkpoint", newestCheckpoint(t, data, "identity-audit"), identity.AuditOrigin, onDemandSigner)

	// rotate-keys while the system is stopped: the restart signs
	// checkpoints with the new key and identity rotates as it starts.
	if err := rotateKeysCmd([]string{"-data", data, "-activate-in", "0s"}); err != nil {
		t.Fatal(err)
	}
	keys, _ = platform.LoadKeys(data)
	fileVerifiers, _ = keys.Verifiers()
	stoppedSigner := len(fileVerifiers) - 1
	sys, err = Start(ctx, Options{Addr: "127.0.0.1:0", DataDir: data, PerIP: 100_000, Issuer: issuer})
	if err != nil {
		t.Fatalf("restart after the rotations: %v", err)
	}
	restarted := signIn()
	if headerKid(t, restarted) == headerKid(t, after) {
		t.Fatal("after rotate-keys while stopped, the restarted identity signs with the same key")
	}
	checkJWKS(t, call, headerKid(t, after), headerKid(t, restarted))
	if code, b := call("POST", "/v1/accounts", after, `{"id":"rot-3"}`); code != 201 {
		t.Fatalf("a token signed before the restart's rotation, after it: %d %s", code, b)
	}
	cp, err = sys.Audit.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkSignedSince(t, data, "the restarted ledger's checkpoint", cp.Note, sys.Origin, stoppedSigner)
	c.CloseIdleConnections()
	sys.Close()
	checkStopped(t, data, 2, "rot-1", "rot-2", "rot-3")
}

// checkSignedSince fails unless signed (a checkpoint of origin) carries a
// valid signature by the key file's checkpoint key number from or a later
// one.
func checkSignedSince(t *testing.T, data, what string, signed []byte, origin string, from int) {
	t.Helper()
	keys, err := platform.LoadKeys(data)
	if err != nil {
		t.Fatal(err)
	}
	vs, _ := keys.Verifiers()
	if _, names, err := auditlog.OpenCheckpoint(signed, origin, note.VerifierList(vs[from:]...)); err != nil {
		t.Fatalf("%s is not signed by the rotated checkpoint key (%d of %d keys): %v %v", what, from+1, len(vs), names, err)
	}
}

// newestCheckpoint returns the newest checkpoint of the file store in
// data/dir.
func newestCheckpoint(t *testing.T, data, dir string) []byte {
	t.Helper()
	st, err := filestore.OpenReadOnly(filepath.Join(data, dir))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var last []byte
	if err := st.Checkpoints(context.Background(), func(b []byte) error { last = bytes.Clone(b); return nil }); err != nil || last == nil {
		t.Fatalf("%s holds no checkpoint: %v", dir, err)
	}
	return last
}

// checkJWKS fails unless the JWKS served through the gateway lists every
// kid.
func checkJWKS(t *testing.T, call func(method, path, tok, body string) (int, []byte), kids ...string) {
	t.Helper()
	code, b := call("GET", identity.JWKSPath, "", "")
	var doc struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(b, &doc); code != 200 || err != nil {
		t.Fatalf("JWKS: %d %s", code, b)
	}
	var published []string
	for _, k := range doc.Keys {
		published = append(published, k.Kid)
	}
	for _, kid := range kids {
		if !slices.Contains(published, kid) {
			t.Fatalf("the JWKS does not list %s: %v", kid, published)
		}
	}
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

// TestKeyRotationReencryptsOlderRows: after "malai rotate-keys" the
// running ledger, once the new data key seals, re-encrypts in the
// background the audit rows sealed under the older key, and new rows are
// sealed under the new one; under faults.DataKeyNoReencrypt (the evidence
// proof's switch) the key takes effect but the older rows stay as they
// were.
func TestKeyRotationReencryptsOlderRows(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole system")
	}
	for _, fs := range []faults.Set{nil, {faults.DataKeyNoReencrypt}} {
		t.Run(fmt.Sprint(fs), func(t *testing.T) {
			ctx := context.Background()
			data := t.TempDir()
			sys, err := Start(ctx, Options{Addr: "127.0.0.1:0", DataDir: data, Faults: fs, KeyReload: 20 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer sys.Close()
			if _, err := sys.Audit.Append(ctx, auditlog.Event{Type: "test.row", Actor: "test", Payload: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
			old := sys.Ring.Current()
			if err := rotateKeysCmd([]string{"-data", data, "-activate-in", "60ms"}); err != nil {
				t.Fatal(err)
			}
			keys, err := platform.LoadKeys(data)
			if err != nil {
				t.Fatal(err)
			}
			ids := keys.DataKeyIDs()
			kid := ids[len(ids)-1]
			deadline := time.Now().Add(20 * time.Second)
			for sys.Ring.Current() != kid && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if sys.Ring.Current() != kid {
				t.Fatal("the running system never sealed with the key rotate-keys added")
			}
			off := fs.On(faults.DataKeyNoReencrypt)
			// Under the switch: wait as long as several of the ledger's
			// looks at its ring would take, then expect the old rows.
			settle := time.Now().Add(4 * time.Second)
			var by map[string]uint64
			for time.Now().Before(deadline) {
				if by, err = sys.Audit.SealedBy(ctx); err != nil {
					t.Fatal(err)
				}
				if (len(by) == 1 && by[kid] > 0) || (off && time.Now().After(settle)) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			switch {
			case off && by[old] == 0:
				t.Fatalf("rows re-encrypted under the switch: %v", by)
			case !off && (len(by) != 1 || by[kid] == 0):
				t.Fatalf("rows left under older keys after the rotation: %v (new key %s)", by, kid)
			}
			if off {
				return
			}
			if _, err := sys.Audit.Append(ctx, auditlog.Event{Type: "test.row", Actor: "test", Payload: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
			after, err := sys.Audit.SealedBy(ctx)
			if err != nil || len(after) != 1 || after[kid] != by[kid]+1 {
				t.Fatalf("a row appended after the re-encryption: %v, %v", after, err)
			}
		})
	}
}

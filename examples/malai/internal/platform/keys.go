package platform

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/keyring"
)

// KeyFile is the reference system's stand-in for a managed key service
// (KMS): the data keys that seal logs and audit payloads, and the audit
// log's checkpoint signing key, kept in one file readable only by its
// owner (0600) under the data directory.
//
// This is the weakest link of the single-machine reference system and is
// named as such: a deployment keeps these keys in a KMS or HSM, unwraps
// data keys in memory only, and runs the audit witness on another host.
// What the file never holds is user data: logs and audit payloads on disk
// are ciphertext under these keys.
type KeyFile struct {
	// Data keys by id, newest last in Order; the newest seals.
	Data  map[string][]byte `json:"data"`
	Order []string          `json:"order"`
	// AuditSigner is the note signer key ("PRIVATE+KEY+…") for checkpoints.
	AuditSigner   string `json:"audit_signer"`
	AuditVerifier string `json:"audit_verifier"`
	path          string
}

// LogValue keeps every key out of logs.
func (k *KeyFile) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("data_keys", len(k.Order)), slog.String("keys", "[REDACTED]"))
}

// String keeps every key out of fmt output.
func (k *KeyFile) String() string { return "platform.KeyFile{[REDACTED]}" }

// LoadKeys reads dir/keys.json and fails when it does not exist.
func LoadKeys(dir string) (*KeyFile, error) {
	p := filepath.Join(dir, "keys.json")
	if _, err := os.Stat(p); err != nil {
		return nil, fmt.Errorf("platform: no key file in %s: %w", dir, err)
	}
	return LoadOrCreateKeys(dir, "")
}

// LoadOrCreateKeys reads dir/keys.json, creating it with fresh keys on
// first start. origin names the audit log's checkpoint key.
func LoadOrCreateKeys(dir, origin string) (*KeyFile, error) {
	p := filepath.Join(dir, "keys.json")
	b, err := os.ReadFile(p)
	if err == nil {
		var k KeyFile
		if err := json.Unmarshal(b, &k); err != nil {
			return nil, fmt.Errorf("platform: %s is not a key file: %w", p, err)
		}
		if len(k.Order) == 0 || k.AuditSigner == "" {
			return nil, fmt.Errorf("platform: %s is incomplete", p)
		}
		k.path = p
		return &k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return nil, err
	}
	k := &KeyFile{Data: map[string][]byte{}, AuditSigner: skey, AuditVerifier: vkey, path: p}
	if err := k.addDataKey(time.Now()); err != nil {
		return nil, err
	}
	return k, k.save()
}

func (k *KeyFile) addDataKey(now time.Time) error {
	key, err := keyring.NewKey()
	if err != nil {
		return err
	}
	var suffix [3]byte
	_, _ = rand.Read(suffix[:])
	id := now.UTC().Format("20060102T150405Z") + "-" + base64.RawURLEncoding.EncodeToString(suffix[:])
	k.Data[id] = key[:]
	k.Order = append(k.Order, id)
	return nil
}

// Rotate adds a new data key that seals from now on, saves the file, and
// makes ring (when not nil) seal with it too; old keys stay to open old
// records. The application sees no change: the ring it holds rotates.
func (k *KeyFile) Rotate(now time.Time, ring *keyring.Ring) error {
	if err := k.addDataKey(now); err != nil {
		return err
	}
	if err := k.save(); err != nil {
		return err
	}
	if ring == nil {
		return nil
	}
	id := k.Order[len(k.Order)-1]
	var key keyring.Key
	copy(key[:], k.Data[id])
	return ring.Rotate(id, key)
}

func (k *KeyFile) save() error {
	if err := os.MkdirAll(filepath.Dir(k.path), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return err
	}
	tmp := k.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, k.path)
}

// Ring returns a seal ring holding every data key, the newest current.
func (k *KeyFile) Ring() (*keyring.Ring, error) {
	keys := make(map[string]keyring.Key, len(k.Data))
	for id, b := range k.Data {
		if len(b) != keyring.KeySize {
			return nil, fmt.Errorf("platform: data key %s has %d bytes", id, len(b))
		}
		var key keyring.Key
		copy(key[:], b)
		keys[id] = key
	}
	return keyring.NewRing(k.Order[len(k.Order)-1], keys)
}

// Signer returns the audit checkpoint signer and its verifier.
func (k *KeyFile) Signer() (note.Signer, note.Verifier, error) {
	s, err := note.NewSigner(k.AuditSigner)
	if err != nil {
		return nil, nil, fmt.Errorf("platform: audit signer: %w", err)
	}
	v, err := note.NewVerifier(k.AuditVerifier)
	if err != nil {
		return nil, nil, fmt.Errorf("platform: audit verifier: %w", err)
	}
	return s, v, nil
}

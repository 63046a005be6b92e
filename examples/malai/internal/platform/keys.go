package platform

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/examples/malai/internal/atomicfile"
	"github.com/malai-sec/malai/keyring"
)

// KeyWrapper is the one thing the system asks of a key management service
// (KMS): wrap a data key under a key-encryption key (KEK) that never
// leaves the service, and unwrap it again. The key file holds only
// wrapped keys; the plaintext of a data key exists in process memory
// only. id names the data key and is bound to the wrapping (a KMS's
// "encryption context", AES-GCM additional data here), so a wrapped key
// cannot be passed off under another id.
//
// The reference system's implementation is [LocalKEK], a KEK in a 0600
// file under the data directory. A cloud deployment implements KeyWrapper
// with its KMS's Encrypt/Decrypt (AWS KMS Encrypt/Decrypt with an
// EncryptionContext, Google Cloud KMS Encrypt/Decrypt with
// additionalAuthenticatedData, Azure Key Vault wrapKey/unwrapKey) and
// configures: the KEK's resource name, a role per component allowed only
// to unwrap (decrypt) with it, the rotation command's role allowed to
// wrap as well, and the KMS's own rotation of the KEK (old KEK versions
// stay able to unwrap). The key file itself then holds nothing secret and
// can sit on shared storage that every replica reads.
type KeyWrapper interface {
	// Name identifies the KEK (recorded in the key file, so a file is
	// never unwrapped with the wrong service).
	Name() string
	Wrap(ctx context.Context, id string, key []byte) ([]byte, error)
	Unwrap(ctx context.Context, id string, wrapped []byte) ([]byte, error)
}

// LocalKEK is the single-machine stand-in for a KMS: a 256-bit
// key-encryption key in <data>/kek.key (0600, created on first use)
// wrapping data keys with AES-256-GCM. It is safe for concurrent use.
type LocalKEK struct {
	ring *keyring.Ring
}

// KEKFile is the LocalKEK's file name under the data directory.
const KEKFile = "kek.key"

// OpenLocalKEK reads dir/kek.key, creating it on first use.
func OpenLocalKEK(dir string) (*LocalKEK, error) {
	p := filepath.Join(dir, KEKFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		k, kerr := keyring.NewKey()
		if kerr != nil {
			return nil, kerr
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		// Link a complete temporary file into place: of two processes
		// creating it at once, one wins and both read its key.
		tmp, terr := os.CreateTemp(dir, KEKFile+".tmp*")
		if terr != nil {
			return nil, terr
		}
		_, werr := tmp.WriteString(base64.StdEncoding.EncodeToString(k[:]))
		if cerr := tmp.Close(); werr == nil {
			werr = cerr
		}
		if werr == nil {
			if lerr := os.Link(tmp.Name(), p); lerr != nil && !errors.Is(lerr, os.ErrExist) {
				werr = lerr
			}
		}
		os.Remove(tmp.Name())
		if werr != nil {
			return nil, werr
		}
		b, err = os.ReadFile(p)
	}
	if err != nil {
		return nil, fmt.Errorf("platform: key-encryption key: %w", err)
	}
	raw, err := base64.StdEncoding.DecodeString(string(b))
	if err != nil || len(raw) != keyring.KeySize {
		return nil, fmt.Errorf("platform: %s is not a key-encryption key", p)
	}
	var k keyring.Key
	copy(k[:], raw)
	r, err := keyring.NewRing(localKEKName, map[string]keyring.Key{localKEKName: k})
	if err != nil {
		return nil, err
	}
	return &LocalKEK{ring: r}, nil
}

// Name implements KeyWrapper.
func (l *LocalKEK) Name() string { return localKEKName }

const localKEKName = "local-kek"

func wrapAAD(id string) []byte { return []byte("malai.platform.data-key:" + id) }

// Wrap implements KeyWrapper.
func (l *LocalKEK) Wrap(_ context.Context, id string, key []byte) ([]byte, error) {
	return l.ring.Seal(nil, key, wrapAAD(id))
}

// Unwrap implements KeyWrapper.
func (l *LocalKEK) Unwrap(_ context.Context, id string, wrapped []byte) ([]byte, error) {
	b, _, err := l.ring.Open(nil, wrapped, wrapAAD(id))
	if err != nil {
		return nil, fmt.Errorf("platform: unwrap key %s: %w", id, err)
	}
	return b, nil
}

// KeyFile is the reference system's key set: the data keys that seal logs,
// audit payloads, identity secrets, web sessions and queued jobs, and the
// audit log's checkpoint signing keys, each wrapped by a [KeyWrapper] and
// kept in <data>/keys.json (0600). Keys are never removed: an old data key
// still opens what it sealed, an old signing key's verifier still checks
// the checkpoints it signed.
//
// Rotation adds a data key that every replica learns (it re-reads the
// file, [KeyFile.Watch]) before it seals: each key carries the time it
// starts sealing, ActivationDelay after it was added, so a replica whose
// view is up to one reload interval old already opens what the first
// replica to switch seals. A new checkpoint signing key signs the next
// checkpoint of every running audit log once its process has re-read the
// file, alongside the previous one ([KeyFile.Signers], which the logs
// consult at every checkpoint), and their witnesses accept it
// ([KeyFile.Verifiers]).
//
// An on-demand rotation also counts a token-key rotation request
// ([KeyFile.TokenKeyRotation]): identity answers each request once, in
// its running replicas or at its next start, by rotating its
// token-signing key.
//
// The KEK is the weakest link of the single-machine reference system and
// is named as such: a deployment implements KeyWrapper with a KMS or HSM
// and runs the audit witness on another host.
type KeyFile struct {
	keySet
	path    string
	wrapper KeyWrapper
	mu      sync.Mutex
	plain   map[string]keyring.Key // unwrapped data keys by id
	signers map[string]note.Signer // unwrapped signing keys by id
	modTime time.Time
	// tokenKeyChanged is closed (and replaced) when a reload changes
	// TokenKeyRotations.
	tokenKeyChanged chan struct{}
}

// keySet is the file's content.
type keySet struct {
	Version     int          `json:"version"`
	KEK         string       `json:"kek"`
	DataKeys    []DataKey    `json:"data_keys"`
	SigningKeys []SigningKey `json:"signing_keys"`
	// TokenKeyRotations counts the on-demand rotations ("malai
	// rotate-keys"): each asks identity to rotate its token-signing key
	// once.
	TokenKeyRotations uint64 `json:"token_key_rotations,omitempty"`
}

// DataKey is one wrapped data key.
type DataKey struct {
	ID         string    `json:"id"`
	Wrapped    []byte    `json:"wrapped"`
	Created    time.Time `json:"created"`
	ActiveFrom time.Time `json:"active_from"`
}

// SigningKey is one wrapped checkpoint signer ("PRIVATE+KEY+…") and its
// public verifier key.
type SigningKey struct {
	ID       string    `json:"id"`
	Wrapped  []byte    `json:"wrapped"`
	Verifier string    `json:"verifier"`
	Created  time.Time `json:"created"`
}

// legacyKeyFile is the first key file format: plaintext keys.
type legacyKeyFile struct {
	Data          map[string][]byte `json:"data"`
	Order         []string          `json:"order"`
	AuditSigner   string            `json:"audit_signer"`
	AuditVerifier string            `json:"audit_verifier"`
}

const keyFileVersion = 2

// ActivationDelay is how long after a rotation the new data key starts
// sealing: three reload intervals ([DefaultKeyReload]), so every replica
// holds it before any seals with it (clocks agreeing within one interval).
const (
	DefaultKeyReload = 10 * time.Second
	ActivationDelay  = 3 * DefaultKeyReload
)

// LogValue keeps every key out of logs.
func (k *KeyFile) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("data_keys", len(k.DataKeys)), slog.Int("signing_keys", len(k.SigningKeys)), slog.String("keys", "[REDACTED]"))
}

// String keeps every key out of fmt output.
func (k *KeyFile) String() string { return "platform.KeyFile{[REDACTED]}" }

// LoadKeys reads dir/keys.json with the local KEK and fails when it does
// not exist.
func LoadKeys(dir string) (*KeyFile, error) {
	if _, err := os.Stat(filepath.Join(dir, "keys.json")); err != nil {
		return nil, fmt.Errorf("platform: no key file in %s: %w", dir, err)
	}
	return LoadOrCreateKeys(dir, "")
}

// LoadOrCreateKeys reads dir/keys.json with the local KEK, creating both
// with fresh keys on first start. origin names the audit log's checkpoint
// key.
func LoadOrCreateKeys(dir, origin string) (*KeyFile, error) {
	// A file another wrapper (a KMS) wrapped gets no local KEK beside it.
	if b, err := os.ReadFile(filepath.Join(dir, "keys.json")); err == nil {
		var f struct {
			KEK string `json:"kek"`
		}
		if json.Unmarshal(b, &f) == nil && f.KEK != "" && f.KEK != localKEKName {
			return nil, fmt.Errorf("platform: %s is wrapped by %q, not the local key-encryption key", filepath.Join(dir, "keys.json"), f.KEK)
		}
	}
	w, err := OpenLocalKEK(dir)
	if err != nil {
		return nil, err
	}
	return OpenKeys(context.Background(), dir, origin, w)
}

// OpenKeys reads dir/keys.json, unwrapping its keys with w, or creates it
// on first start. A first-format file (plaintext keys) is rewritten
// wrapped.
func OpenKeys(ctx context.Context, dir, origin string, w KeyWrapper) (*KeyFile, error) {
	k := &KeyFile{path: filepath.Join(dir, "keys.json"), wrapper: w}
	err := k.load(ctx)
	if errors.Is(err, os.ErrNotExist) {
		k.Version, k.KEK = keyFileVersion, w.Name()
		now := time.Now()
		if err := k.addDataKey(ctx, now, now); err != nil {
			return nil, err
		}
		if err := k.addSigningKey(ctx, origin, now); err != nil {
			return nil, err
		}
		return k, k.save()
	}
	return k, err
}

// load reads the file and unwraps every data key.
func (k *KeyFile) load(ctx context.Context) error {
	st, err := os.Stat(k.path)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(k.path)
	if err != nil {
		return err
	}
	var f keySet
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("platform: %s is not a key file: %w", k.path, err)
	}
	legacy := false
	if f.Version == 0 {
		if f, err = k.upgrade(ctx, b); err != nil {
			return err
		}
		legacy = true
	}
	if f.Version != keyFileVersion || len(f.DataKeys) == 0 || len(f.SigningKeys) == 0 {
		return fmt.Errorf("platform: %s is incomplete or of an unknown version", k.path)
	}
	if f.KEK != k.wrapper.Name() {
		return fmt.Errorf("platform: %s is wrapped by %q, not %q", k.path, f.KEK, k.wrapper.Name())
	}
	plain := make(map[string]keyring.Key, len(f.DataKeys))
	for _, d := range f.DataKeys {
		if key, ok := k.plain[d.ID]; ok {
			plain[d.ID] = key
			continue
		}
		raw, err := k.wrapper.Unwrap(ctx, d.ID, d.Wrapped)
		if err != nil {
			return err
		}
		if len(raw) != keyring.KeySize {
			return fmt.Errorf("platform: data key %s has %d bytes", d.ID, len(raw))
		}
		var key keyring.Key
		copy(key[:], raw)
		plain[d.ID] = key
	}
	k.keySet = f
	k.plain, k.modTime = plain, st.ModTime()
	if legacy {
		return k.save()
	}
	return nil
}

// upgrade wraps a first-format file's plaintext keys.
func (k *KeyFile) upgrade(ctx context.Context, b []byte) (keySet, error) {
	var old legacyKeyFile
	if err := json.Unmarshal(b, &old); err != nil || len(old.Order) == 0 || old.AuditSigner == "" {
		return keySet{}, fmt.Errorf("platform: %s is incomplete", k.path)
	}
	f := keySet{Version: keyFileVersion, KEK: k.wrapper.Name()}
	for _, id := range old.Order {
		w, err := k.wrapper.Wrap(ctx, id, old.Data[id])
		if err != nil {
			return keySet{}, err
		}
		f.DataKeys = append(f.DataKeys, DataKey{ID: id, Wrapped: w})
	}
	w, err := k.wrapper.Wrap(ctx, "signer-1", []byte(old.AuditSigner))
	if err != nil {
		return keySet{}, err
	}
	f.SigningKeys = []SigningKey{{ID: "signer-1", Wrapped: w, Verifier: old.AuditVerifier}}
	return f, nil
}

func newKeyID(now time.Time) string {
	var suffix [3]byte
	_, _ = rand.Read(suffix[:])
	return now.UTC().Format("20060102T150405Z") + "-" + base64.RawURLEncoding.EncodeToString(suffix[:])
}

func (k *KeyFile) addDataKey(ctx context.Context, now, activeFrom time.Time) error {
	key, err := keyring.NewKey()
	if err != nil {
		return err
	}
	id := newKeyID(now)
	w, err := k.wrapper.Wrap(ctx, id, key[:])
	if err != nil {
		return err
	}
	if k.plain == nil {
		k.plain = map[string]keyring.Key{}
	}
	k.plain[id] = key
	k.DataKeys = append(k.DataKeys, DataKey{ID: id, Wrapped: w, Created: now.UTC(), ActiveFrom: activeFrom.UTC()})
	return nil
}

func (k *KeyFile) addSigningKey(ctx context.Context, origin string, now time.Time) error {
	if origin == "" {
		// A rotation keeps the origin the first key named.
		v, err := note.NewVerifier(k.SigningKeys[len(k.SigningKeys)-1].Verifier)
		if err != nil {
			return fmt.Errorf("platform: audit verifier: %w", err)
		}
		origin = v.Name()
	}
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return err
	}
	id := "signer-" + newKeyID(now)
	w, err := k.wrapper.Wrap(ctx, id, []byte(skey))
	if err != nil {
		return err
	}
	k.SigningKeys = append(k.SigningKeys, SigningKey{ID: id, Wrapped: w, Verifier: vkey, Created: now.UTC()})
	return nil
}

// Rotate adds a new data key that seals from now on, saves the file, and
// makes ring (when not nil) seal with it too; old keys stay to open old
// records. The application sees no change: the ring it holds rotates.
// Other processes learn the key when they re-read the file; use
// [RotateKeyFile] for a rotation they must hold before it seals.
func (k *KeyFile) Rotate(now time.Time, ring *keyring.Ring) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	// Active at once: no zero time is after any clock.
	if err := k.addDataKey(context.Background(), now, time.Time{}); err != nil {
		return err
	}
	if err := k.save(); err != nil {
		return err
	}
	if ring == nil {
		return nil
	}
	d := k.DataKeys[len(k.DataKeys)-1]
	return ring.Rotate(d.ID, k.plain[d.ID])
}

// RotateKeyFile adds a data key that starts sealing delay after now, and
// a new checkpoint signing key, to the key file in dir, under a lock
// shared with every process using that directory. With due set, it does
// so only when the newest data key was added at least due before now (a
// scheduled rotation: any number of processes may run the schedule, one
// rotation happens). It reports whether it rotated.
//
// With due zero (on demand) it also counts a token-key rotation request
// (TokenKeyRotations), which identity answers by rotating its
// token-signing key. A scheduled rotation leaves that key to identity's
// own schedule, which publishes each key one rotation interval before it
// signs (a verifier's cached key set always knows it), a guarantee a
// faster key-file schedule would break.
func RotateKeyFile(ctx context.Context, dir string, w KeyWrapper, now time.Time, delay, due time.Duration) (bool, error) {
	unlock, err := LockFile(filepath.Join(dir, "keys.lock"))
	if err != nil {
		return false, err
	}
	defer unlock()
	k := &KeyFile{path: filepath.Join(dir, "keys.json"), wrapper: w}
	if err := k.load(ctx); err != nil {
		return false, err
	}
	if due > 0 && now.Sub(k.DataKeys[len(k.DataKeys)-1].Created) < due {
		return false, nil
	}
	if err := k.addDataKey(ctx, now, now.Add(delay)); err != nil {
		return false, err
	}
	if err := k.addSigningKey(ctx, "", now); err != nil {
		return false, err
	}
	if due == 0 {
		k.TokenKeyRotations++
	}
	return true, k.save()
}

// LockFile takes an exclusive lock on path (created 0600) that processes
// sharing a data directory serialise on, waiting while another holds it;
// unlock releases it. The lock belongs to the open file, so two callers in
// one process serialise too, and the system drops it when the process
// ends. It is flock(2) on Unix (advisory: it binds only processes that
// take it) and LockFileEx on Windows (mandatory for the lock file's bytes,
// which it never holds; no other file is locked).
func LockFile(path string) (unlock func(), err error) {
	return lockFile(path, true)
}

// errLocked is what lockFile without waiting returns while another open
// file holds the lock.
var errLocked = errors.New("lock held by another open file")

func lockFile(path string, wait bool) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := lockExclusive(f, wait); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { unlockFile(f); f.Close() }, nil
}

// sealing returns the id of the data key that seals at now: the newest
// whose ActiveFrom has passed (the first key always seals).
func (k *KeyFile) sealing(now time.Time) string {
	for i := len(k.DataKeys) - 1; i > 0; i-- {
		if !now.Before(k.DataKeys[i].ActiveFrom) {
			return k.DataKeys[i].ID
		}
	}
	return k.DataKeys[0].ID
}

func (k *KeyFile) save() error {
	b, err := json.MarshalIndent(k.keySet, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(k.path), 0o700); err != nil {
		return err
	}
	if err := atomicfile.Write(k.path, b, 0o600); err != nil {
		return err
	}
	if st, err := os.Stat(k.path); err == nil {
		k.modTime = st.ModTime()
	}
	return nil
}

// Ring returns a seal ring holding every data key, the one sealing now
// current.
func (k *KeyFile) Ring() (*keyring.Ring, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return keyring.NewRing(k.sealing(time.Now()), copyKeys(k.plain))
}

func copyKeys(m map[string]keyring.Key) map[string]keyring.Key {
	out := make(map[string]keyring.Key, len(m))
	for id, v := range m {
		out[id] = v
	}
	return out
}

// Watch keeps ring in step with the key file until ctx ends: every
// interval it re-reads the file when it changed, adds the data keys it
// did not hold (for opening) and switches the sealing key once the newest
// active one changes. What [KeyFile.Signers], [KeyFile.Verifiers] and
// [KeyFile.TokenKeyRotation] return follows the file it read. Failures go to onErr (the ring keeps its keys). With
// rotateEvery > 0 it also runs the rotation schedule ([RotateKeyFile]).
func (k *KeyFile) Watch(ctx context.Context, ring *keyring.Ring, interval, rotateEvery time.Duration, onErr func(error)) {
	if interval <= 0 {
		interval = DefaultKeyReload
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if rotateEvery > 0 {
			if _, err := RotateKeyFile(ctx, filepath.Dir(k.path), k.wrapper, time.Now(), 3*interval, rotateEvery); err != nil {
				onErr(fmt.Errorf("scheduled key rotation: %w", err))
			}
		}
		if err := k.sync(ctx, ring, time.Now()); err != nil {
			onErr(fmt.Errorf("key file reload: %w", err))
		}
	}
}

// sync re-reads the file if it changed and brings ring up to date at now.
func (k *KeyFile) sync(ctx context.Context, ring *keyring.Ring, now time.Time) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if st, err := os.Stat(k.path); err != nil {
		return err
	} else if !st.ModTime().Equal(k.modTime) {
		held := copyKeys(k.plain)
		requests := k.TokenKeyRotations
		if err := k.load(ctx); err != nil {
			return err
		}
		if k.TokenKeyRotations != requests && k.tokenKeyChanged != nil {
			close(k.tokenKeyChanged)
			k.tokenKeyChanged = nil
		}
		for _, d := range k.DataKeys {
			if _, ok := held[d.ID]; !ok {
				if err := ring.Add(d.ID, k.plain[d.ID]); err != nil {
					return err
				}
			}
		}
	}
	if id := k.sealing(now); ring.Current() != id {
		return ring.Use(id)
	}
	return nil
}

// DataKeyIDs returns the data keys' ids, oldest first.
func (k *KeyFile) DataKeyIDs() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	ids := make([]string, len(k.DataKeys))
	for i, d := range k.DataKeys {
		ids[i] = d.ID
	}
	return ids
}

// Signer returns the newest checkpoint signer and its verifier.
func (k *KeyFile) Signer() (note.Signer, note.Verifier, error) {
	s, err := k.Signers()
	if err != nil {
		return nil, nil, err
	}
	vs, err := k.Verifiers()
	if err != nil {
		return nil, nil, err
	}
	return s[0], vs[len(vs)-1], nil
}

// Signers returns the checkpoint signers of an audit log: the newest key,
// and the one before it (so checkpoints stay recognisable across the
// rotation and verifiers that hold only the previous key keep checking
// new checkpoints until they learn the new one). A running log passes it
// as auditlog.Config.GetSigners: it follows the key file as [KeyFile.Watch]
// re-reads it. Each key is unwrapped once (one KMS call), then held.
func (k *KeyFile) Signers() ([]note.Signer, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []note.Signer
	for i := len(k.SigningKeys) - 1; i >= 0 && len(out) < 2; i-- {
		sk := k.SigningKeys[i]
		if s, ok := k.signers[sk.ID]; ok {
			out = append(out, s)
			continue
		}
		raw, err := k.wrapper.Unwrap(context.Background(), sk.ID, sk.Wrapped)
		if err != nil {
			return nil, err
		}
		s, err := note.NewSigner(string(raw))
		clear(raw)
		if err != nil {
			return nil, fmt.Errorf("platform: audit signer: %w", err)
		}
		if k.signers == nil {
			k.signers = map[string]note.Signer{}
		}
		k.signers[sk.ID] = s
		out = append(out, s)
	}
	return out, nil
}

// TokenKeyRotation returns the number of token-key rotation requests in
// the key file (see [RotateKeyFile]) and a channel closed once a reload
// by [KeyFile.Watch] changes it.
func (k *KeyFile) TokenKeyRotation() (requests uint64, changed <-chan struct{}) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.tokenKeyChanged == nil {
		k.tokenKeyChanged = make(chan struct{})
	}
	return k.TokenKeyRotations, k.tokenKeyChanged
}

// Verifiers returns the verifier of every checkpoint signing key, oldest
// first: checkpoints signed before any rotation still verify. A witness
// passes it as auditlog.WitnessConfig.GetVerifiers to accept keys rotated
// in while it runs.
func (k *KeyFile) Verifiers() ([]note.Verifier, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]note.Verifier, 0, len(k.SigningKeys))
	for _, sk := range k.SigningKeys {
		v, err := note.NewVerifier(sk.Verifier)
		if err != nil {
			return nil, fmt.Errorf("platform: audit verifier: %w", err)
		}
		out = append(out, v)
	}
	return slices.Clip(out), nil
}

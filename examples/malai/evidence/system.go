package evidence

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/mod/sumdb/note"
)

// Target is what the pass knows of a system it checks from outside: the
// public URLs, the CA that signs the gateway's certificate, and the test
// credentials it was given. Against a deployment (-target) it is all the
// pass has.
type Target struct {
	// Gateway is the public HTTPS URL.
	Gateway string
	// Redirect is the plain-HTTP URL that must redirect to HTTPS; empty
	// when the deployment serves none.
	Redirect string
	// CA verifies the gateway's certificate; CAFile is where it was read.
	CA     *x509.CertPool
	CAFile string
	// Users are test credentials the pass may use (and only these, plus
	// accounts it creates itself).
	Users []Credential
	// ForwardedFor is true when the gateway believes the pass's
	// X-Forwarded-For, so the pass can play clients from many networks (a
	// system it started itself trusts loopback as its proxy).
	ForwardedFor bool
}

// Credential is one test user, as <data>/demo-credentials.json lists it.
type Credential struct {
	Username   string   `json:"username"`
	Password   string   `json:"password"`
	Roles      []string `json:"roles"`
	AccountID  string   `json:"account_id,omitempty"`
	TOTPSecret string   `json:"totp_secret,omitempty"`
}

// WithRole returns the first credential holding role.
func (t Target) WithRole(role string) (Credential, bool) {
	for _, u := range t.Users {
		for _, r := range u.Roles {
			if r == role {
				return u, true
			}
		}
	}
	return Credential{}, false
}

// Endpoints is <data>/endpoints.json: the stable interface of a running
// system for scripts.
type Endpoints struct {
	Gateway  string `json:"gateway"`
	HTTP     string `json:"http"`
	Identity string `json:"identity"`
	Ledger   string `json:"ledger"`
	Metrics  string `json:"metrics"`
	CA       string `json:"ca"`
}

// LoadTarget reads a deployment's endpoints file and credentials file.
// gateway and caFile, when set, override what the endpoints file says
// (and make it optional).
func LoadTarget(endpointsFile, credentialsFile, gateway, caFile string) (Target, error) {
	var ep Endpoints
	if endpointsFile != "" {
		b, err := os.ReadFile(endpointsFile)
		if err != nil {
			return Target{}, err
		}
		if err := json.Unmarshal(b, &ep); err != nil {
			return Target{}, fmt.Errorf("%s: %w", filepath.Base(endpointsFile), err)
		}
		if ep.CA != "" && !filepath.IsAbs(ep.CA) {
			ep.CA = filepath.Join(filepath.Dir(endpointsFile), ep.CA)
		}
	}
	if gateway != "" {
		ep.Gateway = gateway
	}
	if caFile != "" {
		ep.CA = caFile
	}
	if ep.Gateway == "" {
		return Target{}, errors.New("evidence: no gateway URL (endpoints file or -target)")
	}
	t := Target{Gateway: ep.Gateway, Redirect: ep.HTTP, CAFile: ep.CA}
	if ep.CA != "" {
		pem, err := os.ReadFile(ep.CA)
		if err != nil {
			return Target{}, err
		}
		t.CA = x509.NewCertPool()
		if !t.CA.AppendCertsFromPEM(pem) {
			return Target{}, fmt.Errorf("evidence: %s holds no certificate", ep.CA)
		}
	}
	if credentialsFile != "" {
		b, err := os.ReadFile(credentialsFile)
		if err != nil {
			return Target{}, err
		}
		var cf struct {
			Users []Credential `json:"users"`
		}
		if err := json.Unmarshal(b, &cf); err != nil {
			return Target{}, fmt.Errorf("%s: %w", filepath.Base(credentialsFile), err)
		}
		t.Users = cf.Users
	}
	return t, nil
}

// Local is the privileged access the pass has to a system it started
// itself: the internal listeners, the data directory and keys, the
// components' lifecycles. None of it exists in the system a user runs; the
// evidence command builds it around the components it starts.
type Local interface {
	// Target is the public face of the system (it may change on Restart).
	Target() Target
	// IdentityURL and LedgerURL are the internal listeners.
	IdentityURL() string
	LedgerURL() string
	// ClientTLS trusts the system CA and presents the client certificate
	// issued to component; "" presents none.
	ClientTLS(component string) (*tls.Config, error)
	// DataDir is the system's data directory.
	DataDir() string
	// SignToken signs header and claims (raw JSON, "$KID" in the header
	// replaced by the key's id) with identity's current signing key, as
	// only an insider holding the key ring could.
	SignToken(header, claims []byte) (string, error)
	// AuditorToken is a service token with the ledger's audit scope,
	// minted for the pass's own client.
	AuditorToken(ctx context.Context) (string, error)
	// Deposit credits amount to account as a teller would, once per key
	// (accounts open at zero).
	Deposit(ctx context.Context, account string, amount int64, key string) error
	// Checkpoint makes the audit log sign a checkpoint of its head now.
	Checkpoint(ctx context.Context) error
	// AuditVerifier names the audit log and verifies its checkpoints.
	AuditVerifier() (origin string, v note.Verifier)
	// AuditVerifierKeys are the public keys (note verifier keys) of every
	// checkpoint signer, so a reviewer can check the sample's checkpoint
	// without the system.
	AuditVerifierKeys() ([]string, error)
	// RotateDataKey rotates the key file as "malai rotate-keys" does and
	// returns the new data key's id. The running system learns the key
	// through its key-file watch and seals with it once it is active; the
	// ledger then re-encrypts the older audit rows in the background
	// (with PostgreSQL, RotateDataKey runs what "malai audit-rekey" does,
	// as the migrator, once the key seals).
	RotateDataKey(ctx context.Context) (keyID string, err error)
	// TraceID is the trace of component's span carrying correlationID.
	TraceID(component, correlationID string) (string, bool)
	// AlarmFiring reports component's error-rate alarm.
	AlarmFiring(component string) bool
	// StopComponent stops one component's listener.
	StopComponent(name string) error
	// Restart stops the system and starts it again on the same data
	// directory and stores.
	Restart(ctx context.Context) error
	// Shutdown stops the system for good; later calls return the first
	// result.
	Shutdown() error
	// LogStreams decrypts every log stream written so far and calls fn
	// with the stream's file name and its plaintext (after Shutdown).
	LogStreams(fn func(name string, plaintext []byte) error) error
	// VerifyOffline verifies the stopped system's audit chain with the
	// witness's checkpoints and replays it.
	VerifyOffline(ctx context.Context) (OfflineReport, error)
	// CorruptAuditRow damages one row in the middle of the stopped
	// system's audit chain, as a disk or an intruder would, and says where.
	CorruptAuditRow(ctx context.Context) (where string, err error)
	// Postgres returns the application role's DSN and schema when the
	// audit chain runs in PostgreSQL.
	Postgres() (appDSN, schema string, ok bool)
}

// OfflineReport is the offline verifier's answer.
type OfflineReport struct {
	// Rows is the number of rows read; Anchored the largest size a valid
	// checkpoint covers (the log's own or the witness's); Witnessed the
	// largest size one of the witness's checkpoints covers.
	Rows, Anchored, Witnessed uint64
	Findings                  []string
	Balances                  map[string]int64
}

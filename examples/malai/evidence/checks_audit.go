package evidence

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
)

// AuditorComponent names the pass's own client: its certificate and its
// OAuth2 client, which holds the ledger's audit scope.
const AuditorComponent = "evidence"

// SampleFile is the sanitised audit sample the pass writes beside the
// report; VerifierFile the public keys of the checkpoint signers, one
// note verifier key a line, that verify its checkpoint.
const (
	SampleFile   = "audit-sample.json"
	VerifierFile = "audit-verifiers.txt"
)

// VerifySampleFile checks a sample written by the pass against the
// verifier keys written beside it: the checkpoint's signature, and each
// row's inclusion proof against the checkpoint's root.
func VerifySampleFile(sample, verifierKeys []byte, origin string) (rows int, err error) {
	var sm auditlog.Sample
	if err := json.Unmarshal(sample, &sm); err != nil {
		return 0, err
	}
	var vs []note.Verifier
	for _, line := range strings.Split(strings.TrimSpace(string(verifierKeys)), "\n") {
		v, err := note.NewVerifier(strings.TrimSpace(line))
		if err != nil {
			return 0, fmt.Errorf("verifier key: %w", err)
		}
		vs = append(vs, v)
	}
	if err := auditlog.VerifySample(&sm, origin, vs); err != nil {
		return 0, err
	}
	return len(sm.Rows), nil
}

// auditChecks: "Every ledger event is appended to a hash-chained,
// tamper-evident log. Replaying the chain reproduces the balance. A
// sanitised audit row sample lands with the evidence pass."
func auditChecks() []Check {
	return []Check{
		{Row: RowAudit, Name: "replaying the chain reproduces the live balances", Local: true, Run: func(ctx context.Context, f *Fixture) (string, error) {
			rep, err := f.auditReplay(ctx)
			if err != nil {
				return "", err
			}
			obs := fmt.Sprintf("%d events replayed; %d accounts; match=%v", rep.Events, len(rep.Live), rep.Match)
			if !rep.Match {
				return obs, fmt.Errorf("replay %v differs from live %v", rep.Replayed, rep.Live)
			}
			return obs, nil
		}},
		{Row: RowAudit, Name: "a sanitised audit sample with inclusion proofs verifies against the signed checkpoint", Local: true, Run: func(ctx context.Context, f *Fixture) (string, error) {
			if err := f.Local.Checkpoint(ctx); err != nil {
				return "", err
			}
			tok, err := f.Local.AuditorToken(ctx)
			if err != nil {
				return "", err
			}
			c, err := f.ClientAs(AuditorComponent)
			if err != nil {
				return "", err
			}
			r, err := Send(ctx, c, "GET", f.Local.LedgerURL()+"/internal/v1/audit/sample", nil, Bearer(tok))
			if err != nil {
				return "", err
			}
			if r.Status != http.StatusOK {
				return "", fmt.Errorf("sample: %s", r)
			}
			var sm auditlog.Sample
			if err := json.Unmarshal(r.Body, &sm); err != nil {
				return "", err
			}
			origin, v := f.Local.AuditVerifier()
			if err := auditlog.VerifySample(&sm, origin, []note.Verifier{v}); err != nil {
				return "", err
			}
			for _, u := range []*User{f.Alice, f.Bob} {
				if bytes.Contains(r.Body, []byte(u.Name)) {
					return "", fmt.Errorf("sample not sanitised: user %s visible", u.Name)
				}
				// The stable subject says who as well as the name does.
				if sub, _ := JWTPart(u.Token, 1)["sub"].(string); sub != "" && bytes.Contains(r.Body, []byte(sub)) {
					return "", fmt.Errorf("sample not sanitised: the subject of %s visible", u.Name)
				}
			}
			obs := fmt.Sprintf("%d rows verified against a checkpoint signed by %s; no user name or subject in it", len(sm.Rows), v.Name())
			if f.OutDir != "" {
				keys, err := f.Local.AuditVerifierKeys()
				if err != nil {
					return obs, err
				}
				vk := []byte(strings.Join(keys, "\n") + "\n")
				// What a reviewer does with the two files, done here.
				if _, err := VerifySampleFile(r.Body, vk, origin); err != nil {
					return obs, fmt.Errorf("the sample does not verify with the published keys: %w", err)
				}
				if err := os.WriteFile(filepath.Join(f.OutDir, SampleFile), r.Body, 0o644); err != nil {
					return obs, err
				}
				if err := os.WriteFile(filepath.Join(f.OutDir, VerifierFile), vk, 0o644); err != nil {
					return obs, err
				}
				obs += "; written to " + SampleFile + " with the signers' public keys in " + VerifierFile
			}
			return obs, nil
		}},
		{Row: RowAudit, Name: "offline verification of the stopped system's whole chain against the witness's checkpoints, with replay", Local: true, Effect: Stops,
			Run: func(ctx context.Context, f *Fixture) (string, error) {
				if err := f.Shutdown(); err != nil {
					return "", fmt.Errorf("shutdown: %w", err)
				}
				rep, err := f.Local.VerifyOffline(ctx)
				if err != nil {
					return "", err
				}
				obs := fmt.Sprintf("%d rows, %d anchored by signed checkpoints, %d by the witness's, %d findings, %d accounts replayed",
					rep.Rows, rep.Anchored, rep.Witnessed, len(rep.Findings), len(rep.Balances))
				if len(rep.Findings) > 0 {
					return obs, fmt.Errorf("findings: %v", rep.Findings)
				}
				if rep.Rows == 0 || rep.Anchored == 0 {
					return obs, errors.New("nothing verified or nothing anchored")
				}
				// The log's own checkpoints sit beside the rows: only the
				// witness's show the history was not rewritten with them.
				// The final checkpoint at shutdown reaches it, so it covers
				// every row.
				if rep.Witnessed < rep.Rows {
					return obs, fmt.Errorf("the witness's checkpoints cover %d of %d rows", rep.Witnessed, rep.Rows)
				}
				return obs, nil
			}},
	}
}

// corruptionChecks run last of all: they damage the chain.
func corruptionChecks() []Check {
	return []Check{
		{Row: RowAudit, Name: "a corrupted row in the middle of the chain is located, and the ledger refuses to start on it", Local: true, Effect: Stops,
			Run: func(ctx context.Context, f *Fixture) (string, error) {
				if err := f.Shutdown(); err != nil {
					return "", fmt.Errorf("shutdown: %w", err)
				}
				where, err := f.Local.CorruptAuditRow(ctx)
				if err != nil {
					return "", err
				}
				obs := "damaged " + where
				rep, verr := f.Local.VerifyOffline(ctx)
				switch {
				case verr != nil && !damageFound(verr):
					return obs + "; offline verify: " + verr.Error(), errors.New("offline verification failed without locating damage")
				case verr != nil:
					obs += "; offline verify refused: " + verr.Error()
				case len(rep.Findings) > 0:
					obs += fmt.Sprintf("; offline verify: %v", rep.Findings)
				default:
					return obs, errors.New("offline verification found nothing")
				}
				serr := f.Local.Restart(ctx)
				if serr == nil {
					return obs, errors.New("the system started on a corrupted chain")
				}
				obs += "; start refused: " + serr.Error()
				if !damageFound(serr) {
					return obs, errors.New("the start was refused, but not for the damaged chain")
				}
				return obs, nil
			}},
	}
}

// damageFound reports whether err is a refusal of damaged audit data (a
// chain that does not verify, or a log file that does not parse), not
// some other failure to open or start.
func damageFound(err error) bool {
	return errors.Is(err, auditlog.ErrTampered) || errors.Is(err, filestore.ErrCorrupt)
}

// ReplayReport is the ledger's answer to an audit replay.
type ReplayReport struct {
	Events   uint64           `json:"events"`
	Replayed map[string]int64 `json:"replayed"`
	Live     map[string]int64 `json:"live"`
	Match    bool             `json:"match"`
	// SealedBy counts the rows by the id of the data key sealing them.
	SealedBy map[string]uint64 `json:"sealed_by"`
}

func (f *Fixture) auditReplay(ctx context.Context) (ReplayReport, error) {
	tok, err := f.Local.AuditorToken(ctx)
	if err != nil {
		return ReplayReport{}, err
	}
	c, err := f.ClientAs(AuditorComponent)
	if err != nil {
		return ReplayReport{}, err
	}
	r, err := Send(ctx, c, "GET", f.Local.LedgerURL()+"/internal/v1/audit/replay", nil, Bearer(tok))
	if err != nil {
		return ReplayReport{}, err
	}
	var rep ReplayReport
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &rep) != nil {
		return ReplayReport{}, fmt.Errorf("replay: %s", r)
	}
	return rep, nil
}

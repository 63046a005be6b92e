package ledger

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/examples/malai/ledger/internal/book"
	"github.com/malai-sec/malai/problem"
)

// VerifyReport is the body of GET /v1/audit/verify.
type VerifyReport struct {
	// OK: every row verifies (links, leaf hashes, payloads), the newest
	// checkpoint's root matches the rows it covers, and a fresh replay
	// gives the live balances.
	OK bool `json:"ok"`
	// Size is the number of rows verified.
	Size uint64 `json:"size"`
	// Checkpoint is the newest signed checkpoint the log issued.
	Checkpoint *CheckpointReport `json:"checkpoint"`
	// BalancesMatch: a fresh fold of the rows gives the live balances.
	BalancesMatch bool `json:"balances_match"`
	// Problem names the first failed check, if any.
	Problem string `json:"problem,omitempty"`
	// SealedBy counts the rows by the id of the data key sealing their
	// payload: after a data-key rotation the ledger re-encrypts the older
	// rows in the background (with PostgreSQL "malai audit-rekey" does),
	// and the chain no longer needs a key no row names.
	SealedBy map[string]uint64 `json:"sealed_by"`
}

// CheckpointReport is a checkpoint's size and root, and whether the rows
// it covers still hash to that root.
type CheckpointReport struct {
	Size    uint64        `json:"size"`
	Root    auditlog.Hash `json:"root"`
	Matches bool          `json:"matches"`
}

var errStop = errors.New("ledger: stop replay")

// verify replays the chain up to the head the live book reflects and
// compares.
func (s *Service) verify(ctx context.Context) (VerifyReport, map[string]int64, map[string]int64, error) {
	if s.cfg.Shared {
		if out := s.seq.submit(newOp(opSync), s.cfg.RequestTimeout); out.err != nil {
			return VerifyReport{}, nil, nil, out.err
		}
		// Another replica may have checkpointed rows this one had not read
		// (the store then refused this one's smaller checkpoints): check
		// point the view just caught up, so the report names a current one.
		if _, err := s.cfg.Audit.Checkpoint(ctx); err != nil {
			return VerifyReport{}, nil, nil, err
		}
	}
	live, rows := s.book.Snapshot()
	fresh := book.New(s.cfg.Retention)
	var rep VerifyReport
	head, err := s.cfg.Audit.Replay(ctx, func(e auditlog.Event) error {
		if e.Seq >= rows {
			return errStop
		}
		return fresh.Apply(e.Seq, e.Time, e.Type, e.Payload)
	})
	switch {
	case errors.Is(err, errStop), err == nil:
	case errors.Is(err, auditlog.ErrTampered), errors.Is(err, book.ErrCorrupt):
		rep.Problem = "the chain does not verify at row " + strconv.FormatUint(head.Size, 10)
	default:
		return VerifyReport{}, nil, nil, err
	}
	rep.Size = head.Size
	replayed := fresh.Balances()
	rep.BalancesMatch = rep.Problem == "" && head.Size == rows && equal(replayed, live)
	if rep.Problem == "" && !rep.BalancesMatch {
		rep.Problem = "the replayed balances differ from the live ones"
	}
	if cp := s.cfg.Audit.LatestCheckpoint(); cp.Note != nil {
		c := &CheckpointReport{Size: cp.Size, Root: cp.Root}
		if root, err := s.cfg.Audit.Root(cp.Size); err == nil && root == cp.Root && cp.Size <= head.Size {
			c.Matches = true
		}
		rep.Checkpoint = c
		if !c.Matches && rep.Problem == "" {
			rep.Problem = "the rows do not match the newest checkpoint"
		}
	}
	rep.OK = rep.Problem == ""
	if rep.SealedBy, err = s.cfg.Audit.SealedBy(ctx); err != nil {
		return VerifyReport{}, nil, nil, err
	}
	return rep, replayed, live, nil
}

func (s *Service) auditVerify(w http.ResponseWriter, r *http.Request) {
	rep, _, _, err := s.verify(r.Context())
	if err != nil {
		s.log.ErrorContext(r.Context(), "ledger: verify", "error", err.Error())
		s.writeUnavailable(w, r)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func (s *Service) auditSample(w http.ResponseWriter, r *http.Request) {
	redact := []string{"payload.by", "payload.owner", "payload.op"}
	if s.cfg.Faults.UnredactedSample {
		redact = nil
	}
	sm, err := s.cfg.Audit.Sample(r.Context(), auditlog.SampleConfig{N: 10, Redact: redact})
	if err != nil {
		s.log.ErrorContext(r.Context(), "ledger: audit sample", "error", err.Error())
		problem.Write(w, r, problem.Unavailable)
		return
	}
	writeJSON(w, http.StatusOK, sm)
}

// ReplayReport compares a fresh fold of the chain with the live balances.
type ReplayReport struct {
	Events   uint64           `json:"events"`
	Replayed map[string]int64 `json:"replayed"`
	Live     map[string]int64 `json:"live"`
	Match    bool             `json:"match"`
	// SealedBy is [VerifyReport.SealedBy].
	SealedBy map[string]uint64 `json:"sealed_by"`
}

func (s *Service) auditReplay(w http.ResponseWriter, r *http.Request) {
	rep, replayed, live, err := s.verify(r.Context())
	if err != nil {
		s.log.ErrorContext(r.Context(), "ledger: replay", "error", err.Error())
		s.writeUnavailable(w, r)
		return
	}
	writeJSON(w, http.StatusOK, ReplayReport{Events: rep.Size, Replayed: replayed, Live: live, Match: rep.BalancesMatch, SealedBy: rep.SealedBy})
}

func equal(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

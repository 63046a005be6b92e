package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"testing"

	"github.com/malai-sec/malai/examples/malai/internal/strictjson"
	"github.com/malai-sec/malai/examples/malai/ledger/internal/book"
	"github.com/malai-sec/malai/idempotency"
	"github.com/malai-sec/malai/problem"
)

func testingBinary() bool { return testing.Testing() }

// write is one keyed write as a route describes it.
type write struct {
	// scope is the route whose Idempotency-Key records this write shares.
	scope string
	// optional: a request without a key runs unkeyed (opening an account is
	// idempotent by its id).
	optional bool
	// decode parses the strict body and returns the op and the canonical
	// request it fingerprints.
	decode func(body []byte, principal string) (*op, []byte, error)
}

func canonical(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func (s *Service) openAccount(w http.ResponseWriter, r *http.Request) {
	s.serveWrite(w, r, write{scope: "POST /v1/accounts", optional: true, decode: func(body []byte, principal string) (*op, []byte, error) {
		var req struct {
			ID string `json:"id"`
		}
		if err := s.decodeBody(body, &req); err != nil {
			return nil, nil, err
		}
		o := newOp(opOpen)
		o.account = req.ID
		return o, canonical(req), nil
	}})
}

// DepositRequest is the body of POST /v1/deposits.
type DepositRequest struct {
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
}

func (s *Service) deposit(w http.ResponseWriter, r *http.Request) {
	s.serveWrite(w, r, write{scope: "POST /v1/deposits", decode: func(body []byte, principal string) (*op, []byte, error) {
		var req DepositRequest
		if err := s.decodeBody(body, &req); err != nil {
			return nil, nil, err
		}
		o := newOp(opDeposit)
		o.account, o.amount = req.Account, req.Amount
		return o, canonical(req), nil
	}})
}

// TransferRequest is the body of POST /v1/transfers and of POST
// /v1/transfers/async.
type TransferRequest = book.TransferRequest

func (s *Service) decodeTransfer(kind opKind) func([]byte, string) (*op, []byte, error) {
	return func(body []byte, principal string) (*op, []byte, error) {
		var req TransferRequest
		if err := s.decodeBody(body, &req); err != nil {
			return nil, nil, err
		}
		o := newOp(kind)
		o.req = req
		if kind == opAccept {
			o.job = newID("job-")
		}
		// The same canonical form for both routes: a key used on one
		// with a different body is refused on the other.
		return o, canonical(req), nil
	}
}

func (s *Service) transfer(w http.ResponseWriter, r *http.Request) {
	s.serveWrite(w, r, write{scope: SyncTransferPattern, decode: s.decodeTransfer(opTransfer)})
}

func (s *Service) transferAsync(w http.ResponseWriter, r *http.Request) {
	s.serveWrite(w, r, write{scope: SyncTransferPattern, decode: s.decodeTransfer(opAccept)})
}

// serveWrite runs one write: the key and the strict body are checked
// before anything is fingerprinted, claimed or planned; the idempotency
// store's record is claimed (a replay answers from it); the sequencer
// decides against the chain, which also knows every completed key; the
// outcome is stored before it is sent.
func (s *Service) serveWrite(w http.ResponseWriter, r *http.Request, wr write) {
	principal, _ := Subject(r)
	vals := r.Header.Values(idempotency.HeaderKey)
	var key string
	switch {
	case len(vals) == 0 && !wr.optional && !s.cfg.Faults.KeyOptional:
		s.idem.WriteError(w, r, idempotency.ErrKeyMissing)
		return
	case len(vals) > 1:
		s.idem.WriteError(w, r, idempotency.ErrKeyInvalid)
		return
	case len(vals) == 1:
		k, err := idempotency.ParseBareKey(vals[0])
		if err != nil {
			s.idem.WriteError(w, r, err)
			return
		}
		key = k
	}
	if !isJSON(r) {
		problem.Write(w, r, problemMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			w.Header().Set("Connection", "close")
			problem.Write(w, r, problemBodyTooLarge)
			return
		}
		problem.Write(w, r, problemBadJSON)
		return
	}
	o, canon, err := wr.decode(body, principal)
	if err != nil {
		problem.Write(w, r, problemBadJSON)
		return
	}
	o.principal, o.cid, o.reqCtx = principal, correlationID(r.Context()), r.Context()
	if key == "" {
		s.writeOutcome(w, r, s.seq.submit(o, s.cfg.RequestTimeout))
		return
	}
	x := s.execute(r.Context(), o, wr.scope, key, canon)
	switch {
	case x.err == nil || x.res.Status != 0:
		if x.err != nil {
			// The write is done; only its store record is missing. The chain
			// answers a retry.
			s.log.WarnContext(r.Context(), "ledger: outcome not stored in the idempotency store", "error", x.err.Error())
		}
		idempotency.WriteResult(w, r, x.res, x.replayed)
	case x.ran && errors.Is(x.ranErr, errKeyReused):
		s.idem.WriteError(w, r, idempotency.ErrKeyReused)
	case x.ran && errors.Is(x.ranErr, errQueueFull):
		w.Header().Set("Retry-After", "5")
		problem.Write(w, r, problemQueueFull)
	case x.ran:
		s.writeUnavailable(w, r)
	default:
		s.idem.WriteError(w, r, x.err) // in flight, reused, not replayable, unavailable
	}
}

// decodeBody decodes a request body strictly (the LaxBodies fault: with
// encoding/json alone).
func (s *Service) decodeBody(body []byte, v any) error {
	if s.cfg.Faults.LaxBodies {
		return json.Unmarshal(body, v)
	}
	return strictjson.Decode(body, v)
}

// isJSON reports whether the request's body is declared application/json:
// a body the edge's WAF inspected as another type is never decoded here.
func isJSON(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

// execution is the outcome of one keyed write.
type execution struct {
	res      idempotency.Result
	replayed bool // from the idempotency store or the chain
	ran      bool // the sequencer was asked
	ranErr   error
	err      error
}

// execute runs o under key: the idempotency store's record is claimed (a
// replay answers from it), the sequencer decides against the chain, which
// also knows every completed key, and the outcome is stored.
func (s *Service) execute(ctx context.Context, o *op, scope, key string, canon []byte) execution {
	rk := idempotency.RecordKey(o.principal, http.MethodPost, scope, key)
	fp := idempotency.Fingerprint(canon, nil)
	o.keyed, o.key, o.fp = !s.cfg.Faults.ForgetKeys, sha256.Sum256([]byte(rk)), fp

	var x execution
	fromChain := false
	do := func(context.Context, *idempotency.Lease) (idempotency.Result, error) {
		x.ran = true
		out := s.seq.submit(o, s.cfg.RequestTimeout)
		if o.kind == opAccept && out.err == nil && out.status == http.StatusAccepted && !out.fromKey && !out.replayed {
			s.pump.publish(o.reqCtx, o.job, o.principal, o.cid)
		}
		res, own, err := s.result(out)
		fromChain = (out.fromKey && !own) || out.replayed
		x.ranErr = err
		return res, err
	}
	// Detached: a client that hangs up between claim and completion must
	// not leave a claim nobody finishes.
	ctx = context.WithoutCancel(ctx)
	x.res, x.replayed, x.err = s.run.Do(ctx, rk, fp, do)
	if x.err != nil && !x.ran && errors.Is(x.err, idempotency.ErrUnavailable) {
		// The idempotency store is down or full. The chain still holds every
		// completed key, and the sequencer checks it, so the write runs
		// without a lease and still has at most one effect.
		s.log.WarnContext(ctx, "ledger: idempotency store unavailable; deduplicating by the chain alone", "error", x.err.Error())
		x.res, x.err = do(ctx, nil)
		x.replayed = false
	}
	x.replayed = x.replayed || fromChain
	return x
}

// Deposit credits amount to account on behalf of by (a teller's subject),
// under key, as POST /v1/deposits does: the Go entry point for seeding
// demo data in the process that runs the ledger. Repeating it with the
// same key deposits once.
func (s *Service) Deposit(ctx context.Context, by, account string, amount int64, key string) (json.RawMessage, error) {
	if by == "" || key == "" {
		return nil, errors.New("ledger: Deposit needs a subject and a key")
	}
	o := newOp(opDeposit)
	o.principal, o.account, o.amount, o.cid, o.reqCtx = by, account, amount, correlationID(ctx), ctx
	x := s.execute(ctx, o, "POST /v1/deposits", key, canonical(DepositRequest{Account: account, Amount: amount}))
	switch {
	case x.res.Status == http.StatusCreated:
		return x.res.Body, nil
	case x.err == nil && x.ranErr == nil:
		return nil, fmt.Errorf("ledger: deposit refused: %d %s", x.res.Status, x.res.Body)
	case x.ranErr != nil:
		return nil, fmt.Errorf("ledger: deposit: %w", x.ranErr)
	}
	return nil, fmt.Errorf("ledger: deposit: %w", x.err)
}

// result turns an outcome into the response to store and send; a key
// completed before is read back from its chain row. own reports that the
// row is the op's own append, read back after its outcome was unknown.
func (s *Service) result(out outcome) (res idempotency.Result, own bool, err error) {
	if out.err != nil {
		return idempotency.Result{}, false, out.err
	}
	if !out.fromKey {
		return idempotency.Result{Status: out.status, Header: out.header, Body: out.body}, false, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CommitTimeout)
	defer cancel()
	e, err := s.cfg.Audit.Event(ctx, out.replay)
	if err != nil {
		return idempotency.Result{}, false, fmt.Errorf("%w: read back row %d: %w", errUnavailable, out.replay, err)
	}
	res, err = recordedResult(e.Type, e.Payload)
	if err != nil {
		return idempotency.Result{}, false, fmt.Errorf("%w: row %d: %w", errUnavailable, out.replay, err)
	}
	return res, out.own != nil && bytes.Equal(e.Payload, out.own), nil
}

// recordedResult extracts the response an event recorded.
func recordedResult(typ string, payload []byte) (idempotency.Result, error) {
	var env struct {
		Op json.RawMessage `json:"op"`
	}
	if err := json.Unmarshal(payload, &env); err != nil || len(env.Op) == 0 {
		return idempotency.Result{}, errors.New("the row records no outcome")
	}
	var op book.Op
	if err := json.Unmarshal(env.Op, &op); err != nil || op.Status == 0 {
		return idempotency.Result{}, errors.New("the row records no outcome")
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if op.Status >= 400 {
		h.Set("Content-Type", problem.ContentType)
	}
	if typ == book.TypeJobAccepted {
		h.Set("Location", jobPath(op.Job))
	}
	return idempotency.Result{Status: op.Status, Header: h, Body: op.Body}, nil
}

// writeOutcome answers an unkeyed write.
func (s *Service) writeOutcome(w http.ResponseWriter, r *http.Request, out outcome) {
	res, _, err := s.result(out)
	switch {
	case err == nil:
		idempotency.WriteResult(w, r, res, false)
	case errors.Is(err, errQueueFull):
		w.Header().Set("Retry-After", "5")
		problem.Write(w, r, problemQueueFull)
	default:
		s.writeUnavailable(w, r)
	}
}

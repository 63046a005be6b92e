package ledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/examples/malai/ledger/internal/book"
	"github.com/malai-sec/malai/idempotency"
)

// opKind names what an op asks of the sequencer.
type opKind uint8

const (
	opOpen opKind = iota + 1
	opDeposit
	opTransfer
	opAccept
	opRun
	opExpire
	opSync // a read barrier: catch up with the chain, plan nothing
)

// Op states. An op is planned only from opQueued, which it leaves for
// opAppending with a compare-and-swap; a handler that gives up withdraws
// it from opQueued, so an op is never in an append its handler abandoned.
const (
	opQueued int32 = iota
	opAppending
	opDone
	opWithdrawn
)

// op is one request waiting for the sequencer.
type op struct {
	kind      opKind
	principal string
	keyed     bool
	key       book.KeyHash
	fp        [32]byte
	cid       string
	account   string // opOpen, opDeposit
	amount    int64  // opDeposit
	req       book.TransferRequest
	job       string // opAccept (the new id), opRun, opExpire
	// reqCtx is the request's context: the trace context a queued job
	// carries, and the append's context under the AppendOnRequestContext
	// fault. Nothing else waits on it.
	reqCtx context.Context

	state atomic.Int32
	// appended is set once the op has been in an append: a withdrawal
	// after that does not know whether its event is in the chain.
	appended atomic.Bool
	done     chan struct{}
	out      outcome
	// planned is the outcome and event of the current plan.
	planned outcome
	event   *auditlog.Event
	value   any // the event's payload before encoding
	dupOf   *op // an earlier op of the batch with the same key
}

func newOp(kind opKind) *op { return &op{kind: kind, done: make(chan struct{})} }

// outcome is what the sequencer hands back.
type outcome struct {
	status  int
	header  http.Header
	body    []byte
	replay  uint64 // when fromKey: the chain row holding the first outcome
	fromKey bool   // the key was completed before: replay row `replay`
	// own is the payload this op appended in an attempt whose outcome was
	// unknown: when row `replay` holds it, the outcome is the op's own,
	// not a replay.
	own      []byte
	replayed bool  // another op of the same batch produced this outcome
	err      error // errKeyReused or an error wrapping errUnavailable
}

var (
	errUnavailable = errors.New("ledger: unavailable")
	errKeyReused   = errors.New("ledger: key reused with a different request")
	// errUnknown: the request's append may or may not be in the chain; the
	// idempotency claim stays in flight until it is known.
	errUnknown = fmt.Errorf("%w: %w", errUnavailable, idempotency.ErrOutcomeUnknown)
)

func (o *op) finish(out outcome) {
	if o.state.Swap(opDone) == opDone {
		return
	}
	o.out = out
	close(o.done)
}

// withdraw takes a queued op back; it fails once the op is in an append.
func (o *op) withdraw() bool { return o.state.CompareAndSwap(opQueued, opWithdrawn) }

// sequencer is the ledger's single writer. It takes every waiting request
// as one batch, plans them in order against the book (a plan sees the
// effect of the requests before it), appends the batch's events in one
// conditional append on the head the book reflects, and folds them once
// durable. Concurrent requests therefore share one group commit, no lock
// is held across the append (readers read the book meanwhile), and a
// batch planned on a stale head (another replica appended) is re-planned
// after reading the new rows. An append that fails ambiguously is
// resolved by reading the chain back before any request of the batch is
// answered or planned again.
type sequencer struct {
	log    *auditlog.Log
	book   *book.Book
	logger *slog.Logger
	now    func() time.Time
	shared bool
	faults Faults
	// timeouts
	commitTimeout  time.Duration
	jobTTL         time.Duration
	maxPendingJobs int

	in   chan *op
	stop chan struct{}
	wg   sync.WaitGroup

	// Only the run goroutine touches head and dirty.
	head  auditlog.Head
	dirty bool // an append's outcome is unknown: read back first

	stats struct {
		batches, events, conflicts, readBacks atomic.Int64
	}

	mu       sync.Mutex
	broken   error // the chain holds an event that does not fold
	storeErr error // the last store failure, nil once it answers
	running  map[string]bool
}

const maxOpsPerBatch = 1024

func (s *sequencer) start() {
	s.running = map[string]bool{}
	s.wg.Add(1)
	go s.run()
}

func (s *sequencer) close() {
	close(s.stop)
	s.wg.Wait()
}

// health reports why the ledger cannot write, or nil.
func (s *sequencer) health() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken != nil {
		return s.broken
	}
	return s.storeErr
}

func (s *sequencer) isRunning(job string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running[job]
}

// submit hands o to the sequencer and waits for its outcome. The wait is
// detached from the client: a client that goes away does not abandon an
// op in an append. After wait an op still queued is withdrawn (nothing was
// done); one in an append is waited for until its commit ends.
func (s *sequencer) submit(o *op, wait time.Duration) outcome {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case s.in <- o:
	case <-t.C:
		return outcome{err: fmt.Errorf("%w: the ledger is busy", errUnavailable)}
	case <-s.stop:
		return outcome{err: fmt.Errorf("%w: the ledger is stopping", errUnavailable)}
	}
	select {
	case <-o.done:
		return o.out
	case <-t.C:
	}
	if o.withdraw() {
		if o.appended.Load() {
			return outcome{err: fmt.Errorf("%w: timed out after an append whose outcome is not known yet", errUnknown)}
		}
		return outcome{err: fmt.Errorf("%w: timed out before the request was planned", errUnavailable)}
	}
	// In an append: its outcome is decided by the store, not by us.
	t2 := time.NewTimer(s.commitTimeout + wait)
	defer t2.Stop()
	select {
	case <-o.done:
		return o.out
	case <-t2.C:
		return outcome{err: fmt.Errorf("%w: the append's outcome is not known yet", errUnknown)}
	}
}

func (s *sequencer) run() {
	defer s.wg.Done()
	batch := make([]*op, 0, maxOpsPerBatch)
	for {
		select {
		case <-s.stop:
			s.drain()
			return
		case o := <-s.in:
			batch = append(batch[:0], o)
		}
	more:
		for len(batch) < maxOpsPerBatch {
			select {
			case o := <-s.in:
				batch = append(batch, o)
			default:
				break more
			}
		}
		s.process(batch)
		clear(batch)
	}
}

// drain answers every op still waiting at shutdown.
func (s *sequencer) drain() {
	for {
		select {
		case o := <-s.in:
			o.finish(outcome{err: fmt.Errorf("%w: the ledger is stopping", errUnavailable)})
		default:
			return
		}
	}
}

func (s *sequencer) setStoreErr(err error) {
	s.mu.Lock()
	s.storeErr = err
	s.mu.Unlock()
}

func (s *sequencer) fail(batch []*op, err error) {
	for _, o := range batch {
		if o.state.Load() != opDone {
			o.finish(outcome{err: err})
		}
	}
}

// process plans, appends and folds one batch until every op in it is
// answered or withdrawn.
func (s *sequencer) process(batch []*op) {
	if s.isBroken() {
		s.fail(batch, fmt.Errorf("%w: %w", errUnavailable, s.health()))
		return
	}
	catchUp := s.dirty
	for _, o := range batch {
		// A read barrier, and a job to run (another replica may have
		// accepted it), read the other replicas' rows first.
		if (o.kind == opSync || o.kind == opRun) && s.shared {
			catchUp = true
		}
	}
	backoff := 20 * time.Millisecond
	for {
		if catchUp {
			if err := s.catchUp(); err != nil {
				if s.isBroken() {
					cause := errUnavailable
					if s.dirty {
						cause = errUnknown // an append of this batch may be in
					}
					s.fail(batch, fmt.Errorf("%w: %w", cause, err))
					return
				}
				if !s.waitOrGiveUp(batch, &backoff) {
					return
				}
				continue
			}
			catchUp = false
		}
		events, owners := s.plan(batch)
		if len(events) == 0 {
			return
		}
		if s.faults.AppendOnRequestContext {
			s.faultyAppend(batch, owners, events)
			return
		}
		for _, o := range owners {
			o.appended.Store(true)
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.commitTimeout)
		rs, err := s.log.AppendIf(ctx, s.head, events)
		cancel()
		if err == nil {
			s.setStoreErr(nil)
			s.stats.batches.Add(1)
			s.stats.events.Add(int64(len(events)))
			s.commit(batch, owners, events, rs)
			return
		}
		for _, o := range owners {
			o.state.CompareAndSwap(opAppending, opQueued)
		}
		switch {
		case errors.Is(err, auditlog.ErrClosed):
			s.fail(batch, fmt.Errorf("%w: %w", errUnavailable, err))
			return
		case errors.Is(err, auditlog.ErrConflict):
			// Another writer appended: read its rows, plan again.
			s.stats.conflicts.Add(1)
			catchUp = true
			continue
		}
		// Unknown outcome (a lost COMMIT acknowledgement, a timeout, the
		// store down): nobody is answered until the chain is read back.
		s.logger.Error("ledger: append failed; reading the chain back before answering", "events", len(events), "error", err.Error())
		s.setStoreErr(err)
		s.stats.readBacks.Add(1)
		s.dirty = true
		catchUp = true
	}
}

// faultyAppend is the AppendOnRequestContext fault: the append runs on the
// first request's context, unconditionally, and a failure is taken for "not
// appended" without reading the chain back, so an event committed after its
// client went away never reaches the book.
func (s *sequencer) faultyAppend(batch, owners []*op, events []auditlog.Event) {
	rs, err := s.log.AppendBatch(owners[0].reqCtx, events)
	if err != nil {
		s.fail(owners, fmt.Errorf("%w: %w", errUnavailable, err))
		return
	}
	s.commit(batch, owners, events, rs)
}

func (s *sequencer) isBroken() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.broken != nil
}

// waitOrGiveUp sleeps the backoff while the store is unreachable. It
// reports false when no op of the batch is still waiting (all withdrew)
// or the sequencer is stopping.
func (s *sequencer) waitOrGiveUp(batch []*op, backoff *time.Duration) bool {
	alive := false
	for _, o := range batch {
		if st := o.state.Load(); st == opQueued || st == opAppending {
			alive = true
		}
	}
	if !alive && !s.dirty {
		return false
	}
	t := time.NewTimer(*backoff)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.stop:
		s.fail(batch, fmt.Errorf("%w: the ledger is stopping", errUnavailable))
		return false
	}
	*backoff = min(*backoff*2, 2*time.Second)
	return true
}

// catchUp folds the chain's rows after the book's head: other replicas'
// appends, and the rows of an append whose outcome was unknown.
func (s *sequencer) catchUp() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.commitTimeout)
	defer cancel()
	head, err := s.log.ReadFrom(ctx, s.head, func(e auditlog.Event) error {
		return s.book.Apply(e.Seq, e.Time, e.Type, e.Payload)
	})
	s.head = head
	if err == nil {
		s.dirty = false
		s.setStoreErr(nil)
		return nil
	}
	if errors.Is(err, book.ErrCorrupt) || errors.Is(err, auditlog.ErrTampered) {
		s.mu.Lock()
		s.broken = err
		s.mu.Unlock()
		s.logger.Error("ledger: the audit chain does not fold; writes stop", "error", err.Error())
		return err
	}
	s.setStoreErr(err)
	s.logger.Warn("ledger: reading the audit chain failed; retrying", "error", err.Error())
	return err
}

// commit folds the durable events and answers the batch.
func (s *sequencer) commit(batch, owners []*op, events []auditlog.Event, rs []auditlog.Receipt) {
	for i := range events {
		if err := s.book.ApplyValue(rs[i].Seq, rs[i].Time, events[i].Type, owners[i].value); err != nil {
			// A plan produced an event the fold refuses: a bug. Stop writing
			// rather than let live state leave the chain.
			s.mu.Lock()
			s.broken = err
			s.mu.Unlock()
			s.logger.Error("ledger: a committed event does not fold; writes stop", "error", err.Error())
		}
	}
	last := rs[len(rs)-1]
	s.head = auditlog.Head{Size: last.Seq + 1, Last: last.Hash}
	if s.faults.LiveDrift {
		for _, o := range owners {
			if d, ok := o.value.(*book.DepositPosted); ok {
				s.book.Drift(d.Account, -1)
			}
		}
	}
	for _, o := range owners {
		o.finish(o.planned)
	}
	for _, o := range batch {
		if o.dupOf != nil && o.state.Load() != opDone {
			out := o.dupOf.planned
			out.replayed = true
			o.finish(out)
		}
	}
	s.mu.Lock()
	for _, o := range owners {
		if o.kind == opRun {
			delete(s.running, o.job)
		}
	}
	s.mu.Unlock()
}

// plan decides every op still queued. Ops answered without an event are
// finished at once; the others move to opAppending and are returned with
// their events, in order.
func (s *sequencer) plan(batch []*op) ([]auditlog.Event, []*op) {
	p := s.book.NewPlan()
	now := s.now()
	var events []auditlog.Event
	var owners []*op
	for i, o := range batch {
		if o.state.Load() != opQueued {
			continue
		}
		o.dupOf = nil
		if o.kind == opSync {
			o.finish(outcome{})
			continue
		}
		if o.keyed && !s.faults.ForgetKeys {
			if e, known, at := p.Key(o.key); known {
				switch {
				case e.FP != o.fp:
					o.finish(outcome{err: errKeyReused})
				case o.event != nil:
					o.finish(outcome{fromKey: true, replay: e.Seq, own: o.event.Payload})
				default:
					o.finish(outcome{fromKey: true, replay: e.Seq})
				}
				continue
			} else if at >= 0 {
				first := batch[at]
				if first.fp != o.fp {
					o.finish(outcome{err: errKeyReused})
				} else {
					o.dupOf = first
				}
				continue
			}
		}
		if !o.state.CompareAndSwap(opQueued, opAppending) {
			continue // withdrawn meanwhile
		}
		ev, out := s.decide(p, o, now)
		if ev == nil {
			o.state.Store(opQueued)
			o.finish(out)
			continue
		}
		if o.keyed {
			p.ClaimKey(o.key, i)
		}
		o.planned, o.event = out, ev
		events = append(events, *ev)
		owners = append(owners, o)
	}
	if len(owners) > 0 {
		s.mu.Lock()
		for _, o := range owners {
			if o.kind == opRun {
				s.running[o.job] = true
			}
		}
		s.mu.Unlock()
	}
	return events, owners
}

// decide plans one op: the event to append (nil when the answer needs
// none) and the outcome the client gets once it is durable.
func (s *sequencer) decide(p *book.Plan, o *op, now time.Time) (*auditlog.Event, outcome) {
	bop := &book.Op{Principal: o.principal}
	if o.keyed {
		bop.Key, bop.FP = book.FormatKey(o.key), book.FormatFP(o.fp)
	}
	switch o.kind {
	case opOpen:
		if err := p.Open(o.account, o.principal); err != nil {
			if !o.keyed && errors.Is(err, book.ErrAccountExists) {
				// Opening is naturally idempotent for its owner.
				if owner, _ := p.Owner(o.account); owner == o.principal {
					a, _ := s.book.Account(o.account)
					return nil, jsonOutcome(http.StatusOK, a)
				}
			}
			return s.refuse(o, bop, err)
		}
		out := jsonOutcome(http.StatusCreated, book.Account{ID: o.account, Owner: o.principal})
		ev := book.AccountOpened{Account: o.account, Owner: o.principal}
		if o.keyed {
			bop.Status, bop.Body = out.status, out.body
			ev.Op = bop
		}
		return event(book.TypeAccountOpened, o, &ev), out
	case opDeposit:
		if err := p.Deposit(o.account, o.amount); err != nil {
			return s.refuse(o, bop, err)
		}
		d := book.DepositPosted{Deposit: newID("dp-"), Account: o.account, Amount: o.amount, By: o.principal}
		out := jsonOutcome(http.StatusCreated, d)
		bop.Status, bop.Body = out.status, out.body
		d.Op = bop
		return event(book.TypeDepositPosted, o, &d), out
	case opTransfer:
		principal := o.principal
		if s.faults.NoOwnerCheck {
			principal, _ = p.Owner(o.req.From) // the fault: whoever asks
		}
		if err := p.Transfer(principal, o.req); err != nil {
			return s.refuse(o, bop, err)
		}
		t := book.TransferPosted{Transfer: newID("tr-"), From: o.req.From, To: o.req.To, Amount: o.req.Amount, By: o.principal}
		out := jsonOutcome(http.StatusCreated, t)
		bop.Status, bop.Body = out.status, out.body
		t.Op = bop
		return event(book.TypeTransferPosted, o, &t), out
	case opAccept:
		if err := p.CheckTransfer(o.principal, o.req); err != nil {
			return s.refuse(o, bop, err)
		}
		if p.Pending() >= s.maxPendingJobs {
			return nil, outcome{err: fmt.Errorf("%w: %w", errUnavailable, errQueueFull)}
		}
		p.AcceptJob(o.job)
		out := jsonOutcome(http.StatusAccepted, jobAccepted{Job: o.job, Status: book.JobQueued})
		out.header.Set("Location", jobPath(o.job))
		bop.Job, bop.Status, bop.Body = o.job, out.status, out.body
		return event(book.TypeJobAccepted, o, &book.JobAccepted{Job: o.job, Request: o.req, Expires: now.Add(s.jobTTL), Op: *bop}), out
	case opRun, opExpire:
		j, ok, ran := p.Job(o.job)
		switch {
		case !ok:
			return nil, outcome{status: http.StatusNotFound}
		case ran:
			return nil, outcome{status: http.StatusOK}
		}
		run := &book.Op{Principal: j.Owner, FP: book.FormatFP(j.FP), Job: j.ID}
		p.RunJob(j.ID)
		if o.kind == opExpire || book.ExpiredAt(j.Expires, now) {
			pr := problemOutcome(problemJobExpired, o.cid)
			run.Status, run.Body = pr.status, pr.body
			return event(book.TypeRefused, o, &book.Refused{Reason: "job-expired", Op: *run}), outcome{status: http.StatusOK}
		}
		if err := p.Transfer(j.Owner, j.Request); err != nil {
			pr := problemOutcome(bookProblem(err), o.cid)
			run.Status, run.Body = pr.status, pr.body
			return event(book.TypeRefused, o, &book.Refused{Reason: reason(err), Op: *run}), outcome{status: http.StatusOK}
		}
		t := book.TransferPosted{Transfer: newID("tr-"), From: j.Request.From, To: j.Request.To, Amount: j.Request.Amount, By: j.Owner}
		res := jsonOutcome(http.StatusCreated, t)
		run.Status, run.Body = res.status, res.body
		t.Op = run
		return event(book.TypeTransferPosted, o, &t), outcome{status: http.StatusOK}
	}
	return nil, outcome{err: fmt.Errorf("%w: unknown op", errUnavailable)}
}

// refuse answers a refused op: a refusal that depends on the state is
// recorded (keyed ops), one that depends on the request alone is not.
func (s *sequencer) refuse(o *op, bop *book.Op, err error) (*auditlog.Event, outcome) {
	out := problemOutcome(bookProblem(err), o.cid)
	if !o.keyed || errors.Is(err, book.ErrInvalid) {
		return nil, out
	}
	bop.Status, bop.Body = out.status, out.body
	return event(book.TypeRefused, o, &book.Refused{Reason: reason(err), Op: *bop}), out
}

func reason(err error) string {
	switch {
	case errors.Is(err, book.ErrFunds):
		return "insufficient-funds"
	case errors.Is(err, book.ErrNoAccount), errors.Is(err, book.ErrNotOwner):
		return "not-found"
	case errors.Is(err, book.ErrAccountExists):
		return "account-exists"
	case errors.Is(err, book.ErrTooMany):
		return "too-many-accounts"
	}
	return "refused"
}

// event encodes payload (a pointer to one of book's payload types) as the
// op's event; the op keeps the value to fold it without parsing it back.
func event(typ string, o *op, payload any) *auditlog.Event {
	b, err := json.Marshal(payload)
	if err != nil {
		panic(err) // our own types always marshal
	}
	o.value = payload
	return &auditlog.Event{Type: typ, Actor: "service:ledger", CorrelationID: o.cid, Payload: b}
}

func jsonOutcome(status int, v any) outcome {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return outcome{status: status, header: http.Header{"Content-Type": {"application/json"}}, body: b}
}

func newID(prefix string) string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

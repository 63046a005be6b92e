package ledger

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/malai-sec/malai/examples/malai/internal/queue"
	"github.com/malai-sec/malai/examples/malai/internal/strictjson"
	"github.com/malai-sec/malai/examples/malai/ledger/internal/book"
	"github.com/malai-sec/malai/problem"
)

// jobAccepted is the body of the asynchronous route's 202.
type jobAccepted struct {
	Job    string `json:"job"`
	Status string `json:"status"`
}

func jobPath(id string) string { return "/v1/jobs/" + id }

// JobStatus is the body of GET /v1/jobs/{id} and of the worker's route.
type JobStatus struct {
	ID      string     `json:"id"`
	Status  string     `json:"status"` // queued, running, succeeded, failed
	Created time.Time  `json:"created_at"`
	Expires time.Time  `json:"expires_at"`
	Result  *JobResult `json:"result,omitempty"`
}

// JobResult is a finished job's outcome: the response the synchronous
// route would have given (the transfer, or a problem).
type JobResult struct {
	Status int             `json:"status"`
	Body   json.RawMessage `json:"body"`
}

func (s *Service) jobStatus(j book.Job) JobStatus {
	st := JobStatus{ID: j.ID, Status: j.State(), Created: j.Accepted, Expires: j.Expires}
	if s.cfg.Faults.NoJobStatus {
		st.Status = book.JobQueued
		return st
	}
	if j.Done {
		st.Result = &JobResult{Status: j.Status, Body: j.Body}
	} else if s.seq.isRunning(j.ID) {
		st.Status = book.JobRunning
	}
	return st
}

func (s *Service) getJob(w http.ResponseWriter, r *http.Request) {
	if !s.sync(r) {
		s.writeUnavailable(w, r)
		return
	}
	sub, _ := Subject(r)
	j, ok := s.book.Job(r.PathValue("id"))
	if !ok || j.Owner != sub {
		// Someone else's job looks exactly like a missing one.
		problem.Write(w, r, problemNotFound)
		return
	}
	writeJSON(w, http.StatusOK, s.jobStatus(j))
}

// jobMessage is what the ledger queues: the job's id and a MAC over it
// under the ledger's job key ring. The job itself (owner, key, request)
// is in the chain, so a queue writer can neither change a job nor invent
// one, and a replayed message only meets the job's recorded outcome.
type jobMessage struct {
	Job string `json:"job"`
	Sig string `json:"sig"`
}

func jobAAD(id string) []byte { return []byte("malai.ledger.job.v1\x00" + id) }

func (s *Service) signJob(id string) (string, error) {
	sealed, err := s.cfg.JobKeys.Seal(nil, nil, jobAAD(id))
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(sealed), nil
}

func (s *Service) verifyJob(m jobMessage) bool {
	sealed, err := base64.RawURLEncoding.DecodeString(m.Sig)
	// The decoder skips CR and LF: only the spelling signJob writes is
	// the signature, so a message has one accepted form.
	if err != nil || m.Job == "" || base64.RawURLEncoding.EncodeToString(sealed) != m.Sig {
		return false
	}
	_, _, err = s.cfg.JobKeys.Open(nil, sealed, jobAAD(m.Job))
	return err == nil
}

// runJob runs a queued job for the worker. The answer is the job's status;
// it is the same however often the job is delivered.
func (s *Service) runJob(w http.ResponseWriter, r *http.Request) {
	if !isJSON(r) {
		problem.Write(w, r, problemMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var m jobMessage
	if err != nil || strictjson.Decode(body, &m) != nil {
		problem.Write(w, r, problemBadJSON)
		return
	}
	if !s.verifyJob(m) {
		s.log.WarnContext(r.Context(), "ledger: refused a job it did not issue")
		problem.Write(w, r, problemForgedJob)
		return
	}
	o := newOp(opRun)
	o.job, o.cid, o.reqCtx = m.Job, correlationID(r.Context()), r.Context()
	out := s.seq.submit(o, s.cfg.RequestTimeout)
	switch {
	case out.err != nil:
		s.writeUnavailable(w, r)
		return
	case out.status == http.StatusNotFound:
		problem.Write(w, r, problemNotFound)
		return
	}
	j, ok := s.book.Job(m.Job)
	if !ok {
		problem.Write(w, r, problemNotFound)
		return
	}
	writeJSON(w, http.StatusOK, s.jobStatus(j))
}

// pump keeps every pending job on its way: it publishes jobs whose
// publication failed or was lost (an in-memory queue after a restart, a
// message lost by the queue), republishes jobs nobody ran for
// RepublishAfter, and expires jobs past their TTL. A duplicate delivery is
// harmless: the job runs once, in the chain.
type pump struct {
	s    *Service
	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex
	published map[string]time.Time // zero: publish at the next tick
}

func newPump(s *Service) *pump {
	p := &pump{s: s, stop: make(chan struct{}), done: make(chan struct{}), published: map[string]time.Time{}}
	durable := true
	if d, ok := s.cfg.Queue.(interface{ Durable() bool }); ok {
		durable = d.Durable()
	}
	if !durable {
		// The queue forgot everything at the restart: publish every job
		// still pending now.
		for _, j := range s.book.PendingJobs() {
			p.published[j.ID] = time.Time{}
		}
	}
	return p
}

func (p *pump) start() {
	go p.run()
}

func (p *pump) close() {
	close(p.stop)
	<-p.done
}

func (p *pump) run() {
	defer close(p.done)
	p.tick()
	t := time.NewTicker(p.s.cfg.PumpInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.tick()
		}
	}
}

// publish queues job id (at acceptance, and again from the pump). The
// message carries the trace context of reqCtx (the accepting request's;
// the pump has none), so the worker continues the request's trace.
func (p *pump) publish(reqCtx context.Context, id, principal, cid string) {
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(reqCtx, carrier)
	tp := carrier.Get("traceparent")
	sig, err := p.s.signJob(id)
	var b []byte
	if err == nil {
		b, err = json.Marshal(jobMessage{Job: id, Sig: sig})
	}
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = p.s.cfg.Queue.Publish(ctx, queue.Message{IdempotencyKey: id, Principal: principal, CorrelationID: cid, TraceParent: tp, Body: b})
		cancel()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.published[id] = time.Time{}
		if !errors.Is(err, queue.ErrFull) {
			p.s.log.Warn("ledger: job not queued yet; it will be republished", "job", id, "error", err.Error())
		}
		return
	}
	p.published[id] = p.s.cfg.Now()
}

// pumpWait bounds how long the pump waits for the sequencer per job: a
// job it could not expire now is expired at a later tick, and Close is
// never held up by a store outage.
const pumpWait = time.Second

func (p *pump) tick() {
	s := p.s
	if s.cfg.Shared {
		s.seq.submit(newOp(opSync), pumpWait)
	}
	now := s.cfg.Now()
	pending := s.book.PendingJobs()
	live := make(map[string]bool, len(pending))
	for _, j := range pending {
		live[j.ID] = true
		if book.ExpiredAt(j.Expires, now) {
			o := newOp(opExpire)
			o.job = j.ID
			s.seq.submit(o, pumpWait)
			continue
		}
		p.mu.Lock()
		last, known := p.published[j.ID]
		p.mu.Unlock()
		if !known {
			last = j.Accepted // accepted (and published) here or by another replica
		}
		if last.IsZero() || now.Sub(last) >= s.cfg.RepublishAfter {
			p.publish(context.Background(), j.ID, j.Owner, "")
		}
		select {
		case <-p.stop:
			return
		default:
		}
	}
	p.mu.Lock()
	for id := range p.published {
		if !live[id] {
			delete(p.published, id)
		}
	}
	p.mu.Unlock()
}

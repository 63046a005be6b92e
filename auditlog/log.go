package auditlog

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/keyring"
)

// Config configures a [Log]. The zero value is not usable: Store, Origin
// and the signers (Signers or GetSigners) are required, and payloads are
// sealed unless Plaintext is set.
type Config struct {
	// Store keeps the rows. Required. The Log does not close it.
	Store Store
	// Origin is the checkpoint origin line, a unique name for this log
	// such as "ledger.example.com/audit". Required.
	Origin string
	// Signers sign every checkpoint (several keys during a rotation):
	// at least one Ed25519 note signer (note.NewSigner). Required unless
	// GetSigners is set; setting both is an error.
	Signers []note.Signer
	// GetSigners, when set in place of Signers, returns the signers of
	// each checkpoint: the Log calls it once in New and again every time
	// it signs a checkpoint, so a running Log signs with a key rotated
	// after New (as [crypto/tls.Config.GetCertificate] serves a renewed
	// certificate). During a rotation return the new key and the previous
	// one: a verifier or witness that knows only the previous key keeps
	// accepting the new checkpoints until it learns the new key. The Log
	// calls it from one goroutine at a time, and a slow call delays that
	// checkpoint, so return keys already unwrapped. An error (or no
	// signer, or a nil one) fails that checkpoint: it is returned by
	// [Log.Checkpoint] and [Log.Close], reported through OnError for a
	// periodic one, and the next checkpoint calls GetSigners again.
	// Checkpoints signed by earlier keys stay the Log's own: it still
	// recognises them in its store, and [Verify] checks them with their
	// verifiers.
	GetSigners func() ([]note.Signer, error)
	// Witness, when set, receives every checkpoint with a consistency
	// proof from the witness's previous one, so the log's history is held
	// somewhere its operator cannot rewrite.
	Witness Witness
	// Ring seals payloads at rest (AES-256-GCM, key id per row). Required
	// unless Plaintext is true.
	Ring *keyring.Ring
	// Plaintext stores payloads unencrypted. Loosening; off by default.
	Plaintext bool
	// Now is the clock; default time.Now.
	Now func() time.Time
	// CheckpointInterval is how often a new checkpoint is signed, stored
	// and published while rows arrive; default one second. A checkpoint
	// is also issued by Checkpoint and Close.
	CheckpointInterval time.Duration
	// MaxBatch caps the events of one group commit; default 4096.
	MaxBatch int
	// CommitTimeout bounds each store call of a commit; default 30s.
	CommitTimeout time.Duration
	// OnError receives errors of background work (periodic checkpoints,
	// witness publication). Default: ignored; the next checkpoint retries.
	OnError func(error)
	// OnCommit, when set, is called after every store commit (a group of
	// appended events, or one conditional append), for metrics: the
	// number of events, how long the store took to make them durable
	// (the fsync or transaction), and the error, if any. It runs on the
	// committing goroutine: it must be fast and must not call the Log.
	OnCommit func(CommitEvent)
}

// CommitEvent describes one store commit.
type CommitEvent struct {
	// Events is the number of events committed (or not, when Err is set).
	Events int
	// Duration is the time the store's Append took, on the monotonic
	// clock (not Config.Now), retries after a conflict included.
	Duration time.Duration
	// Conditional is true for an [Log.AppendIf] commit.
	Conditional bool
	// Err is nil when the events are durable.
	Err error
}

// Receipt acknowledges a durable event.
type Receipt struct {
	Seq  uint64
	Hash Hash
	Time time.Time
}

// SignedCheckpoint is a checkpoint with its signed note.
type SignedCheckpoint struct {
	Checkpoint
	Note []byte
}

// Witness keeps checkpoints where the log's operator cannot rewrite them.
// [NewWitness] builds one that verifies and stores them in a separate
// [Store].
type Witness interface {
	// Latest returns the newest signed checkpoint the witness holds, or
	// nil when it holds none.
	Latest(ctx context.Context) ([]byte, error)
	// Publish offers a signed checkpoint with a consistency proof from the
	// witness's latest checkpoint.
	Publish(ctx context.Context, signed []byte, proof [][]byte) error
}

type request struct {
	events   []Event
	payloads [][]byte
	receipts []Receipt
	err      error
	done     chan struct{}
	// cond makes the request conditional: it is committed alone, and only
	// when the durable head is exactly expect (AppendIf).
	cond   bool
	expect Head
}

// Log is an append-only, hash-chained, Merkle-tree audit log with signed
// checkpoints. Appends from many goroutines are group-committed: one store
// call (one fsync, one PostgreSQL transaction) covers every event waiting.
// A Log is safe for concurrent use. It keeps the tree's node hashes in
// memory, about 64 bytes per event.
type Log struct {
	cfg   Config
	reqs  chan *request
	done  chan struct{}
	close sync.RWMutex // held for reading by senders, for writing by Close
	shut  bool

	mu   sync.RWMutex // guards tree and head
	tree tree
	head Head
	last int64 // time of the last row (committer only)

	closeErr error // the final checkpoint's error, returned by Close

	cpMu         sync.Mutex    // serialises checkpoints; guards known
	known        []note.Signer // every signer the log has held, for authentic
	cpRunning    atomic.Bool
	cpWG         sync.WaitGroup // background checkpoints
	lastCP       SignedCheckpoint
	lastCPAt     time.Time
	cpSkipped    uint64 // the size of the last checkpoint the store refused as stale
	witnessStale bool
}

const maxConflictRetries = 64

// New opens a log over cfg.Store: it reads the stored chain (checking
// each row links to the one before), rebuilds the Merkle tree, checks the
// latest stored checkpoint against it, and refuses to start if the witness
// holds a larger checkpoint than the store (rows were lost or removed).
func New(cfg Config) (*Log, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("%w: Store is required", ErrInvalidConfig)
	}
	if cfg.Origin == "" {
		return nil, fmt.Errorf("%w: Origin is required", ErrInvalidConfig)
	}
	if _, err := ParseCheckpoint(Checkpoint{Origin: cfg.Origin}.Marshal()); err != nil {
		return nil, fmt.Errorf("%w: Origin must be one line", ErrInvalidConfig)
	}
	if cfg.GetSigners != nil && len(cfg.Signers) > 0 {
		return nil, fmt.Errorf("%w: set Signers or GetSigners, not both", ErrInvalidConfig)
	}
	if cfg.Ring == nil && !cfg.Plaintext {
		return nil, fmt.Errorf("%w: Ring is required unless Plaintext is set", ErrInvalidConfig)
	}
	if cfg.CheckpointInterval < 0 || cfg.MaxBatch < 0 || cfg.CommitTimeout < 0 {
		return nil, fmt.Errorf("%w: negative interval, batch or timeout", ErrInvalidConfig)
	}
	if cfg.GetSigners == nil {
		fixed := append([]note.Signer(nil), cfg.Signers...)
		cfg.GetSigners = func() ([]note.Signer, error) { return fixed, nil }
	}
	cfg.Signers = nil
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CheckpointInterval == 0 {
		cfg.CheckpointInterval = time.Second
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = 4096
	}
	if cfg.CommitTimeout == 0 {
		cfg.CommitTimeout = 30 * time.Second
	}
	if cfg.OnError == nil {
		cfg.OnError = func(error) {}
	}
	l := &Log{cfg: cfg, reqs: make(chan *request, 1024), done: make(chan struct{})}
	if _, err := l.signers(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.CommitTimeout)
	defer cancel()
	if err := l.sync(ctx); err != nil {
		return nil, err
	}
	if err := l.loadCheckpoint(ctx); err != nil {
		return nil, err
	}
	if cfg.Witness != nil {
		if err := l.checkWitness(ctx); err != nil {
			return nil, err
		}
	}
	l.lastCPAt = cfg.Now()
	go l.run()
	return l, nil
}

// sync reads rows past the in-memory head from the store into the tree.
func (l *Log) sync(ctx context.Context) error {
	head := l.head
	var hashes []Hash
	var lastTime = l.last
	err := l.cfg.Store.Scan(ctx, head.Size, func(r Record) error {
		if r.Seq != head.Size || r.PrevHash != head.Last {
			return fmt.Errorf("%w: row %d does not link to row %d", ErrTampered, r.Seq, head.Size-1)
		}
		hashes = append(hashes, r.Hash)
		head = Head{Size: head.Size + 1, Last: r.Hash}
		lastTime = r.Time
		return nil
	})
	if err != nil {
		return err
	}
	l.mu.Lock()
	for _, h := range hashes {
		l.tree.append(h)
	}
	l.head = head
	l.last = lastTime
	l.mu.Unlock()
	return nil
}

// recentCheckpoints is how many of the newest stored checkpoints New
// searches for one of its own when the newest is not.
const recentCheckpoints = 64

// loadCheckpoint adopts the newest stored checkpoint this log signed and
// checks it against the tree. A stored checkpoint that does not parse,
// names another origin or carries no signature the log's signers
// reproduce (a row inserted by whoever can write the store, or one signed
// by a retired key) is skipped and reported through OnError, never fatal:
// Verify locates it.
func (l *Log) loadCheckpoint(ctx context.Context) error {
	var newest []byte
	if lc, ok := l.cfg.Store.(LatestCheckpointer); ok {
		var err error
		if newest, err = lc.LatestCheckpoint(ctx); err != nil {
			return err
		}
		if newest == nil {
			return nil
		}
		if c, ok := l.authentic(newest); ok {
			return l.adopt(c, newest)
		}
	}
	// Search the most recent checkpoints, newest first.
	var recent [][]byte
	if err := l.cfg.Store.Checkpoints(ctx, func(s []byte) error {
		if len(recent) == recentCheckpoints {
			recent = append(recent[:0], recent[1:]...)
		}
		recent = append(recent, bytes.Clone(s))
		return nil
	}); err != nil {
		return err
	}
	skipped := 0
	for i := len(recent) - 1; i >= 0; i-- {
		if c, ok := l.authentic(recent[i]); ok {
			if skipped > 0 {
				l.cfg.OnError(fmt.Errorf("%w: %d newest stored checkpoints skipped: not signed by this log's keys", ErrCheckpoint, skipped))
			}
			return l.adopt(c, recent[i])
		}
		skipped++
	}
	if skipped > 0 {
		l.cfg.OnError(fmt.Errorf("%w: none of the %d newest stored checkpoints is signed by this log's keys", ErrCheckpoint, skipped))
	}
	return nil
}

// adopt makes a checkpoint the log signed its latest, after checking the
// stored rows still match it.
func (l *Log) adopt(c Checkpoint, signed []byte) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if c.Size > l.tree.size {
		return fmt.Errorf("%w: stored checkpoint covers %d rows, store holds %d", ErrTampered, c.Size, l.tree.size)
	}
	if l.tree.rootAt(c.Size) != c.Root {
		return fmt.Errorf("%w: stored rows do not match the checkpoint at size %d", ErrTampered, c.Size)
	}
	l.lastCP = SignedCheckpoint{Checkpoint: c, Note: signed}
	return nil
}

// signers returns the signers of the next checkpoint (Config.GetSigners)
// and adds them to the keys the log recognises its checkpoints by. The
// caller holds cpMu, or is New.
func (l *Log) signers() ([]note.Signer, error) {
	ss, err := l.cfg.GetSigners()
	if err != nil {
		return nil, fmt.Errorf("auditlog: signers: %w", err)
	}
	if len(ss) == 0 {
		return nil, fmt.Errorf("%w: at least one Signer is required", ErrInvalidConfig)
	}
	for _, s := range ss {
		if s == nil {
			return nil, fmt.Errorf("%w: nil Signer", ErrInvalidConfig)
		}
	}
	for _, s := range ss {
		if !slices.ContainsFunc(l.known, func(k note.Signer) bool { return k.Name() == s.Name() && k.KeyHash() == s.KeyHash() }) {
			l.known = append(l.known, s)
		}
	}
	return ss, nil
}

// authentic reports whether signed is a checkpoint of this log's origin
// carrying a signature one of the log's signers (current or held since
// New) reproduces. Ed25519 signatures are deterministic, so the log
// recognises its own checkpoints without holding the public keys. The
// caller holds cpMu, or is New.
func (l *Log) authentic(signed []byte) (Checkpoint, bool) {
	_, err := note.Open(signed, note.VerifierList())
	var unverified *note.UnverifiedNoteError
	if !errors.As(err, &unverified) {
		return Checkpoint{}, false
	}
	n := unverified.Note
	c, err := ParseCheckpoint([]byte(n.Text))
	if err != nil || c.Origin != l.cfg.Origin {
		return Checkpoint{}, false
	}
	for _, sig := range n.UnverifiedSigs {
		for _, s := range l.known {
			if sig.Name != s.Name() || sig.Hash != s.KeyHash() {
				continue
			}
			mine, err := s.Sign([]byte(n.Text))
			if err != nil {
				continue
			}
			var hb [4]byte
			binary.BigEndian.PutUint32(hb[:], sig.Hash)
			if base64.StdEncoding.EncodeToString(append(hb[:], mine...)) == sig.Base64 {
				return c, true
			}
		}
	}
	return Checkpoint{}, false
}

// storeHolds reports whether the store keeps the signed checkpoint.
func (l *Log) storeHolds(ctx context.Context, signed []byte) (bool, error) {
	found := false
	err := l.cfg.Store.Checkpoints(ctx, func(s []byte) error {
		if bytes.Equal(s, signed) {
			found = true
			return errStopScan
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return false, err
	}
	return found, nil
}

// parseUnverified parses the checkpoint in a signed note without checking
// signatures (the caller checks it against the tree instead).
func parseUnverified(signed []byte) (Checkpoint, error) {
	_, err := note.Open(signed, note.VerifierList())
	var unverified *note.UnverifiedNoteError
	if !errors.As(err, &unverified) {
		return Checkpoint{}, fmt.Errorf("%w: %w", ErrCheckpoint, errMalformedNote)
	}
	return ParseCheckpoint([]byte(unverified.Note.Text))
}

// Append validates e, commits it with whatever else is waiting, and
// returns once it is durable. If ctx ends first Append returns ctx's
// error; the event may still be committed. A store error can be
// ambiguous too (a connection lost during COMMIT): the event may or may
// not be in the log, and the chain stays linear either way, because the
// next commit finds the store ahead, catches up and continues after it.
func (l *Log) Append(ctx context.Context, e Event) (Receipt, error) {
	rs, err := l.AppendBatch(ctx, []Event{e})
	if err != nil {
		return Receipt{}, err
	}
	return rs[0], nil
}

// AppendBatch appends events as consecutive rows in one commit and returns
// their receipts in order.
func (l *Log) AppendBatch(ctx context.Context, events []Event) ([]Receipt, error) {
	req, err := l.newRequest(events)
	if err != nil || req == nil {
		return nil, err
	}
	return l.send(ctx, req)
}

// AppendIf appends events as consecutive rows only if the durable head of
// the store is exactly expect, and returns their receipts in order. It is
// the append of a caller that planned events against the state at expect
// (a ledger that checked a balance): when another writer (another process
// on the same PostgreSQL table) appended first, AppendIf appends nothing
// and returns an error wrapping [ErrConflict], so the caller can read the
// new rows ([Log.ReadFrom]) and plan again. The events are never moved onto
// another head, and they are committed on their own, not grouped with
// other callers' events.
//
// Any other error leaves the outcome unknown exactly as for [Log.Append]
// (a connection lost during COMMIT): read the store back from expect to
// learn whether the events are there before acting on the failure.
func (l *Log) AppendIf(ctx context.Context, expect Head, events []Event) ([]Receipt, error) {
	req, err := l.newRequest(events)
	if err != nil || req == nil {
		return nil, err
	}
	req.cond, req.expect = true, expect
	return l.send(ctx, req)
}

func (l *Log) newRequest(events []Event) (*request, error) {
	if len(events) == 0 {
		return nil, nil
	}
	if len(events) > l.cfg.MaxBatch {
		return nil, fmt.Errorf("%w: %d events exceed MaxBatch %d", ErrInvalidEvent, len(events), l.cfg.MaxBatch)
	}
	req := &request{events: events, payloads: make([][]byte, len(events)), done: make(chan struct{})}
	for i := range events {
		e := &events[i]
		p, err := canonicalPayload(e.Payload)
		if err != nil {
			return nil, err
		}
		if err := checkFields(e.Type, e.Actor, e.CorrelationID, p); err != nil {
			return nil, err
		}
		req.payloads[i] = p
	}
	return req, nil
}

func (l *Log) send(ctx context.Context, req *request) ([]Receipt, error) {
	l.close.RLock()
	if l.shut {
		l.close.RUnlock()
		return nil, ErrClosed
	}
	select {
	case l.reqs <- req:
	case <-ctx.Done():
		l.close.RUnlock()
		return nil, ctx.Err()
	}
	l.close.RUnlock()
	select {
	case <-req.done:
		return req.receipts, req.err
	case <-ctx.Done():
		return nil, fmt.Errorf("auditlog: append may still commit: %w", ctx.Err())
	}
}

// run is the committer. It owns the head, the tree and every store
// append. Appends are pipelined: while one batch is in the store (an
// fsync, a PostgreSQL commit), the requests that arrive form the next
// batch, and their records are built (hashed, sealed) on top of the
// in-flight batch as they arrive, so the next store call starts as soon
// as the previous one returns. A batch built on a head that did not come
// to pass (the batch before it failed, or another writer appended) is
// rebuilt before it is sent.
func (l *Log) run() {
	defer close(l.done)
	tick := time.NewTicker(l.cfg.CheckpointInterval)
	defer tick.Stop()
	var (
		next     *batch   // collecting: built on top of inflight (or the head)
		inflight *batch   // in the store
		held     *request // received, not yet placed
		res      = make(chan error, 1)
		closed   bool
		sentAt   time.Time // when inflight went to the store
		// After a commit, wait a little for the acknowledged producers'
		// next events (linger): until target events are pending or until
		// lingerUntil, a quarter of the last store call at most.
		target      int
		lingerUntil time.Time
		linger      = time.NewTimer(time.Hour)
	)
	linger.Stop()
	defer linger.Stop()
	for {
		if held != nil && !held.cond && (next == nil || next.n+len(held.events) <= l.cfg.MaxBatch) {
			if next == nil {
				base, baseTime := l.head, l.last
				if inflight != nil {
					base, baseTime = inflight.end, inflight.endTime
				}
				next = &batch{base: base, baseTime: baseTime, end: base, endTime: baseTime}
			}
			l.add(next, held)
			held = nil
			if len(next.reqs) == 0 {
				next = nil // its only request failed to build
			}
		}
		var lingerC <-chan time.Time
		if inflight == nil {
			switch {
			case next != nil && held == nil && !closed && next.n < target && time.Now().Before(lingerUntil):
				linger.Reset(time.Until(lingerUntil))
				lingerC = linger.C
			case next != nil:
				inflight, next, target = next, nil, 0
				sentAt = time.Now()
				l.dispatch(inflight, res)
			case held != nil: // conditional, and nothing before it is pending
				due := l.checkpointDue()
				l.commitIf(held)
				held = nil
				if due {
					l.kickCheckpoint()
				}
				continue
			case closed:
				l.cpWG.Wait()
				l.finalCheckpoint()
				return
			}
		}
		var in <-chan *request
		if held == nil && !closed {
			in = l.reqs
		}
		var out <-chan error
		if inflight != nil {
			out = res
		}
		select {
		case r, ok := <-in:
			if !ok {
				closed = true
				continue
			}
			held = r
		case err := <-out:
			took := time.Since(sentAt)
			l.finish(inflight, err)
			target = 0
			if err == nil {
				pending := 0
				if next != nil {
					pending = next.n
				}
				target = min(l.cfg.MaxBatch, pending+inflight.n)
				lingerUntil = time.Now().Add(min(took/4, maxLinger))
			}
			inflight = nil
		case <-lingerC:
		case <-tick.C:
			l.kickCheckpoint()
		}
	}
}

// maxLinger bounds how long a ready batch waits for more events after a
// commit: the producers just acknowledged usually send their next event
// within microseconds, and one store call then covers all of them instead
// of half (with P producers each holding one event, back-to-back commits
// settle at P/2 events each).
const maxLinger = time.Millisecond

// batch is a group of unconditional requests committed together.
type batch struct {
	reqs      []*request
	recs      []Record
	n         int   // events
	base, end Head  // the head recs were built on, and the head after them
	baseTime  int64 // row time at base
	endTime   int64
	storeTime time.Duration // time spent in Store.Append
}

// add builds r's records on top of b and appends them. A request whose
// records cannot be built (sealing failed) is answered at once.
func (l *Log) add(b *batch, r *request) {
	k := len(r.events)
	if b.recs == nil {
		b.recs = make([]Record, 0, max(k, 8))
	}
	b.recs = slices.Grow(b.recs, k)[:len(b.recs)+k]
	recs := b.recs[len(b.recs)-k:]
	t := l.rowTime(b.endTime)
	last, err := l.buildReq(b.end.Size, b.end.Last, t, r, recs)
	if err != nil {
		b.recs = b.recs[:len(b.recs)-k]
		r.err = fmt.Errorf("auditlog: append: %w", err)
		close(r.done)
		return
	}
	b.reqs = append(b.reqs, r)
	b.n += k
	b.end = Head{Size: b.end.Size + uint64(k), Last: last}
	b.endTime = t
}

// dispatch sends b to the store in a goroutine; the result arrives on
// res. A batch built on a head that is not the durable one is rebuilt
// first.
func (l *Log) dispatch(b *batch, res chan<- error) {
	if b.base != l.head {
		if err := l.rebuild(b); err != nil {
			res <- err
			return
		}
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), l.cfg.CommitTimeout)
		defer cancel()
		start := time.Now()
		err := l.cfg.Store.Append(ctx, b.recs)
		b.storeTime = time.Since(start) // read by finish after res
		res <- err
	}()
}

func (l *Log) rebuild(b *batch) error {
	t, err := l.buildOn(l.head, l.last, b.reqs, b.recs)
	if err != nil {
		return err
	}
	b.base, b.baseTime = l.head, l.last
	b.end = Head{Size: l.head.Size + uint64(b.n), Last: b.recs[b.n-1].Hash}
	b.endTime = t
	return nil
}

// finish handles the store's answer for b: on a conflict (another writer
// appended first) it catches up, rebuilds and retries; then it answers
// every request of the batch.
func (l *Log) finish(b *batch, err error) {
	for attempt := 0; errors.Is(err, ErrConflict) && attempt < maxConflictRetries; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), l.cfg.CommitTimeout)
		if err = l.sync(ctx); err == nil {
			if err = l.rebuild(b); err == nil {
				start := time.Now()
				err = l.cfg.Store.Append(ctx, b.recs)
				b.storeTime += time.Since(start)
			}
		}
		cancel()
	}
	if l.cfg.OnCommit != nil {
		l.cfg.OnCommit(CommitEvent{Events: b.n, Duration: b.storeTime, Err: err})
	}
	if err != nil {
		for _, r := range b.reqs {
			r.err = fmt.Errorf("auditlog: append: %w", err)
			close(r.done)
		}
		return
	}
	due := l.checkpointDue() // before anyone is answered: see the interval
	l.advance(b.reqs, b.recs)
	if due {
		l.kickCheckpoint()
	}
}

// checkpointDue reports whether the checkpoint interval has passed.
func (l *Log) checkpointDue() bool {
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	return l.cfg.Now().Sub(l.lastCPAt) >= l.cfg.CheckpointInterval
}

// kickCheckpoint starts a background checkpoint unless one is running,
// so commits never wait for signing, storing and publishing it.
func (l *Log) kickCheckpoint() {
	if !l.cpRunning.CompareAndSwap(false, true) {
		return
	}
	l.cpWG.Add(1)
	go func() {
		defer l.cpWG.Done()
		defer l.cpRunning.Store(false)
		l.backgroundCheckpoint()
	}()
}

// commitIf commits one conditional request: only on top of r.expect, never
// re-chained onto another head.
func (l *Log) commitIf(r *request) {
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.CommitTimeout)
	defer cancel()
	fail := func(err error) {
		r.err = fmt.Errorf("auditlog: append: %w", err)
		close(r.done)
	}
	if l.head != r.expect && r.expect.Size > l.head.Size {
		// The caller read rows this log has not seen (another writer's, or
		// its own whose acknowledgement was lost): catch up first.
		if err := l.sync(ctx); err != nil {
			fail(err)
			return
		}
	}
	if l.head != r.expect {
		fail(fmt.Errorf("head is at %d, expected %d: %w", l.head.Size, r.expect.Size, ErrConflict))
		return
	}
	recs := make([]Record, len(r.events))
	if err := l.build([]*request{r}, recs); err != nil {
		fail(err)
		return
	}
	start := time.Now()
	err := l.cfg.Store.Append(ctx, recs)
	if l.cfg.OnCommit != nil {
		l.cfg.OnCommit(CommitEvent{Events: len(recs), Duration: time.Since(start), Conditional: true, Err: err})
	}
	if err != nil {
		if errors.Is(err, ErrConflict) {
			// Learn the other writer's rows now; the caller reads them too.
			if serr := l.sync(ctx); serr != nil {
				l.cfg.OnError(serr)
			}
		}
		fail(err)
		return
	}
	l.advance([]*request{r}, recs)
}

func (l *Log) backgroundCheckpoint() {
	l.mu.RLock()
	size := l.head.Size
	l.mu.RUnlock()
	l.cpMu.Lock()
	due := size > max(l.lastCP.Size, l.cpSkipped) || l.witnessStale
	l.cpMu.Unlock()
	if !due {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.CommitTimeout)
	defer cancel()
	if _, err := l.Checkpoint(ctx); err != nil {
		l.cfg.OnError(err)
	}
}

func (l *Log) finalCheckpoint() {
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.CommitTimeout)
	defer cancel()
	if _, err := l.Checkpoint(ctx); err != nil {
		l.closeErr = err
		l.cfg.OnError(err)
	}
}

// advance adds committed recs to the tree and head and hands the batch its
// receipts.
func (l *Log) advance(batch []*request, recs []Record) {
	n := len(recs)
	l.mu.Lock()
	for i := range recs {
		l.tree.append(recs[i].Hash)
	}
	l.head = Head{Size: l.head.Size + uint64(n), Last: recs[n-1].Hash}
	l.last = recs[n-1].Time
	l.mu.Unlock()
	i := 0
	for _, r := range batch {
		r.receipts = make([]Receipt, len(r.events))
		for j := range r.events {
			r.receipts[j] = Receipt{Seq: recs[i].Seq, Hash: recs[i].Hash, Time: time.Unix(0, recs[i].Time).UTC()}
			i++
		}
		close(r.done)
	}
}

// build fills recs for the batch on top of the current head.
func (l *Log) build(batch []*request, recs []Record) error {
	_, err := l.buildOn(l.head, l.last, batch, recs)
	return err
}

// buildOn fills recs for the requests on top of base, whose last row has
// time last; it returns the rows' time.
func (l *Log) buildOn(base Head, last int64, batch []*request, recs []Record) (int64, error) {
	now := l.rowTime(last)
	seq, prev := base.Size, base.Last
	for _, r := range batch {
		k := len(r.events)
		var err error
		if prev, err = l.buildReq(seq, prev, now, r, recs[:k]); err != nil {
			return 0, err
		}
		seq += uint64(k)
		recs = recs[k:]
	}
	return now, nil
}

// rowTime is the time of rows appended after a row of time last: now,
// but never earlier than last.
func (l *Log) rowTime(last int64) int64 {
	return max(l.cfg.Now().UTC().UnixNano(), last)
}

// buildReq fills recs with r's events as rows seq, seq+1, … after prev
// and returns the last row's hash.
func (l *Log) buildReq(seq uint64, prev Hash, now int64, r *request, recs []Record) (Hash, error) {
	var aad [40]byte
	for j := range r.events {
		e := &r.events[j]
		rec := &recs[j]
		*rec = Record{Seq: seq, Time: now, Type: e.Type, Actor: e.Actor, CorrelationID: e.CorrelationID, PrevHash: prev}
		rec.Hash = LeafHash(rec, r.payloads[j])
		rec.Payload = r.payloads[j]
		if l.cfg.Ring != nil {
			sealed, err := l.cfg.Ring.Seal(nil, r.payloads[j], sealAAD(aad[:0], seq, rec.Hash))
			if err != nil {
				return Hash{}, err
			}
			kid, err := keyring.KeyID(sealed)
			if err != nil {
				return Hash{}, err
			}
			rec.Payload, rec.KeyID = sealed, kid
		}
		prev = rec.Hash
		seq++
	}
	return prev, nil
}

// Head returns the durable size and last leaf hash.
func (l *Log) Head() Head {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.head
}

// Root returns the Merkle root of the first size rows.
func (l *Log) Root(size uint64) (Hash, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if size > l.tree.size {
		return Hash{}, fmt.Errorf("auditlog: size %d is past the log's %d", size, l.tree.size)
	}
	return l.tree.rootAt(size), nil
}

// InclusionProof proves row seq is in the tree of the given size.
func (l *Log) InclusionProof(seq, size uint64) ([][]byte, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.tree.inclusion(seq, size)
}

// ConsistencyProof proves the tree of size1 is a prefix of the tree of
// size2.
func (l *Log) ConsistencyProof(size1, size2 uint64) ([][]byte, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.tree.consistency(size1, size2)
}

// LatestCheckpoint returns the newest checkpoint issued (zero before the
// first).
func (l *Log) LatestCheckpoint() SignedCheckpoint {
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	return l.lastCP
}

// Checkpoint signs a checkpoint over every durable row, stores it and
// publishes it to the witness. When nothing was appended since the last
// checkpoint it returns that one (publishing it again if the witness
// missed it). When the store already holds a larger checkpoint (another
// process appends to the same store and this log has not read its latest
// rows yet), nothing is stored and it returns the log's latest checkpoint
// without an error: a replica never stores a checkpoint older than the
// store's. A store holding a checkpoint of the same size with another
// root is a fork: that is an error wrapping [ErrFork].
func (l *Log) Checkpoint(ctx context.Context) (SignedCheckpoint, error) {
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	l.mu.RLock()
	size := l.head.Size
	root := l.tree.rootAt(size)
	l.mu.RUnlock()
	cp := l.lastCP
	if cp.Note == nil || size != cp.Size {
		c := Checkpoint{Origin: l.cfg.Origin, Size: size, Root: root}
		signers, err := l.signers()
		if err != nil {
			return SignedCheckpoint{}, err
		}
		signed, err := SignCheckpoint(c, signers...)
		if err != nil {
			return SignedCheckpoint{}, err
		}
		switch err := l.cfg.Store.AddCheckpoint(ctx, signed); {
		case errors.Is(err, ErrStaleCheckpoint):
			// Another writer of the store checkpointed a larger tree: this
			// log's view is behind, and the store keeps checkpoints in size
			// order. Nothing new to store or publish; the log's next
			// checkpoint, once its appends have caught up with the store's
			// rows, covers it. Unless the larger one is not a checkpoint
			// this log could have signed: then none can follow it.
			if err := l.checkNewest(ctx); err != nil {
				return SignedCheckpoint{}, err
			}
			l.cpSkipped = size
			l.lastCPAt = l.cfg.Now()
		case err != nil:
			return SignedCheckpoint{}, fmt.Errorf("auditlog: store checkpoint: %w", err)
		default:
			cp = SignedCheckpoint{Checkpoint: c, Note: signed}
			l.lastCP = cp
			l.lastCPAt = l.cfg.Now()
			l.witnessStale = l.cfg.Witness != nil
		}
	}
	if l.witnessStale {
		if err := l.publish(ctx, cp); err != nil {
			return cp, err
		}
		l.witnessStale = false
	}
	return cp, nil
}

// checkNewest checks the store's newest checkpoint, which is larger than
// the log's view: it must carry a signature of the log's keys (another
// replica's) and cover rows the store holds.
func (l *Log) checkNewest(ctx context.Context) error {
	lc, ok := l.cfg.Store.(LatestCheckpointer)
	if !ok {
		return nil
	}
	signed, err := lc.LatestCheckpoint(ctx)
	if err != nil {
		return fmt.Errorf("auditlog: store checkpoint: %w", err)
	}
	c, ok := l.authentic(signed)
	if !ok {
		return fmt.Errorf("%w: the store's newest checkpoint is not signed by this log's keys, and the store orders every later one after it", ErrCheckpoint)
	}
	head, err := l.cfg.Store.Head(ctx)
	if err != nil {
		return fmt.Errorf("auditlog: store checkpoint: %w", err)
	}
	if c.Size > head.Size {
		return fmt.Errorf("%w: the store's newest checkpoint covers %d rows, the store holds %d", ErrTampered, c.Size, head.Size)
	}
	return nil
}

// witnessSize returns the size of the witness's latest checkpoint and
// refuses a witness that is ahead of the log.
func (l *Log) witnessSize(ctx context.Context) (uint64, error) {
	signed, err := l.cfg.Witness.Latest(ctx)
	if err != nil {
		return 0, fmt.Errorf("auditlog: witness: %w", err)
	}
	if signed == nil {
		return 0, nil
	}
	c, err := parseUnverified(signed)
	if err != nil {
		return 0, fmt.Errorf("auditlog: witness: %w", err)
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if c.Size > l.tree.size {
		return 0, fmt.Errorf("%w: witness holds a checkpoint of size %d, the store %d rows", ErrRollback, c.Size, l.tree.size)
	}
	if l.tree.rootAt(c.Size) != c.Root {
		return 0, fmt.Errorf("%w: stored rows do not match the witness's checkpoint at size %d", ErrFork, c.Size)
	}
	return c.Size, nil
}

// checkWitness refuses to start when the witness holds a checkpoint the
// store does not account for: rows it covers are missing (the chain is
// shorter than its last witnessed checkpoint), its root differs (a
// rewritten history), or the store lost the checkpoint itself. The log
// stores every checkpoint before it publishes it, so a store behind its
// witness was rolled back or edited.
func (l *Log) checkWitness(ctx context.Context) error {
	ws, err := l.witnessSize(ctx)
	if err != nil || ws <= l.lastCP.Size {
		return err
	}
	signed, err := l.cfg.Witness.Latest(ctx)
	if err != nil {
		return fmt.Errorf("auditlog: witness: %w", err)
	}
	held, err := l.storeHolds(ctx, signed)
	if err != nil || held {
		return err
	}
	return fmt.Errorf("%w: the witness holds a checkpoint of size %d that the store lacks (its newest checkpoint by this log covers %d rows): a checkpoint was removed from the store",
		ErrRollback, ws, l.lastCP.Size)
}

func (l *Log) publish(ctx context.Context, cp SignedCheckpoint) error {
	ws, err := l.witnessSize(ctx)
	if err != nil {
		return err
	}
	var p [][]byte
	if ws > 0 {
		l.mu.RLock()
		p, err = l.tree.consistency(ws, cp.Size)
		l.mu.RUnlock()
		if err != nil {
			return err
		}
	}
	if err := l.cfg.Witness.Publish(ctx, cp.Note, p); err != nil {
		return fmt.Errorf("auditlog: witness: %w", err)
	}
	return nil
}

// Close commits every event already accepted, issues a final checkpoint
// (returning its error, if any) and stops. Appends after Close return
// ErrClosed. It does not close the store.
func (l *Log) Close() error {
	l.close.Lock()
	if l.shut {
		l.close.Unlock()
		return nil
	}
	l.shut = true
	close(l.reqs)
	l.close.Unlock()
	<-l.done
	return l.closeErr
}

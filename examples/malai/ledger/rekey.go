package ledger

import (
	"context"
	"log/slog"
	"time"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/keyring"
)

// Background re-encryption. A data-key rotation ("malai rotate-keys" or
// -rotate-keys-every) reaches the ledger through the key-file watch,
// which makes the process's ring seal under the new key once it is
// active. The rekeyer sees the ring's sealing key change and re-seals the
// audit rows sealed under older keys (auditlog.Reencrypt: batches of
// rows, each written by one Store.Rekey; the leaf hashes cover the
// plaintext, so no hash, root or checkpoint changes). It runs once at the
// start as well, so a pass cut short by a crash resumes: rows already
// under the sealing key are skipped.
//
// With PostgreSQL the ledger's role may not rewrite a row: the rekeyer
// counts the rows left under older keys and says once per sealing key
// that "malai audit-rekey" must run as the migrator.

// rekeyPoll is how often the rekeyer looks at the ring's sealing key.
const rekeyPoll = 500 * time.Millisecond

// rekeyer re-encrypts the chain in st after the ring's sealing key
// changes. Run it in one goroutine.
type rekeyer struct {
	st   auditlog.Store
	ring *keyring.Ring
	log  *slog.Logger
	// shared: the chain is in PostgreSQL, where the ledger's role may not
	// rewrite rows.
	shared bool
	poll   time.Duration
	// afterBatch, when set (tests), runs after each batch the store
	// rewrote, with the batch's size.
	afterBatch func(rows int)
}

// startRekeyer runs r until the returned stop function is called.
func startRekeyer(r *rekeyer) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.run(ctx)
	}()
	return func() error { cancel(); <-done; return nil }
}

// run makes a pass at the start and each time the sealing key changes,
// until ctx ends. A failed pass is retried with a doubling pause (up to a
// minute).
func (r *rekeyer) run(ctx context.Context) {
	poll := r.poll
	if poll <= 0 {
		poll = rekeyPoll
	}
	var done string // the sealing key of the last complete pass
	retry := poll
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := r.ring.Current()
		if cur == done {
			t.Reset(poll)
			continue
		}
		if err := r.pass(ctx, cur); err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Error("audit: re-encryption under the current data key failed; retrying", "key_id", cur, "retry_in", retry.String(), "error", err.Error())
			t.Reset(retry)
			retry = min(2*retry, time.Minute)
			continue
		}
		done, retry = cur, poll
		t.Reset(poll)
	}
}

// pass re-encrypts (file store) or counts (PostgreSQL) the rows sealed
// under keys other than cur.
func (r *rekeyer) pass(ctx context.Context, cur string) error {
	start := time.Now()
	if r.shared {
		by, err := auditlog.SealedBy(ctx, r.st)
		if err != nil {
			return err
		}
		var older uint64
		for id, n := range by {
			if id != cur {
				older += n
			}
		}
		if older > 0 {
			r.log.Warn("audit: rows sealed under older data keys; the ledger's role may not rewrite them: run \"malai audit-rekey\" as the migrator to re-encrypt them",
				"rows", older, "key_id", cur)
		}
		return nil
	}
	n, err := auditlog.Reencrypt(ctx, &pacedStore{Store: r.st, after: r.afterBatch}, r.ring)
	if n > 0 || err != nil {
		attrs := []any{"rows", n, "duration", time.Since(start).String(), "key_id", cur}
		if err != nil {
			// The rows counted are durable under the new key; the rest
			// are done by the retry.
			r.log.Warn("audit: re-encryption cut short", append(attrs, "error", err.Error())...)
		} else {
			r.log.Info("audit: rows sealed under older data keys re-encrypted", attrs...)
		}
	}
	return err
}

// pacedStore leaves the store to appends between two batches of a
// re-encryption for as long as the last batch held it (a file store
// rewrites its file under its lock; appends wait meanwhile): at most half
// of the time goes to re-encryption, and appends keep flowing.
type pacedStore struct {
	auditlog.Store
	after func(rows int)
}

func (p *pacedStore) Rekey(ctx context.Context, rows []auditlog.Rekeyed) error {
	start := time.Now()
	err := p.Store.Rekey(ctx, rows)
	if p.after != nil {
		p.after(len(rows))
	}
	t := time.NewTimer(time.Since(start))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return err
}

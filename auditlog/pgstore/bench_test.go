package pgstore_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/pgstore"
	"github.com/malai-sec/malai/auditlog/pgstore/internal/pgtest"
)

const writers = 16

var transfer = []byte(`{"from":"acc-1","to":"acc-2","amount":1250,"currency":"EUR"}`)

func benchEnv(b *testing.B) (*pgstore.Store, *pgtest.Postgres) {
	b.Helper()
	ctx := context.Background()
	pg := pgtest.NewPostgres(b)
	conn, err := pg.Pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	// The benchmark measures the write path; roles are the test role.
	if err := pgstore.Migrate(ctx, conn.Conn(), pgstore.MigrateConfig{Schema: pg.Schema, Owner: "postgres", AppRole: "postgres"}); err != nil {
		b.Fatal(err)
	}
	conn.Release()
	s, err := pgstore.New(ctx, pgstore.Config{DSN: pg.URL, Schema: pg.Schema, MaxConns: writers + 2})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s, pg
}

func parallel(b *testing.B, n int, per int, fn func() error) {
	b.ReportAllocs()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	b.ResetTimer()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(int64(per))-int64(per) < int64(b.N) {
				if err := fn(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func newLog(b *testing.B, s auditlog.Store) *auditlog.Log {
	skey, _, _ := note.GenerateKey(nil, "bench")
	signer, _ := note.NewSigner(skey)
	l, err := auditlog.New(auditlog.Config{Store: s, Origin: "bench", Signers: []note.Signer{signer}, Plaintext: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	return l
}

// BenchmarkLogAppend16: 16 writers calling Append; the Log groups them
// into one transaction (advisory lock + COPY) per batch.
func BenchmarkLogAppend16(b *testing.B) {
	s, _ := benchEnv(b)
	cs := &countingStore{Store: s}
	l := newLog(b, cs)
	ctx := context.Background()
	var i atomic.Int64
	parallel(b, writers, 1, func() error {
		n := i.Add(1)
		_, err := l.Append(ctx, auditlog.Event{Type: "ledger.transfer", Actor: "user-" + strconv.FormatInt(n%100, 10),
			CorrelationID: "req-" + strconv.FormatInt(n, 10), Payload: transfer})
		return err
	})
	calls := float64(cs.calls.Load())
	b.ReportMetric(float64(b.N)/calls, "events/commit")
	b.ReportMetric(float64(cs.ns.Load())/calls/1e3, "µs/commit")
}

// countingStore counts group commits (one store call, one PostgreSQL
// commit each) and the time they take, so a run reports its own
// ceiling: events per commit divided by the time per commit.
type countingStore struct {
	auditlog.Store
	calls atomic.Int64
	ns    atomic.Int64
}

func (c *countingStore) Append(ctx context.Context, recs []auditlog.Record) error {
	c.calls.Add(1)
	start := time.Now()
	err := c.Store.Append(ctx, recs)
	c.ns.Add(int64(time.Since(start)))
	return err
}

// BenchmarkLogAppendBatch16: 16 writers each appending batches of 100
// events through AppendBatch.
func BenchmarkLogAppendBatch16(b *testing.B) {
	s, _ := benchEnv(b)
	l := newLog(b, s)
	ctx := context.Background()
	batch := make([]auditlog.Event, 100)
	for i := range batch {
		batch[i] = auditlog.Event{Type: "ledger.transfer", Actor: "user-" + strconv.Itoa(i), CorrelationID: "req", Payload: transfer}
	}
	parallel(b, writers, len(batch), func() error {
		_, err := l.AppendBatch(ctx, batch)
		return err
	})
}

// BenchmarkTxPerEvent16 is the baseline: 16 writers, each event its own
// transaction under the advisory lock (lock, read head, hash, INSERT,
// commit).
func BenchmarkTxPerEvent16(b *testing.B) {
	_, pg := benchEnv(b)
	ctx := context.Background()
	pool := pg.Pool
	var i atomic.Int64
	parallel(b, writers, 1, func() error {
		n := i.Add(1)
		return txPerEvent(ctx, pool, pg.Schema, n)
	})
}

func txPerEvent(ctx context.Context, pool *pgxpool.Pool, schema string, n int64) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	t := pgx.Identifier{schema, "audit_log"}.Sanitize()
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(42)"); err != nil {
		return err
	}
	var seq int64 = -1
	var prev []byte
	err = tx.QueryRow(ctx, "SELECT seq, hash FROM "+t+" ORDER BY seq DESC LIMIT 1").Scan(&seq, &prev)
	if err != nil && err != pgx.ErrNoRows {
		return err
	}
	r := auditlog.Record{Seq: uint64(seq + 1), Time: n, Type: "ledger.transfer", Actor: "user", CorrelationID: fmt.Sprint(n)}
	copy(r.PrevHash[:], prev)
	r.Hash = auditlog.LeafHash(&r, transfer)
	if _, err := tx.Exec(ctx, "INSERT INTO "+t+" VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
		int64(r.Seq), r.Time, r.Type, r.Actor, r.CorrelationID, transfer, "", r.PrevHash[:], r.Hash[:]); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

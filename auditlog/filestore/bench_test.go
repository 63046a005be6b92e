package filestore_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
)

var producerCounts = []int{1, 16, 64}

// run spreads b.N appends over p goroutines and reports events/s.
func run(b *testing.B, p int, appendOne func(i int) error) {
	b.ReportAllocs()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, p)
	b.ResetTimer()
	for range p {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				if err := appendOne(int(i)); err != nil {
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

var transfer = []byte(`{"from":"acc-1","to":"acc-2","amount":1250,"currency":"EUR"}`)

// BenchmarkLogAppend: the Log with group commit on the file store, sealed
// payloads, p producers.
func BenchmarkLogAppend(b *testing.B) {
	for _, p := range producerCounts {
		b.Run(fmt.Sprintf("producers=%d", p), func(b *testing.B) {
			st, err := filestore.Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			skey, _, _ := note.GenerateKey(nil, "bench")
			signer, _ := note.NewSigner(skey)
			cs := &countingStore{Store: st}
			l, err := auditlog.New(auditlog.Config{Store: cs, Origin: "bench", Signers: []note.Signer{signer}, Plaintext: true})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			ctx := context.Background()
			run(b, p, func(i int) error {
				_, err := l.Append(ctx, auditlog.Event{Type: "ledger.transfer", Actor: "user-" + strconv.Itoa(i%100),
					CorrelationID: "req-" + strconv.Itoa(i), Payload: transfer})
				return err
			})
			cs.report(b, "fsync")
		})
	}
}

// countingStore counts batches (one write and fsync each) and the time
// they spend in the store, so a run reports its own ceiling: events per
// call divided by the time per call.
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

// report adds events/<unit> and µs/<unit> (the mean store call).
func (c *countingStore) report(b *testing.B, unit string) {
	calls := float64(c.calls.Load())
	b.ReportMetric(float64(b.N)/calls, "events/"+unit)
	b.ReportMetric(float64(c.ns.Load())/calls/1e3, "µs/"+unit)
}

// BenchmarkFsyncPerAppend is the floor: each append hashes its event
// onto the chain, writes it and fsyncs, under one lock (what a log
// without group commit does).
func BenchmarkFsyncPerAppend(b *testing.B) {
	for _, p := range producerCounts {
		b.Run(fmt.Sprintf("producers=%d", p), func(b *testing.B) {
			f, err := os.OpenFile(filepath.Join(b.TempDir(), "log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			var mu sync.Mutex
			var prev [32]byte
			run(b, p, func(i int) error {
				mu.Lock()
				defer mu.Unlock()
				line := append(prev[:], transfer...)
				prev = sha256.Sum256(line)
				if _, err := f.Write(line); err != nil {
					return err
				}
				return f.Sync()
			})
		})
	}
}

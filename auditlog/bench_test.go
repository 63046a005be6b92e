package auditlog_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/memstore"
	"github.com/malai-sec/malai/auditlog/storetest"
)

const benchRows = 100_000

func benchExport(b *testing.B) (*auditlog.Export, []note.Verifier) {
	b.Helper()
	k := newKeys(b, "bench")
	st := memstore.New()
	l, err := auditlog.New(auditlog.Config{Store: st, Origin: origin, Signers: []note.Signer{k.signer}, Plaintext: true, MaxBatch: 1000})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	batch := make([]auditlog.Event, 1000)
	for i := 0; i < benchRows; i += len(batch) {
		for j := range batch {
			batch[j] = storetest.Transfer("user-"+strconv.Itoa(j%50), "acc-"+strconv.Itoa(j%7), "acc-"+strconv.Itoa(j%11), int64(i+j))
		}
		if _, err := l.AppendBatch(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	exp, err := auditlog.LoadExport(ctx, st, origin, nil)
	if err != nil {
		b.Fatal(err)
	}
	return exp, []note.Verifier{k.verifier}
}

func report(b *testing.B, start time.Duration) {
	rows := float64(benchRows) * float64(b.N)
	b.ReportMetric(rows/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(rows/(cpuTime()-start).Seconds(), "rows/cpu-s")
}

// BenchmarkVerifyReplay: the offline verifier over 100k rows (leaf hashes,
// chain, Merkle root, checkpoint signature) replaying every event into a
// fold that tallies events per type and payload bytes.
func BenchmarkVerifyReplay(b *testing.B) {
	exp, vs := benchExport(b)
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime()
	for range b.N {
		counts := map[string]int{}
		bytes := 0
		fold := func(e auditlog.Event) error { counts[e.Type]++; bytes += len(e.Payload); return nil }
		rep := auditlog.Verify(context.Background(), exp, auditlog.VerifyConfig{Origin: origin, Verifiers: vs, Fold: fold})
		if len(rep.Findings) != 0 || counts["ledger.transfer"] != benchRows {
			b.Fatal(rep.Findings)
		}
	}
	report(b, start)
}

// BenchmarkVerifyReplayJSONFold: as BenchmarkVerifyReplay with the ledger's
// fold (encoding/json decode of each transfer into balances): the fold's
// own cost dominates.
func BenchmarkVerifyReplayJSONFold(b *testing.B) {
	exp, vs := benchExport(b)
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime()
	for range b.N {
		bal := storetest.Balances{}
		rep := auditlog.Verify(context.Background(), exp, auditlog.VerifyConfig{Origin: origin, Verifiers: vs, Fold: bal.Fold})
		if len(rep.Findings) != 0 {
			b.Fatal(rep.Findings)
		}
	}
	report(b, start)
}

// BenchmarkVerify: the verifier without a fold.
func BenchmarkVerify(b *testing.B) {
	exp, vs := benchExport(b)
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime()
	for range b.N {
		rep := auditlog.Verify(context.Background(), exp, auditlog.VerifyConfig{Origin: origin, Verifiers: vs})
		if len(rep.Findings) != 0 {
			b.Fatal(rep.Findings)
		}
	}
	report(b, start)
}

// BenchmarkReplay: Replay over the memory store (chain + leaf hashes) with
// a fold that only counts.
func BenchmarkReplay(b *testing.B) {
	exp, _ := benchExport(b)
	st := memstore.New()
	if err := st.Append(context.Background(), exp.Records); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime()
	for range b.N {
		n := 0
		if _, err := auditlog.Replay(context.Background(), st, nil, func(auditlog.Event) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
	}
	report(b, start)
}

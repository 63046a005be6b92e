package auditlog_test

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/memstore"
)

func FuzzParseCheckpoint(f *testing.F) {
	good := auditlog.Checkpoint{Origin: origin, Size: 12, Root: auditlog.Hash{1, 2, 3}}.Marshal()
	for _, s := range []string{
		string(good),
		string(good) + "extension line\n",
		origin + "\n0\n" + strings.Repeat("A", 43) + "=\n",
		origin + "\n012\nAAAA\n",
		origin + "\n-1\nAAAA\n",
		origin + "\n18446744073709551616\nAAAA\n",
		"\n1\nAAAA\n",
		origin + "\n1\n",
		string(good[:len(good)-1]),
		string(good) + "\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		c, err := auditlog.ParseCheckpoint(text)
		if err != nil {
			return
		}
		m := c.Marshal()
		if !bytes.HasPrefix(text, m) {
			t.Fatalf("parsed %+v does not re-marshal to a prefix of %q", c, text)
		}
		if _, err := auditlog.ParseCheckpoint(m); err != nil {
			t.Fatalf("re-marshalled checkpoint does not parse: %v", err)
		}
	})
}

var (
	fuzzTreeOnce sync.Once
	fuzzLeaves   []auditlog.Hash
	fuzzRoots    []auditlog.Hash // fuzzRoots[n] is the root of the first n leaves
	fuzzLog      *auditlog.Log
)

const fuzzTreeSize = 23

func fuzzTree(t testing.TB) {
	fuzzTreeOnce.Do(func() {
		skey, _, _ := note.GenerateKey(nil, "fuzz")
		s, _ := note.NewSigner(skey)
		l, err := auditlog.New(auditlog.Config{Store: memstore.New(), Origin: origin, Signers: []note.Signer{s}, Plaintext: true})
		if err != nil {
			panic(err)
		}
		for i := range fuzzTreeSize {
			r, err := l.Append(context.Background(), auditlog.Event{Type: "t", Payload: []byte(strconv.Itoa(i))})
			if err != nil {
				panic(err)
			}
			fuzzLeaves = append(fuzzLeaves, r.Hash)
		}
		for n := range fuzzTreeSize + 1 {
			root, _ := l.Root(uint64(n))
			fuzzRoots = append(fuzzRoots, root)
		}
		fuzzLog = l
	})
}

func splitProof(b []byte) [][]byte {
	var p [][]byte
	for len(b) >= 32 {
		p = append(p, b[:32])
		b = b[32:]
	}
	if len(b) > 0 {
		p = append(p, b)
	}
	return p
}

// FuzzVerifyInclusion: an adversarial inclusion proof must never prove a
// leaf that is not at that index of the signed tree.
func FuzzVerifyInclusion(f *testing.F) {
	fuzzTree(f)
	for _, c := range [][2]uint64{{0, 1}, {3, 7}, {6, 7}, {0, 23}, {22, 23}, {8, 16}} {
		p, _ := fuzzLog.InclusionProof(c[0], c[1])
		f.Add(c[0], c[1], fuzzLeaves[c[0]][:], bytes.Join(p, nil))
		f.Add(c[0]+1, c[1], fuzzLeaves[c[0]][:], bytes.Join(p, nil))
	}
	f.Fuzz(func(t *testing.T, index, size uint64, leaf, proof []byte) {
		size %= fuzzTreeSize + 1
		var h auditlog.Hash
		copy(h[:], leaf)
		err := auditlog.VerifyInclusion(index, size, h, splitProof(proof), fuzzRoots[size])
		if err == nil && (index >= size || fuzzLeaves[index] != h) {
			t.Fatalf("forged inclusion proof verified: index %d size %d", index, size)
		}
	})
}

// FuzzVerifyConsistency: an adversarial consistency proof must never make
// a wrong earlier root consistent with the signed tree.
func FuzzVerifyConsistency(f *testing.F) {
	fuzzTree(f)
	for _, c := range [][2]uint64{{1, 2}, {3, 7}, {4, 8}, {7, 23}, {16, 23}, {0, 5}, {5, 5}} {
		p, _ := fuzzLog.ConsistencyProof(c[0], c[1])
		f.Add(c[0], c[1], fuzzRoots[c[0]][:], bytes.Join(p, nil))
		f.Add(c[0], c[1], fuzzRoots[c[1]][:], bytes.Join(p, nil))
	}
	f.Fuzz(func(t *testing.T, size1, size2 uint64, root1, proof []byte) {
		size2 %= fuzzTreeSize + 1
		var r1 auditlog.Hash
		copy(r1[:], root1)
		err := auditlog.VerifyConsistency(size1, size2, splitProof(proof), r1, fuzzRoots[size2])
		if err != nil {
			return
		}
		if size1 > size2 || (size1 > 0 && fuzzRoots[size1] != r1) {
			t.Fatalf("forged consistency proof verified: %d→%d", size1, size2)
		}
	})
}

// FuzzReadExport: the export decoder never panics, and what it accepts
// round-trips.
func FuzzReadExport(f *testing.F) {
	row := `{"row":{"seq":0,"time":1,"type":"t","payload":{"a":1},"prev_hash":"` + strings.Repeat("0", 64) + `","hash":"` + strings.Repeat("ab", 32) + `"}}`
	hdr := `{"format":"` + auditlog.ExportFormat + `","origin":"o"}`
	for _, s := range []string{
		hdr + "\n" + row + "\n" + `{"checkpoint":"o\n1\nAAAA\n\n— k x\n"}` + "\n",
		hdr + "\n" + strings.Replace(row, `"payload":{"a":1}`, `"sealed":"AQJrMQ==","key_id":"k1"`, 1) + "\n",
		hdr + "\n" + strings.Replace(row, `"payload":{"a":1}`, `"payload":{"a":1},"key_id":"k1"`, 1) + "\n",
		hdr + "\n{}\n",
		`{"format":"other"}`,
		hdr + "\n" + row + "\n" + row,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := auditlog.ReadExport(bytes.NewReader(b))
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if _, err := e.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		back, err := auditlog.ReadExport(&buf)
		if err != nil {
			t.Fatalf("re-encoded export does not decode: %v", err)
		}
		if len(back.Records) != len(e.Records) || len(back.Checkpoints) != len(e.Checkpoints) {
			t.Fatal("export does not round-trip")
		}
		for i := range e.Records {
			if auditlog.LeafHash(&e.Records[i], e.Records[i].Payload) != auditlog.LeafHash(&back.Records[i], back.Records[i].Payload) {
				t.Fatalf("row %d changed in the round trip", i)
			}
		}
		// Verify must not panic on anything the decoder accepts.
		auditlog.Verify(context.Background(), e, auditlog.VerifyConfig{Origin: "o"})
	})
}

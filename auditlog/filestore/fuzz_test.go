package filestore

import (
	"bytes"
	"testing"

	"github.com/malai-sec/malai/auditlog"
)

// FuzzDecodeFrame feeds arbitrary bytes to the frame and row decoders:
// they must never panic, and a frame that decodes must re-encode to the
// same bytes.
func FuzzDecodeFrame(f *testing.F) {
	r := auditlog.Record{Seq: 7, Time: 42, Type: "ledger.transfer", Actor: "alice", CorrelationID: "req-1",
		KeyID: "k1", Payload: []byte(`{"amount":5}`)}
	r.Hash = auditlog.LeafHash(&r, r.Payload)
	row := appendRow(nil, &r)
	f.Add(row)
	f.Add(appendCheckpoint(nil, []byte("origin\n1\nAAAA\n\n— k sig\n")))
	f.Add(row[:len(row)-1])
	f.Add([]byte{kindRow, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		kind, body, n, err := decodeFrame(b)
		if err != nil {
			return
		}
		if n > len(b) {
			t.Fatalf("frame length %d past input %d", n, len(b))
		}
		switch kind {
		case kindCheckpoint:
			if !bytes.Equal(appendCheckpoint(nil, body), b[:n]) {
				t.Fatal("checkpoint frame does not round-trip")
			}
		case kindRow:
			rec, err := decodeRow(body)
			if err != nil {
				return
			}
			if !bytes.Equal(appendRow(nil, &rec), b[:n]) {
				t.Fatal("row frame does not round-trip")
			}
		}
	})
}

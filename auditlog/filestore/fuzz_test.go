package filestore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
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

// FuzzOpen writes arbitrary bytes as a log file. OpenReadOnly must read
// it without panicking and without writing; Open must either accept it
// (cutting at most a torn tail) or refuse it as corrupt; and when both
// accept it, they must read the same rows.
func FuzzOpen(f *testing.F) {
	rows := make([]auditlog.Record, 3)
	var prev auditlog.Hash
	for i := range rows {
		rows[i] = auditlog.Record{Seq: uint64(i), Time: int64(i), Type: "t", Payload: []byte(`{"n":1}`), PrevHash: prev}
		rows[i].Hash = auditlog.LeafHash(&rows[i], rows[i].Payload)
		prev = rows[i].Hash
	}
	good := EncodeForTest(rows, [][]byte{[]byte("cp")})
	f.Add(good)
	f.Add(good[:len(good)-3])
	flipped := bytes.Clone(good)
	flipped[20] ^= 1
	f.Add(flipped)
	f.Add(append(bytes.Clone(good), 0, 0, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, LogFile)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		ro, err := OpenReadOnly(dir)
		if err != nil {
			t.Fatalf("OpenReadOnly: %v", err)
		}
		var roRows [][]byte
		if err := ro.Scan(context.Background(), 0, func(r auditlog.Record) error {
			roRows = append(roRows, appendRow(nil, &r))
			return nil
		}); err != nil {
			t.Fatalf("read-only Scan: %v", err)
		}
		corrupt := false
		for _, d := range ro.Damage() {
			corrupt = corrupt || !d.Torn
		}
		ro.Close()
		if after, _ := os.ReadFile(path); !bytes.Equal(after, b) {
			t.Fatal("OpenReadOnly changed the file")
		}
		rw, err := Open(dir)
		if corrupt {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open of a file with damage = %v, want ErrCorrupt", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("Open of a file the reader found sound = %v", err)
		}
		defer rw.Close()
		i := 0
		if err := rw.Scan(context.Background(), 0, func(r auditlog.Record) error {
			if i >= len(roRows) || !bytes.Equal(appendRow(nil, &r), roRows[i]) {
				return errors.New("rows differ")
			}
			i++
			return nil
		}); err != nil || i != len(roRows) {
			t.Fatalf("Open and OpenReadOnly read different rows: %v (%d of %d)", err, i, len(roRows))
		}
	})
}

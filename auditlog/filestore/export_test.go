package filestore

import (
	"github.com/malai-sec/malai/auditlog"
)

// EncodeForTest encodes rows and checkpoints as a log file.
func EncodeForTest(rows []auditlog.Record, cps [][]byte) []byte {
	var b []byte
	for i := range rows {
		b = appendRow(b, &rows[i])
	}
	for _, c := range cps {
		b = appendCheckpoint(b, c)
	}
	return b
}

// FramesForTest returns the offset and length of every frame in a log
// file, with its kind ('R' or 'C').
func FramesForTest(b []byte) (offs []int64, lens []int, kinds []byte) {
	var off int64
	for len(b) > 0 {
		kind, _, n, err := decodeFrame(b)
		if err != nil {
			return
		}
		offs, lens, kinds = append(offs, off), append(lens, n), append(kinds, kind)
		b, off = b[n:], off+int64(n)
	}
	return
}

// CheckpointFrameForTest encodes one checkpoint frame.
func CheckpointFrameForTest(body []byte) []byte { return appendCheckpoint(nil, body) }

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

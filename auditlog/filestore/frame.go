package filestore

import (
	"encoding/binary"
	"errors"
	"hash/crc32"

	"github.com/malai-sec/malai/auditlog"
)

// On-disk framing. A file is a sequence of frames:
//
//	kind(1) | len(body)(4, big-endian) | body | crc32c(kind|len|body)(4)
//
// kind 'R' is a row, kind 'C' a signed checkpoint. A row body is
//
//	seq(8) | time(8) | prev_hash(32) | hash(32) |
//	len(type)(2) type | len(actor)(2) actor | len(correlation)(2) correlation |
//	len(key_id)(1) key_id | len(payload)(4) payload
const (
	kindRow        = 'R'
	kindCheckpoint = 'C'
	frameHeader    = 5
	frameTrailer   = 4
	// maxBody bounds a frame body: the largest row (sealed payload at the
	// limit) or checkpoint.
	maxBody = 8 + 8 + 32 + 32 + 2 + auditlog.MaxTypeLen + 2 + auditlog.MaxActorLen + 2 +
		auditlog.MaxCorrelationLen + 1 + 255 + 4 + auditlog.MaxPayloadLen + 512
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	errShort   = errors.New("filestore: incomplete frame")
	errCorrupt = errors.New("filestore: corrupt frame")
)

func appendFrame(dst []byte, kind byte, body func([]byte) []byte) []byte {
	start := len(dst)
	dst = append(dst, kind, 0, 0, 0, 0)
	dst = body(dst)
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-frameHeader))
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

func appendRow(dst []byte, r *auditlog.Record) []byte {
	return appendFrame(dst, kindRow, func(b []byte) []byte {
		b = binary.BigEndian.AppendUint64(b, r.Seq)
		b = binary.BigEndian.AppendUint64(b, uint64(r.Time))
		b = append(b, r.PrevHash[:]...)
		b = append(b, r.Hash[:]...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(r.Type)))
		b = append(b, r.Type...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(r.Actor)))
		b = append(b, r.Actor...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(r.CorrelationID)))
		b = append(b, r.CorrelationID...)
		b = append(b, byte(len(r.KeyID)))
		b = append(b, r.KeyID...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(r.Payload)))
		return append(b, r.Payload...)
	})
}

func appendCheckpoint(dst, signed []byte) []byte {
	return appendFrame(dst, kindCheckpoint, func(b []byte) []byte { return append(b, signed...) })
}

// decodeFrame reads one frame from b. It returns the kind, the body (a
// sub-slice of b) and the frame's total length; errShort when b ends
// inside the frame, errCorrupt when the frame is invalid.
func decodeFrame(b []byte) (kind byte, body []byte, n int, err error) {
	if len(b) < frameHeader {
		return 0, nil, 0, errShort
	}
	kind = b[0]
	if kind != kindRow && kind != kindCheckpoint {
		return 0, nil, 0, errCorrupt
	}
	size := binary.BigEndian.Uint32(b[1:5])
	if size > maxBody {
		return 0, nil, 0, errCorrupt
	}
	n = frameHeader + int(size) + frameTrailer
	if len(b) < n {
		return 0, nil, 0, errShort
	}
	if crc32.Checksum(b[:n-frameTrailer], castagnoli) != binary.BigEndian.Uint32(b[n-frameTrailer:n]) {
		return 0, nil, 0, errCorrupt
	}
	return kind, b[frameHeader : n-frameTrailer], n, nil
}

// decodeRow decodes a row body. The record's strings are copied; Payload
// aliases body.
func decodeRow(body []byte) (auditlog.Record, error) {
	var r auditlog.Record
	if len(body) < 8+8+32+32 {
		return r, errCorrupt
	}
	r.Seq = binary.BigEndian.Uint64(body)
	r.Time = int64(binary.BigEndian.Uint64(body[8:]))
	copy(r.PrevHash[:], body[16:48])
	copy(r.Hash[:], body[48:80])
	b := body[80:]
	var ok bool
	if r.Type, b, ok = str16(b, auditlog.MaxTypeLen); !ok {
		return r, errCorrupt
	}
	if r.Actor, b, ok = str16(b, auditlog.MaxActorLen); !ok {
		return r, errCorrupt
	}
	if r.CorrelationID, b, ok = str16(b, auditlog.MaxCorrelationLen); !ok {
		return r, errCorrupt
	}
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return r, errCorrupt
	}
	r.KeyID, b = string(b[1:1+int(b[0])]), b[1+int(b[0]):]
	if len(b) < 4 {
		return r, errCorrupt
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(len(b)-4) != uint64(n) {
		return r, errCorrupt
	}
	r.Payload = b[4:]
	return r, nil
}

func str16(b []byte, limit int) (string, []byte, bool) {
	if len(b) < 2 {
		return "", nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	if n > limit || len(b) < 2+n {
		return "", nil, false
	}
	return string(b[2 : 2+n]), b[2+n:], true
}

package auditlog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/malai-sec/malai/keyring"
)

// ExportFormat names the export format in its header line.
const ExportFormat = "malai-auditlog-export/1"

// Export is a log's rows and stored checkpoints, the input of [Verify].
// Rows keep their stored hashes; payloads are plaintext when the export was
// made with a key ring, sealed otherwise.
type Export struct {
	Origin      string
	Records     []Record
	Checkpoints [][]byte
	// Damage lists stretches of the store's file that held no valid
	// frame (see [Damaged]); Verify reports each.
	Damage []Damage
}

// LoadExport reads every row and checkpoint of store. With ring set,
// sealed payloads are opened so the export verifies without keys (it then
// holds plaintext: handle it as the data it is); a payload that does not
// open is kept sealed and the verifier reports it.
func LoadExport(ctx context.Context, store Store, origin string, ring *keyring.Ring) (*Export, error) {
	e := &Export{Origin: origin}
	var aad [40]byte
	err := store.Scan(ctx, 0, func(r Record) error {
		r.Payload = bytes.Clone(r.Payload)
		if r.KeyID != "" && ring != nil {
			if p, _, err := ring.Open(nil, r.Payload, sealAAD(aad[:0], r.Seq, r.Hash)); err == nil {
				r.Payload, r.KeyID = p, ""
			}
		}
		e.Records = append(e.Records, r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = store.Checkpoints(ctx, func(s []byte) error {
		e.Checkpoints = append(e.Checkpoints, bytes.Clone(s))
		return nil
	})
	if err != nil {
		return nil, err
	}
	if d, ok := store.(Damaged); ok {
		e.Damage = append([]Damage(nil), d.Damage()...)
	}
	return e, nil
}

type exportHeader struct {
	Format string `json:"format"`
	Origin string `json:"origin"`
}

type exportLine struct {
	Row        *jsonRecord `json:"row,omitempty"`
	Checkpoint string      `json:"checkpoint,omitempty"`
	Damage     *jsonDamage `json:"damage,omitempty"`
}

type jsonDamage struct {
	Position int    `json:"position"`
	Offset   int64  `json:"offset"`
	Length   int64  `json:"length"`
	Torn     bool   `json:"torn,omitempty"`
	Detail   string `json:"detail,omitempty"`
}

// maxDamageDetail bounds a decoded damage line's text.
const maxDamageDetail = 1024

type jsonRecord struct {
	Seq           uint64          `json:"seq"`
	Time          int64           `json:"time"`
	Type          string          `json:"type"`
	Actor         string          `json:"actor,omitempty"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	Payload       json.RawMessage `json:"payload,omitempty"`
	Sealed        []byte          `json:"sealed,omitempty"`
	KeyID         string          `json:"key_id,omitempty"`
	PrevHash      Hash            `json:"prev_hash"`
	Hash          Hash            `json:"hash"`
}

func toJSON(r *Record) *jsonRecord {
	j := &jsonRecord{Seq: r.Seq, Time: r.Time, Type: r.Type, Actor: r.Actor, CorrelationID: r.CorrelationID,
		KeyID: r.KeyID, PrevHash: r.PrevHash, Hash: r.Hash}
	if r.KeyID != "" {
		j.Sealed = r.Payload
	} else if len(r.Payload) > 0 {
		j.Payload = r.Payload
	}
	return j
}

func fromJSON(j *jsonRecord) (Record, error) {
	r := Record{Seq: j.Seq, Time: j.Time, Type: j.Type, Actor: j.Actor, CorrelationID: j.CorrelationID,
		KeyID: j.KeyID, PrevHash: j.PrevHash, Hash: j.Hash}
	switch {
	case j.KeyID != "" && j.Payload != nil, j.KeyID == "" && j.Sealed != nil:
		return Record{}, fmt.Errorf("%w: row %d mixes sealed and plaintext payload", ErrFormat, j.Seq)
	case j.KeyID != "":
		r.Payload = j.Sealed
	default:
		r.Payload = []byte(j.Payload)
	}
	if len(r.Payload) > MaxPayloadLen+keyring.Overhead(255) || len(r.Type) > MaxTypeLen ||
		len(r.Actor) > MaxActorLen || len(r.CorrelationID) > MaxCorrelationLen {
		return Record{}, fmt.Errorf("%w: row %d exceeds the field limits", ErrFormat, j.Seq)
	}
	return r, nil
}

// WriteTo writes the export as a stream of JSON values: a header, one
// {"row":…} per row, one {"checkpoint":…} per checkpoint, one
// {"damage":…} per damaged stretch.
func (e *Export) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: bufio.NewWriter(w)}
	enc := json.NewEncoder(cw)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(exportHeader{Format: ExportFormat, Origin: e.Origin}); err != nil {
		return cw.n, err
	}
	for i := range e.Records {
		if err := enc.Encode(exportLine{Row: toJSON(&e.Records[i])}); err != nil {
			return cw.n, err
		}
	}
	for _, c := range e.Checkpoints {
		if err := enc.Encode(exportLine{Checkpoint: string(c)}); err != nil {
			return cw.n, err
		}
	}
	for _, d := range e.Damage {
		if err := enc.Encode(exportLine{Damage: &jsonDamage{Position: d.Position, Offset: d.Offset, Length: d.Length, Torn: d.Torn, Detail: d.Detail}}); err != nil {
			return cw.n, err
		}
	}
	return cw.n, cw.w.(*bufio.Writer).Flush()
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// maxExportLine bounds one decoded JSON value, so a hostile export cannot
// exhaust memory with a single value.
const maxExportLine = 4 * MaxPayloadLen

// ReadExport decodes an export written by [Export.WriteTo]. It checks the
// format, not the contents: run [Verify] on the result.
func ReadExport(r io.Reader) (*Export, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	line, err := readLine(br)
	if err != nil {
		return nil, err
	}
	var h exportHeader
	if err := strictUnmarshal(line, &h); err != nil || h.Format != ExportFormat {
		return nil, fmt.Errorf("%w: missing or unknown header", ErrFormat)
	}
	e := &Export{Origin: h.Origin}
	for n := 2; ; n++ {
		line, err := readLine(br)
		if errors.Is(err, io.EOF) {
			return e, nil
		}
		if err != nil {
			return nil, err
		}
		var l exportLine
		if err := strictUnmarshal(line, &l); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrFormat, n, err)
		}
		switch {
		case l.Damage != nil && l.Row == nil && l.Checkpoint == "":
			d := l.Damage
			if d.Position < 0 || d.Offset < 0 || d.Length < 0 || len(d.Detail) > maxDamageDetail {
				return nil, fmt.Errorf("%w: line %d: damage out of range", ErrFormat, n)
			}
			e.Damage = append(e.Damage, Damage{Position: d.Position, Offset: d.Offset, Length: d.Length, Torn: d.Torn, Detail: d.Detail})
		case l.Row != nil && l.Checkpoint == "" && l.Damage == nil:
			rec, err := fromJSON(l.Row)
			if err != nil {
				return nil, err
			}
			e.Records = append(e.Records, rec)
		case l.Row == nil && l.Checkpoint != "" && l.Damage == nil:
			e.Checkpoints = append(e.Checkpoints, []byte(l.Checkpoint))
		default:
			return nil, fmt.Errorf("%w: line %d is neither a row nor a checkpoint", ErrFormat, n)
		}
	}
}

func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, isPrefix, err := br.ReadLine()
		if err != nil {
			if errors.Is(err, io.EOF) && len(line) > 0 {
				return line, nil
			}
			if errors.Is(err, io.EOF) {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("%w: %v", ErrFormat, err)
		}
		line = append(line, chunk...)
		if len(line) > maxExportLine {
			return nil, fmt.Errorf("%w: line longer than %d bytes", ErrFormat, maxExportLine)
		}
		if !isPrefix {
			return line, nil
		}
	}
}

func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

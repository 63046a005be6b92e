package auditlog

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// Checkpoint is a C2SP tlog-checkpoint body: the log's origin, its size
// and the RFC 6962 root hash of its first Size leaves.
type Checkpoint struct {
	Origin string
	Size   uint64
	Root   Hash
}

// Marshal returns the checkpoint body:
//
//	<origin>\n<size>\n<base64 root>\n
func (c Checkpoint) Marshal() []byte {
	var b bytes.Buffer
	b.WriteString(c.Origin)
	b.WriteByte('\n')
	b.WriteString(strconv.FormatUint(c.Size, 10))
	b.WriteByte('\n')
	b.WriteString(base64.StdEncoding.EncodeToString(c.Root[:]))
	b.WriteByte('\n')
	return b.Bytes()
}

// ParseCheckpoint parses a checkpoint body (the text of a signed note).
// Extension lines after the root are allowed and ignored, as C2SP
// specifies; anything else malformed is refused.
func ParseCheckpoint(text []byte) (Checkpoint, error) {
	s := string(text)
	if !strings.HasSuffix(s, "\n") {
		return Checkpoint{}, fmt.Errorf("%w: body does not end in a newline", ErrCheckpoint)
	}
	lines := strings.Split(s[:len(s)-1], "\n")
	if len(lines) < 3 {
		return Checkpoint{}, fmt.Errorf("%w: fewer than three lines", ErrCheckpoint)
	}
	origin := lines[0]
	if origin == "" || strings.ContainsAny(origin, "\r\t") {
		return Checkpoint{}, fmt.Errorf("%w: bad origin line", ErrCheckpoint)
	}
	sz := lines[1]
	if sz == "" || (len(sz) > 1 && sz[0] == '0') || strings.TrimLeft(sz, "0123456789") != "" {
		return Checkpoint{}, fmt.Errorf("%w: bad size line", ErrCheckpoint)
	}
	size, err := strconv.ParseUint(sz, 10, 64)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("%w: bad size line", ErrCheckpoint)
	}
	// Strict still skips CR and LF inside the text: compare with the
	// canonical encoding, so one root has one spelling.
	root, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(root) != len(Hash{}) || base64.StdEncoding.EncodeToString(root) != lines[2] {
		return Checkpoint{}, fmt.Errorf("%w: bad root hash line", ErrCheckpoint)
	}
	for _, ext := range lines[3:] {
		if ext == "" {
			return Checkpoint{}, fmt.Errorf("%w: empty extension line", ErrCheckpoint)
		}
	}
	c := Checkpoint{Origin: origin, Size: size}
	copy(c.Root[:], root)
	return c, nil
}

// SignCheckpoint signs c as a signed note with every signer.
func SignCheckpoint(c Checkpoint, signers ...note.Signer) ([]byte, error) {
	if len(signers) == 0 {
		return nil, fmt.Errorf("%w: no signer", ErrInvalidConfig)
	}
	return note.Sign(&note.Note{Text: string(c.Marshal())}, signers...)
}

// OpenCheckpoint verifies a signed checkpoint: at least one signature by a
// known key must verify, no signature by a known key may fail, and the
// origin must be origin. It returns the checkpoint and the names of the
// keys whose signatures verified.
func OpenCheckpoint(signed []byte, origin string, verifiers note.Verifiers) (Checkpoint, []string, error) {
	n, err := note.Open(signed, verifiers)
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		switch {
		case errors.As(err, &unverified):
			return Checkpoint{}, nil, fmt.Errorf("%w: %w", ErrCheckpoint, errUnknownKey)
		case errors.As(err, &invalid):
			return Checkpoint{}, nil, fmt.Errorf("%w: %w (key %s)", ErrCheckpoint, errBadSignature, invalid.Name)
		default:
			return Checkpoint{}, nil, fmt.Errorf("%w: %w", ErrCheckpoint, errMalformedNote)
		}
	}
	c, err := ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return Checkpoint{}, nil, err
	}
	if c.Origin != origin {
		return Checkpoint{}, nil, fmt.Errorf("%w: %w", ErrCheckpoint, errWrongOrigin)
	}
	names := make([]string, len(n.Sigs))
	for i, s := range n.Sigs {
		names[i] = s.Name
	}
	return c, names, nil
}

// Detail errors wrapped by OpenCheckpoint so the verifier can name the
// finding.
var (
	errUnknownKey    = errors.New("no signature by a known key")
	errBadSignature  = errors.New("signature does not verify")
	errMalformedNote = errors.New("malformed signed note")
	errWrongOrigin   = errors.New("wrong origin")
)

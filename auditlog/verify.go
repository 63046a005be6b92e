package auditlog

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/keyring"
)

// FindingKind names what [Verify] found.
type FindingKind string

// Finding kinds. Every kind but FindingUnanchored and FindingTorn means
// tampering (or a broken log); those two are warnings.
const (
	// FindingModified: a row's content does not hash to its stored hash, or
	// its sealed payload does not open.
	FindingModified FindingKind = "modified"
	// FindingGap: rows are missing (deleted) before the row at Position.
	FindingGap FindingKind = "gap"
	// FindingReordered: the row at Position is out of sequence order.
	FindingReordered FindingKind = "reordered"
	// FindingDuplicate: the row at Position repeats an earlier row.
	FindingDuplicate FindingKind = "duplicate"
	// FindingForged: the row at Position does not link to the row before it
	// (prev_hash): a row forged into the chain, or its predecessor rewritten.
	FindingForged FindingKind = "forged"
	// FindingTruncated: a signed checkpoint covers rows the export lacks.
	FindingTruncated FindingKind = "truncated"
	// FindingRewritten: the rows' Merkle root differs from a signed
	// checkpoint; the change lies in rows [Seq, Seq+Count).
	FindingRewritten FindingKind = "rewritten"
	// FindingFork: two valid checkpoints disagree (same size, different
	// roots, or a failed consistency proof against a trusted checkpoint).
	FindingFork FindingKind = "fork"
	// FindingRollback: a checkpoint is smaller than one issued before it,
	// or the log's newest is smaller than the trusted one.
	FindingRollback FindingKind = "rollback"
	// FindingBadSignature: a signature by a known key does not verify.
	FindingBadSignature FindingKind = "bad-signature"
	// FindingUnknownKey: no signature is by a known key.
	FindingUnknownKey FindingKind = "unknown-key"
	// FindingWrongOrigin: a checkpoint names another log.
	FindingWrongOrigin FindingKind = "wrong-origin"
	// FindingMalformedCheckpoint: a checkpoint does not parse.
	FindingMalformedCheckpoint FindingKind = "malformed-checkpoint"
	// FindingUnreadable: a sealed row could not be checked: no key for it.
	FindingUnreadable FindingKind = "unreadable"
	// FindingReplay: the replayed state differs from the expected one.
	FindingReplay FindingKind = "replay-mismatch"
	// FindingCorrupt: bytes of the store's file before the row at Position
	// hold no valid frame (a checksum mismatch, a bad frame followed by
	// valid data): rows or checkpoints there were damaged or tampered
	// with. The rows lost are reported as a gap or a truncation beside it.
	FindingCorrupt FindingKind = "corrupt"
	// FindingUnanchored: rows past the newest valid checkpoint; not yet
	// protected by a signature.
	FindingUnanchored FindingKind = "unanchored"
	// FindingTorn: the store's file ends in an incomplete frame, an
	// append cut short by a crash; it never returned, so nothing
	// acknowledged is missing. A warning: the store cuts it at its next
	// read-write open.
	FindingTorn FindingKind = "torn"
)

// Source of a checkpoint in a Finding.
const (
	SourceExport  = "export"
	SourceTrusted = "trusted"
)

// Finding is one problem, located by position.
type Finding struct {
	Kind FindingKind
	// Position is the row's index in Export.Records, or -1.
	Position int
	// Seq and Count give the rows concerned: [Seq, Seq+Count).
	Seq, Count uint64
	// Source and Checkpoint locate the checkpoint concerned (index into
	// Export.Checkpoints or VerifyConfig.Trusted), or Checkpoint is -1.
	Source     string
	Checkpoint int
	Detail     string
}

func (f Finding) String() string {
	s := string(f.Kind)
	if f.Position >= 0 {
		s += fmt.Sprintf(" at row position %d", f.Position)
	}
	if f.Count > 0 {
		s += fmt.Sprintf(" seq [%d,%d)", f.Seq, f.Seq+f.Count)
	}
	if f.Checkpoint >= 0 {
		s += fmt.Sprintf(" %s checkpoint %d", f.Source, f.Checkpoint)
	}
	return s + ": " + f.Detail
}

// Report is the verifier's result.
type Report struct {
	// Rows is the number of rows examined.
	Rows int
	// Anchored is the largest size covered by a valid checkpoint.
	Anchored uint64
	// Findings, in the order found.
	Findings []Finding
}

// OK reports whether nothing but warnings (unanchored rows, a torn final
// frame) was found.
func (r Report) OK() bool {
	for _, f := range r.Findings {
		if f.Kind != FindingUnanchored && f.Kind != FindingTorn {
			return false
		}
	}
	return true
}

// Has reports whether r holds a finding of kind k (at position pos, unless
// pos is -1).
func (r Report) Has(k FindingKind, pos int) bool {
	for _, f := range r.Findings {
		if f.Kind == k && (pos < 0 || f.Position == pos) {
			return true
		}
	}
	return false
}

// VerifyConfig configures [Verify].
type VerifyConfig struct {
	// Origin is the log's origin. Required.
	Origin string
	// Verifiers are the log's public keys (note.NewVerifier). Required.
	Verifiers []note.Verifier
	// Trusted are checkpoints from outside the operator's reach (a
	// witness), oldest first.
	Trusted [][]byte
	// Ring opens sealed payloads; nil when the export is plaintext.
	Ring *keyring.Ring
	// Fold, when set, is called with every row's event in sequence order
	// (replay). An error is reported as FindingReplay at that row.
	Fold func(Event) error
	// Expect, when set, is called after the replay; an error is reported as
	// FindingReplay (the replayed state differs from the application's).
	Expect func() error
}

type validCP struct {
	Checkpoint
	source string
	index  int
}

// Verify checks an export offline against the log's public keys and any
// trusted checkpoints, and reports every problem by position. It never
// trusts a stored hash it can recompute: each row's leaf hash is
// recomputed from its content, each prev_hash is checked, the Merkle root
// is recomputed at every checkpoint size. Cancelling ctx stops the replay
// early with a FindingReplay whose Detail is "cancelled".
func Verify(ctx context.Context, exp *Export, cfg VerifyConfig) Report {
	v := verifier{cfg: cfg, exp: exp, verifiers: note.VerifierList(cfg.Verifiers...)}
	v.damage()
	v.rows()
	v.chain()
	v.checkpoints()
	v.replay(ctx)
	return Report{Rows: len(exp.Records), Anchored: v.anchored, Findings: v.findings}
}

type verifier struct {
	cfg       VerifyConfig
	exp       *Export
	verifiers note.Verifiers
	findings  []Finding

	plain    [][]byte // opened payload per position (nil if none/unreadable)
	okRow    []bool   // content hashes to the stored hash
	chainPos []int    // positions in sequence order, duplicates removed
	prefix   uint64   // rows [0,prefix) are present and contiguous
	tree     tree     // over chainPos[:prefix]
	anchored uint64
}

func (v *verifier) add(f Finding) { v.findings = append(v.findings, f) }

func rowFinding(k FindingKind, pos int, seq uint64, detail string) Finding {
	return Finding{Kind: k, Position: pos, Seq: seq, Count: 1, Checkpoint: -1, Detail: detail}
}

// damage reports the stretches of the store's file that held no valid
// frame.
func (v *verifier) damage() {
	for _, d := range v.exp.Damage {
		k, what := FindingCorrupt, "hold no valid frame"
		if d.Torn {
			k, what = FindingTorn, "are an incomplete final frame (an append cut short by a crash)"
		}
		detail := fmt.Sprintf("%d bytes at file offset %d %s", d.Length, d.Offset, what)
		if d.Detail != "" {
			detail += ": " + d.Detail
		}
		v.add(Finding{Kind: k, Position: d.Position, Checkpoint: -1, Detail: detail})
	}
}

// rows recomputes every row's leaf hash.
func (v *verifier) rows() {
	recs := v.exp.Records
	v.plain = make([][]byte, len(recs))
	v.okRow = make([]bool, len(recs))
	var buf []byte
	var aad [40]byte
	for i := range recs {
		r := &recs[i]
		p := r.Payload
		if r.KeyID != "" {
			if v.cfg.Ring == nil {
				v.add(rowFinding(FindingUnreadable, i, r.Seq, "row is sealed and no key ring was given"))
				continue
			}
			var err error
			p, _, err = v.cfg.Ring.Open(nil, r.Payload, sealAAD(aad[:0], r.Seq, r.Hash))
			if errors.Is(err, keyring.ErrUnknownKey) {
				v.add(rowFinding(FindingUnreadable, i, r.Seq, "row is sealed under a key the ring lacks"))
				continue
			}
			if err != nil {
				v.add(rowFinding(FindingModified, i, r.Seq, "sealed payload fails authentication"))
				continue
			}
		}
		if err := checkFields(r.Type, r.Actor, r.CorrelationID, p); err != nil {
			v.add(rowFinding(FindingModified, i, r.Seq, "fields outside the limits"))
			continue
		}
		buf = appendLeafData(buf[:0], r, p)
		if leafHashOf(buf) != r.Hash {
			v.add(rowFinding(FindingModified, i, r.Seq, "content does not hash to the stored leaf hash"))
			continue
		}
		v.plain[i] = p
		v.okRow[i] = true
	}
}

// chain orders rows by sequence, reports reordering, duplicates, gaps and
// broken links, and builds the Merkle tree over the contiguous prefix.
func (v *verifier) chain() {
	recs := v.exp.Records
	inOrder := true
	for i := 1; i < len(recs); i++ {
		if recs[i].Seq != recs[i-1].Seq+1 {
			inOrder = false
			break
		}
	}
	pos := make([]int, len(recs))
	for i := range pos {
		pos[i] = i
	}
	if !inOrder {
		var maxSeq uint64
		seen := make(map[uint64]struct{}, len(recs))
		for i := range recs {
			_, dup := seen[recs[i].Seq]
			if i > 0 && recs[i].Seq < maxSeq && !dup {
				// a repeated seq is reported by dedupe instead
				v.add(rowFinding(FindingReordered, i, recs[i].Seq, fmt.Sprintf("row %d appears after row %d", recs[i].Seq, maxSeq)))
			}
			seen[recs[i].Seq] = struct{}{}
			maxSeq = max(maxSeq, recs[i].Seq)
		}
		slices.SortStableFunc(pos, func(a, b int) int {
			switch {
			case recs[a].Seq < recs[b].Seq:
				return -1
			case recs[a].Seq > recs[b].Seq:
				return 1
			}
			return 0
		})
		pos = v.dedupe(pos)
	}
	v.chainPos = pos
	v.prefix = 0
	v.tree.grow(len(pos))
	gap := false
	for k, p := range pos {
		r := &recs[p]
		var want uint64
		var prev Hash
		if k > 0 {
			want = recs[pos[k-1]].Seq + 1
			prev = recs[pos[k-1]].Hash
		}
		switch {
		case r.Seq != want:
			v.add(Finding{Kind: FindingGap, Position: p, Seq: want, Count: r.Seq - want, Checkpoint: -1,
				Detail: fmt.Sprintf("%d rows missing before row %d", r.Seq-want, r.Seq)})
			gap = true
		case r.PrevHash != prev:
			v.add(rowFinding(FindingForged, p, r.Seq, "prev_hash does not match the previous row: row forged or its predecessor rewritten"))
		}
		if !gap {
			v.tree.append(r.Hash)
			v.prefix++
		}
	}
	v.chainPos = pos[:v.prefix] // rows past a gap stay out of the tree
}

// dedupe keeps one row per sequence number: the one the next row links
// to, reporting the others as duplicates (same hash) or forged.
func (v *verifier) dedupe(pos []int) []int {
	recs := v.exp.Records
	out := pos[:0:0]
	for i := 0; i < len(pos); {
		j := i + 1
		for j < len(pos) && recs[pos[j]].Seq == recs[pos[i]].Seq {
			j++
		}
		group := pos[i:j]
		keep := group[0]
		if len(group) > 1 {
			var next *Record
			if j < len(pos) && recs[pos[j]].Seq == recs[pos[i]].Seq+1 {
				next = &recs[pos[j]]
			}
			for _, p := range group {
				if next != nil && recs[p].Hash == next.PrevHash && v.okRow[p] {
					keep = p
					break
				}
			}
			for _, p := range group {
				switch {
				case p == keep:
				case recs[p].Hash == recs[keep].Hash:
					v.add(rowFinding(FindingDuplicate, p, recs[p].Seq, fmt.Sprintf("repeats the row at position %d", keep)))
				default:
					v.add(rowFinding(FindingForged, p, recs[p].Seq, fmt.Sprintf("a second row %d; the chain continues from position %d", recs[p].Seq, keep)))
				}
			}
		}
		out = append(out, keep)
		i = j
	}
	return out
}

func (v *verifier) openCP(signed []byte, source string, index int) (Checkpoint, bool) {
	c, _, err := OpenCheckpoint(signed, v.cfg.Origin, v.verifiers)
	if err == nil {
		return c, true
	}
	k := FindingMalformedCheckpoint
	switch {
	case errors.Is(err, errUnknownKey):
		k = FindingUnknownKey
	case errors.Is(err, errBadSignature):
		k = FindingBadSignature
	case errors.Is(err, errWrongOrigin):
		k = FindingWrongOrigin
	}
	v.add(Finding{Kind: k, Position: -1, Source: source, Checkpoint: index, Detail: "checkpoint refused: " + err.Error()})
	return Checkpoint{}, false
}

// checkpoints verifies signatures, ordering, forks and roots.
func (v *verifier) checkpoints() {
	var valid []validCP
	var newest *validCP
	for i, s := range v.exp.Checkpoints {
		c, ok := v.openCP(s, SourceExport, i)
		if !ok {
			continue
		}
		if newest != nil && c.Size < newest.Size {
			v.add(Finding{Kind: FindingRollback, Position: -1, Source: SourceExport, Checkpoint: i,
				Detail: fmt.Sprintf("size %d issued after size %d", c.Size, newest.Size)})
		}
		valid = append(valid, validCP{Checkpoint: c, source: SourceExport, index: i})
		if newest == nil || c.Size >= newest.Size {
			newest = &validCP{Checkpoint: c, source: SourceExport, index: i}
		}
	}
	var trusted *validCP
	for i, s := range v.cfg.Trusted {
		c, ok := v.openCP(s, SourceTrusted, i)
		if !ok {
			continue
		}
		valid = append(valid, validCP{Checkpoint: c, source: SourceTrusted, index: i})
		if trusted == nil || c.Size >= trusted.Size {
			trusted = &validCP{Checkpoint: c, source: SourceTrusted, index: i}
		}
	}
	// forks: two valid checkpoints, one size, two roots
	bySize := map[uint64]validCP{}
	for _, c := range valid {
		if o, ok := bySize[c.Size]; ok && o.Root != c.Root {
			v.add(Finding{Kind: FindingFork, Position: -1, Seq: 0, Count: c.Size, Source: c.source, Checkpoint: c.index,
				Detail: fmt.Sprintf("two signed roots for size %d (%s checkpoint %d)", c.Size, o.source, o.index)})
			continue
		}
		bySize[c.Size] = c
	}
	gapFree := !v.Has(FindingGap)
	// roots: compare each valid checkpoint with the rows
	var good uint64 // largest size whose root matched
	slices.SortStableFunc(valid, func(a, b validCP) int { return cmpU64(a.Size, b.Size) })
	truncatedReported := false
	for _, c := range valid {
		if c.Size > v.prefix {
			if gapFree && !truncatedReported {
				v.add(Finding{Kind: FindingTruncated, Position: len(v.exp.Records), Seq: v.prefix,
					Count: c.Size - v.prefix, Source: c.source, Checkpoint: c.index,
					Detail: fmt.Sprintf("checkpoint covers %d rows, export holds %d", c.Size, v.prefix)})
				truncatedReported = true
			}
			continue
		}
		if v.tree.rootAt(c.Size) == c.Root {
			good = max(good, c.Size)
			v.anchored = max(v.anchored, c.Size)
			continue
		}
		if c.source == SourceTrusted && newest != nil && newest.Size >= c.Size && newest.Size <= v.prefix &&
			v.tree.rootAt(newest.Size) == newest.Root {
			// The log signed the rows as they are now, and earlier signed a
			// history they do not extend: the consistency proof fails.
			p, _ := v.tree.consistency(c.Size, newest.Size)
			if err := VerifyConsistency(c.Size, newest.Size, p, c.Root, newest.Root); err != nil {
				v.add(Finding{Kind: FindingFork, Position: -1, Count: c.Size, Source: c.source, Checkpoint: c.index,
					Detail: fmt.Sprintf("not consistent with the log's checkpoint of size %d: %v", newest.Size, err)})
				continue
			}
		}
		pos := -1
		if good < uint64(len(v.chainPos)) {
			pos = v.chainPos[good]
		}
		v.add(Finding{Kind: FindingRewritten, Position: pos, Seq: good, Count: c.Size - good, Source: c.source, Checkpoint: c.index,
			Detail: fmt.Sprintf("root over %d rows differs from the signed root; the change lies in rows [%d,%d)", c.Size, good, c.Size)})
	}
	if trusted != nil && (newest == nil || newest.Size < trusted.Size) {
		have := uint64(0)
		if newest != nil {
			have = newest.Size
		}
		v.add(Finding{Kind: FindingRollback, Position: -1, Source: SourceTrusted, Checkpoint: trusted.index,
			Detail: fmt.Sprintf("the log's newest checkpoint (size %d) is older than the trusted one (size %d)", have, trusted.Size)})
	}
	if v.prefix > v.anchored {
		v.add(Finding{Kind: FindingUnanchored, Position: v.chainPos[v.anchored], Seq: v.anchored, Count: v.prefix - v.anchored,
			Checkpoint: -1, Detail: "rows past the newest valid checkpoint are not yet protected by a signature"})
	}
}

// Has reports whether a finding of kind k was recorded.
func (v *verifier) Has(k FindingKind) bool {
	for _, f := range v.findings {
		if f.Kind == k {
			return true
		}
	}
	return false
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// replay folds the verified rows in order.
func (v *verifier) replay(ctx context.Context) {
	if v.cfg.Fold == nil && v.cfg.Expect == nil {
		return
	}
	if v.cfg.Fold != nil {
		for _, p := range v.chainPos {
			if ctx.Err() != nil {
				v.add(Finding{Kind: FindingReplay, Position: p, Checkpoint: -1, Detail: "cancelled"})
				return
			}
			if !v.okRow[p] {
				continue
			}
			r := &v.exp.Records[p]
			if err := v.cfg.Fold(r.event(v.plain[p])); err != nil {
				v.add(rowFinding(FindingReplay, p, r.Seq, "fold refused the event: "+err.Error()))
				return
			}
		}
	}
	if v.cfg.Expect != nil {
		if err := v.cfg.Expect(); err != nil {
			v.add(Finding{Kind: FindingReplay, Position: -1, Checkpoint: -1, Detail: "replayed state differs: " + err.Error()})
		}
	}
}

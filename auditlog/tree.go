package auditlog

import (
	"crypto/sha256"
	"fmt"
	"slices"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// hasher is the RFC 6962 SHA-256 hasher used for proof verification.
var hasher = rfc6962.DefaultHasher

// emptyRoot is the RFC 6962 root of an empty tree, SHA-256("").
var emptyRoot = Hash(sha256.Sum256(nil))

func hashChildren(l, r *Hash) Hash {
	var buf [65]byte
	buf[0] = 0x01
	copy(buf[1:33], l[:])
	copy(buf[33:], r[:])
	return sha256.Sum256(buf[:])
}

// tree is an in-memory RFC 6962 Merkle tree keeping every node, in the
// layout of transparency-dev/merkle's testonly.Tree: hashes[level][index].
// It costs about 64 bytes per leaf and answers roots, inclusion and
// consistency proofs for any earlier size. Not safe for concurrent use.
type tree struct {
	size   uint64
	hashes [][]Hash
}

// grow reserves room for n more leaves.
func (t *tree) grow(n int) {
	for level := 0; n > 0; level++ {
		if level == len(t.hashes) {
			t.hashes = append(t.hashes, nil)
		}
		t.hashes[level] = slices.Grow(t.hashes[level], n)
		n /= 2
	}
}

func (t *tree) append(h Hash) {
	level := 0
	for ; (t.size>>level)&1 == 1; level++ {
		row := append(t.hashes[level], h)
		h = hashChildren(&row[len(row)-2], &h)
		t.hashes[level] = row
	}
	if level == len(t.hashes) {
		t.hashes = append(t.hashes, nil)
	}
	t.hashes[level] = append(t.hashes[level], h)
	t.size++
}

// rootAt returns the root of the tree's first size leaves.
func (t *tree) rootAt(size uint64) Hash {
	if size == 0 {
		return emptyRoot
	}
	ids := compact.RangeNodes(0, size, nil)
	h := t.hashes[ids[len(ids)-1].Level][ids[len(ids)-1].Index]
	for i := len(ids) - 2; i >= 0; i-- {
		h = hashChildren(&t.hashes[ids[i].Level][ids[i].Index], &h)
	}
	return h
}

func (t *tree) nodes(ids []compact.NodeID) [][]byte {
	out := make([][]byte, len(ids))
	for i, id := range ids {
		h := t.hashes[id.Level][id.Index]
		out[i] = h[:]
	}
	return out
}

func rehashChildren(l, r []byte) []byte {
	return hasher.HashChildren(l, r)
}

// inclusion returns the inclusion proof of leaf index in the tree of the
// given size.
func (t *tree) inclusion(index, size uint64) ([][]byte, error) {
	if size > t.size {
		return nil, fmt.Errorf("auditlog: size %d is past the log's %d", size, t.size)
	}
	n, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, fmt.Errorf("auditlog: %w", err)
	}
	return n.Rehash(t.nodes(n.IDs), rehashChildren)
}

// consistency returns the consistency proof between sizes size1 <= size2.
func (t *tree) consistency(size1, size2 uint64) ([][]byte, error) {
	if size2 > t.size {
		return nil, fmt.Errorf("auditlog: size %d is past the log's %d", size2, t.size)
	}
	n, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, fmt.Errorf("auditlog: %w", err)
	}
	return n.Rehash(t.nodes(n.IDs), rehashChildren)
}

// VerifyInclusion reports whether proof shows that leaf sits at index in
// the tree of the given size and root. It wraps
// transparency-dev/merkle's verifier and never accepts a proof of the
// wrong length.
func VerifyInclusion(index, size uint64, leaf Hash, proofHashes [][]byte, root Hash) error {
	if err := proof.VerifyInclusion(hasher, index, size, leaf[:], proofHashes, root[:]); err != nil {
		return fmt.Errorf("%w: %v", ErrProof, err)
	}
	return nil
}

// VerifyConsistency reports whether proof shows that the tree (size1,
// root1) is a prefix of the tree (size2, root2).
func VerifyConsistency(size1, size2 uint64, proofHashes [][]byte, root1, root2 Hash) error {
	if err := proof.VerifyConsistency(hasher, size1, size2, proofHashes, root1[:], root2[:]); err != nil {
		return fmt.Errorf("%w: %v", ErrProof, err)
	}
	return nil
}

// NodeHash is the RFC 6962 interior node hash SHA-256(0x01 || l || r).
func NodeHash(l, r Hash) Hash { return hashChildren(&l, &r) }

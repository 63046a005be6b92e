// Package breach detects compromised and common passwords offline.
//
// The corpus is the "passwords" frequency list embedded in
// github.com/trustelem/zxcvbn (30,000 passwords ranked by frequency in
// public breach dumps), loaded once into a bloom filter. It is an offline,
// fixed snapshot: it knows nothing about breaches published after it was
// built, and most of its entries are shorter than any password the policies
// accept. That is why [Corpus.Contains] also strips the decorations people
// bolt onto a common password to pass composition rules ("Password123!",
// "!!Dragon2024", "P@ssw0rd!!") before it looks the word up.
package breach

import (
	"strings"
	"sync"
	"unicode"

	"github.com/bits-and-blooms/bloom/v3"
	"github.com/trustelem/zxcvbn/frequency"
)

// FalsePositiveRate is the bloom filter's target false-positive rate: the
// chance that an uncompromised password is reported as compromised.
const FalsePositiveRate = 1e-7

// minCore is the shortest undecorated word that counts as a hit; shorter
// cores ("abc", "123") would flag too many decent passwords.
const minCore = 4

// Corpus is a read-only set of compromised passwords. It is safe for
// concurrent use.
type Corpus struct {
	filter *bloom.BloomFilter
	size   int
}

var shared = sync.OnceValue(func() *Corpus {
	return New(frequency.FrequencyLists["passwords"])
})

// Default returns the process-wide corpus built from zxcvbn's password list.
// It is built on first use (a few milliseconds) and shared afterwards.
func Default() *Corpus { return shared() }

// New builds a corpus from words, lower-cased.
func New(words []string) *Corpus {
	n := uint(len(words))
	if n == 0 {
		n = 1
	}
	f := bloom.NewWithEstimates(n, FalsePositiveRate)
	for _, w := range words {
		f.AddString(strings.ToLower(w))
	}
	return &Corpus{filter: f, size: len(words)}
}

// Size returns the number of words the corpus was built from.
func (c *Corpus) Size() int { return c.size }

// Contains reports whether pw, or pw with leading and trailing digits and
// symbols removed, or either with common character substitutions undone
// (0→o, 1→i/l, 3→e, 4→a, 5→s, 7→t, @→a, $→s), is in the corpus,
// ignoring case.
func (c *Corpus) Contains(pw string) bool {
	lower := strings.ToLower(pw)
	if c.filter.TestString(lower) {
		return true
	}
	core := strings.TrimFunc(lower, func(r rune) bool { return !unicode.IsLetter(r) })
	for _, cand := range [...]string{core, unleet(lower, 'i'), unleet(lower, 'l')} {
		if len([]rune(cand)) >= minCore && cand != lower && c.filter.TestString(cand) {
			return true
		}
	}
	return false
}

// unleet returns the word inside s (from its first to its last letter, plus
// one substitution that opens it) with common substitutions undone; the
// leading and trailing digits and symbols are decorations and are dropped.
// one is what '1' maps to.
func unleet(s string, one rune) string {
	rs := []rune(s)
	first, last := -1, -1
	for i, r := range rs {
		if unicode.IsLetter(r) {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	if first < 0 {
		return s
	}
	// One substitution may open the word ("4dmin", "@pple"); more leading
	// digits are a decoration.
	if first > 0 && isLeet(rs[first-1]) && (first == 1 || !isLeet(rs[first-2])) {
		first--
	}
	for i := first; i <= last; i++ {
		switch rs[i] {
		case '0':
			rs[i] = 'o'
		case '1':
			rs[i] = one
		case '3':
			rs[i] = 'e'
		case '4', '@':
			rs[i] = 'a'
		case '5', '$':
			rs[i] = 's'
		case '7':
			rs[i] = 't'
		}
	}
	return string(rs[first : last+1])
}

func isLeet(r rune) bool { return strings.ContainsRune("013457@$", r) }

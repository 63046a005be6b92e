// Package faults names the features a test may switch off to build a
// deliberately broken system, so that each evidence check can be shown to
// fail when the feature it proves is missing (and no other check with
// it).
//
// A [Set] travels in the composition's options to the components. No
// command-line flag or configuration file can hold one, and [Set.Check]
// refuses a non-empty Set outside a test binary, so a system a user runs
// never carries a fault.
package faults

import (
	"errors"
	"slices"
	"testing"
)

// Fault names one feature switched off.
type Fault string

// Set is a set of faults. The zero Set switches nothing off. It is
// read-only once built and safe for concurrent use.
type Set []Fault

// ErrNotTest is returned by [Set.Check] outside a test binary.
var ErrNotTest = errors.New("faults: a fault set is only accepted in a test binary")

// On reports whether f is in the set.
func (s Set) On(f Fault) bool { return slices.Contains(s, f) }

// Check returns ErrNotTest when s is not empty and the process is not a
// test binary.
func (s Set) Check() error {
	if len(s) > 0 && !testing.Testing() {
		return ErrNotTest
	}
	return nil
}

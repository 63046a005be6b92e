package cputime

import "testing"

// Spinning uses CPU, and Process sees it grow.
func TestProcessGrows(t *testing.T) {
	start := Process()
	x := 0
	for i := 0; Process() == start && i < 1<<30; i++ {
		x += i
	}
	if Process() <= start {
		t.Fatalf("CPU time did not grow (%d)", x)
	}
}

// Package cputime reads the process's CPU time, for benchmarks that
// report CPU per operation: on a shared machine wall time includes
// waiting for a core, CPU time does not.
package cputime

import "time"

// Process returns the user and system CPU time the process has used so
// far, or 0 when the platform cannot tell.
func Process() time.Duration { return process() }

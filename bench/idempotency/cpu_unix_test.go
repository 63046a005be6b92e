//go:build unix

package idempotencybench

import (
	"syscall"
	"time"
)

// cpuTime is the process's user+system CPU time. On this shared machine
// wall time per op swings with other tenants' load; CPU time per op does
// not, so cpu-ns/op stays comparable.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

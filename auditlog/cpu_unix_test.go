//go:build unix

package auditlog_test

import (
	"syscall"
	"time"
)

// cpuTime returns the process's user+system CPU time. On a shared,
// overloaded machine rows per CPU-second is the stable figure; rows/s is
// wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

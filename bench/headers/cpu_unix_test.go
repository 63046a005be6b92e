//go:build unix

package headersbench

import "syscall"

// cpuTime is the process's user+system CPU time in nanoseconds. On a
// shared machine wall time includes waiting for a core; CPU time per
// operation does not, so cpu-ns/op stays comparable under load.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

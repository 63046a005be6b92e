//go:build unix

package platform

import (
	"errors"
	"os"
	"syscall"
)

// lockStream marks f as a log stream being written: an exclusive advisory
// lock held for as long as the writing process has it open, released by
// the kernel however the process ends (a crash, SIGKILL).
func lockStream(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// StreamLive reports whether a process is still writing the log stream f
// (opened by the reader): its writer holds the lock [NewTelemetry] takes.
func StreamLive(f *os.File) bool {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	if err == nil {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return false
	}
	return errors.Is(err, syscall.EWOULDBLOCK)
}

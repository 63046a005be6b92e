//go:build windows

package platform

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

// A Windows byte-range lock is mandatory: no other handle may read the
// bytes it covers. The stream lock therefore covers one byte far past
// any log's end, which no reader reads and no writer reaches, and marks
// the stream without hiding its records.
var streamLockAt = windows.Overlapped{OffsetHigh: 0x7fffffff}

// lockStream marks f as a log stream being written: an exclusive lock
// held for as long as the writing process has it open, released by the
// system however the process ends.
func lockStream(f *os.File) error {
	ol := streamLockAt
	return windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ol)
}

// StreamLive reports whether a process is still writing the log stream f
// (opened by the reader): its writer holds the lock [NewTelemetry] takes.
func StreamLive(f *os.File) bool {
	ol := streamLockAt
	err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ol)
	if err == nil {
		ol = streamLockAt
		_ = windows.UnlockFileEx(windows.Handle(f.Fd()), 0, 1, 0, &ol)
		return false
	}
	return errors.Is(err, windows.ERROR_LOCK_VIOLATION)
}

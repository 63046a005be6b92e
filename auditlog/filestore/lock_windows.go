//go:build windows

package filestore

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/windows"
)

// lockDir takes an exclusive LockFileEx lock on path (created if missing)
// without waiting: ErrLocked when another handle holds any lock on it.
// Like flock on Unix, the lock belongs to the handle, so a second Open in
// the same process is refused too, and the system releases it when the
// process ends. Windows enforces byte-range locks (they are mandatory):
// no other handle can read or write the locked bytes of the LOCK file,
// which holds none; the log files themselves are not locked.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("filestore: %w", err)
	}
	if err := lockFile(f, windows.LOCKFILE_EXCLUSIVE_LOCK); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// lockDirShared takes a shared lock on an existing lock file without
// creating or writing anything; nil when the file does not exist.
func lockDirShared(path string) (*os.File, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("filestore: %w", err)
	}
	if err := lockFile(f, 0); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// allBytes locks the whole of the file's possible range, as
// cmd/go/internal/lockedfile does.
const allBytes = ^uint32(0)

func lockFile(f *os.File, mode uint32) error {
	ol := new(windows.Overlapped)
	err := windows.LockFileEx(windows.Handle(f.Fd()), mode|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, allBytes, allBytes, ol)
	if err == nil {
		return nil
	}
	if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
		return ErrLocked
	}
	return fmt.Errorf("filestore: lock: %w", err)
}

func unlockDir(f *os.File) {
	if f == nil {
		return
	}
	_ = windows.UnlockFileEx(windows.Handle(f.Fd()), 0, allBytes, allBytes, new(windows.Overlapped))
	f.Close()
}

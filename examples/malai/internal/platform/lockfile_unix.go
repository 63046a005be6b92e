//go:build unix

package platform

import (
	"errors"
	"os"
	"syscall"
)

// lockExclusive takes an exclusive flock on f, waiting for it when wait is
// set; errLocked when it does not wait and another open file holds it.
func lockExclusive(f *os.File, wait bool) error {
	how := syscall.LOCK_EX
	if !wait {
		how |= syscall.LOCK_NB
	}
	err := syscall.Flock(int(f.Fd()), how)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return errLocked
	}
	return err
}

func unlockFile(f *os.File) { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }

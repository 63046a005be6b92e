//go:build windows

package cputime

import (
	"time"

	"golang.org/x/sys/windows"
)

func process() time.Duration {
	var creation, exit, kernel, user windows.Filetime
	if err := windows.GetProcessTimes(windows.CurrentProcess(), &creation, &exit, &kernel, &user); err != nil {
		return 0
	}
	return time.Duration(filetime(kernel) + filetime(user))
}

// filetime is a FILETIME duration (100 ns units) in nanoseconds.
func filetime(t windows.Filetime) int64 {
	return (int64(t.HighDateTime)<<32 | int64(t.LowDateTime)) * 100
}

//go:build windows

package headersbench

import "golang.org/x/sys/windows"

// cpuTime is the process's user+system CPU time in nanoseconds. On a
// shared machine wall time includes waiting for a core; CPU time per
// operation does not, so cpu-ns/op stays comparable under load.
func cpuTime() int64 {
	var creation, exit, kernel, user windows.Filetime
	if err := windows.GetProcessTimes(windows.CurrentProcess(), &creation, &exit, &kernel, &user); err != nil {
		return 0
	}
	return filetime(kernel) + filetime(user)
}

// filetime is a FILETIME duration (100 ns units) in nanoseconds.
func filetime(t windows.Filetime) int64 {
	return (int64(t.HighDateTime)<<32 | int64(t.LowDateTime)) * 100
}

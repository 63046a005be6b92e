//go:build windows

package rbacbench

import (
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

var procGetThreadTimes = windows.NewLazySystemDLL("kernel32.dll").NewProc("GetThreadTimes")

// threadCPU returns the CPU time the calling OS thread has used
// (GetThreadTimes: kernel plus user time).
func threadCPU(b *testing.B) time.Duration {
	var creation, exit, kernel, user windows.Filetime
	r, _, err := procGetThreadTimes.Call(uintptr(windows.CurrentThread()),
		uintptr(unsafe.Pointer(&creation)), uintptr(unsafe.Pointer(&exit)),
		uintptr(unsafe.Pointer(&kernel)), uintptr(unsafe.Pointer(&user)))
	if r == 0 {
		b.Fatal(err)
	}
	return time.Duration(filetime(kernel) + filetime(user))
}

// filetime is a FILETIME duration (100 ns units) in nanoseconds.
func filetime(t windows.Filetime) int64 {
	return (int64(t.HighDateTime)<<32 | int64(t.LowDateTime)) * 100
}

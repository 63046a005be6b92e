//go:build windows

package main

import (
	"os"
	"syscall"
)

// stopSignals end a running command gracefully: os.Interrupt is Ctrl-C
// or Ctrl-Break, and the Go runtime delivers syscall.SIGTERM when the
// console closes or the user logs off or the machine shuts down.
func stopSignals() []os.Signal { return []os.Signal{os.Interrupt, syscall.SIGTERM} }

// reloadSignals is empty: Windows has no signal a process can send
// another to ask for a reload (no SIGHUP). To take a changed policy or
// deny list, restart the process.
func reloadSignals() []os.Signal { return nil }

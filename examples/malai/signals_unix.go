//go:build unix

package main

import (
	"os"
	"syscall"
)

// stopSignals end a running command gracefully.
func stopSignals() []os.Signal { return []os.Signal{os.Interrupt, syscall.SIGTERM} }

// reloadSignals make a running command re-read its policy and deny list
// (System.Reload).
func reloadSignals() []os.Signal { return []os.Signal{syscall.SIGHUP} }

//go:build !linux

package servicetest

import "os/exec"

// setDeathSignal does nothing where the kernel offers no parent-death
// signal: cleanups stop the servers.
func setDeathSignal(*exec.Cmd) {}

package servicetest

import (
	"os/exec"
	"syscall"
)

// setDeathSignal has the kernel kill the child when the test binary dies
// (a test timeout exits without cleanups), so no server outlives the run.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

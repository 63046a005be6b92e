package servicetest

import (
	"os/exec"
	"syscall"
)

// setDeathSignal has the kernel kill the child when the test binary dies
// (a test timeout exits without cleanups), so no server outlives the run.
func setDeathSignal(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}

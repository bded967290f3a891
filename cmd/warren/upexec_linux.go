package main

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel send cmd SIGTERM when warren dies, even of SIGKILL, so that
// 'warren up -- CMD' leaves no orphan running without its node. (The signal follows the death of the
// thread that started cmd; Go's runtime does not end its threads while the process lives, unless a
// goroutine locked to one exits, which this one is not.)
func dieWithParent(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
}

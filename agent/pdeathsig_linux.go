package agent

import "syscall"

// dieWithParent makes the supervised command get SIGTERM if the agent
// itself dies (SIGKILL included): a restarted agent must not find the old
// binary still running beside the new one.
func dieWithParent(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGTERM }

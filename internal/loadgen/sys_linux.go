//go:build linux

package loadgen

import "syscall"

// childSysProcAttr makes the kernel SIGKILL a child node when the bench
// process dies, even by kill -9, so no node outlives it.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

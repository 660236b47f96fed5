//go:build !linux

package loadgen

import "syscall"

// childSysProcAttr is nil where there is no parent-death signal: children
// are still stopped by every exit path of Run, not by a kill -9 of it.
func childSysProcAttr() *syscall.SysProcAttr { return nil }

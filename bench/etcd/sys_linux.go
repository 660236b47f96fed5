//go:build linux

package main

import (
	"fmt"
	"os/exec"
	"syscall"
)

// setPdeathsig makes the kernel kill an etcd member if etcdbench itself dies
// without running its cleanup (for example on SIGKILL).
func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// fsType names the filesystem holding dir for the common cases, so a result
// measured on tmpfs (where fsync is free) is visible as such.
func fsType(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return ""
	}
	switch uint64(st.Type) {
	case 0xEF53:
		return "ext4"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x01021994:
		return "tmpfs"
	case 0x794C7630:
		return "overlayfs"
	case 0x2FC12FC1:
		return "zfs"
	case 0x6969:
		return "nfs"
	default:
		return fmt.Sprintf("fs-magic-0x%x", uint64(st.Type))
	}
}

//go:build linux

package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
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

// clockTicksPerSec returns the unit of the CPU times in /proc/<pid>/stat,
// sysconf(_SC_CLK_TCK), which the kernel passes to every process as
// AT_CLKTCK in its auxiliary vector.
func clockTicksPerSec() (int64, error) {
	const atNull, atClkTck = 0, 17
	auxv, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 0, err
	}
	word := int(unsafe.Sizeof(uintptr(0)))
	get := func(b []byte) uint64 {
		if word == 8 {
			return binary.NativeEndian.Uint64(b)
		}
		return uint64(binary.NativeEndian.Uint32(b))
	}
	for i := 0; i+2*word <= len(auxv); i += 2 * word {
		switch get(auxv[i:]) {
		case atClkTck:
			if hz := get(auxv[i+word:]); hz > 0 {
				return int64(hz), nil
			}
			return 0, errors.New("AT_CLKTCK is 0")
		case atNull:
			return 0, errors.New("no AT_CLKTCK in /proc/self/auxv")
		}
	}
	return 0, errors.New("no AT_CLKTCK in /proc/self/auxv")
}

// procCPUTicks returns utime + stime of process pid, summed over its
// threads, in clock ticks.
func procCPUTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may itself contain
	// spaces and parentheses; the fields after the last ')' start with
	// field 3, the state, so field n is at index n-3.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("malformed stat")
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, errors.New("process has exited")
	}
	utime, err := strconv.ParseInt(f[14-3], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("utime: %w", err)
	}
	stime, err := strconv.ParseInt(f[15-3], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stime: %w", err)
	}
	return utime + stime, nil
}

// selfCPU returns the CPU time (user + system, all threads) this process
// has consumed.
func selfCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

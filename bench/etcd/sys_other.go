//go:build !linux

package main

import (
	"errors"
	"os/exec"
	"time"
)

// errNoCPU is why CPU is not measured here: the member counters come from
// /proc.
var errNoCPU = errors.New("CPU accounting is implemented for Linux only")

func setPdeathsig(*exec.Cmd) {}

func fsType(string) string { return "" }

func clockTicksPerSec() (int64, error) { return 0, errNoCPU }

func procCPUTicks(int) (int64, error) { return 0, errNoCPU }

func selfCPU() (time.Duration, error) { return 0, errNoCPU }

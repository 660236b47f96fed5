//go:build !unix

package loadgen

import (
	"errors"
	"time"
)

// RaiseFDLimit is a no-op where there is no RLIMIT_NOFILE.
func RaiseFDLimit() (uint64, error) { return 0, errors.New("no RLIMIT_NOFILE on this system") }

func selfCPU() (time.Duration, bool) { return 0, false }

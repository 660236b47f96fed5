package loadgen

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// selfIO returns the bytes this process has passed to read(2) and write(2)
// so far (Linux /proc/self/io rchar and wchar). During a ping run the only
// I/O of the load generator is its MTProto sockets, so the delta is the
// bytes on the wire (transport framing included), in both directions.
func selfIO() (read, written uint64, ok bool) {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	var gotR, gotW bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, found := strings.Cut(sc.Text(), ":")
		if !found {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "rchar":
			read, gotR = n, true
		case "wchar":
			written, gotW = n, true
		}
	}
	return read, written, gotR && gotW
}

// loadAvg is the first three fields of /proc/loadavg, or "".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], ", ")
}

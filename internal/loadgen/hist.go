package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// histSub is the number of linear sub-buckets per power of two: 64 gives a
// worst-case relative error of 1/64 (about 1.6%) at a fixed 4096 buckets,
// so a worker can record millions of samples in bounded memory.
const (
	histSubBits = 6
	histSub     = 1 << histSubBits
	histBuckets = 64 * histSub
)

// hist is a log-linear latency histogram in nanoseconds. It is not safe for
// concurrent use: each worker keeps its own and they are merged at the end.
type hist struct {
	counts [histBuckets]uint64
	n      uint64
	max    time.Duration
}

func histIndex(v uint64) int {
	if v < histSub {
		return int(v)
	}
	exp := bits.Len64(v) - histSubBits // >= 1
	mant := v >> uint(exp-1)           // in [histSub, 2*histSub)
	return exp*histSub + int(mant-histSub)
}

// histLower is the smallest value that lands in bucket i.
func histLower(i int) uint64 {
	if i < histSub {
		return uint64(i)
	}
	exp := i / histSub
	mant := uint64(i%histSub) + histSub
	return mant << uint(exp-1)
}

func (h *hist) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[histIndex(uint64(d))]++
	h.n++
	if d > h.max {
		h.max = d
	}
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	if o.max > h.max {
		h.max = o.max
	}
}

// quantile returns the q-quantile (0 < q <= 1) as the midpoint of the
// bucket holding it, or 0 if nothing was recorded.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := histLower(i), histLower(i+1)
			d := time.Duration(lo + (hi-lo)/2)
			if d > h.max {
				d = h.max
			}
			return d
		}
	}
	return h.max
}

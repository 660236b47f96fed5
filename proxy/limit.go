package proxy

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

const (
	// maxBuckets bounds the per-source buckets kept at once (about 64 bytes
	// each, so a few MiB at most). Past it an arbitrary bucket is dropped,
	// which can only hand that source a fresh burst: a source with many
	// addresses has that anyway.
	maxBuckets = 1 << 16

	// sweepInterval is how often, at most, the bucket map is scanned for
	// idle sources, so a flood of new sources costs amortised O(1) each.
	sweepInterval = 10 * time.Second
)

// ipLimiter is a token bucket per source address. A bucket that has refilled
// to its burst is indistinguishable from a new one, so it is deleted: the
// map holds only sources seen recently enough to still be limited.
type ipLimiter struct {
	rate  float64 // tokens per second
	burst float64
	max   int
	now   func() time.Time

	mu        sync.Mutex
	buckets   map[netip.Addr]bucket
	nextSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newIPLimiter(rate float64, burst, max int, now func() time.Time) *ipLimiter {
	return &ipLimiter{
		rate:    rate,
		burst:   float64(burst),
		max:     max,
		now:     now,
		buckets: make(map[netip.Addr]bucket),
	}
}

// allow takes a token from key's bucket and reports whether there was one.
func (l *ipLimiter) allow(key netip.Addr) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !now.Before(l.nextSweep) {
		l.sweep(now)
		l.nextSweep = now.Add(sweepInterval)
	}
	b, ok := l.buckets[key]
	if ok {
		b.tokens = l.refill(b, now)
	} else {
		if len(l.buckets) >= l.max {
			for k := range l.buckets {
				delete(l.buckets, k)
				break
			}
		}
		b.tokens = l.burst
	}
	b.last = now
	allowed := b.tokens >= 1
	if allowed {
		b.tokens--
	}
	l.buckets[key] = b
	return allowed
}

// refill returns b's tokens at now, capped at the burst.
func (l *ipLimiter) refill(b bucket, now time.Time) float64 {
	elapsed := now.Sub(b.last).Seconds()
	if elapsed <= 0 {
		return b.tokens
	}
	return min(l.burst, b.tokens+elapsed*l.rate)
}

// sweep deletes buckets that have refilled to the burst.
func (l *ipLimiter) sweep(now time.Time) {
	for k, b := range l.buckets {
		if l.refill(b, now) >= l.burst {
			delete(l.buckets, k)
		}
	}
}

// size is the number of buckets held, for tests.
func (l *ipLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// sourceKey is the rate-limited unit for a remote address: the IPv4 address,
// or the /64 of an IPv6 address (IPv4-mapped addresses count as IPv4). An
// address that carries no IP (a pipe, a test double) maps to the zero Addr,
// so all such sources share one bucket.
func sourceKey(a net.Addr) netip.Addr {
	var ip netip.Addr
	switch a := a.(type) {
	case nil:
	case *net.TCPAddr:
		if a != nil {
			ip, _ = netip.AddrFromSlice(a.IP)
		}
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			ip = ap.Addr()
		}
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		ip = p.Addr()
	}
	return ip
}

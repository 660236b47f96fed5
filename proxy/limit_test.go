package proxy

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestLimiterBucket(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l := newIPLimiter(2, 3, 100, clk.now) // 2 tokens/s, burst 3
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("192.0.2.2")
	for i := range 3 {
		if !l.allow(a) {
			t.Fatalf("burst token %d refused", i)
		}
	}
	if l.allow(a) {
		t.Fatal("fourth token allowed within the burst window")
	}
	if !l.allow(b) {
		t.Fatal("another source was limited")
	}
	clk.advance(500 * time.Millisecond) // one token back
	if !l.allow(a) || l.allow(a) {
		t.Fatal("refill of one token not honoured exactly")
	}
	clk.advance(time.Hour) // full, never more than the burst
	for range 3 {
		if !l.allow(a) {
			t.Fatal("refilled burst refused")
		}
	}
	if l.allow(a) {
		t.Fatal("refill exceeded the burst")
	}
}

// TestLimiterForgetsIdle: a source whose bucket has refilled is forgotten
// at the next sweep, and forgetting it changes nothing it may do.
func TestLimiterForgetsIdle(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l := newIPLimiter(1, 2, 100, clk.now)
	for i := range 50 {
		l.allow(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}))
	}
	if n := l.size(); n != 50 {
		t.Fatalf("%d buckets, want 50", n)
	}
	busy := netip.MustParseAddr("198.51.100.1")
	clk.advance(sweepInterval)
	l.allow(busy) // sweeps: the 50 refilled long ago
	if n := l.size(); n != 1 {
		t.Fatalf("%d buckets after sweep, want only the busy one", n)
	}
	l.allow(busy)
	if l.allow(busy) {
		t.Fatal("busy source's state was lost")
	}
}

func TestLimiterBounded(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l := newIPLimiter(1e-9, 1, 16, clk.now)
	for i := range 1000 {
		l.allow(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}))
		if n := l.size(); n > 16 {
			t.Fatalf("%d buckets, bound is 16", n)
		}
	}
}

func TestSourceKey(t *testing.T) {
	t.Parallel()
	tcp := func(s string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(s), Port: 1} }
	same := [][2]net.Addr{
		{tcp("192.0.2.1"), tcp("::ffff:192.0.2.1")},
		{tcp("2001:db8:1:2::1"), tcp("2001:db8:1:2:ffff::9")},
		{tcp("fe80::1"), &net.TCPAddr{IP: net.ParseIP("fe80::1"), Zone: "eth0"}},
		{nil, fakeNetAddr("pipe")},
		{(*net.TCPAddr)(nil), nil},
		{tcp("192.0.2.7"), fakeNetAddr("192.0.2.7:443")},
	}
	for _, p := range same {
		if sourceKey(p[0]) != sourceKey(p[1]) {
			t.Errorf("%v and %v are different sources", p[0], p[1])
		}
	}
	differ := [][2]net.Addr{
		{tcp("192.0.2.1"), tcp("192.0.2.2")},
		{tcp("2001:db8:1:2::1"), tcp("2001:db8:1:3::1")},
		{tcp("192.0.2.1"), nil},
	}
	for _, p := range differ {
		if sourceKey(p[0]) == sourceKey(p[1]) {
			t.Errorf("%v and %v are one source", p[0], p[1])
		}
	}
}

type fakeNetAddr string

func (a fakeNetAddr) Network() string { return "fake" }
func (a fakeNetAddr) String() string  { return string(a) }

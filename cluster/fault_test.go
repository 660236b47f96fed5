package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

func TestParseFaultRules(t *testing.T) {
	host := func(s string) netip.Prefix {
		a := netip.MustParseAddr(s)
		return netip.PrefixFrom(a, a.BitLen())
	}
	good := []struct {
		in    string
		want  []FaultRule
		canon string
	}{
		{"", nil, ""},
		{" ;\n; ", nil, ""},
		{"drop 127.0.0.5:7100; delay=50ms 127.0.0.0/8", []FaultRule{
			{Peer: host("127.0.0.5"), Port: 7100, Drop: true},
			{Peer: netip.MustParsePrefix("127.0.0.0/8"), Delay: 50 * time.Millisecond},
		}, "drop 127.0.0.5:7100; delay=50ms 127.0.0.0/8"},
		{"pass 10.0.0.1\ndrop *", []FaultRule{{Peer: host("10.0.0.1")}, {Drop: true}}, "pass 10.0.0.1; drop *"},
		{"delay=1.5s *:7100", []FaultRule{{Port: 7100, Delay: 1500 * time.Millisecond}}, "delay=1.5s *:7100"},
		{"drop [::1]:9", []FaultRule{{Peer: host("::1"), Port: 9, Drop: true}}, "drop [::1]:9"},
		{"drop 0:0::1", []FaultRule{{Peer: host("::1"), Drop: true}}, "drop ::1"},
		{"drop [fd00::/8]:7100", []FaultRule{{Peer: netip.MustParsePrefix("fd00::/8"), Port: 7100, Drop: true}}, "drop [fd00::/8]:7100"},
		{"drop 10.1.2.3/8:53", []FaultRule{{Peer: netip.MustParsePrefix("10.0.0.0/8"), Port: 53, Drop: true}}, "drop 10.0.0.0/8:53"},
		{"delay=1m 127.0.0.1", []FaultRule{{Peer: host("127.0.0.1"), Delay: time.Minute}}, "delay=1m0s 127.0.0.1"},
	}
	for _, tc := range good {
		got, err := ParseFaultRules(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %+v, want %+v", tc.in, got, tc.want)
		}
		if s := FormatFaultRules(got); s != tc.canon {
			t.Errorf("%q: formats as %q, want %q", tc.in, s, tc.canon)
		}
	}
	bad := []string{
		"drop",
		"127.0.0.1",
		"drop 127.0.0.1 extra",
		"block 127.0.0.1",
		"DROP 127.0.0.1",
		"delay 127.0.0.1",
		"delay=0s 127.0.0.1",
		"delay=-5ms 127.0.0.1",
		"delay=2m 127.0.0.1",
		"delay=fast 127.0.0.1",
		"drop 127.0.0.1:0",
		"drop 127.0.0.1:65536",
		"drop 127.0.0.1:",
		"drop 127.0.0.1:+80",
		"drop [127.0.0.1]:80",
		"drop [::1]",
		"drop [::1]80",
		"drop [*]:80",
		"drop ::ffff:127.0.0.1",
		"drop fe80::1%eth0",
		"drop 127.0.0.1/33",
		"drop 256.0.0.1",
		"drop localhost",
		"drop *:*",
		strings.Repeat("drop *;", MaxFaultRules+1),
		"drop " + strings.Repeat("1", MaxFaultRulesText),
	}
	for _, in := range bad {
		if got, err := ParseFaultRules(in); err == nil {
			t.Errorf("%.40q: accepted as %v", in, got)
		}
	}
	if _, err := ParseFaultRules(strings.Repeat("drop *;", MaxFaultRules)); err != nil {
		t.Errorf("%d rules: %v", MaxFaultRules, err)
	}
}

func FuzzParseFaultRules(f *testing.F) {
	for _, s := range []string{
		"drop 127.0.0.5:7100; delay=50ms 127.0.0.0/8",
		"pass 10.0.0.1\ndrop *",
		"delay=1.5s *:7100",
		"drop [fd00::/8]:7100; drop ::1",
		"delay=.5us 10.1.2.3/8:53",
		"drop [::1]",
		"drop ::ffff:1.2.3.4",
		"delay=2m *",
		"drop 127.0.0.1:0",
		";;\n",
		strings.Repeat("delay=1m *:1;", MaxFaultRules),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rules, err := ParseFaultRules(s)
		if err != nil {
			if rules != nil {
				t.Fatal("rules returned with an error")
			}
			return
		}
		if len(rules) > MaxFaultRules {
			t.Fatalf("%d rules", len(rules))
		}
		for _, r := range rules {
			if r.Drop && r.Delay != 0 || r.Delay < 0 || r.Delay > MaxFaultDelay || r.Peer != r.Peer.Masked() && r.Peer.IsValid() {
				t.Fatalf("rule out of range: %+v", r)
			}
			one, err := ParseFaultRules(r.String())
			if err != nil || len(one) != 1 || one[0] != r {
				t.Fatalf("%+v formats as %q, which parses as %v, %v", r, r.String(), one, err)
			}
		}
		text := FormatFaultRules(rules)
		again, err := ParseFaultRules(text)
		if err != nil || !slices.Equal(again, rules) {
			t.Fatalf("%q formats as %q, which parses as %v, %v", s, text, again, err)
		}
	})
}

func TestFaultRuleMatching(t *testing.T) {
	f := NewFaults()
	rules, err := ParseFaultRules("pass 127.0.0.2; drop 127.0.0.0/8:7100; delay=5ms [::1]:7100; drop *:9")
	if err != nil {
		t.Fatal(err)
	}
	f.Set(rules)
	rules[0].Drop = true // Set copied them
	for _, tc := range []struct {
		addr net.Addr
		want string // the matching rule, "" for none
	}{
		{&net.UDPAddr{IP: net.ParseIP("127.0.0.2"), Port: 7100}, "pass 127.0.0.2"},
		{&net.UDPAddr{IP: net.ParseIP("127.0.0.3"), Port: 7100}, "drop 127.0.0.0/8:7100"},
		{&net.UDPAddr{IP: net.IPv4(127, 0, 0, 3).To4(), Port: 7100}, "drop 127.0.0.0/8:7100"},
		{&net.UDPAddr{IP: net.ParseIP("127.0.0.3"), Port: 7101}, ""},
		{&net.UDPAddr{IP: net.ParseIP("::1"), Port: 7100}, "delay=5ms [::1]:7100"},
		{&net.UDPAddr{IP: net.ParseIP("::1"), Port: 9, Zone: "lo"}, "drop *:9"},
		{&net.UDPAddr{IP: net.ParseIP("10.0.0.1"), Port: 7100}, ""},
		{&net.IPAddr{IP: net.ParseIP("10.0.0.1")}, ""},
	} {
		r, ok := f.lookup(tc.addr)
		got := ""
		if ok {
			got = r.String()
		}
		if got != tc.want {
			t.Errorf("%v: matched %q, want %q", tc.addr, got, tc.want)
		}
	}
	if got := f.Rules(); !slices.Equal(got[1:], rules[1:]) || got[0].Drop {
		t.Errorf("Rules() = %v", got)
	}
	f.Set(nil)
	if got := f.Rules(); len(got) != 0 {
		t.Errorf("after Set(nil): %v", got)
	}
	var zero Faults
	if _, ok := zero.lookup(&net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: 1}); ok {
		t.Error("zero Faults matched")
	}
}

// listenUDP opens a loopback UDP socket closed at the end of the test.
func listenUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	return uc
}

// wrapUDP wraps a fresh loopback socket with limit; the wrapper is closed
// at the end of the test.
func wrapUDP(t *testing.T, f *Faults, limit int) net.PacketConn {
	t.Helper()
	pc := wrapPacketConn(listenUDP(t), f, limit)
	t.Cleanup(func() { pc.Close() })
	return pc
}

func hostRule(addr net.Addr, r FaultRule) FaultRule {
	ap := addr.(*net.UDPAddr).AddrPort()
	r.Peer = netip.PrefixFrom(ap.Addr().Unmap(), 32)
	r.Port = ap.Port()
	return r
}

// sendSeq writes datagrams carrying the numbers from, ..., to-1.
func sendSeq(t *testing.T, pc net.PacketConn, to net.Addr, from, end uint32) {
	t.Helper()
	var b [4]byte
	for i := from; i < end; i++ {
		binary.BigEndian.PutUint32(b[:], i)
		if n, err := pc.WriteTo(b[:], to); err != nil || n != 4 {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
}

// recvSeq reads n numbered datagrams, each within a generous wait.
func recvSeq(t *testing.T, uc *net.UDPConn, n int) []uint32 {
	t.Helper()
	var got []uint32
	b := make([]byte, 64)
	for len(got) < n {
		uc.SetReadDeadline(time.Now().Add(2 * time.Second))
		m, _, err := uc.ReadFrom(b)
		if err != nil || m != 4 {
			t.Fatalf("read after %v: %d, %v", got, m, err)
		}
		got = append(got, binary.BigEndian.Uint32(b))
	}
	return got
}

// expectNone checks that nothing arrives for quiet.
func expectNone(t *testing.T, uc *net.UDPConn, quiet time.Duration) {
	t.Helper()
	uc.SetReadDeadline(time.Now().Add(quiet))
	b := make([]byte, 64)
	if n, _, err := uc.ReadFrom(b); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("unexpected datagram: %q, %v", b[:n], err)
	}
}

func seq(from, end uint32) []uint32 {
	var s []uint32
	for i := from; i < end; i++ {
		s = append(s, i)
	}
	return s
}

// TestFaultConnKeepsOrder delays one destination, then lifts the delay
// while datagrams are still queued: later datagrams must not overtake
// them. Another destination is never held up.
func TestFaultConnKeepsOrder(t *testing.T) {
	f := NewFaults()
	pc := wrapUDP(t, f, FaultQueueLimit)
	slow, fast := listenUDP(t), listenUDP(t)
	const delay = 100 * time.Millisecond
	f.Set([]FaultRule{hostRule(slow.LocalAddr(), FaultRule{Delay: delay})})

	start := time.Now()
	sendSeq(t, pc, slow.LocalAddr(), 0, 100)
	f.Set(nil)
	sendSeq(t, pc, slow.LocalAddr(), 100, 200) // queued behind the first 100
	if got := recvSeq(t, slow, 200); !slices.Equal(got, seq(0, 200)) {
		t.Fatalf("got %v", got)
	}
	if d := time.Since(start); d < delay {
		t.Fatalf("delayed datagrams arrived after %v, want ≥ %v", d, delay)
	}
	sendSeq(t, pc, slow.LocalAddr(), 200, 201) // queue empty: sent at once
	if got := recvSeq(t, slow, 1); !slices.Equal(got, seq(200, 201)) {
		t.Fatalf("after the queue drained: %v", got)
	}

	f.Set([]FaultRule{hostRule(slow.LocalAddr(), FaultRule{Delay: time.Minute})})
	sendSeq(t, pc, slow.LocalAddr(), 0, 1)
	sendSeq(t, pc, fast.LocalAddr(), 0, 1)
	if got := recvSeq(t, fast, 1); !slices.Equal(got, seq(0, 1)) {
		t.Fatalf("fast destination got %v", got)
	}
	expectNone(t, slow, 50*time.Millisecond)
}

// TestFaultConnQueueBound fills a small delay queue: what does not fit is
// dropped, what fits arrives in order.
func TestFaultConnQueueBound(t *testing.T) {
	f := NewFaults()
	const limit = 8
	pc := wrapUDP(t, f, limit)
	dst := listenUDP(t)
	f.Set([]FaultRule{hostRule(dst.LocalAddr(), FaultRule{Delay: 100 * time.Millisecond})})
	sendSeq(t, pc, dst.LocalAddr(), 0, 3*limit) // every write reports success
	if got := recvSeq(t, dst, limit); !slices.Equal(got, seq(0, limit)) {
		t.Fatalf("got %v, want the first %d", got, limit)
	}
	expectNone(t, dst, 200*time.Millisecond)
}

// TestFaultConnDrop cuts a link both ways: writes to the peer vanish and
// its datagrams are skipped by ReadFrom, which returns the next one.
func TestFaultConnDrop(t *testing.T) {
	f := NewFaults()
	pc := wrapUDP(t, f, FaultQueueLimit)
	cut, other := listenUDP(t), listenUDP(t)
	f.Set([]FaultRule{hostRule(cut.LocalAddr(), FaultRule{Drop: true})})

	sendSeq(t, pc, cut.LocalAddr(), 0, 3)
	expectNone(t, cut, 100*time.Millisecond)
	sendSeq(t, cut, pc.LocalAddr(), 0, 3)
	sendSeq(t, other, pc.LocalAddr(), 7, 8)
	pc.SetReadDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 64)
	n, from, err := pc.ReadFrom(b)
	if err != nil || n != 4 || binary.BigEndian.Uint32(b) != 7 || from.String() != other.LocalAddr().String() {
		t.Fatalf("ReadFrom = %d, %v, %v: want datagram 7 from %v", n, from, err, other.LocalAddr())
	}

	// Datagrams queued on a link that is then cut are lost with it.
	f.Set([]FaultRule{hostRule(cut.LocalAddr(), FaultRule{Delay: 50 * time.Millisecond})})
	sendSeq(t, pc, cut.LocalAddr(), 0, 3)
	f.Set([]FaultRule{hostRule(cut.LocalAddr(), FaultRule{Drop: true})})
	expectNone(t, cut, 200*time.Millisecond)
}

// TestFaultConnClose checks that Close stops the delay goroutine, is safe
// twice, and that the conn refuses writes afterwards.
func TestFaultConnClose(t *testing.T) {
	before := runtime.NumGoroutine()
	f := NewFaults()
	dst := listenUDP(t)
	f.Set([]FaultRule{hostRule(dst.LocalAddr(), FaultRule{Delay: time.Minute})})
	pc := WrapPacketConn(listenUDP(t), f)
	sendSeq(t, pc, dst.LocalAddr(), 0, 10) // held in the queue
	if err := pc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pc.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := pc.WriteTo([]byte("x"), dst.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteTo after Close: %v", err)
	}
	waitFor(t, 2*time.Second, func() error {
		if n := runtime.NumGoroutine(); n > before {
			return fmt.Errorf("%d goroutines, %d before", n, before)
		}
		return nil
	})
}

// TestWrapPacketConnForQUIC pins what quic-go sees: a wrapped UDP socket
// keeps the buffer and socket-option methods quic-go uses to tune it, but
// not the batched/OOB path, which would read and write past the rules.
func TestWrapPacketConnForQUIC(t *testing.T) {
	pc := WrapPacketConn(listenUDP(t), NewFaults())
	defer pc.Close()
	if _, ok := pc.(interface{ SetReadBuffer(int) error }); !ok {
		t.Error("no SetReadBuffer: quic-go would warn about buffer sizes")
	}
	if _, ok := pc.(interface{ SetWriteBuffer(int) error }); !ok {
		t.Error("no SetWriteBuffer")
	}
	if _, ok := pc.(interface {
		SyscallConn() (syscall.RawConn, error)
	}); !ok {
		t.Error("no SyscallConn: quic-go could not set DF")
	}
	if _, ok := pc.(quic.OOBCapablePacketConn); ok {
		t.Error("OOB-capable: quic-go would bypass ReadFrom and WriteTo")
	}
	// A conn without those methods is wrapped without them, rather than
	// with methods that fail.
	type plain struct{ net.PacketConn }
	pc2 := WrapPacketConn(plain{listenUDP(t)}, NewFaults())
	defer pc2.Close()
	if _, ok := pc2.(interface{ SetReadBuffer(int) error }); ok {
		t.Error("plain conn wrapped with SetReadBuffer")
	}
}

// startFaultyMesh starts a mesh whose UDP socket goes through f.
func startFaultyMesh(t *testing.T, ca *CA, id NodeID, f *Faults) *Mesh {
	t.Helper()
	pc := WrapPacketConn(listenUDP(t), f)
	t.Cleanup(func() { pc.Close() }) // after the mesh's Close: cleanups run last first
	return startMesh(t, ca, id, nodeCert(t, ca, id), func(c *MeshConfig) { c.PacketConn = pc })
}

// roundTripWithin opens a stream and echoes one frame, all within d; for
// checking that a link is cut.
func roundTripWithin(from, to *Mesh, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	s, err := from.Open(ctx, to.ID(), to.Addr().String(), KindRPC)
	if err != nil {
		return err
	}
	defer s.Close()
	deadline, _ := ctx.Deadline()
	s.SetDeadline(deadline)
	if err := WriteFrame(s, []byte("x")); err != nil {
		return err
	}
	_, err = ReadFrame(s, nil, 1<<10)
	return err
}

func TestFaultMeshPartitionAndHeal(t *testing.T) {
	ca := testCA(t)
	f := NewFaults()
	a := startFaultyMesh(t, ca, "a", f)
	b := startMesh(t, ca, "b", nodeCert(t, ca, "b"))
	handleAll(a, nil)
	handleAll(b, nil)
	ctx := context.Background()
	cut := []FaultRule{hostRule(b.Addr(), FaultRule{Drop: true})}

	// Cut before the first contact: the dial cannot complete.
	f.Set(cut)
	if err := roundTripWithin(a, b, 300*time.Millisecond); err == nil {
		t.Fatal("a reached b across a cut link")
	}
	f.Set(nil)
	waitFor(t, 5*time.Second, func() error { return roundTrip(ctx, a, b, KindRPC, []byte("1")) })
	if err := roundTrip(ctx, b, a, KindRPC, []byte("2")); err != nil {
		t.Fatal(err)
	}

	// Cut the live connection: neither side gets an answer.
	f.Set(cut)
	if err := roundTripWithin(a, b, 300*time.Millisecond); err == nil {
		t.Fatal("a→b crossed a cut link")
	}
	if err := roundTripWithin(b, a, 300*time.Millisecond); err == nil {
		t.Fatal("b→a crossed a cut link")
	}

	// Heal: the same connection carries streams again once QUIC
	// retransmits.
	f.Set(nil)
	start := time.Now()
	waitFor(t, 5*time.Second, func() error { return roundTripWithin(a, b, time.Second) })
	waitFor(t, 5*time.Second, func() error { return roundTripWithin(b, a, time.Second) })
	t.Logf("healed after %v", time.Since(start).Round(time.Millisecond))
}

func TestFaultMeshDelay(t *testing.T) {
	ca := testCA(t)
	fa, fb := NewFaults(), NewFaults()
	a := startFaultyMesh(t, ca, "a", fa)
	b := startFaultyMesh(t, ca, "b", fb)
	handleAll(a, nil)
	handleAll(b, nil)
	ctx := context.Background()
	rtt := func() time.Duration {
		t.Helper()
		start := time.Now()
		if err := roundTrip(ctx, a, b, KindRPC, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	rtt() // connect
	fast := rtt()

	const oneWay = 50 * time.Millisecond
	fa.Set([]FaultRule{hostRule(b.Addr(), FaultRule{Delay: oneWay})})
	fb.Set([]FaultRule{hostRule(a.Addr(), FaultRule{Delay: oneWay})})
	for i := 0; i < 3; i++ {
		if d := rtt(); d < 2*oneWay {
			t.Fatalf("round trip %d with %v each way took %v", i, oneWay, d)
		} else {
			t.Logf("round trip: %v without delay, %v with %v each way", fast, d, oneWay)
		}
	}
}

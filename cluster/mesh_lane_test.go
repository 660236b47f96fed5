package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mtnode/mtnode/internal/freeport"
)

func noLane(cfg *MeshConfig) { cfg.NoLane = true }

func TestLaneCarriesBulkStreams(t *testing.T) {
	ca := testCA(t)
	a := startMesh(t, ca, "a", nodeCert(t, ca, "a"))
	b := startMesh(t, ca, "b", nodeCert(t, ca, "b"))
	var calls atomic.Int64
	b.Handle(KindProxy, echo(b.ID(), &calls))
	handleAll(b, &calls)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	s, err := a.Open(ctx, b.ID(), b.Addr().String(), KindProxy)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Lane() {
		t.Fatal("a proxy stream between two meshes with lanes went over QUIC")
	}
	if s.Peer() != b.ID() || s.Kind() != KindProxy {
		t.Fatalf("stream peer %s kind %s", s.Peer(), s.Kind())
	}
	if _, ok := s.RemoteAddr().(*net.TCPAddr); !ok {
		t.Fatalf("lane stream's remote address %v is not TCP", s.RemoteAddr())
	}
	s.SetDeadline(time.Now().Add(10 * time.Second))
	// Frames of every size up to the echo's limit, in order.
	for _, n := range []int{0, 1, 4, 1000, 16 << 10, 16<<10 + 1, 60 << 10} {
		p := make([]byte, n)
		rand.Read(p)
		if err := WriteFrame(s, p); err != nil {
			t.Fatal(err)
		}
		got, err := ReadFrame(s, nil, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		want := append([]byte("proxy:b:a:"), p...)
		if !bytes.Equal(got, want) {
			t.Fatalf("frame of %d bytes came back as %d bytes, differing", n, len(got))
		}
	}
	// The next lane to b resumes the TLS session (no certificate
	// signatures), and b still knows who dialled.
	s2, err := a.Open(ctx, b.ID(), b.Addr().String(), KindProxy)
	if err != nil || !s2.Lane() {
		t.Fatalf("second lane: %v", err)
	}
	defer s2.Close()
	s2.SetDeadline(time.Now().Add(10 * time.Second))
	if err := WriteFrame(s2, []byte("again")); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadFrame(s2, nil, 1024); err != nil || string(got) != "proxy:b:a:again" {
		t.Fatalf("resumed lane: %q, %v", got, err)
	}
	if !s2.lane.ConnectionState().DidResume {
		t.Error("the second lane to b did not resume its TLS session")
	}
	// Other kinds stay on the QUIC connection.
	r, err := a.Open(ctx, b.ID(), b.Addr().String(), KindRPC)
	if err != nil {
		t.Fatal(err)
	}
	if r.Lane() {
		t.Fatal("an RPC stream used the TCP lane")
	}
	r.Close()
	if err := roundTrip(ctx, a, b, KindRPC, []byte("x")); err != nil {
		t.Fatal(err)
	}
	// b answering where a believes node c is: neither the lane (b's
	// certificate, or a session resumed from b) nor QUIC accepts it.
	if s, err := a.Open(ctx, "c", b.Addr().String(), KindProxy); err == nil {
		s.Close()
		t.Fatal("a bulk stream reached b as node c")
	}
}

// A peer without a lane, or with something else on its TCP port, gets
// QUIC streams of bulk kinds, and the lane is not tried again at once.
func TestLaneFallsBackToQUIC(t *testing.T) {
	ca := testCA(t)
	a := startMesh(t, ca, "a", nodeCert(t, ca, "a"))
	b := startMesh(t, ca, "b", nodeCert(t, ca, "b"), noLane)
	cAddr, err := freeport.Addr("udp") // its TCP twin free for the silent listener
	if err != nil {
		t.Fatal(err)
	}
	c := startMesh(t, ca, "c", nodeCert(t, ca, "c"), noLane, func(cfg *MeshConfig) { cfg.Addr = cAddr })
	for _, m := range []*Mesh{b, c} {
		m.Handle(KindProxy, echo(m.ID(), nil))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// b: nothing listens on its TCP port.
	if err := roundTrip(ctx, a, b, KindProxy, []byte("quic")); err != nil {
		t.Fatal(err)
	}
	// c: a TCP listener that accepts and never answers holds its port.
	silent, err := net.Listen("tcp", c.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			nc, err := silent.Accept()
			if err != nil {
				return
			}
			defer nc.Close()
		}
	}()
	start := time.Now()
	if err := roundTrip(ctx, a, c, KindProxy, []byte("quic")); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < laneDialTimeout {
		t.Fatalf("fell back after %v, before the lane's dial timeout", d)
	}
	// Marked down: the next stream does not wait for the lane again.
	start = time.Now()
	s, err := a.Open(ctx, c.ID(), c.Addr().String(), KindProxy)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s.Lane() {
		t.Fatal("stream used a lane that is not c's")
	}
	if d := time.Since(start); d >= laneDialTimeout {
		t.Fatalf("second stream waited %v for a lane marked down", d)
	}
}

// The lane checks what the QUIC mesh checks: a certificate of the
// cluster CA from the dialler, and a stream header of a bulk kind with a
// handler. Nothing else reaches a handler.
func TestLaneRefusesWhatTheMeshRefuses(t *testing.T) {
	ca := testCA(t)
	b := startMesh(t, ca, "b", nodeCert(t, ca, "b"))
	var calls atomic.Int64
	b.Handle(KindProxy, echo(b.ID(), &calls))
	handleAll(b, &calls)
	other := testCA(t)
	addr := b.Addr().String()

	dial := func(t *testing.T, cert *tls.Certificate, kind StreamKind) {
		t.Helper()
		conf := &tls.Config{RootCAs: ca.Pool(), ServerName: b.ID().dnsName(), NextProtos: []string{ALPN}, MinVersion: tls.VersionTLS13}
		if cert != nil {
			conf.Certificates = []tls.Certificate{*cert}
		}
		d := &net.Dialer{Timeout: 5 * time.Second}
		tc, err := tls.DialWithDialer(d, "tcp", addr, conf)
		if err != nil {
			return // refused in the handshake
		}
		defer tc.Close()
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		var hdr [streamHeaderLen]byte
		hdr[0] = byte(kind)
		tc.Write(hdr[:])
		WriteFrame(tc, []byte("x"))
		if _, err := ReadFrame(tc, nil, 1024); err == nil {
			t.Fatal("lane answered")
		}
	}
	good := nodeCert(t, ca, "a")
	rogue := nodeCert(t, other, "a")
	t.Run("no client certificate", func(t *testing.T) { dial(t, nil, KindProxy) })
	t.Run("other CA", func(t *testing.T) { dial(t, &rogue, KindProxy) })
	t.Run("kind that is not bulk", func(t *testing.T) { dial(t, &good, KindRPC) })
	t.Run("unknown kind", func(t *testing.T) { dial(t, &good, maxKind+1) })
	t.Run("plain bytes", func(t *testing.T) {
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		nc.Write(bytes.Repeat([]byte{0x16, 3, 1, 0xff, 0xff}, 100))
		if _, err := io.Copy(io.Discard, nc); err != nil {
			t.Fatalf("garbage was not answered by a close: %v", err)
		}
	})
	if n := calls.Load(); n != 0 {
		t.Fatalf("%d handlers ran for refused lane connections", n)
	}
	// The same certificate with a bulk kind is served.
	conf := &tls.Config{RootCAs: ca.Pool(), ServerName: b.ID().dnsName(), NextProtos: []string{ALPN},
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{good}}
	tc, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	var hdr [streamHeaderLen]byte
	hdr[0] = byte(KindProxy)
	tc.Write(hdr[:])
	WriteFrame(tc, []byte("x"))
	if got, err := ReadFrame(tc, nil, 1024); err != nil || string(got) != "proxy:b:a:x" {
		t.Fatalf("proven lane: %q, %v", got, err)
	}
}

// Connections that never prove themselves hold at most
// maxLaneHandshakes slots, each for at most HeaderTimeout.
func TestLaneBoundsUnprovenConnections(t *testing.T) {
	ca := testCA(t)
	b := startMesh(t, ca, "b", nodeCert(t, ca, "b"), func(c *MeshConfig) { c.HeaderTimeout = 2 * time.Second })
	b.Handle(KindProxy, echo(b.ID(), nil))
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range maxLaneHandshakes {
		nc, err := net.Dial("tcp", b.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, nc)
	}
	waitFor(t, 5*time.Second, func() error {
		if n := len(b.lane.handshakes); n != maxLaneHandshakes {
			return errors.New("slots not all taken yet")
		}
		return nil
	})
	// One more is closed at once.
	extra, err := net.Dial("tcp", b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := extra.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("connection over the bound: %v, want closed", err)
	}
	// The silent ones are closed after HeaderTimeout, freeing the slots.
	waitFor(t, 5*time.Second, func() error {
		if n := len(b.lane.handshakes); n != 0 {
			return errors.New("slots still taken")
		}
		return nil
	})
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// Close ends lane streams on both sides, and Reset aborts one.
func TestLaneCloseAndReset(t *testing.T) {
	ca := testCA(t)
	a := startMesh(t, ca, "a", nodeCert(t, ca, "a"))
	b := startMesh(t, ca, "b", nodeCert(t, ca, "b"))
	served := make(chan *Stream, 4)
	b.Handle(KindProxy, func(ctx context.Context, peer NodeID, s *Stream) {
		served <- s
		io.Copy(io.Discard, s)
	})
	ctx := context.Background()
	open := func() *Stream {
		s, err := a.Open(ctx, b.ID(), b.Addr().String(), KindProxy)
		if err != nil || !s.Lane() {
			t.Fatalf("open lane: %v", err)
		}
		return s
	}
	s1 := open()
	<-served
	s1.Reset()
	if _, err := s1.Write([]byte("x")); err == nil {
		t.Fatal("write after Reset succeeded")
	}
	s2 := open()
	theirs := <-served
	start := time.Now()
	a.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v", d)
	}
	if _, err := s2.Write([]byte("x")); err == nil {
		t.Fatal("lane stream survived Close")
	}
	theirs.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := theirs.Read(make([]byte, 1)); err == nil {
		t.Fatal("peer's side of the lane survived Close")
	}
}

// A peer whose lane worked and now refuses connections has lost its
// process: its QUIC connection is dropped, not handed a stream that
// would go nowhere until the idle timeout. Here b's mesh goes silent on
// UDP (the fault injector drops everything) and its lane stops listening.
func TestLaneRefusedDropsTheStaleConnection(t *testing.T) {
	ca := testCA(t)
	addr, err := freeport.Addr("udp") // its TCP twin free too, for b's lane
	if err != nil {
		t.Fatal(err)
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := net.ListenUDP("udp", ua)
	if err != nil {
		t.Fatal(err)
	}
	faults := NewFaults()
	fc := WrapPacketConn(uc, faults)
	t.Cleanup(func() { fc.Close() }) // after b's mesh (cleanups run last first)
	a := startMesh(t, ca, "a", nodeCert(t, ca, "a"))
	b := startMesh(t, ca, "b", nodeCert(t, ca, "b"), func(c *MeshConfig) { c.PacketConn = fc })
	if b.lane.ln == nil {
		t.Fatal("b has no lane")
	}
	b.Handle(KindProxy, echo(b.ID(), nil))
	ctx := context.Background()
	if err := roundTrip(ctx, a, b, KindProxy, []byte("up")); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(ctx, a, b, KindRPC, []byte("x")); err == nil {
		t.Fatal("b answered an RPC stream without a handler")
	} // the QUIC connection to b exists now
	faults.Set([]FaultRule{{Drop: true}})
	b.lane.ln.Close()

	octx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if s, err := a.Open(octx, b.ID(), b.Addr().String(), KindProxy); err == nil {
		s.Close()
		t.Fatal("a bulk stream opened on the connection to a vanished peer")
	}
}

package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testCA runs Keygen in a temp dir and loads the CA back, as a node would.
func testCA(t testing.TB) *CA {
	t.Helper()
	dir := t.TempDir()
	if _, err := Keygen(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	ca, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func nodeCert(t testing.TB, ca *CA, id NodeID) tls.Certificate {
	t.Helper()
	c, err := IssueNodeCert(ca, id, []string{"127.0.0.1"}, time.Now().Add(-time.Hour), DefaultNodeValidity)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type meshOpt func(*MeshConfig)

// startMesh builds and runs a mesh on loopback; cleanup closes it and
// checks Run returned nil.
func startMesh(t testing.TB, ca *CA, id NodeID, cert tls.Certificate, opts ...meshOpt) *Mesh {
	t.Helper()
	cfg := MeshConfig{ID: id, Addr: "127.0.0.1:0", Cert: cert, CA: ca.Pool()}
	for _, o := range opts {
		o(&cfg)
	}
	m, err := NewMesh(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(context.Background()) }()
	t.Cleanup(func() {
		m.Close()
		if err := <-done; err != nil {
			t.Errorf("%s: Run: %v", id, err)
		}
	})
	return m
}

// echo serves frames back prefixed with "kind:self:peer:".
func echo(self NodeID, calls *atomic.Int64) Handler {
	return func(ctx context.Context, peer NodeID, s *Stream) {
		if calls != nil {
			calls.Add(1)
		}
		buf := make([]byte, 0, 64<<10)
		for {
			p, err := ReadFrame(s, buf, 64<<10)
			if err != nil {
				if errors.Is(err, ErrFrameTooLarge) {
					s.Reset()
				}
				return
			}
			out := append([]byte(fmt.Sprintf("%s:%s:%s:", s.Kind(), self, peer)), p...)
			if err := WriteFrame(s, out); err != nil {
				return
			}
		}
	}
}

var allKinds = []StreamKind{KindRaft, KindRPC, KindPush, KindGossip}

func handleAll(m *Mesh, calls *atomic.Int64) {
	for _, k := range allKinds {
		m.Handle(k, echo(m.ID(), calls))
	}
}

// roundTrip opens a stream and checks one echoed frame.
func roundTrip(ctx context.Context, from, to *Mesh, kind StreamKind, payload []byte) error {
	s, err := from.Open(ctx, to.ID(), to.Addr().String(), kind)
	if err != nil {
		return err
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(5 * time.Second))
	if err := WriteFrame(s, payload); err != nil {
		return err
	}
	got, err := ReadFrame(s, nil, 1<<20)
	if err != nil {
		return err
	}
	want := append([]byte(fmt.Sprintf("%s:%s:%s:", kind, to.ID(), from.ID())), payload...)
	if !bytes.Equal(got, want) {
		return fmt.Errorf("got %q, want %q", got, want)
	}
	return nil
}

func TestMeshTwoNodesReuseOneConnection(t *testing.T) {
	ca := testCA(t)
	a := startMesh(t, ca, "a", nodeCert(t, ca, "a"))
	b := startMesh(t, ca, "b", nodeCert(t, ca, "b"))
	handleAll(a, nil)
	handleAll(b, nil)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		for _, k := range allKinds {
			if err := roundTrip(ctx, a, b, k, []byte("hello")); err != nil {
				t.Fatalf("a→b %s: %v", k, err)
			}
			if err := roundTrip(ctx, b, a, k, []byte("hi")); err != nil {
				t.Fatalf("b→a %s: %v", k, err)
			}
		}
	}
	// b reached a over the connection a dialled: one connection per pair.
	for _, m := range []*Mesh{a, b} {
		m.mu.Lock()
		n := 0
		for _, pcs := range m.conns {
			n += len(pcs)
		}
		m.mu.Unlock()
		if n != 1 {
			t.Errorf("%s holds %d connections, want 1", m.ID(), n)
		}
	}
}

func TestMeshThreeNodesConcurrentKinds(t *testing.T) {
	ca := testCA(t)
	var ms []*Mesh
	for _, id := range []NodeID{"n1", "n2", "n3"} {
		m := startMesh(t, ca, id, nodeCert(t, ca, id))
		handleAll(m, nil)
		ms = append(ms, m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for _, from := range ms {
		for _, to := range ms {
			if from == to {
				continue
			}
			for _, k := range allKinds {
				for i := 0; i < 4; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						p := bytes.Repeat([]byte{byte(i)}, 1000*(i+1))
						if err := roundTrip(ctx, from, to, k, p); err != nil {
							errs <- fmt.Errorf("%s→%s %s: %w", from.ID(), to.ID(), k, err)
						}
					}()
				}
			}
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, m := range ms {
		if got := len(m.Peers()); got != 2 {
			t.Errorf("%s has %d peers, want 2", m.ID(), got)
		}
	}
}

// TestMeshRejectsUntrustedPeers: a certificate from another CA, none at
// all, an expired one, or the right CA but the wrong node name never gets a
// stream handled.
func TestMeshRejectsUntrustedPeers(t *testing.T) {
	ca := testCA(t)
	var calls atomic.Int64
	good := startMesh(t, ca, "good", nodeCert(t, ca, "good"))
	handleAll(good, &calls)
	ctx := context.Background()

	other := testCA(t)
	expired, err := IssueNodeCert(ca, "old", nil, time.Now().Add(-3*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		id   NodeID
		cert tls.Certificate
		pool *CA
	}{
		{"other CA", "rogue", nodeCert(t, other, "rogue"), other},
		{"other CA trusting ours", "rogue2", nodeCert(t, other, "rogue2"), ca},
		{"expired", "old", expired, ca},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bad := startMesh(t, c.pool, c.id, c.cert, func(cfg *MeshConfig) {
				cfg.HandshakeTimeout = time.Second
			})
			var badCalls atomic.Int64
			handleAll(bad, &badCalls)
			octx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := roundTrip(octx, bad, good, KindRPC, []byte("x")); err == nil {
				t.Fatal("untrusted peer reached a handler")
			}
			if err := roundTrip(octx, good, bad, KindRPC, []byte("x")); err == nil {
				t.Fatal("good node trusted an untrusted peer")
			}
			if n := badCalls.Load(); n != 0 {
				t.Fatalf("untrusted node ran %d handlers", n)
			}
		})
	}

	t.Run("no client cert", func(t *testing.T) {
		dialRaw(t, good, tls.Certificate{}, ca)
	})
	t.Run("wrong node name", func(t *testing.T) {
		// A valid node "b" answering at the address we believe is "c".
		b := startMesh(t, ca, "b", nodeCert(t, ca, "b"))
		handleAll(b, &calls)
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := good.Open(octx, "c", b.Addr().String(), KindRPC); err == nil {
			t.Fatal("dial accepted a certificate for another node")
		}
	})
	if n := calls.Load(); n != 0 {
		t.Fatalf("%d handlers ran for untrusted peers", n)
	}
}

// dialRaw dials m with a plain QUIC client and cert (possibly none) and
// requires that no stream gets through.
func dialRaw(t *testing.T, m *Mesh, cert tls.Certificate, ca *CA) {
	t.Helper()
	conf := &tls.Config{
		RootCAs:    ca.Pool(),
		ServerName: m.ID().dnsName(),
		NextProtos: []string{ALPN},
		MinVersion: tls.VersionTLS13,
	}
	if len(cert.Certificate) > 0 {
		conf.Certificates = []tls.Certificate{cert}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ua := m.Addr().(*net.UDPAddr)
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: uc}
	defer uc.Close()
	defer tr.Close()
	qc, err := tr.Dial(ctx, ua, conf, &quic.Config{HandshakeIdleTimeout: time.Second})
	if err != nil {
		return // refused in the handshake
	}
	defer qc.CloseWithError(0, "")
	// TLS 1.3 lets the client finish before the server checks its
	// certificate; the server's refusal then closes the connection.
	s, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return
	}
	var hdr [streamHeaderLen]byte
	hdr[0] = byte(KindRPC)
	s.Write(hdr[:])
	WriteFrame(s, []byte("x"))
	if _, err := ReadFrame(s, nil, 1024); err == nil {
		t.Fatal("stream answered without a client certificate")
	}
}

func TestMeshRejectsOversizedFrame(t *testing.T) {
	ca := testCA(t)
	a := startMesh(t, ca, "a", nodeCert(t, ca, "a"))
	b := startMesh(t, ca, "b", nodeCert(t, ca, "b"))
	handleAll(b, nil) // echo reads at most 64 KiB frames
	ctx := context.Background()
	s, err := a.Open(ctx, b.ID(), b.Addr().String(), KindRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(5 * time.Second))
	var h [4]byte
	h[0] = 0x7f // a 2 GiB length: refused before any allocation
	if _, err := s.Write(h[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFrame(s, nil, 1<<20); err == nil || errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized frame: got %v, want the stream reset", err)
	}
	var se *quic.StreamError
	if _, err := s.Read(make([]byte, 1)); !errors.As(err, &se) {
		t.Fatalf("read after oversized frame: %v, want a stream reset", err)
	}
	// The connection itself is fine.
	if err := roundTrip(ctx, a, b, KindRPC, []byte("ok")); err != nil {
		t.Fatal(err)
	}
}

func TestMeshUnhandledKindIsReset(t *testing.T) {
	ca := testCA(t)
	a := startMesh(t, ca, "a", nodeCert(t, ca, "a"))
	b := startMesh(t, ca, "b", nodeCert(t, ca, "b"))
	b.Handle(KindRPC, echo(b.ID(), nil))
	if err := roundTrip(context.Background(), a, b, KindPush, []byte("x")); err == nil {
		t.Fatal("stream of a kind with no handler was answered")
	}
	if _, err := a.Open(context.Background(), b.ID(), b.Addr().String(), StreamKind(9)); !errors.Is(err, ErrUnknownKind) {
		t.Fatalf("Open kind 9: %v", err)
	}
}

func TestMeshPeerRestartReconnects(t *testing.T) {
	ca := testCA(t)
	a := startMesh(t, ca, "a", nodeCert(t, ca, "a"))
	handleAll(a, nil)
	bcert := nodeCert(t, ca, "b")
	b := startMesh(t, ca, "b", bcert)
	handleAll(b, nil)
	ctx := context.Background()
	if err := roundTrip(ctx, a, b, KindRPC, []byte("1")); err != nil {
		t.Fatal(err)
	}
	addr := b.Addr().String()
	b.Close()

	b2 := startMesh(t, ca, "b", bcert, func(c *MeshConfig) { c.Addr = addr })
	handleAll(b2, nil)
	waitFor(t, 5*time.Second, func() error { return roundTrip(ctx, a, b2, KindRPC, []byte("2")) })
	if err := roundTrip(ctx, b2, a, KindRaft, []byte("3")); err != nil {
		t.Fatal(err)
	}
}

// TestMeshPeerCrashReconnects kills b without a CONNECTION_CLOSE (its socket
// goes first); the restarted b answers a's stale connection with a stateless
// reset, so a reconnects long before its idle timeout.
func TestMeshPeerCrashReconnects(t *testing.T) {
	ca := testCA(t)
	a := startMesh(t, ca, "a", nodeCert(t, ca, "a"), func(c *MeshConfig) { c.IdleTimeout = time.Minute })
	bcert := nodeCert(t, ca, "b")
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b := startMesh(t, ca, "b", bcert, func(c *MeshConfig) { c.PacketConn = uc })
	handleAll(b, nil)
	ctx := context.Background()
	if err := roundTrip(ctx, a, b, KindRPC, []byte("1")); err != nil {
		t.Fatal(err)
	}
	addr := uc.LocalAddr().String()
	uc.Close() // crash: no CONNECTION_CLOSE reaches a
	b.Close()

	b2 := startMesh(t, ca, "b", bcert, func(c *MeshConfig) { c.Addr = addr })
	handleAll(b2, nil)
	start := time.Now()
	waitFor(t, 10*time.Second, func() error {
		octx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return roundTrip(octx, a, b2, KindRPC, []byte("2"))
	})
	t.Logf("reconnected %v after restart", time.Since(start).Round(time.Millisecond))
}

func TestMeshCloseWithOpenStreams(t *testing.T) {
	ca := testCA(t)
	a := startMesh(t, ca, "a", nodeCert(t, ca, "a"))
	b := startMesh(t, ca, "b", nodeCert(t, ca, "b"))
	started := make(chan struct{}, 16)
	block := func(ctx context.Context, peer NodeID, s *Stream) {
		started <- struct{}{}
		io.Copy(io.Discard, s) // until the connection dies
	}
	a.Handle(KindPush, block)
	b.Handle(KindPush, block)
	ctx := context.Background()
	var streams []*Stream
	for i := 0; i < 4; i++ {
		for _, p := range [][2]*Mesh{{a, b}, {b, a}} {
			s, err := p[0].Open(ctx, p[1].ID(), p[1].Addr().String(), KindPush)
			if err != nil {
				t.Fatal(err)
			}
			s.Write([]byte("pending"))
			streams = append(streams, s)
		}
	}
	for range streams {
		<-started
	}
	start := time.Now()
	a.Close()
	a.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v", d)
	}
	if _, err := a.Open(ctx, b.ID(), b.Addr().String(), KindRPC); !errors.Is(err, ErrClosed) {
		t.Fatalf("Open after Close: %v", err)
	}
	// b's side of the streams fails too, once a's CONNECTION_CLOSE lands.
	for _, s := range streams {
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := s.Read(make([]byte, 1)); err == nil || errors.Is(err, io.EOF) {
			t.Fatalf("stream survived Close: %v", err)
		}
	}
}

func TestMeshConfigChecksCertificate(t *testing.T) {
	ca := testCA(t)
	if _, err := NewMesh(MeshConfig{ID: "a", Addr: "127.0.0.1:0", Cert: nodeCert(t, ca, "b"), CA: ca.Pool()}); err == nil {
		t.Fatal("mesh accepted a certificate for another node")
	}
	if _, err := NewMesh(MeshConfig{ID: "A", Addr: "127.0.0.1:0", Cert: nodeCert(t, ca, "a"), CA: ca.Pool()}); !errors.Is(err, ErrBadNodeID) {
		t.Fatalf("bad id: %v", err)
	}
}

func TestMeshIdentifyLearnsThePeerID(t *testing.T) {
	ca := testCA(t)
	a := startMesh(t, ca, "a", nodeCert(t, ca, "a"))
	b := startMesh(t, ca, "b", nodeCert(t, ca, "b"))
	handleAll(b, nil)
	ctx := context.Background()
	id, err := a.Identify(ctx, b.Addr().String())
	if err != nil || id != "b" {
		t.Fatalf("Identify = %q, %v", id, err)
	}
	if err := roundTrip(ctx, a, b, KindRPC, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if id, err := a.Identify(ctx, a.Addr().String()); err != nil || id != "a" {
		t.Fatalf("Identify self = %q, %v", id, err)
	}
	// A node of another cluster is refused.
	other := testCA(t)
	c := startMesh(t, other, "c", nodeCert(t, other, "c"))
	if _, err := a.Identify(ctx, c.Addr().String()); err == nil {
		t.Fatal("node of another CA identified")
	}
}

// TestMeshManyLongStreams holds more streams open on one connection than
// the old limit of 1024, as a proxy relaying that many clients does: each
// one opens at once.
func TestMeshManyLongStreams(t *testing.T) {
	ca := testCA(t)
	a := startMesh(t, ca, "a", nodeCert(t, ca, "a"))
	b := startMesh(t, ca, "b", nodeCert(t, ca, "b"))
	b.Handle(KindProxy, func(ctx context.Context, peer NodeID, s *Stream) {
		io.Copy(io.Discard, s) // until the opener closes
	})
	const n = 1100
	streams := make([]*Stream, 0, n)
	defer func() {
		for _, s := range streams {
			s.Close()
		}
	}()
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s, err := a.Open(ctx, b.ID(), b.Addr().String(), KindProxy)
		cancel()
		if err != nil {
			t.Fatalf("stream %d: %v", i+1, err)
		}
		if _, err := s.Write([]byte("x")); err != nil {
			t.Fatalf("stream %d: %v", i+1, err)
		}
		streams = append(streams, s)
	}
}

package loadgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotd/td/mtproxy/obfuscated2"

	"github.com/mtnode/mtnode/cluster"
)

// The mtproxy scenario's upstreams: what each proxy relays to, in place of
// a DC. Both only echo, so the figures are the relays' cost, not an MTProto
// server's. Each is what its proxy really speaks to a DC:
//
//   - mtg dials a Telegram DC over TCP and speaks secretless obfuscated2 to
//     it. It is pointed here through its own [network] proxies setting: a
//     SOCKS5 server that answers every CONNECT itself (never dialling out)
//     and then is the DC: obfuscated2 in, echo, obfuscated2 out.
//   - `mtnode proxy` opens a cluster.KindProxy stream over the QUIC mesh to
//     a member of the DC's WAN pool and sends the client's frames one by
//     one. The echo member joins the WAN pool with DC id 2 (a certificate
//     of the bench's own CA) and echoes the frames of each stream.

// echoCounts are an upstream's tallies.
type echoCounts struct {
	sessions atomic.Int64 // proxied connections that reached it
	open     atomic.Int64 // of those, still open
	bytes    atomic.Int64 // echoed payload bytes
	lane     atomic.Int64 // of the sessions, those over the mesh's TCP lane
}

// socksEcho is mtg's upstream.
type socksEcho struct {
	ln  net.Listener
	log *slog.Logger
	echoCounts

	mu    sync.Mutex
	dests map[string]int // CONNECT destinations, as mtg asked for them
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startSocksEcho(log *slog.Logger) (*socksEcho, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &socksEcho{ln: ln, log: log, dests: map[string]int{}, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

func (s *socksEcho) addr() string { return s.ln.Addr().String() }

func (s *socksEcho) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			if err := s.serve(c); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("socks echo", "err", err)
			}
		}()
	}
}

// serve answers a SOCKS5 greeting (no auth) and CONNECT, whatever the
// destination, then echoes the obfuscated2 stream that follows.
func (s *socksEcho) serve(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var b [262]byte
	if _, err := io.ReadFull(c, b[:2]); err != nil || b[0] != 5 {
		return fmt.Errorf("socks greeting: %v", err)
	}
	if _, err := io.ReadFull(c, b[:b[1]]); err != nil {
		return err
	}
	if _, err := c.Write([]byte{5, 0}); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, b[:4]); err != nil || b[0] != 5 || b[1] != 1 {
		return fmt.Errorf("socks request: %v", err)
	}
	var host string
	switch b[3] {
	case 1:
		if _, err := io.ReadFull(c, b[:4]); err != nil {
			return err
		}
		host = net.IP(b[:4]).String()
	case 4:
		if _, err := io.ReadFull(c, b[:16]); err != nil {
			return err
		}
		host = net.IP(b[:16]).String()
	case 3:
		if _, err := io.ReadFull(c, b[:1]); err != nil {
			return err
		}
		n := int(b[0])
		if _, err := io.ReadFull(c, b[:n]); err != nil {
			return err
		}
		host = string(b[:n])
	default:
		return fmt.Errorf("socks address type %d", b[3])
	}
	if _, err := io.ReadFull(c, b[:2]); err != nil {
		return err
	}
	dest := net.JoinHostPort(host, fmt.Sprint(binary.BigEndian.Uint16(b[:2])))
	s.mu.Lock()
	if len(s.dests) < 64 {
		s.dests[dest]++
	}
	s.mu.Unlock()
	if _, err := c.Write([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 0}); err != nil {
		return err
	}
	rw, _, err := obfuscated2.Accept(c, nil)
	if err != nil {
		return fmt.Errorf("obfuscated2 header: %w", err)
	}
	_ = c.SetDeadline(time.Time{})
	s.sessions.Add(1)
	s.open.Add(1)
	defer s.open.Add(-1)
	buf := make([]byte, 64<<10)
	for {
		n, err := rw.Read(buf)
		if n > 0 {
			if _, werr := rw.Write(buf[:n]); werr != nil {
				return werr
			}
			s.bytes.Add(int64(n))
		}
		if err != nil {
			return err
		}
	}
}

// destinations are the addresses mtg asked the SOCKS server for.
func (s *socksEcho) destinations() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.dests))
	for k, v := range s.dests {
		out[k] = v
	}
	return out
}

func (s *socksEcho) Close() error {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// meshEcho is `mtnode proxy`'s upstream: a WAN pool member of DC echoDC.
type meshEcho struct {
	dir  string // cluster secrets (CA with key, gossip key) for the proxy
	id   cluster.NodeID
	mesh *cluster.Mesh
	wan  *cluster.Membership
	echoCounts

	cancel context.CancelFunc
	done   chan struct{}
}

// echoDC is the DC both proxies' clients ask for; DC 2 is also mtg's
// default.
const echoDC = 2

// maxEchoFrame bounds a relayed frame the mesh echo accepts.
const maxEchoFrame = 2 << 20

func startMeshEcho(log *slog.Logger) (_ *meshEcho, err error) {
	dir, err := os.MkdirTemp("", "mtnode-bench-mesh-")
	if err != nil {
		return nil, err
	}
	e := &meshEcho{dir: dir, id: "echo1", done: make(chan struct{})}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	sec, err := cluster.Keygen(dir, time.Now())
	if err != nil {
		return nil, fmt.Errorf("keygen: %w", err)
	}
	cert, err := cluster.IssueNodeCert(sec.CA, e.id, nil, time.Now().Add(-time.Hour), cluster.DefaultNodeValidity)
	if err != nil {
		return nil, err
	}
	if e.mesh, err = cluster.NewMesh(cluster.MeshConfig{ID: e.id, Addr: "127.0.0.1:0", Cert: cert, CA: sec.CA.Pool(), Logger: log}); err != nil {
		return nil, fmt.Errorf("mesh: %w", err)
	}
	e.mesh.Handle(cluster.KindProxy, e.serve)
	if e.wan, err = cluster.NewMembership(cluster.MembershipConfig{
		Mesh: e.mesh, WAN: true, GossipKey: sec.GossipKey, Logger: log,
		Meta: cluster.NodeMeta{DC: fmt.Sprint(echoDC), DCID: echoDC, ClientAddr: "127.0.0.1:1", Version: "bench-echo"},
	}); err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() {
		defer close(e.done)
		_ = e.mesh.Run(ctx)
	}()
	return e, nil
}

// join is the --join argument that reaches the echo member.
func (e *meshEcho) join() string { return string(e.id) + "@" + e.mesh.Addr().String() }

// serve echoes a relayed client: the address frame, then its frames.
func (e *meshEcho) serve(ctx context.Context, _ cluster.NodeID, s *cluster.Stream) {
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := cluster.ReadFrame(s, nil, 256); err != nil {
		s.Reset()
		return
	}
	_ = s.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { s.SetDeadline(time.Now()) })
	defer stop()
	e.sessions.Add(1)
	if s.Lane() {
		e.lane.Add(1)
	}
	e.open.Add(1)
	defer e.open.Add(-1)
	var buf []byte
	for {
		b, err := cluster.ReadFrame(s, buf[:0], maxEchoFrame)
		if err != nil {
			return
		}
		buf = b
		if err := cluster.WriteFrame(s, b); err != nil {
			return
		}
		e.bytes.Add(int64(len(b)))
	}
}

func (e *meshEcho) Close() error {
	if e.wan != nil {
		e.wan.Close()
	}
	if e.cancel != nil {
		e.cancel()
		<-e.done
	} else if e.mesh != nil {
		e.mesh.Close()
	}
	return os.RemoveAll(e.dir)
}

// tcpEcho is the floor's echo: bytes back as they come, no obfuscation.
type tcpEcho struct {
	ln net.Listener
	wg sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startTCPEcho() (*tcpEcho, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &tcpEcho{ln: ln, conns: map[net.Conn]struct{}{}}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.conns[c] = struct{}{}
			e.mu.Unlock()
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				_, _ = io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	return e, nil
}

func (e *tcpEcho) Close() error {
	e.ln.Close()
	e.mu.Lock()
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
	return nil
}

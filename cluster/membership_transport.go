package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Memberlist over the mesh. Every gossip stream (kind 4 for the LAN pool, 5
// for the WAN pool; the pools' protocols are the same) carries, after its
// kind byte, one marker byte:
//
//	'p' a packet: the rest of the stream, up to maxGossipPacket bytes, is
//	    one memberlist packet (probe, ack, gossip); the sender closes its
//	    side after it, and no reply travels on the stream.
//	's' a stream: memberlist's TCP-like connection (push/pull, join,
//	    TCP-fallback ping) for as long as either side keeps it open.
//
// A packet stream rather than a QUIC datagram: datagrams need the mesh's
// quic.Config and a per-connection receive loop in mesh.go, and a packet
// stream costs one STREAM frame more than a datagram on a live connection.
// Memberlist only needs packets to be "maybe delivered": a packet to a dead
// peer is simply not acked, so the failure detector works unchanged. What
// UDP gives for free and a stream would not, a send that never blocks the
// prober, the transport provides by sending each packet from its own
// goroutine, bounded (maxPacketSends) and timed out (packetTimeout); a send
// beyond the bound is dropped, as a full socket buffer would drop it.

// Gossip stream markers. Values are wire format.
const (
	gossipPacket byte = 'p'
	gossipStream byte = 's'
)

const (
	// maxGossipPacket caps an incoming packet. Memberlist's own packets
	// are at most UDPBufferSize (1400) bytes; this leaves room for user
	// messages without letting a peer make us buffer much.
	maxGossipPacket = 64 << 10
	// maxPacketSends caps packets in flight; more are dropped.
	maxPacketSends = 256
	// packetTimeout bounds one packet send, dial included.
	packetTimeout = 3 * time.Second
	// gossipHeaderTimeout bounds reading a marker and a packet's body.
	gossipHeaderTimeout = 5 * time.Second
)

// ErrNoNodeName is returned when memberlist asks to reach an address with
// no node name: the mesh can only dial a peer it can verify by ID.
var ErrNoNodeName = errors.New("cluster: gossip address has no node name")

// gossipTransport is a memberlist.NodeAwareTransport over the mesh.
type gossipTransport struct {
	mesh      *Mesh
	kind      StreamKind // KindGossip or KindGossipWAN
	log       *slog.Logger
	advertise *net.UDPAddr

	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	sends    chan struct{} // semaphore for packet sends

	ctx    context.Context // ends at Shutdown
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	closed bool
}

var _ memberlist.NodeAwareTransport = (*gossipTransport)(nil)

// newGossipTransport takes over the mesh's handler for kind, KindGossip or
// KindGossipWAN. advertise is the mesh address other nodes reach this node
// at.
func newGossipTransport(m *Mesh, kind StreamKind, advertise *net.UDPAddr, log *slog.Logger) *gossipTransport {
	ctx, cancel := context.WithCancel(context.Background())
	t := &gossipTransport{
		mesh:      m,
		kind:      kind,
		log:       log,
		advertise: advertise,
		packetCh:  make(chan *memberlist.Packet),
		streamCh:  make(chan net.Conn),
		sends:     make(chan struct{}, maxPacketSends),
		ctx:       ctx,
		cancel:    cancel,
	}
	m.Handle(kind, t.handle)
	return t
}

// FinalAdvertiseAddr returns the mesh address; memberlist's own bind and
// advertise settings do not apply to a transport it does not own.
func (t *gossipTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return t.advertise.IP, t.advertise.Port, nil
}

// WriteTo needs a node name; memberlist uses WriteToAddress instead.
func (t *gossipTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress sends b as one packet stream from a goroutine of its own
// and returns at once, like a UDP send.
func (t *gossipTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	id, addr, err := gossipTarget(a)
	if err != nil {
		return time.Time{}, err
	}
	now := time.Now()
	select {
	case t.sends <- struct{}{}:
	default:
		t.log.Debug("gossip packet dropped", "peer", string(id), "reason", "too many in flight")
		return now, nil
	}
	buf := make([]byte, 1+len(b))
	buf[0] = gossipPacket
	copy(buf[1:], b)
	if !t.spawn(func() {
		defer func() { <-t.sends }()
		if err := t.sendPacket(id, addr, buf); err != nil {
			t.log.Debug("gossip packet not sent", "peer", string(id), "err", err)
		}
	}) {
		<-t.sends
		return time.Time{}, ErrClosed
	}
	return now, nil
}

func (t *gossipTransport) sendPacket(id NodeID, addr string, buf []byte) error {
	ctx, cancel := context.WithTimeout(t.ctx, packetTimeout)
	defer cancel()
	s, err := t.mesh.Open(ctx, id, addr, t.kind)
	if err != nil {
		return err
	}
	defer s.Close()
	s.SetWriteDeadline(time.Now().Add(packetTimeout))
	if _, err := s.Write(buf); err != nil {
		return fmt.Errorf("write gossip packet: %w", err)
	}
	return s.CloseWrite()
}

// DialAddressTimeout opens a gossip stream to the named node.
func (t *gossipTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	id, addr, err := gossipTarget(a)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(t.ctx, timeout)
	defer cancel()
	s, err := t.mesh.Open(ctx, id, addr, t.kind)
	if err != nil {
		return nil, err
	}
	s.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := s.Write([]byte{gossipStream}); err != nil {
		s.Reset()
		return nil, fmt.Errorf("open gossip stream to %s: %w", id, err)
	}
	s.SetWriteDeadline(time.Time{})
	return s, nil
}

// DialTimeout needs a node name; memberlist uses DialAddressTimeout instead.
func (t *gossipTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// PacketCh delivers incoming packets.
func (t *gossipTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// StreamCh delivers incoming streams.
func (t *gossipTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown stops the transport: incoming gossip streams are reset, packet
// sends in flight are cancelled and waited for. Safe to call twice.
func (t *gossipTransport) Shutdown() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.mu.Unlock()
	t.mesh.Handle(t.kind, nil)
	t.cancel()
	t.wg.Wait()
	return nil
}

func (t *gossipTransport) spawn(f func()) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		f()
	}()
	return true
}

// handle serves one incoming gossip stream for the mesh.
func (t *gossipTransport) handle(ctx context.Context, peer NodeID, s *Stream) {
	s.SetReadDeadline(time.Now().Add(gossipHeaderTimeout))
	var marker [1]byte
	if _, err := io.ReadFull(s, marker[:]); err != nil {
		s.Reset()
		return
	}
	switch marker[0] {
	case gossipPacket:
		buf, err := io.ReadAll(io.LimitReader(s, maxGossipPacket+1))
		if err != nil || len(buf) > maxGossipPacket || len(buf) == 0 {
			t.log.Debug("gossip packet refused", "peer", string(peer), "len", len(buf), "err", err)
			s.Reset()
			return
		}
		p := &memberlist.Packet{Buf: buf, From: s.RemoteAddr(), Timestamp: time.Now()}
		select {
		case t.packetCh <- p:
		case <-t.ctx.Done():
		case <-ctx.Done():
		}
	case gossipStream:
		s.SetReadDeadline(time.Time{})
		c := &gossipConn{Stream: s, done: make(chan struct{})}
		select {
		case t.streamCh <- c:
		case <-t.ctx.Done():
			return
		case <-ctx.Done():
			return
		}
		// Memberlist owns the stream now; the mesh closes it when this
		// handler returns, so wait for memberlist to finish with it.
		select {
		case <-c.done:
		case <-ctx.Done():
		case <-t.ctx.Done():
		}
	default:
		t.log.Debug("gossip stream refused", "peer", string(peer), "marker", marker[0])
		s.Reset()
	}
}

// gossipConn tells the handler when memberlist has closed its stream.
type gossipConn struct {
	*Stream
	once sync.Once
	done chan struct{}
}

func (c *gossipConn) Close() error {
	err := c.Stream.Close()
	c.once.Do(func() { close(c.done) })
	return err
}

// gossipTarget splits a memberlist address into the node ID to verify and
// the host:port to dial. The name comes from a.Name, or from an
// "id@host:port" address.
func gossipTarget(a memberlist.Address) (NodeID, string, error) {
	addr := a.Addr
	name := a.Name
	if id, rest, ok := strings.Cut(addr, "@"); ok {
		if name != "" && name != id {
			return "", "", fmt.Errorf("cluster: gossip address %q names %q, not %q", addr, id, name)
		}
		name, addr = id, rest
	}
	if name == "" {
		return "", "", fmt.Errorf("%w: %q", ErrNoNodeName, addr)
	}
	id := NodeID(name)
	if err := id.Validate(); err != nil {
		return "", "", err
	}
	return id, addr, nil
}

// advertiseAddr picks the address to gossip: adv if given, else the mesh's
// bound address, which must then be a specific IP.
func advertiseAddr(m *Mesh, adv string) (*net.UDPAddr, error) {
	if adv == "" {
		ua, ok := m.Addr().(*net.UDPAddr)
		if !ok || ua.IP.IsUnspecified() {
			return nil, fmt.Errorf("cluster: mesh bound to %s: set an advertise address", m.Addr())
		}
		return ua, nil
	}
	host, port, err := net.SplitHostPort(adv)
	if err != nil {
		return nil, fmt.Errorf("parse advertise address: %w", err)
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsUnspecified() {
		return nil, fmt.Errorf("cluster: advertise address %q needs a specific IP", adv)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return nil, fmt.Errorf("cluster: advertise address %q has a bad port", adv)
	}
	return &net.UDPAddr{IP: ip, Port: int(p)}, nil
}

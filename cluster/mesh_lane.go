package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// The TCP lane (DESIGN.md, "The TCP lane for bulk streams"). QUIC costs
// user-space work and a UDP datagram per ~1.2 KB, which is what a
// relayed client's bulk bytes spend most of their CPU on; TCP leaves
// segmentation, acknowledgement and retransmission to the kernel. So a
// stream of a bulk kind (KindProxy) is opened, when the peer takes it, as
// a TCP connection of its own to the peer's mesh port number, under the
// same mutual TLS as the QUIC mesh (TLS 1.3, certificates of the cluster
// CA, the dialled node's name checked) and with the same 32-byte stream
// header. Everything else stays on QUIC. A peer whose lane cannot be
// reached gets QUIC streams for laneRetry before the lane is tried again.

const (
	// laneDialTimeout bounds a lane's TCP and TLS handshakes; past it the
	// stream falls back to QUIC.
	laneDialTimeout = 2 * time.Second
	// laneRetry is how long a peer whose lane failed gets QUIC streams.
	laneRetry = 30 * time.Second
	// maxLaneHandshakes bounds lane connections accepted but not yet
	// proven (TLS handshake and stream header), so connections that never
	// finish cannot pile up goroutines; more are closed at once.
	maxLaneHandshakes = 256
	// laneKeepAlive probes an idle lane connection, so a peer that
	// vanished (not one that closed its sockets) is noticed in about
	// 20 s, as a QUIC connection is by its keep-alives and idle timeout.
	laneKeepAlive = 5 * time.Second
	// laneSessions bounds the TLS sessions kept for resuming lanes, one
	// per peer (the cache is keyed by the peer's node name): a resumed
	// handshake skips both certificate signatures and chain checks, the
	// bulk of a lane's setup CPU.
	laneSessions = 1024
)

// errNoLane is returned by openLane when the lane is not to be tried.
var errNoLane = errors.New("cluster: no TCP lane")

// bulk reports whether streams of the kind go over the TCP lane when they
// can: long-lived byte streams that may carry much data.
func (k StreamKind) bulk() bool { return k == KindProxy }

var laneKeepAliveConfig = net.KeepAliveConfig{Enable: true, Idle: laneKeepAlive, Interval: laneKeepAlive, Count: 3}

// lane is the mesh's TCP lane state.
type lane struct {
	ln         net.Listener // nil: the lane is off on this node
	serverTLS  *tls.Config
	handshakes chan struct{} // a slot per connection being proven
	sessions   tls.ClientSessionCache

	mu    sync.Mutex
	down  map[NodeID]time.Time // peers whose lane failed, until when
	up    map[NodeID]bool      // peers whose last lane dial worked
	conns map[*tls.Conn]struct{}
}

// maxPortPicks bounds how often NewMesh asks the kernel for a UDP port
// (for an address with port 0) whose TCP twin is free too.
const maxPortPicks = 20

// listenLaneTCP listens on the TCP port numbered like the mesh's UDP one.
func listenLaneTCP(udp net.Addr) (net.Listener, error) {
	lc := net.ListenConfig{KeepAliveConfig: laneKeepAliveConfig}
	return lc.Listen(context.Background(), "tcp", udp.String())
}

// listenLane sets up the lane with ln as its listener, or one opened on
// the TCP port of the mesh's UDP address. A node whose port is taken runs
// without a lane (its peers then use QUIC), since the lane is an
// optimisation, not a requirement.
func (m *Mesh) listenLane(serverTLS *tls.Config, ln net.Listener) {
	m.lane = &lane{serverTLS: serverTLS, handshakes: make(chan struct{}, maxLaneHandshakes),
		down: make(map[NodeID]time.Time), up: make(map[NodeID]bool), conns: make(map[*tls.Conn]struct{}),
		sessions: tls.NewLRUClientSessionCache(laneSessions)}
	if m.cfg.NoLane {
		return
	}
	if ln == nil {
		var err error
		if ln, err = listenLaneTCP(m.udp.LocalAddr()); err != nil {
			m.log.Warn("mesh TCP lane off: bulk streams use QUIC", "addr", m.udp.LocalAddr().String(), "err", err)
			return
		}
	}
	m.lane.ln = ln
}

// acceptLanes serves lane connections until the listener closes.
func (m *Mesh) acceptLanes() {
	for {
		nc, err := m.lane.ln.Accept()
		if err != nil {
			if m.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			m.log.Warn("accept lane connection", "err", err)
			select { // e.g. out of file descriptors: do not spin
			case <-time.After(50 * time.Millisecond):
			case <-m.ctx.Done():
				return
			}
			continue
		}
		select {
		case m.lane.handshakes <- struct{}{}:
		default:
			nc.Close()
			continue
		}
		if !m.spawn(func() { m.serveLane(nc) }) {
			nc.Close()
			return
		}
	}
}

// serveLane proves a lane connection (mutual TLS, then the stream header
// of a bulk kind with a handler) and serves it as a stream.
func (m *Mesh) serveLane(nc net.Conn) {
	proven := false
	release := func() {
		if !proven {
			proven = true
			<-m.lane.handshakes
		}
	}
	defer release()
	nc.SetDeadline(time.Now().Add(m.cfg.HeaderTimeout))
	// Close must not wait out HeaderTimeout for a connection still
	// proving itself.
	unwatch := context.AfterFunc(m.ctx, func() { nc.Close() })
	defer unwatch()
	tc := tls.Server(nc, m.lane.serverTLS)
	fail := func(msg string, err error) {
		m.log.Debug(msg, "remote", nc.RemoteAddr().String(), "err", err)
		nc.Close()
	}
	if err := tc.HandshakeContext(m.ctx); err != nil {
		fail("lane handshake", err)
		return
	}
	peer, err := peerID(tc.ConnectionState())
	if err != nil {
		fail("lane peer", err)
		return
	}
	var hdr [streamHeaderLen]byte
	if _, err := io.ReadFull(tc, hdr[:]); err != nil {
		fail("lane stream header", err)
		return
	}
	kind, h, err := m.handlerFor(hdr[:])
	if err == nil && !kind.bulk() {
		err = fmt.Errorf("cluster: %s streams do not use the TCP lane", kind)
	}
	if err != nil {
		m.log.Warn("lane stream refused", "peer", string(peer), "err", err)
		nc.Close()
		return
	}
	nc.SetDeadline(time.Time{})
	release()
	s := m.laneStream(tc, peer, kind)
	if s == nil {
		return
	}
	defer s.Close()
	h(m.ctx, peer, s)
}

// laneStream registers a proven lane connection as a stream; nil (and the
// connection closed) once the mesh is closed.
func (m *Mesh) laneStream(tc *tls.Conn, peer NodeID, kind StreamKind) *Stream {
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		tc.Close()
		return nil
	}
	m.lane.mu.Lock()
	m.lane.conns[tc] = struct{}{}
	m.lane.mu.Unlock()
	return &Stream{lane: tc, peer: peer, kind: kind, local: tc.LocalAddr(), remote: tc.RemoteAddr(),
		release: func() {
			m.lane.mu.Lock()
			delete(m.lane.conns, tc)
			m.lane.mu.Unlock()
		}}
}

// openLane opens a stream of a bulk kind over the lane to peer's mesh
// port (addr). errNoLane means it was not tried; any other error marks the
// peer's lane down for laneRetry.
func (m *Mesh) openLane(ctx context.Context, peer NodeID, addr string, kind StreamKind) (*Stream, error) {
	if !kind.bulk() || m.lane.ln == nil {
		return nil, errNoLane
	}
	m.lane.mu.Lock()
	until, down := m.lane.down[peer]
	if down && time.Now().After(until) {
		delete(m.lane.down, peer)
		down = false
	}
	m.lane.mu.Unlock()
	if down {
		return nil, errNoLane
	}
	s, err := m.dialLane(ctx, peer, addr, kind)
	if err == nil {
		m.lane.mu.Lock()
		m.lane.up[peer] = true
		m.lane.mu.Unlock()
		return s, nil
	}
	if ctx.Err() != nil || m.ctx.Err() != nil {
		return nil, err
	}
	m.lane.mu.Lock()
	m.lane.down[peer] = time.Now().Add(laneRetry)
	wasUp := m.lane.up[peer]
	delete(m.lane.up, peer)
	m.lane.mu.Unlock()
	m.log.Info("mesh TCP lane unreachable: using QUIC", "peer", string(peer), "addr", addr, "retry_in", laneRetry.String(), "err", err)
	if wasUp && errors.Is(err, syscall.ECONNREFUSED) {
		// The peer's host answered, but nothing listens where its lane
		// was: its process is gone (or restarting). A QUIC connection to
		// it would take streams into a void until its idle timeout, so
		// it goes now; the fallback dials afresh and fails fast if the
		// peer is really down.
		m.dropConns(peer, "lane refused")
	}
	return nil, err
}

func (m *Mesh) dialLane(ctx context.Context, peer NodeID, addr string, kind StreamKind) (*Stream, error) {
	dctx, cancel := context.WithTimeout(ctx, laneDialTimeout)
	defer cancel()
	stop := context.AfterFunc(m.ctx, cancel)
	defer stop()
	d := net.Dialer{KeepAliveConfig: laneKeepAliveConfig}
	nc, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := dctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	conf := m.clientTLS(peer)
	conf.ClientSessionCache = m.lane.sessions
	tc := tls.Client(nc, conf)
	if err := tc.HandshakeContext(dctx); err != nil {
		nc.Close()
		return nil, err
	}
	var hdr [streamHeaderLen]byte
	hdr[0] = byte(kind)
	if _, err := tc.Write(hdr[:]); err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	s := m.laneStream(tc, peer, kind)
	if s == nil {
		return nil, ErrClosed
	}
	return s, nil
}

// closeLanes closes the lane's listener and every lane stream.
func (m *Mesh) closeLanes() {
	if m.lane.ln != nil {
		m.lane.ln.Close()
	}
	m.lane.mu.Lock()
	conns := make([]*tls.Conn, 0, len(m.lane.conns))
	for tc := range m.lane.conns {
		conns = append(conns, tc)
	}
	m.lane.mu.Unlock()
	for _, tc := range conns {
		tc.NetConn().Close()
	}
}

// writeFrame writes a frame in one Write: on the lane every Write is a
// TLS record and a system call, so the length must not go alone.
func (s *Stream) writeFrame(p []byte) error {
	bp := framePool.Get().(*[]byte)
	b := append((*bp)[:0], byte(len(p)>>24), byte(len(p)>>16), byte(len(p)>>8), byte(len(p)))
	b = append(b, p...)
	_, err := s.lane.Write(b)
	if cap(b) <= maxPooledFrame {
		*bp = b
		framePool.Put(bp)
	}
	if err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// maxPooledFrame bounds the frame buffers kept for reuse.
const maxPooledFrame = 1 << 20

var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

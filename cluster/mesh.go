// Package cluster connects the nodes of an mtnode data center: the cluster's
// own CA and secrets (keygen.go), and the QUIC mesh (mesh.go) that carries
// raft traffic, node-to-node RPC, the update push bus and gossip streams
// between nodes over one UDP port with mutual TLS. See DESIGN.md.
package cluster

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// Defaults for the zero fields of MeshConfig.
const (
	DefaultIdleTimeout      = 30 * time.Second
	DefaultKeepAlive        = 5 * time.Second
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultHeaderTimeout    = 10 * time.Second
	// DefaultMaxStreams is high because a stream can live as long as a
	// client: a node or mtnode proxy relays each proxied client over its
	// own stream (KindProxy), all on one connection per peer. At 1024 the
	// 1025th client waited out the dial timeout.
	DefaultMaxStreams   = 1 << 16
	DefaultDrainTimeout = 10 * time.Second
)

// QUIC error codes the mesh sends. Values are wire format.
const (
	codeShutdown     quic.ApplicationErrorCode = 0x100 // mesh closing
	codeDuplicate    quic.ApplicationErrorCode = 0x101 // redundant connection drained
	codeStreamClosed quic.StreamErrorCode      = 0x200 // Stream.Close stops reading
	codeBadHeader    quic.StreamErrorCode      = 0x201 // unknown kind or no handler
)

// ErrClosed is returned by Open and Run after Close.
var ErrClosed = errors.New("cluster: mesh closed")

// Handler serves one incoming stream of a kind. ctx ends when the peer's
// connection or the mesh closes; the mesh closes the stream when the
// handler returns. A handler must return once ctx is done or the stream
// fails, since Close waits for every handler.
type Handler func(ctx context.Context, peer NodeID, s *Stream)

// MeshConfig configures a Mesh. ID, Cert and CA are required.
type MeshConfig struct {
	// ID is this node's ID; Cert must prove it.
	ID NodeID
	// Addr is the UDP address to listen on ("127.0.0.1:0" picks a port).
	// Ignored when PacketConn is set.
	Addr string
	// PacketConn, when set, is used instead of listening on Addr. The mesh
	// does not close it.
	PacketConn net.PacketConn
	// Cert is this node's certificate from IssueNodeCert.
	Cert tls.Certificate
	// CA holds the cluster CA: the only root trusted for either side.
	CA *x509.CertPool
	// Logger receives the mesh's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock for certificate validity; nil means time.Now.
	Now func() time.Time
	// IdleTimeout closes a connection that has heard nothing for this long.
	IdleTimeout time.Duration
	// KeepAlive is the PING interval that keeps idle connections open and
	// notices dead peers.
	KeepAlive time.Duration
	// HandshakeTimeout bounds a QUIC + TLS handshake.
	HandshakeTimeout time.Duration
	// HeaderTimeout bounds how long an accepted stream may take to send its
	// kind byte.
	HeaderTimeout time.Duration
	// MaxStreams caps concurrent streams a peer may open on one connection.
	MaxStreams int64
	// DrainTimeout is how long a redundant connection (from a simultaneous
	// dial) keeps serving its open streams before it is closed.
	DrainTimeout time.Duration
	// NoLane keeps bulk streams on QUIC: no TCP lane is listened on or
	// dialled (mesh_lane.go). For a mesh whose PacketConn injects faults,
	// which a TCP lane would bypass.
	NoLane bool
	// StatelessResetKey lets a restarted node reset its peers' connections
	// to its former self at once. Nil derives it from Cert's private key, so
	// it is stable across restarts.
	StatelessResetKey *quic.StatelessResetKey
}

// Mesh is a node's end of the cluster mesh: one UDP socket, one QUIC
// connection per peer (reused by every stream to it), streams dispatched by
// their kind byte to handlers.
type Mesh struct {
	id          NodeID
	cfg         MeshConfig
	log         *slog.Logger
	udp         net.PacketConn
	ownUDP      bool
	tr          *quic.Transport
	ln          *quic.Listener
	qconf       *quic.Config
	clientTLS   func(NodeID) *tls.Config
	identifyTLS *tls.Config
	lane        *lane

	ctx    context.Context // ends at Close
	cancel context.CancelFunc

	mu       sync.Mutex
	closed   bool
	seq      uint64
	handlers [maxKind + 1]Handler
	conns    map[NodeID][]*peerConn
	dials    map[NodeID]*dialCall
	wg       sync.WaitGroup

	closeOnce sync.Once
}

// peerConn is one QUIC connection to a peer, in either direction.
type peerConn struct {
	qc       *quic.Conn
	peer     NodeID
	dialer   NodeID // which side dialled it
	seq      uint64 // order of establishment on this node
	draining bool   // redundant: used by no new Open
}

func (pc *peerConn) live() bool { return pc.qc.Context().Err() == nil }

type dialCall struct {
	done chan struct{}
	err  error
}

// NewMesh binds the mesh's UDP socket and starts answering handshakes.
// Streams are served once Run is called.
func NewMesh(cfg MeshConfig) (*Mesh, error) {
	if err := cfg.ID.Validate(); err != nil {
		return nil, err
	}
	if cfg.CA == nil {
		return nil, errors.New("cluster: mesh needs the cluster CA")
	}
	if len(cfg.Cert.Certificate) == 0 {
		return nil, errors.New("cluster: mesh needs a node certificate")
	}
	leaf := cfg.Cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cfg.Cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parse node certificate: %w", err)
		}
	}
	if id, err := NodeIDFromCert(leaf); err != nil || id != cfg.ID {
		return nil, fmt.Errorf("cluster: node certificate is for %q, not %q", id, cfg.ID)
	}
	setDefault(&cfg.IdleTimeout, DefaultIdleTimeout)
	setDefault(&cfg.KeepAlive, DefaultKeepAlive)
	setDefault(&cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	setDefault(&cfg.HeaderTimeout, DefaultHeaderTimeout)
	setDefault(&cfg.DrainTimeout, DefaultDrainTimeout)
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "cluster", "node", string(cfg.ID))
	if cfg.StatelessResetKey == nil {
		cfg.StatelessResetKey = resetKey(cfg.Cert)
	}

	m := &Mesh{
		id:    cfg.ID,
		cfg:   cfg,
		log:   log,
		conns: make(map[NodeID][]*peerConn),
		dials: make(map[NodeID]*dialCall),
		qconf: &quic.Config{
			HandshakeIdleTimeout:  cfg.HandshakeTimeout,
			MaxIdleTimeout:        cfg.IdleTimeout,
			KeepAlivePeriod:       cfg.KeepAlive,
			MaxIncomingStreams:    cfg.MaxStreams,
			MaxIncomingUniStreams: -1,
		},
	}
	m.udp = cfg.PacketConn
	var laneLn net.Listener
	if m.udp == nil {
		ua, err := net.ResolveUDPAddr("udp", cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("resolve mesh address: %w", err)
		}
		for attempt := 1; ; attempt++ {
			uc, err := net.ListenUDP("udp", ua)
			if err != nil {
				return nil, fmt.Errorf("listen mesh: %w", err)
			}
			if cfg.NoLane || ua.Port != 0 || attempt == maxPortPicks {
				m.udp, m.ownUDP = uc, true
				break
			}
			// A port the kernel picked: its TCP twin, for the lane, may
			// be some connection's; pick again until both are free.
			if laneLn, err = listenLaneTCP(uc.LocalAddr()); err == nil {
				m.udp, m.ownUDP = uc, true
				break
			}
			uc.Close()
		}
	}
	m.tr = &quic.Transport{Conn: m.udp, StatelessResetKey: cfg.StatelessResetKey}
	serverTLS, clientTLS := tlsConfigs(cfg.Cert, cfg.CA, cfg.Now)
	m.clientTLS = clientTLS
	m.identifyTLS = identifyTLS(cfg.Cert, cfg.CA, cfg.Now)
	ln, err := m.tr.Listen(serverTLS, m.qconf)
	if err != nil {
		m.tr.Close()
		if m.ownUDP {
			m.udp.Close()
		}
		if laneLn != nil {
			laneLn.Close()
		}
		return nil, fmt.Errorf("listen mesh: %w", err)
	}
	m.ln = ln
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.listenLane(serverTLS, laneLn)
	return m, nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

// resetKey derives a stateless reset key from the node's private key, so a
// node restarted with the same certificate can reset connections its former
// self held; peers then reconnect at once instead of after the idle timeout.
func resetKey(cert tls.Certificate) *quic.StatelessResetKey {
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil
	}
	h := sha256.New()
	h.Write([]byte("mtnode mesh stateless reset key\x00"))
	h.Write(der)
	var k quic.StatelessResetKey
	copy(k[:], h.Sum(nil))
	return &k
}

// ID returns this node's ID.
func (m *Mesh) ID() NodeID { return m.id }

// Addr returns the bound UDP address.
func (m *Mesh) Addr() net.Addr { return m.udp.LocalAddr() }

// Handle sets the handler for incoming streams of kind, replacing any
// previous one. Streams of a kind without a handler are reset. It panics on
// an unknown kind, a programming error.
func (m *Mesh) Handle(kind StreamKind, h Handler) {
	if _, err := parseKind(byte(kind)); err != nil {
		panic(err)
	}
	m.mu.Lock()
	m.handlers[kind] = h
	m.mu.Unlock()
}

// Run accepts peers' connections until ctx ends or Close is called, then
// closes the mesh. It returns nil on such a shutdown.
func (m *Mesh) Run(ctx context.Context) error {
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return ErrClosed
	}
	stop := context.AfterFunc(ctx, func() { m.Close() })
	defer stop()
	m.log.Info("mesh listening", "addr", m.Addr().String(), "tcp_lane", m.lane.ln != nil)
	if m.lane.ln != nil && !m.spawn(m.acceptLanes) {
		return ErrClosed
	}
	for {
		qc, err := m.ln.Accept(m.ctx)
		if err != nil {
			m.Close()
			if m.ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept mesh connection: %w", err)
		}
		id, err := peerID(qc.ConnectionState().TLS)
		if err != nil {
			// VerifyConnection already refused such peers; belt and braces.
			qc.CloseWithError(codeShutdown, "no node id")
			continue
		}
		m.addConn(qc, id, id)
	}
}

// Close closes every connection (open streams fail at once), the listener
// and the socket, and waits for every handler and goroutine of the mesh.
// It is safe to call more than once; it must not be called from a handler.
func (m *Mesh) Close() error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		var all []*peerConn
		for _, pcs := range m.conns {
			all = append(all, pcs...)
		}
		m.mu.Unlock()
		m.cancel()
		for _, pc := range all {
			pc.qc.CloseWithError(codeShutdown, "shutdown")
		}
		m.ln.Close()
		m.closeLanes()
		m.tr.Close()
		if m.ownUDP {
			m.udp.Close()
		}
		m.wg.Wait()
		m.log.Info("mesh closed")
	})
	return nil
}

// Peers returns the nodes this mesh has a live connection to.
func (m *Mesh) Peers() []NodeID {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []NodeID
	for id, pcs := range m.conns {
		for _, pc := range pcs {
			if pc.live() {
				ids = append(ids, id)
				break
			}
		}
	}
	return ids
}

// Open opens a stream of kind to peer, reusing the connection to it if any,
// else dialling addr (host:port of the peer's mesh). The peer must prove
// the node ID peer with a certificate from the cluster CA. ctx bounds the
// dial and the stream open, not the stream's life.
func (m *Mesh) Open(ctx context.Context, peer NodeID, addr string, kind StreamKind) (*Stream, error) {
	if _, err := parseKind(byte(kind)); err != nil {
		return nil, err
	}
	if err := peer.Validate(); err != nil {
		return nil, err
	}
	if s, err := m.openLane(ctx, peer, addr, kind); err == nil {
		return s, nil
	} else if ctx.Err() != nil {
		return nil, fmt.Errorf("open stream to %s: %w", peer, ctx.Err())
	}
	var lastErr error
	for attempt := 0; attempt < 2; attempt++ {
		pc, err := m.conn(ctx, peer, addr)
		if err != nil {
			return nil, err
		}
		qs, err := pc.qc.OpenStreamSync(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("open stream to %s: %w", peer, ctx.Err())
			}
			// The connection died under us (peer restarted or closed):
			// forget it and dial afresh once.
			lastErr = err
			m.removeConn(pc)
			continue
		}
		var hdr [streamHeaderLen]byte
		hdr[0] = byte(kind)
		if _, err := qs.Write(hdr[:]); err != nil {
			qs.CancelRead(codeStreamClosed)
			qs.CancelWrite(codeStreamClosed)
			lastErr = err
			m.removeConn(pc)
			continue
		}
		return newStream(qs, pc, kind), nil
	}
	return nil, fmt.Errorf("open stream to %s: %w", peer, lastErr)
}

// conn returns the connection to use for peer, dialling when there is none.
// Concurrent callers share one dial.
func (m *Mesh) conn(ctx context.Context, peer NodeID, addr string) (*peerConn, error) {
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return nil, ErrClosed
		}
		if pc := m.bestLocked(peer); pc != nil {
			m.mu.Unlock()
			return pc, nil
		}
		if d := m.dials[peer]; d != nil {
			m.mu.Unlock()
			select {
			case <-d.done:
				if d.err != nil {
					return nil, d.err
				}
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("dial %s: %w", peer, ctx.Err())
			}
		}
		d := &dialCall{done: make(chan struct{})}
		m.dials[peer] = d
		m.mu.Unlock()

		pc, err := m.dial(ctx, peer, addr)
		m.mu.Lock()
		delete(m.dials, peer)
		m.mu.Unlock()
		d.err = err
		close(d.done)
		return pc, err
	}
}

// Identify dials addr (host:port) without knowing which node listens
// there, checks that it is a node of this cluster (a certificate from the
// cluster CA) and returns its ID. The connection is kept for later
// streams. It lets an operator join through a plain address.
func (m *Mesh) Identify(ctx context.Context, addr string) (NodeID, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return "", fmt.Errorf("identify %q: %w", addr, err)
	}
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(m.ctx, cancel)
	defer stop()
	qc, err := m.tr.Dial(dctx, ua, m.identifyTLS, m.qconf)
	if err != nil {
		if m.ctx.Err() != nil {
			return "", ErrClosed
		}
		return "", fmt.Errorf("identify %s: %w", addr, err)
	}
	peer, err := peerID(qc.ConnectionState().TLS)
	if err != nil {
		qc.CloseWithError(codeShutdown, "bad peer")
		return "", err
	}
	if peer == m.id {
		qc.CloseWithError(codeShutdown, "self")
		return peer, nil
	}
	if _, err := m.addConn(qc, peer, m.id); err != nil {
		return "", err
	}
	return peer, nil
}

func (m *Mesh) dial(ctx context.Context, peer NodeID, addr string) (*peerConn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: resolve %q: %w", peer, addr, err)
	}
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(m.ctx, cancel)
	defer stop()
	qc, err := m.tr.Dial(dctx, ua, m.clientTLS(peer), m.qconf)
	if err != nil {
		if m.ctx.Err() != nil {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("dial %s at %s: %w", peer, addr, err)
	}
	return m.addConn(qc, peer, m.id)
}

// addConn registers a handshaken connection and starts serving its streams.
func (m *Mesh) addConn(qc *quic.Conn, peer, dialer NodeID) (*peerConn, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		qc.CloseWithError(codeShutdown, "shutdown")
		return nil, ErrClosed
	}
	m.seq++
	pc := &peerConn{qc: qc, peer: peer, dialer: dialer, seq: m.seq}
	m.conns[peer] = append(m.conns[peer], pc)
	m.log.Info("peer connected", "peer", string(peer), "addr", qc.RemoteAddr().String(), "dialed_by", string(dialer))
	m.spawnLocked(func() { m.serveConn(pc) })

	// Simultaneous dials leave two connections per pair. Both sides keep the
	// one dialled by the lower node ID; the higher node drains its own dial
	// (the lower node never closes a connection the higher one dialled, so
	// a stale survivor of a restart is never preferred for long).
	if m.id > peer {
		peerDialed := false
		for _, o := range m.conns[peer] {
			if o.dialer == peer && o.live() {
				peerDialed = true
			}
		}
		if peerDialed {
			for _, o := range m.conns[peer] {
				if o.dialer == m.id && !o.draining {
					o.draining = true
					m.spawnLocked(func() { m.drain(o) })
				}
			}
		}
	}
	return pc, nil
}

// bestLocked picks the live, non-draining connection to peer: one dialled
// by the lower node ID first, then the newest.
func (m *Mesh) bestLocked(peer NodeID) *peerConn {
	low := min(m.id, peer)
	var best *peerConn
	for _, pc := range m.conns[peer] {
		if pc.draining || !pc.live() {
			continue
		}
		if best == nil ||
			(pc.dialer == low) && (best.dialer != low) ||
			(pc.dialer == low) == (best.dialer == low) && pc.seq > best.seq {
			best = pc
		}
	}
	return best
}

// dropConns closes every connection to peer, so that the next stream
// dials afresh.
func (m *Mesh) dropConns(peer NodeID, why string) {
	m.mu.Lock()
	pcs := append([]*peerConn(nil), m.conns[peer]...)
	delete(m.conns, peer)
	m.mu.Unlock()
	for _, pc := range pcs {
		m.log.Info("dropping peer connection", "peer", string(peer), "reason", why)
		pc.qc.CloseWithError(codeShutdown, why)
	}
}

func (m *Mesh) removeConn(pc *peerConn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pcs := m.conns[pc.peer]
	for i, o := range pcs {
		if o == pc {
			pcs = append(pcs[:i:i], pcs[i+1:]...)
			break
		}
	}
	if len(pcs) == 0 {
		delete(m.conns, pc.peer)
	} else {
		m.conns[pc.peer] = pcs
	}
}

func (m *Mesh) drain(pc *peerConn) {
	t := time.NewTimer(m.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-t.C:
		m.log.Debug("closing redundant connection", "peer", string(pc.peer))
		pc.qc.CloseWithError(codeDuplicate, "duplicate")
	case <-pc.qc.Context().Done():
	}
}

// spawnLocked starts f as a goroutine Close waits for; m.mu must be held
// and the mesh open.
func (m *Mesh) spawnLocked(f func()) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		f()
	}()
}

func (m *Mesh) spawn(f func()) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.spawnLocked(f)
	return true
}

func (m *Mesh) serveConn(pc *peerConn) {
	defer m.removeConn(pc)
	ctx := pc.qc.Context()
	for {
		qs, err := pc.qc.AcceptStream(ctx)
		if err != nil {
			m.log.Info("peer disconnected", "peer", string(pc.peer), "reason", context.Cause(ctx))
			return
		}
		if !m.spawn(func() { m.serveStream(ctx, pc, qs) }) {
			qs.CancelRead(codeStreamClosed)
			qs.CancelWrite(codeStreamClosed)
			return
		}
	}
}

// streamHeaderLen is the size of the header that opens every stream: the
// kind byte, then reserved bytes that must be zero. It is padded so that
// the packet carrying it is always larger than the 42 bytes below which
// quic-go answers no stateless reset: a peer that crashed and restarted
// then resets our stale connection on the first stream we open, instead of
// leaving it to the idle timeout.
const streamHeaderLen = 32

// parseStreamHeader checks a stream header of streamHeaderLen bytes and
// returns its kind.
func parseStreamHeader(hdr []byte) (StreamKind, error) {
	if len(hdr) != streamHeaderLen {
		return 0, fmt.Errorf("cluster: stream header of %d bytes, want %d", len(hdr), streamHeaderLen)
	}
	for _, c := range hdr[1:] {
		if c != 0 {
			return 0, errors.New("cluster: reserved stream header bytes are not zero")
		}
	}
	return parseKind(hdr[0])
}

// handlerFor checks a stream header and returns its kind's handler.
func (m *Mesh) handlerFor(hdr []byte) (StreamKind, Handler, error) {
	kind, err := parseStreamHeader(hdr)
	if err != nil {
		return 0, nil, err
	}
	m.mu.Lock()
	h := m.handlers[kind]
	m.mu.Unlock()
	if h == nil {
		return kind, nil, fmt.Errorf("cluster: no handler for %s", kind)
	}
	return kind, h, nil
}

func (m *Mesh) serveStream(ctx context.Context, pc *peerConn, qs *quic.Stream) {
	var hdr [streamHeaderLen]byte
	qs.SetReadDeadline(time.Now().Add(m.cfg.HeaderTimeout))
	_, err := io.ReadFull(qs, hdr[:])
	qs.SetReadDeadline(time.Time{})
	if err != nil {
		qs.CancelRead(codeBadHeader)
		qs.CancelWrite(codeBadHeader)
		m.log.Debug("stream header", "peer", string(pc.peer), "err", err)
		return
	}
	kind, h, err := m.handlerFor(hdr[:])
	if err != nil {
		qs.CancelRead(codeBadHeader)
		qs.CancelWrite(codeBadHeader)
		m.log.Warn("stream refused", "peer", string(pc.peer), "err", err)
		return
	}
	s := newStream(qs, pc, kind)
	defer s.Close()
	h(ctx, pc.peer, s)
}

// Stream is one mesh stream: a reliable, ordered byte stream in both
// directions to one peer. It is a net.Conn so stream-oriented libraries
// (raft's NetworkTransport) can run over it. Most streams are QUIC streams
// of the peer's connection; a bulk kind's may be a TCP lane connection of
// its own (mesh_lane.go), with the same guarantees.
type Stream struct {
	qs            *quic.Stream // nil on the TCP lane
	lane          *tls.Conn    // nil for a QUIC stream
	peer          NodeID
	kind          StreamKind
	once          sync.Once
	cerr          error
	local, remote net.Addr
	release       func() // on Close of a lane stream: forget it in the mesh
}

var _ net.Conn = (*Stream)(nil)

func newStream(qs *quic.Stream, pc *peerConn, kind StreamKind) *Stream {
	return &Stream{qs: qs, peer: pc.peer, kind: kind, local: pc.qc.LocalAddr(), remote: pc.qc.RemoteAddr()}
}

// Peer returns the node ID the other end proved.
func (s *Stream) Peer() NodeID { return s.peer }

// Kind returns the stream's kind.
func (s *Stream) Kind() StreamKind { return s.kind }

// Lane reports whether the stream runs over the TCP lane rather than QUIC.
func (s *Stream) Lane() bool { return s.lane != nil }

// Read reads from the stream.
func (s *Stream) Read(p []byte) (int, error) {
	if s.lane != nil {
		return s.lane.Read(p)
	}
	return s.qs.Read(p)
}

// Write writes to the stream.
func (s *Stream) Write(p []byte) (int, error) {
	if s.lane != nil {
		return s.lane.Write(p)
	}
	return s.qs.Write(p)
}

// CloseWrite ends the sending direction after everything written so far
// is delivered; the peer reads io.EOF. Reading stays possible.
func (s *Stream) CloseWrite() error {
	if s.lane != nil {
		return s.lane.CloseWrite()
	}
	return s.qs.Close()
}

// Close ends both directions: what was written is still delivered, what
// the peer sends from now on is discarded. Safe to call more than once.
func (s *Stream) Close() error {
	s.once.Do(func() {
		if s.lane != nil {
			s.cerr = s.lane.Close()
			s.release()
			return
		}
		s.qs.CancelRead(codeStreamClosed)
		s.cerr = s.qs.Close()
	})
	return s.cerr
}

// Reset aborts both directions at once, discarding unsent data.
func (s *Stream) Reset() {
	if s.lane != nil {
		if tc, ok := s.lane.NetConn().(*net.TCPConn); ok {
			tc.SetLinger(0) // close with a RST: unsent data is dropped
		}
		s.Close()
		return
	}
	s.qs.CancelRead(codeStreamClosed)
	s.qs.CancelWrite(codeStreamClosed)
}

// LocalAddr returns the mesh's UDP address (the lane's TCP address for a
// lane stream).
func (s *Stream) LocalAddr() net.Addr { return s.local }

// RemoteAddr returns the peer's UDP address (its TCP address for a lane
// stream).
func (s *Stream) RemoteAddr() net.Addr { return s.remote }

// SetDeadline sets read and write deadlines.
func (s *Stream) SetDeadline(t time.Time) error {
	if s.lane != nil {
		return s.lane.SetDeadline(t)
	}
	return s.qs.SetDeadline(t)
}

// SetReadDeadline sets the read deadline.
func (s *Stream) SetReadDeadline(t time.Time) error {
	if s.lane != nil {
		return s.lane.SetReadDeadline(t)
	}
	return s.qs.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline.
func (s *Stream) SetWriteDeadline(t time.Time) error {
	if s.lane != nil {
		return s.lane.SetWriteDeadline(t)
	}
	return s.qs.SetWriteDeadline(t)
}

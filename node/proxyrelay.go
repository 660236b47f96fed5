package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotd/td/bin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mtnode/mtnode/cluster"
	"github.com/mtnode/mtnode/protocol"
	"github.com/mtnode/mtnode/protocol/transport"
)

// Relaying proxied clients (DESIGN.md, "MTProxy"). An MTProxy client names
// the DC it wants in its obfuscated2 header. A node serves it when that is
// its own DC (or the client named none); otherwise it relays the client's
// MTProto frames over the mesh (cluster.KindProxy) to a node of that DC,
// which serves them as a connection of its own. The obfuscation (secret,
// FakeTLS) ends at the node the client reached; the mesh carries the
// frames under its own mutual TLS, over its TCP lane when the other node
// takes one (KindProxy is a bulk kind), else over QUIC.
//
// A KindProxy stream carries frames (cluster.WriteFrame): first the
// client's address as text, then the client's MTProto frames one for one
// in each direction. A 4-byte frame is a transport error code, as on a
// client connection.

// relayDial bounds opening a relay stream to another DC's node.
const relayDial = 5 * time.Second

// maxRelayAddr bounds the address frame.
const maxRelayAddr = 128

// relayShun is how long a member that could not be reached is tried only
// after the others: gossip takes seconds to notice a dead node, and each
// try of one costs a client up to relayDial.
const relayShun = 15 * time.Second

// relayer relays proxied clients to the DCs they ask for: a clustered
// node's (for clients of other DCs) and a storage-less proxy's (for all).
type relayer struct {
	mesh     *cluster.Mesh
	members  func(dc int) []cluster.Member // live members of a DC
	results  *prometheus.CounterVec        // by result: ok, unreachable
	bytes    *prometheus.CounterVec        // by direction: in (from clients), out
	log      *slog.Logger
	maxFrame int
	next     atomic.Uint32 // spreads relays over a DC's members

	dial time.Duration // bounds opening a stream to one member; relayDial when 0

	mu      sync.Mutex
	shunned map[cluster.NodeID]time.Time // members that failed an open, until when
}

// newRelayMetrics makes a relayer's counters.
func newRelayMetrics() (results, bytes *prometheus.CounterVec) {
	results = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mtnode_proxy_relayed_total",
		Help: "Proxied clients relayed to a node of the DC they asked for, by result (ok, unreachable) and mesh path (tcp: the TCP lane, quic, none).",
	}, []string{"result", "path"})
	bytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mtnode_proxy_relayed_bytes_total", Help: "MTProto frame bytes relayed to other DCs' nodes, by direction (in: from clients, out: to clients).",
	}, []string{"dir"})
	return results, bytes
}

// routeProxied is protocol.Options.Route on a clustered node.
func (c *clusterNode) routeProxied(ctx context.Context, tc transport.Conn, meta transport.Metadata) bool {
	dc := int(meta.DC)
	if dc < 0 {
		dc = -dc // a media DC: the same DC's nodes serve it
	}
	if dc == 0 || dc == c.cfg.DC {
		return false
	}
	c.relay.relayTo(ctx, dc, tc)
	return true
}

// relayTo relays tc to a node of DC dc until either side ends; a DC with
// no reachable member gets the client a transport error (-404, as a
// Telegram DC answers a client it cannot serve).
func (r *relayer) relayTo(ctx context.Context, dc int, tc transport.Conn) {
	defer tc.Close()
	s, err := r.open(ctx, dc)
	if err != nil {
		r.results.WithLabelValues("unreachable", "none").Inc()
		r.log.Debug("relay: no node of the DC asked for", "dc", dc, "err", err)
		_ = tc.WriteError(-404)
		return
	}
	defer s.Close()
	path := "quic"
	if s.Lane() {
		path = "tcp"
	}
	r.results.WithLabelValues("ok", path).Inc()
	if err := cluster.WriteFrame(s, []byte(tc.RemoteAddr().String())); err != nil {
		return
	}
	r.pipe(ctx, tc, s)
}

// open opens a relay stream to a live member of DC dc, trying each.
func (r *relayer) open(ctx context.Context, dc int) (*cluster.Stream, error) {
	ms := r.members(dc)
	if len(ms) == 0 {
		return nil, fmt.Errorf("DC %d has no live member", dc)
	}
	start := int(r.next.Add(1))
	order := make([]cluster.Member, 0, len(ms))
	var shunned []cluster.Member
	now := time.Now()
	r.mu.Lock()
	for i := range ms {
		m := ms[(start+i)%len(ms)]
		if until, ok := r.shunned[m.ID]; ok && now.Before(until) {
			shunned = append(shunned, m)
		} else {
			order = append(order, m)
		}
	}
	r.mu.Unlock()
	order = append(order, shunned...) // last resorts
	dial := r.dial
	if dial <= 0 {
		dial = relayDial
	}
	var lastErr error
	for _, m := range order {
		dctx, cancel := context.WithTimeout(ctx, dial)
		s, err := r.mesh.Open(dctx, m.ID, m.Addr, cluster.KindProxy)
		cancel()
		r.mu.Lock()
		if err == nil {
			delete(r.shunned, m.ID)
		} else if ctx.Err() == nil {
			if r.shunned == nil {
				r.shunned = make(map[cluster.NodeID]time.Time)
			}
			for id, until := range r.shunned { // members that left for good
				if now.After(until) {
					delete(r.shunned, id)
				}
			}
			r.shunned[m.ID] = time.Now().Add(relayShun)
		}
		r.mu.Unlock()
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// pipe copies frames between a client connection and a relay stream
// until either ends, counting the bytes.
func (r *relayer) pipe(ctx context.Context, tc transport.Conn, s *cluster.Stream) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		tc.SetReadDeadline(time.Now())
		s.SetDeadline(time.Now())
	})
	defer stop()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // relay → client
		defer wg.Done()
		defer cancel()
		var buf []byte
		for {
			b, err := cluster.ReadFrame(s, buf[:0], r.maxFrame+8)
			if err != nil {
				return
			}
			buf = b
			if err := tc.WriteFrame(b); err != nil {
				return
			}
			r.bytes.WithLabelValues("out").Add(float64(len(b)))
		}
	}()
	var b bin.Buffer
	for { // client → relay
		tc.SetReadDeadline(time.Time{})
		if err := tc.ReadFrame(&b); err != nil {
			break
		}
		if err := cluster.WriteFrame(s, b.Buf); err != nil {
			break
		}
		r.bytes.WithLabelValues("in").Add(float64(len(b.Buf)))
	}
	cancel()
	wg.Wait()
}

// serveRelayed serves a KindProxy stream another node relayed here.
func (c *clusterNode) serveRelayed(srv *protocol.Server) cluster.Handler {
	return func(ctx context.Context, peer cluster.NodeID, s *cluster.Stream) {
		s.SetDeadline(time.Now().Add(10 * time.Second))
		addr, err := cluster.ReadFrame(s, nil, maxRelayAddr)
		s.SetDeadline(time.Time{})
		if err != nil {
			s.Reset()
			return
		}
		rc := &relayConn{s: s, max: c.cfg.Protocol.MaxFrameSize, remote: relayAddr(string(addr), s.RemoteAddr())}
		srv.ServeTransport(ctx, rc)
	}
}

// relayAddr is the client's address the relaying node sent, else the
// relaying node's.
func relayAddr(s string, fallback net.Addr) net.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return fallback
}

// relayConn is a relayed client as a transport.Conn.
type relayConn struct {
	s      *cluster.Stream
	max    int
	remote net.Addr

	once sync.Once
}

var errRelayFrame = errors.New("relayed frame length is not a multiple of 4")

func (r *relayConn) ReadFrame(b *bin.Buffer) error {
	p, err := cluster.ReadFrame(r.s, b.Buf[:0], r.max)
	if err != nil {
		if errors.Is(err, cluster.ErrFrameTooLarge) {
			return fmt.Errorf("%w: %w", transport.ErrFrameTooLarge, err)
		}
		return err
	}
	if len(p) == 0 || len(p)%4 != 0 {
		return fmt.Errorf("%w: %w", transport.ErrBadFrame, errRelayFrame)
	}
	b.Buf = p
	return nil
}

func (r *relayConn) WriteFrame(p []byte) error { return cluster.WriteFrame(r.s, p) }

func (r *relayConn) WriteError(code int32) error {
	return cluster.WriteFrame(r.s, binary.LittleEndian.AppendUint32(nil, uint32(code)))
}

func (r *relayConn) Name() string                       { return "relayed" }
func (r *relayConn) SetReadDeadline(t time.Time) error  { return r.s.SetReadDeadline(t) }
func (r *relayConn) SetWriteDeadline(t time.Time) error { return r.s.SetWriteDeadline(t) }
func (r *relayConn) RemoteAddr() net.Addr               { return r.remote }
func (r *relayConn) Close() error {
	r.once.Do(func() { r.s.Close() })
	return nil
}

package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Raft over the mesh. Every raft stream starts, after its kind byte, with
// the uvarint ID of the raft group it belongs to, so one UDP port and one
// QUIC connection per peer carry all shard groups. Each group gets a
// raft.StreamLayer for raft.NewNetworkTransportWithConfig.

// ErrNoGroup is returned for a raft stream naming a group with no layer.
var ErrNoGroup = errors.New("cluster: no raft layer for group")

// RaftAddress is the raft.ServerAddress of a node: "id@host:port". Raft
// stores it in its configuration; Dial recovers the node ID from it so the
// mesh can verify whom it reached.
func RaftAddress(id NodeID, addr string) raft.ServerAddress {
	return raft.ServerAddress(string(id) + "@" + addr)
}

// ParseRaftAddress splits a RaftAddress.
func ParseRaftAddress(a raft.ServerAddress) (NodeID, string, error) {
	id, addr, ok := strings.Cut(string(a), "@")
	if !ok || addr == "" {
		return "", "", fmt.Errorf("cluster: raft address %q is not id@host:port", a)
	}
	if err := NodeID(id).Validate(); err != nil {
		return "", "", err
	}
	return NodeID(id), addr, nil
}

// RaftLayers owns the mesh's raft stream kind and hands each incoming raft
// stream to the layer of its group.
type RaftLayers struct {
	mesh *Mesh

	mu     sync.Mutex
	layers map[uint64]*RaftLayer
}

// NewRaftLayers takes over the mesh's KindRaft handler.
func NewRaftLayers(m *Mesh) *RaftLayers {
	r := &RaftLayers{mesh: m, layers: make(map[uint64]*RaftLayer)}
	m.Handle(KindRaft, r.handle)
	return r
}

// Layer returns a new stream layer for group. One layer per group may be
// open at a time; closing it frees the group.
func (r *RaftLayers) Layer(group uint64) (*RaftLayer, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.layers[group]; ok {
		return nil, fmt.Errorf("cluster: raft group %d already has a layer", group)
	}
	l := &RaftLayer{
		parent: r,
		group:  group,
		accept: make(chan *raftConn),
		closed: make(chan struct{}),
		addr:   raftAddr(RaftAddress(r.mesh.ID(), r.mesh.Addr().String())),
	}
	r.layers[group] = l
	return l, nil
}

func (r *RaftLayers) handle(ctx context.Context, peer NodeID, s *Stream) {
	s.SetReadDeadline(time.Now().Add(r.mesh.cfg.HeaderTimeout))
	group, err := readRaftHeader(byteReader{s})
	s.SetReadDeadline(time.Time{})
	if err != nil {
		s.Reset()
		return
	}
	r.mu.Lock()
	l := r.layers[group]
	r.mu.Unlock()
	if l == nil {
		r.mesh.log.Debug("raft stream refused", "peer", string(peer), "group", group, "err", ErrNoGroup)
		s.Reset()
		return
	}
	c := &raftConn{Stream: s, done: make(chan struct{})}
	select {
	case l.accept <- c:
	case <-l.closed:
		s.Reset()
		return
	case <-ctx.Done():
		return
	}
	// raft owns the stream now; keep the handler (and so the stream) alive
	// until raft closes it or the connection dies.
	select {
	case <-c.done:
	case <-ctx.Done():
	}
}

// maxRaftHeader is the longest uvarint a group ID may take.
const maxRaftHeader = binary.MaxVarintLen64

// readRaftHeader reads the group ID of a raft stream: one uvarint of at
// most 10 bytes.
func readRaftHeader(r io.ByteReader) (uint64, error) {
	g, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, fmt.Errorf("read raft header: %w", err)
	}
	return g, nil
}

func appendRaftHeader(b []byte, group uint64) []byte {
	return binary.AppendUvarint(b, group)
}

// byteReader reads one byte at a time, never past the header.
type byteReader struct{ r io.Reader }

func (b byteReader) ReadByte() (byte, error) {
	var p [1]byte
	if _, err := io.ReadFull(b.r, p[:]); err != nil {
		return 0, err
	}
	return p[0], nil
}

// RaftLayer is a raft.StreamLayer for one group over the mesh. Its
// addresses are RaftAddress strings.
type RaftLayer struct {
	parent *RaftLayers
	group  uint64
	accept chan *raftConn
	closed chan struct{}
	once   sync.Once
	addr   raftAddr
}

var _ raft.StreamLayer = (*RaftLayer)(nil)

// Accept waits for the next incoming raft stream of this group.
func (l *RaftLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.accept:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and frees the group; open streams are left to
// their owners.
func (l *RaftLayer) Close() error {
	l.once.Do(func() {
		close(l.closed)
		l.parent.mu.Lock()
		if l.parent.layers[l.group] == l {
			delete(l.parent.layers, l.group)
		}
		l.parent.mu.Unlock()
	})
	return nil
}

// Addr returns this node's RaftAddress; raft advertises it as its own.
func (l *RaftLayer) Addr() net.Addr { return l.addr }

// Dial opens a raft stream of this group to the node at address (a
// RaftAddress).
func (l *RaftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	id, addr, err := ParseRaftAddress(address)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s, err := l.parent.mesh.Open(ctx, id, addr, KindRaft)
	if err != nil {
		return nil, err
	}
	if _, err := s.Write(appendRaftHeader(nil, l.group)); err != nil {
		s.Reset()
		return nil, fmt.Errorf("write raft header: %w", err)
	}
	return s, nil
}

// raftConn is an accepted raft stream; Close tells the mesh handler that
// raft is done with it.
type raftConn struct {
	*Stream
	once sync.Once
	done chan struct{}
}

func (c *raftConn) Close() error {
	err := c.Stream.Close()
	c.once.Do(func() { close(c.done) })
	return err
}

type raftAddr string

func (a raftAddr) Network() string { return "mtnode-mesh" }
func (a raftAddr) String() string  { return string(a) }

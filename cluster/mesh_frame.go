package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// StreamKind is the first byte of every mesh stream; it picks the handler.
type StreamKind byte

// Stream kinds. Values are wire format: never renumber, only add.
const (
	KindRaft      StreamKind = 1 // raft RPCs of every shard group (see RaftLayers)
	KindRPC       StreamKind = 2 // node-to-node RPC (routing to shard leaders)
	KindPush      StreamKind = 3 // the update push bus
	KindGossip    StreamKind = 4 // the data center's (LAN) gossip
	KindGossipWAN StreamKind = 5 // the federation's (WAN) gossip
	KindProxy     StreamKind = 6 // a client's MTProto frames relayed to a node of the DC it asked for
	maxKind                  = KindProxy
)

// String names the kind for logs.
func (k StreamKind) String() string {
	switch k {
	case KindRaft:
		return "raft"
	case KindRPC:
		return "rpc"
	case KindPush:
		return "push"
	case KindGossip:
		return "gossip"
	case KindGossipWAN:
		return "gossip-wan"
	case KindProxy:
		return "proxy"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

// ErrUnknownKind is returned for a stream header naming no known kind.
var ErrUnknownKind = errors.New("cluster: unknown stream kind")

// parseKind validates a stream header byte.
func parseKind(b byte) (StreamKind, error) {
	k := StreamKind(b)
	if k == 0 || k > maxKind {
		return 0, fmt.Errorf("%w: %d", ErrUnknownKind, b)
	}
	return k, nil
}

// DefaultMaxFrame bounds frames read by ReadFrame callers that have no
// better limit. Raft entries batches and snapshot chunks stay well below it.
const DefaultMaxFrame = 4 << 20

// ErrFrameTooLarge is returned by ReadFrame for a length above its limit,
// before any of the payload is read or allocated.
var ErrFrameTooLarge = errors.New("cluster: frame too large")

// WriteFrame writes p as one frame: a 4-byte big-endian length, then p.
func WriteFrame(w io.Writer, p []byte) error {
	if uint64(len(p)) > 1<<32-1 {
		return ErrFrameTooLarge
	}
	if s, ok := w.(*Stream); ok && s.lane != nil {
		return s.writeFrame(p)
	}
	var h [4]byte
	binary.BigEndian.PutUint32(h[:], uint32(len(p)))
	if _, err := w.Write(h[:]); err != nil {
		return fmt.Errorf("write frame header: %w", err)
	}
	if _, err := w.Write(p); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// ReadFrame reads one frame written by WriteFrame, refusing lengths above
// max with ErrFrameTooLarge. The payload goes into buf when it fits (the
// result aliases buf), else into a new slice of exactly its size.
func ReadFrame(r io.Reader, buf []byte, max int) ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if max < 0 || uint64(n) > uint64(max) {
		return nil, fmt.Errorf("%w: %d > %d", ErrFrameTooLarge, n, max)
	}
	if int(n) > cap(buf) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read frame: %w", err)
	}
	return buf, nil
}

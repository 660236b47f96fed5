package node

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotd/td/bin"

	"github.com/mtnode/mtnode/cluster"
	"github.com/mtnode/mtnode/protocol"
)

// pushBus carries rendered updates from the node that committed them (the
// data group's leader) to every node of the DC, each of which pushes them
// to its own live sessions of the listed authorizations. It is best
// effort, like every push: a frame is dropped when a peer's queue is full
// or its stream breaks, and clients recover with updates.getDifference.
//
// Frame: count (uvarint) | count perm key ids (8 bytes each) | update TL.
type pushBus struct {
	c   *clusterNode
	srv atomic.Pointer[protocol.Server]

	mu    sync.Mutex
	peers map[cluster.NodeID]*peerPusher
}

const (
	pushQueue     = 4096
	maxPushFrame  = 4 << 20
	maxPushPerms  = 4096
	pushIdleClose = time.Minute
)

func newPushBus(c *clusterNode) *pushBus {
	b := &pushBus{c: c, peers: map[cluster.NodeID]*peerPusher{}}
	c.mesh.Handle(cluster.KindPush, b.serve)
	return b
}

// push delivers msg to the sessions of perms on every node of the DC.
func (b *pushBus) push(perms []int64, msg bin.Encoder) {
	if srv := b.srv.Load(); srv != nil {
		for _, p := range perms {
			srv.PushPerm(p, msg)
		}
	}
	var tl bin.Buffer
	if err := msg.Encode(&tl); err != nil {
		return
	}
	frame, ok := encodePushFrame(perms, tl.Buf)
	if !ok {
		return
	}
	for _, m := range b.c.dcMembers() {
		if m.ID == b.c.id {
			continue
		}
		select {
		case b.pusher(m).ch <- frame:
			b.c.metrics.pushFrames.WithLabelValues("sent").Inc()
		default:
			b.c.metrics.pushFrames.WithLabelValues("dropped").Inc()
		}
	}
}

// peerPusher writes one peer's frames on one long-lived stream.
type peerPusher struct {
	ch chan []byte
}

func (b *pushBus) pusher(m cluster.Member) *peerPusher {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p := b.peers[m.ID]; p != nil {
		return p
	}
	p := &peerPusher{ch: make(chan []byte, pushQueue)}
	b.peers[m.ID] = p
	b.c.spawn(func() { b.runPusher(m, p) })
	return p
}

func (b *pushBus) runPusher(m cluster.Member, p *peerPusher) {
	defer func() {
		b.mu.Lock()
		delete(b.peers, m.ID)
		b.mu.Unlock()
	}()
	ctx := b.c.ctx
	var s *cluster.Stream
	defer func() {
		if s != nil {
			s.Close()
		}
	}()
	idle := time.NewTimer(pushIdleClose)
	defer idle.Stop()
	for {
		var frame []byte
		select {
		case <-ctx.Done():
			return
		case <-idle.C:
			return
		case frame = <-p.ch:
		}
		idle.Reset(pushIdleClose)
		if s == nil {
			octx, cancel := context.WithTimeout(ctx, 2*time.Second)
			var err error
			s, err = b.c.mesh.Open(octx, m.ID, m.Addr, cluster.KindPush)
			cancel()
			if err != nil {
				b.c.metrics.pushFrames.WithLabelValues("dropped").Inc()
				s = nil
				continue
			}
		}
		s.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := cluster.WriteFrame(s, frame); err != nil {
			b.c.metrics.pushFrames.WithLabelValues("dropped").Inc()
			s.Reset()
			s = nil
		}
	}
}

// serve reads a peer's push stream and pushes each frame to local
// sessions.
func (b *pushBus) serve(ctx context.Context, peer cluster.NodeID, s *cluster.Stream) {
	defer s.Close()
	var buf []byte
	for {
		frame, err := cluster.ReadFrame(s, buf[:0], maxPushFrame)
		if err != nil {
			return
		}
		buf = frame
		perms, tl, err := decodePushFrame(frame)
		if err != nil {
			b.c.log.Warn("bad push frame", "peer", string(peer), "err", err)
			s.Reset()
			return
		}
		b.c.metrics.pushFrames.WithLabelValues("received").Inc()
		srv := b.srv.Load()
		if srv == nil {
			continue
		}
		msg := rawTL(append([]byte(nil), tl...))
		for _, p := range perms {
			srv.PushPerm(p, msg)
		}
	}
}

// encodePushFrame builds a frame; ok is false when it would break the
// bounds decodePushFrame enforces.
func encodePushFrame(perms []int64, tl []byte) (frame []byte, ok bool) {
	if len(perms) > maxPushPerms || len(tl) < 4 {
		return nil, false
	}
	frame = binary.AppendUvarint(nil, uint64(len(perms)))
	for _, p := range perms {
		frame = binary.BigEndian.AppendUint64(frame, uint64(p))
	}
	frame = append(frame, tl...)
	return frame, len(frame) <= maxPushFrame
}

// decodePushFrame splits a frame into authorizations and the update's TL.
func decodePushFrame(f []byte) (perms []int64, tl []byte, err error) {
	if len(f) > maxPushFrame {
		return nil, nil, errors.New("frame too large")
	}
	n, k := binary.Uvarint(f)
	if k <= 0 || n > maxPushPerms || uint64(len(f)-k) < n*8 {
		return nil, nil, errors.New("bad perm count")
	}
	f = f[k:]
	perms = make([]int64, n)
	for i := range perms {
		perms[i] = int64(binary.BigEndian.Uint64(f[i*8:]))
	}
	tl = f[n*8:]
	if len(tl) < 4 {
		return nil, nil, errors.New("no update")
	}
	return perms, tl, nil
}

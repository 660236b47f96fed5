package node

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotd/td/bin"

	"github.com/mtnode/mtnode/cluster"
	"github.com/mtnode/mtnode/protocol"
)

// pushBus carries rendered updates from the node that committed them (the
// data group's leader) to the nodes that hold live sessions of the
// updates' authorizations, each of which pushes them to its own sessions.
//
// Subscriptions: every node tells every other which authorizations (perm
// key ids) have sessions on it, as the MTProto server reports presence: a
// full set when its stream to a peer opens, then additions and removals.
// Whichever node leads later sends an update only to the nodes subscribed
// to one of its authorizations, so leader changes need nothing. It is best
// effort, like every push: a frame is dropped when a peer's queue is full
// or its stream breaks, an update committed while a subscription is in
// flight is not pushed there, and clients recover with getDifference.
//
// Each node keeps one long-lived KindPush stream to each peer, carrying
// frames:
//
//	type (1) | count (uvarint) | count perm key ids (8 bytes each) | rest
//
// where type is frameUpdate (rest: the update's TL), frameReset (the
// sender's whole set, starting over), frameSub or frameUnsub.
type pushBus struct {
	c   *clusterNode
	srv atomic.Pointer[protocol.Server]

	mu    sync.Mutex
	mine  map[int64]struct{}                    // perms with sessions here
	subs  map[cluster.NodeID]map[int64]struct{} // perms with sessions on each peer
	peers map[cluster.NodeID]*peerPusher
}

const (
	frameUpdate byte = 'u'
	frameReset  byte = 'r'
	frameSub    byte = 's'
	frameUnsub  byte = 'x'

	pushQueue    = 4096
	maxPushFrame = 4 << 20
	maxPushPerms = 4096
	// maxSubscriptions bounds the set a peer may subscribe to (a peer's
	// sessions are bounded by its max_connections, and this is above any
	// sane value of it per node).
	maxSubscriptions = 1 << 22
)

func newPushBus(c *clusterNode) *pushBus {
	b := &pushBus{
		c:     c,
		mine:  map[int64]struct{}{},
		subs:  map[cluster.NodeID]map[int64]struct{}{},
		peers: map[cluster.NodeID]*peerPusher{},
	}
	c.mesh.Handle(cluster.KindPush, b.serve)
	return b
}

// run keeps a pusher for every member of the DC (so subscriptions flow
// before any update does) until the node stops. Across DCs: a node with
// routing.assist, whose sessions may be signed in as other DCs' users,
// keeps one for every member of the federation too, and any node keeps
// one for each member of another DC that subscribed to it, so that a
// user's home pushes to the DC carrying the user's calls.
func (b *pushBus) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		members := b.c.dcMembers()
		b.mu.Lock()
		subscribed := map[cluster.NodeID]bool{}
		for id, perms := range b.subs {
			subscribed[id] = len(perms) > 0
		}
		b.mu.Unlock()
		for dc, ms := range b.c.fed.table() {
			if dc == b.c.cfg.DC {
				continue
			}
			for _, m := range ms {
				if b.c.cfg.Routing.Assist || subscribed[m.ID] {
					members = append(members, m)
				}
			}
		}
		live := map[cluster.NodeID]bool{}
		for _, m := range members {
			if m.ID != b.c.id {
				live[m.ID] = true
				b.pusher(m)
			}
		}
		b.mu.Lock()
		for id, p := range b.peers {
			if !live[id] {
				p.stop()
				delete(b.peers, id)
			}
		}
		b.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// presence is the MTProto server's OnPresence: it must not block.
func (b *pushBus) presence(perm int64, present bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	typ := frameSub
	if present {
		b.mine[perm] = struct{}{}
	} else {
		delete(b.mine, perm)
		typ = frameUnsub
	}
	frame, _ := encodePushFrame(typ, []int64{perm}, nil)
	for _, p := range b.peers {
		p.send(frame, b.c.metrics)
	}
}

// push delivers msg to the sessions of perms here and on every node that
// subscribed to any of them.
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
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, p := range b.peers {
		var to []int64
		for _, perm := range perms {
			if _, ok := b.subs[id][perm]; ok {
				to = append(to, perm)
			}
		}
		if len(to) == 0 {
			continue
		}
		if frame, ok := encodePushFrame(frameUpdate, to, tl.Buf); ok {
			p.send(frame, b.c.metrics)
		}
	}
}

// peerPusher writes one peer's frames on one long-lived stream, opening it
// again (with a fresh full set first) whenever it breaks.
type peerPusher struct {
	ch     chan []byte
	cancel context.CancelFunc
}

func (p *peerPusher) send(frame []byte, m *clusterMetrics) {
	select {
	case p.ch <- frame:
		m.pushFrames.WithLabelValues("sent").Inc()
	default:
		m.pushFrames.WithLabelValues("dropped").Inc()
	}
}

func (p *peerPusher) stop() { p.cancel() }

func (b *pushBus) pusher(m cluster.Member) *peerPusher {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p := b.peers[m.ID]; p != nil {
		return p
	}
	ctx, cancel := context.WithCancel(b.c.ctx)
	p := &peerPusher{ch: make(chan []byte, pushQueue), cancel: cancel}
	b.peers[m.ID] = p
	b.c.spawn(func() { b.runPusher(ctx, m, p) })
	return p
}

func (b *pushBus) runPusher(ctx context.Context, m cluster.Member, p *peerPusher) {
	defer p.cancel()
	for attempt := 0; ctx.Err() == nil; attempt++ {
		octx, cancel := context.WithTimeout(ctx, 2*time.Second)
		s, err := b.c.mesh.Open(octx, m.ID, m.Addr, cluster.KindPush)
		cancel()
		if err == nil {
			attempt = 0
			err = b.stream(ctx, s, p)
			s.Reset()
		}
		if ctx.Err() == nil {
			b.c.log.Debug("push stream", "peer", string(m.ID), "err", err)
			sleepCtx(ctx, backoff(attempt)*4)
		}
	}
}

// stream sends this node's whole set, then the queued frames, until ctx
// ends or a write fails.
func (b *pushBus) stream(ctx context.Context, s *cluster.Stream, p *peerPusher) error {
	b.mu.Lock()
	set := make([]int64, 0, len(b.mine))
	for perm := range b.mine {
		set = append(set, perm)
	}
	b.mu.Unlock()
	slices.Sort(set)
	typ := frameReset
	for first := true; first || len(set) > 0; first = false {
		n := min(len(set), maxPushPerms)
		frame, _ := encodePushFrame(typ, set[:n], nil)
		if err := writePush(s, frame); err != nil {
			return err
		}
		set, typ = set[n:], frameSub
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case frame := <-p.ch:
			if err := writePush(s, frame); err != nil {
				b.c.metrics.pushFrames.WithLabelValues("dropped").Inc()
				return err
			}
		}
	}
}

func writePush(s *cluster.Stream, frame []byte) error {
	s.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return cluster.WriteFrame(s, frame)
}

// serve reads a peer's push stream: its subscriptions, and updates to
// push to local sessions.
func (b *pushBus) serve(ctx context.Context, peer cluster.NodeID, s *cluster.Stream) {
	defer s.Close()
	var buf []byte
	for {
		frame, err := cluster.ReadFrame(s, buf[:0], maxPushFrame)
		if err != nil {
			return
		}
		buf = frame
		typ, perms, tl, err := decodePushFrame(frame)
		if err == nil {
			err = b.apply(peer, typ, perms, tl)
		}
		if err != nil {
			b.c.log.Warn("bad push frame", "peer", string(peer), "err", err)
			s.Reset()
			return
		}
	}
}

func (b *pushBus) apply(peer cluster.NodeID, typ byte, perms []int64, tl []byte) error {
	if typ == frameUpdate {
		b.c.metrics.pushFrames.WithLabelValues("received").Inc()
		if srv := b.srv.Load(); srv != nil {
			msg := rawTL(append([]byte(nil), tl...))
			for _, p := range perms {
				srv.PushPerm(p, msg)
			}
		}
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	set := b.subs[peer]
	if set == nil || typ == frameReset {
		set = map[int64]struct{}{}
		b.subs[peer] = set
	}
	for _, p := range perms {
		if typ == frameUnsub {
			delete(set, p)
		} else {
			set[p] = struct{}{}
		}
	}
	if len(set) > maxSubscriptions {
		delete(b.subs, peer)
		return errors.New("too many subscriptions")
	}
	return nil
}

// encodePushFrame builds a frame; ok is false when it would break the
// bounds decodePushFrame enforces.
func encodePushFrame(typ byte, perms []int64, tl []byte) (frame []byte, ok bool) {
	if len(perms) > maxPushPerms || (typ == frameUpdate) != (len(tl) >= 4) || (typ != frameUpdate && len(tl) > 0) {
		return nil, false
	}
	frame = binary.AppendUvarint([]byte{typ}, uint64(len(perms)))
	for _, p := range perms {
		frame = binary.BigEndian.AppendUint64(frame, uint64(p))
	}
	frame = append(frame, tl...)
	return frame, len(frame) <= maxPushFrame
}

// decodePushFrame splits a frame into its type, authorizations and, for an
// update, the update's TL.
func decodePushFrame(f []byte) (typ byte, perms []int64, tl []byte, err error) {
	if len(f) > maxPushFrame || len(f) < 2 {
		return 0, nil, nil, errors.New("bad frame size")
	}
	typ, f = f[0], f[1:]
	switch typ {
	case frameUpdate, frameReset, frameSub, frameUnsub:
	default:
		return 0, nil, nil, errors.New("unknown frame type")
	}
	n, k := binary.Uvarint(f)
	if k <= 0 || n > maxPushPerms || uint64(len(f)-k) < n*8 {
		return 0, nil, nil, errors.New("bad perm count")
	}
	f = f[k:]
	perms = make([]int64, n)
	for i := range perms {
		perms[i] = int64(binary.BigEndian.Uint64(f[i*8:]))
	}
	tl = f[n*8:]
	if typ == frameUpdate && len(tl) < 4 {
		return 0, nil, nil, errors.New("no update")
	}
	if typ != frameUpdate && len(tl) > 0 {
		return 0, nil, nil, errors.New("trailing bytes")
	}
	return typ, perms, tl, nil
}

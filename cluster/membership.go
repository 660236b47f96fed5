package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Membership: hashicorp/memberlist (SWIM gossip and failure detection) over
// the mesh, with each node's metadata and join/leave/fail events for
// placement. Two pools share the mesh: the LAN pool of one data center and
// the WAN pool through which data centers federate. See DESIGN.md,
// "Membership".

// ErrMetaTooLarge is returned for metadata whose encoding exceeds
// memberlist's limit (memberlist.MetaMaxSize, 512 bytes).
var ErrMetaTooLarge = errors.New("cluster: node metadata too large")

// ErrBadMeta is returned when a member's metadata cannot be decoded, and
// by Encode for a field out of its range.
var ErrBadMeta = errors.New("cluster: bad node metadata")

// MaxDCID is the highest numeric data center ID; IDs run from 1.
const MaxDCID = 1000

// NodeMeta is what a node tells the others about itself through gossip.
// Its encoding is versioned: a later version only appends fields, so older
// nodes decode what they know and ignore the rest.
type NodeMeta struct {
	// DC names the node's data center.
	DC string
	// ClientAddr is where MTProto clients reach this node (host:port).
	ClientAddr string
	// Version is the node's mtnode version.
	Version string

	// Version 2: the federation's fields, for the WAN pool.

	// DCID is the node's numeric data center ID, 1..MaxDCID; 0 means
	// unknown (a version-1 node, or a node that did not set it).
	DCID int
	// MediaOnly marks a node that serves only media (file) traffic.
	MediaOnly bool
	// IPv6Addr is where clients reach this node over IPv6 (host:port);
	// empty when it has none.
	IPv6Addr string
}

// metaVersion is the encoding version Encode writes.
const metaVersion = 2

// metaLeaving is the flag a node gossips when it starts a graceful Leave.
const metaLeaving = 1 << 0

// metaMediaOnly is version 2's roles bit for MediaOnly; the other bits are
// for later roles and ignored.
const metaMediaOnly = 1 << 0

// Encode returns the wire form. Version 1: a version byte, DC, ClientAddr
// and Version each as a uvarint length and its bytes, then a flags byte.
// Version 2 appends DCID as a uvarint, IPv6Addr as a uvarint length and
// its bytes, and a roles byte. A version-1 decoder reads up to the flags
// byte and ignores the rest, so it still understands a version-2 record.
func (m NodeMeta) Encode() ([]byte, error) { return m.encode(0) }

func (m NodeMeta) encode(flags byte) ([]byte, error) {
	if m.DCID < 0 || m.DCID > MaxDCID {
		return nil, fmt.Errorf("%w: DC ID %d not in 0..%d", ErrBadMeta, m.DCID, MaxDCID)
	}
	var b []byte
	b = append(b, metaVersion)
	for _, f := range []string{m.DC, m.ClientAddr, m.Version} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(m.DCID))
	b = binary.AppendUvarint(b, uint64(len(m.IPv6Addr)))
	b = append(b, m.IPv6Addr...)
	var roles byte
	if m.MediaOnly {
		roles |= metaMediaOnly
	}
	b = append(b, roles)
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMetaTooLarge, len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// DecodeNodeMeta parses Encode's output, of this, an earlier or a later
// version; fields a record's version lacks are zero.
func DecodeNodeMeta(b []byte) (NodeMeta, error) {
	m, _, err := decodeMeta(b)
	return m, err
}

func decodeMeta(b []byte) (NodeMeta, byte, error) {
	var m NodeMeta
	if len(b) == 0 || b[0] < 1 {
		return m, 0, fmt.Errorf("%w: no version", ErrBadMeta)
	}
	version := b[0]
	r := bytes.NewReader(b[1:])
	readString := func(f *string) error {
		n, err := binary.ReadUvarint(r)
		if err != nil || n > uint64(r.Len()) {
			return fmt.Errorf("%w: truncated", ErrBadMeta)
		}
		s := make([]byte, n)
		r.Read(s)
		*f = string(s)
		return nil
	}
	for _, f := range []*string{&m.DC, &m.ClientAddr, &m.Version} {
		if err := readString(f); err != nil {
			return NodeMeta{}, 0, err
		}
	}
	flags, err := r.ReadByte()
	if err != nil {
		return NodeMeta{}, 0, fmt.Errorf("%w: no flags", ErrBadMeta)
	}
	if version < 2 {
		return m, flags, nil
	}
	dc, err := binary.ReadUvarint(r)
	if err != nil {
		return NodeMeta{}, 0, fmt.Errorf("%w: truncated", ErrBadMeta)
	}
	if dc > MaxDCID {
		return NodeMeta{}, 0, fmt.Errorf("%w: DC ID %d not in 0..%d", ErrBadMeta, dc, MaxDCID)
	}
	m.DCID = int(dc)
	if err := readString(&m.IPv6Addr); err != nil {
		return NodeMeta{}, 0, err
	}
	roles, err := r.ReadByte()
	if err != nil {
		return NodeMeta{}, 0, fmt.Errorf("%w: no roles", ErrBadMeta)
	}
	m.MediaOnly = roles&metaMediaOnly != 0
	return m, flags, nil
}

// Member is one node of a pool: of the data center (LAN) or of the
// federation (WAN).
type Member struct {
	// ID is the node's ID, proved by its mesh certificate.
	ID NodeID
	// Addr is its mesh address, host:port.
	Addr string
	// Meta is its metadata; zero when MetaErr is set.
	Meta NodeMeta
	// MetaErr is set when its metadata could not be decoded.
	MetaErr error
	// Leaving is set once the member has begun a graceful Leave: placement
	// should move replicas off it rather than onto it.
	Leaving bool
}

// MeshAddr returns the member's "id@host:port", the form Join and raft
// take.
func (m Member) MeshAddr() string { return string(m.ID) + "@" + m.Addr }

// EventType says what happened to a member.
type EventType int

// Event types.
const (
	EventJoin   EventType = iota // a member joined (or came back)
	EventLeave                   // a member left gracefully
	EventFail                    // a member was declared failed
	EventUpdate                  // a member's metadata changed
)

func (e EventType) String() string {
	switch e {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	case EventFail:
		return "fail"
	case EventUpdate:
		return "update"
	}
	return "event(" + strconv.Itoa(int(e)) + ")"
}

// Event is a change in membership.
type Event struct {
	Type   EventType
	Member Member
}

// MembershipConfig configures a Membership. Mesh is required.
type MembershipConfig struct {
	// Mesh carries gossip; the Membership takes over its KindGossip
	// handler (KindGossipWAN for the WAN pool). The caller runs and closes
	// the mesh, after the Membership.
	Mesh *Mesh
	// WAN makes this the federation's WAN pool rather than the data
	// center's LAN pool: memberlist's WAN profile, gossip on its own
	// stream kind. A node may run one Membership of each on one mesh.
	WAN bool
	// Advertise is the mesh address (host:port) to gossip when the mesh is
	// bound to a wildcard address; empty means the mesh's bound address.
	Advertise string
	// GossipKey is memberlist's SecretKey (gossip.key, 16/24/32 bytes).
	// Nil turns memberlist's own encryption off, leaving only the mesh's.
	GossipKey []byte
	// Meta is this node's metadata.
	Meta NodeMeta
	// OnEvent, when set, receives membership events in order, from one
	// goroutine of the Membership, outside memberlist's locks (so it may
	// call Members). The first is this node's own join. A slow OnEvent
	// queues events, never blocks gossip.
	OnEvent func(Event)
	// Logger receives memberlist's logs; nil discards them.
	Logger *slog.Logger
	// Configure, when set, adjusts memberlist's config (the LAN or WAN
	// profile with the fields above applied) last. Tests shorten timings
	// with it.
	Configure func(*memberlist.Config)
	// ReconnectInterval is how often members declared failed are joined
	// again; zero means DefaultReconnectInterval.
	ReconnectInterval time.Duration
}

// Reconnecting failed members. memberlist never contacts a member it
// declared dead again, so after a partition longer than its suspicion
// timeout both sides would stay forgotten to each other for good, however
// long ago the link healed. Like Serf, a Membership keeps joining the
// members it saw fail (not those that left gracefully) every
// ReconnectInterval, for up to ReconnectTimeout.
const (
	DefaultReconnectInterval = 5 * time.Second
	ReconnectTimeout         = 72 * time.Hour
	// maxFailed bounds the failed members remembered.
	maxFailed = 1024
)

// DefaultDeadNodeReclaimTime is how long after a node is declared failed
// or left that its ID may come back from another address. Node IDs are
// stable across address changes; memberlist's default (never) would lock
// a node moved to a new address out for good. It can be short because a
// name is not a claim anyone can make: the mesh admits a node only with a
// certificate for its ID, so a name at a new address is the same node.
const DefaultDeadNodeReclaimTime = 2 * time.Second

// Membership is this node's view of one pool's members: the data center's
// (LAN) or the federation's (WAN).
type Membership struct {
	id   NodeID
	log  *slog.Logger
	list *memberlist.Memberlist
	tr   *gossipTransport

	metaMu  sync.Mutex
	metaVal NodeMeta
	meta    []byte // metaVal encoded, with flags

	evMu     sync.Mutex
	evQueue  []Event
	evSignal chan struct{}
	evDone   chan struct{} // closed when the event goroutine has stopped
	stop     chan struct{}

	failedMu sync.Mutex
	failed   map[NodeID]failedMember // to join again, by reconnectLoop

	closeOnce sync.Once
}

// NewMembership starts gossip for this node over cfg.Mesh. The node is
// alone until Join.
func NewMembership(cfg MembershipConfig) (*Membership, error) {
	if cfg.Mesh == nil {
		return nil, errors.New("cluster: membership needs a mesh")
	}
	meta, err := cfg.Meta.Encode()
	if err != nil {
		return nil, err
	}
	adv, err := advertiseAddr(cfg.Mesh, cfg.Advertise)
	if err != nil {
		return nil, err
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	pool, kind := "lan", KindGossip
	if cfg.WAN {
		pool, kind = "wan", KindGossipWAN
	}
	lg = lg.With("component", "membership", "pool", pool, "node", string(cfg.Mesh.ID()))
	ms := &Membership{
		id:       cfg.Mesh.ID(),
		log:      lg,
		meta:     meta,
		metaVal:  cfg.Meta,
		evSignal: make(chan struct{}, 1),
		evDone:   make(chan struct{}),
		stop:     make(chan struct{}),
	}
	ms.tr = newGossipTransport(cfg.Mesh, kind, adv, lg)

	mc := memberlist.DefaultLANConfig()
	if cfg.WAN {
		mc = memberlist.DefaultWANConfig()
	}
	mc.Name = string(cfg.Mesh.ID())
	mc.Transport = ms.tr
	mc.AdvertiseAddr = adv.IP.String()
	mc.AdvertisePort = adv.Port
	mc.SecretKey = cfg.GossipKey
	mc.Delegate = (*metaDelegate)(ms)
	mc.Events = (*eventDelegate)(ms)
	mc.Logger = log.New(&memberlistLog{log: lg}, "", 0)
	mc.DeadNodeReclaimTime = DefaultDeadNodeReclaimTime
	if cfg.Configure != nil {
		cfg.Configure(mc)
	}

	onEvent := cfg.OnEvent
	go ms.pumpEvents(onEvent)
	list, err := memberlist.Create(mc)
	if err != nil {
		ms.tr.Shutdown()
		close(ms.stop)
		<-ms.evDone
		return nil, fmt.Errorf("start memberlist: %w", err)
	}
	ms.list = list
	every := cfg.ReconnectInterval
	if every <= 0 {
		every = DefaultReconnectInterval
	}
	go ms.reconnectLoop(every)
	lg.Info("membership started", "addr", adv.String(), "encrypted", len(cfg.GossipKey) > 0)
	return ms, nil
}

// failedMember is a member last seen failing.
type failedMember struct {
	addr  string // id@host:port
	since time.Time
}

// noteEvent keeps the failed members current.
func (ms *Membership) noteEvent(ev Event) {
	ms.failedMu.Lock()
	defer ms.failedMu.Unlock()
	switch ev.Type {
	case EventFail:
		if ev.Member.ID == ms.id {
			return
		}
		if ms.failed == nil {
			ms.failed = map[NodeID]failedMember{}
		}
		if _, ok := ms.failed[ev.Member.ID]; !ok && len(ms.failed) < maxFailed {
			ms.failed[ev.Member.ID] = failedMember{addr: ev.Member.MeshAddr(), since: time.Now()}
		}
	case EventJoin, EventLeave:
		delete(ms.failed, ev.Member.ID)
	}
}

// reconnectLoop joins the failed members again every interval until
// Close; a member failed for longer than ReconnectTimeout is forgotten.
func (ms *Membership) reconnectLoop(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ms.stop:
			return
		case <-t.C:
		}
		var addrs []string
		ms.failedMu.Lock()
		for id, f := range ms.failed {
			if time.Since(f.since) > ReconnectTimeout {
				delete(ms.failed, id)
				continue
			}
			addrs = append(addrs, f.addr)
		}
		ms.failedMu.Unlock()
		for _, a := range addrs {
			select {
			case <-ms.stop:
				return
			default:
			}
			if _, err := ms.Join([]string{a}); err == nil {
				ms.log.Info("reconnected a failed member", "member", a)
			}
		}
	}
}

// Join contacts the given members ("id@host:port") and merges their view
// of the pool. It succeeds if at least one answered; the error
// lists the ones that did not. Joining a member already known is harmless.
func (ms *Membership) Join(addrs []string) (int, error) {
	ml := make([]string, 0, len(addrs))
	for _, a := range addrs {
		id, hp, ok := strings.Cut(a, "@")
		if !ok || hp == "" {
			return 0, fmt.Errorf("cluster: join address %q is not id@host:port", a)
		}
		if err := NodeID(id).Validate(); err != nil {
			return 0, err
		}
		// memberlist's own "name/host:port" form names the node to verify.
		ml = append(ml, id+"/"+hp)
	}
	n, err := ms.list.Join(ml)
	if err != nil {
		return n, fmt.Errorf("join: %w", err)
	}
	return n, nil
}

// JoinAny is Join for addresses that may also be plain host:port: the
// node there is identified through the mesh first (its certificate names
// it). Addresses of this node itself are skipped. It succeeds if at least
// one member answered.
func (ms *Membership) JoinAny(ctx context.Context, addrs []string) (int, error) {
	var full []string
	var errs []error
	for _, a := range addrs {
		if strings.Contains(a, "@") {
			full = append(full, a)
			continue
		}
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		id, err := ms.tr.mesh.Identify(ictx, a)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if id != ms.id {
			full = append(full, string(id)+"@"+a)
		}
	}
	if len(full) == 0 {
		if len(errs) == 0 {
			return 0, nil // only ourselves
		}
		return 0, fmt.Errorf("join: %w", errors.Join(errs...))
	}
	return ms.Join(full)
}

// Leave tells the others this node is leaving and waits up to timeout for
// the news to spread; they see it as left, not failed. Close afterwards.
//
// It takes two steps: first the leaving flag in the metadata (half the
// timeout), so that the members tell the leave from a crash, then
// memberlist's own leave message.
func (ms *Membership) Leave(timeout time.Duration) error {
	if err := ms.MarkLeaving(timeout / 2); err != nil {
		return err
	}
	if err := ms.list.Leave(timeout - timeout/2); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	return nil
}

// Depart tells the others this node is stopping, without asking placement
// to move its replicas away (a restart is expected): they see it as left
// at once rather than suspect it for seconds, and it may come back, even
// from a new address, right after. Close afterwards.
func (ms *Membership) Depart(timeout time.Duration) error {
	if err := ms.list.Leave(timeout); err != nil {
		return fmt.Errorf("depart: %w", err)
	}
	return nil
}

// MarkLeaving gossips that this node is about to leave, so placement moves
// its replicas away while it still serves them; Leave finishes the job.
func (ms *Membership) MarkLeaving(timeout time.Duration) error {
	ms.metaMu.Lock()
	meta, err := ms.metaVal.encode(metaLeaving)
	if err == nil {
		ms.meta = meta
	}
	ms.metaMu.Unlock()
	if err != nil {
		return err
	}
	if err := ms.list.UpdateNode(timeout); err != nil {
		return fmt.Errorf("leave: gossip leaving flag: %w", err)
	}
	return nil
}

// UpdateMeta changes this node's metadata and gossips it, waiting up to
// timeout for the news to spread.
func (ms *Membership) UpdateMeta(meta NodeMeta, timeout time.Duration) error {
	b, err := meta.Encode()
	if err != nil {
		return err
	}
	ms.metaMu.Lock()
	ms.meta, ms.metaVal = b, meta
	ms.metaMu.Unlock()
	if err := ms.list.UpdateNode(timeout); err != nil {
		return fmt.Errorf("update metadata: %w", err)
	}
	return nil
}

// Members returns the members thought alive or suspect (memberlist does
// not say which), this node included.
func (ms *Membership) Members() []Member {
	nodes := ms.list.Members()
	out := make([]Member, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, toMember(n))
	}
	return out
}

// NumMembers returns how many members are thought alive or suspect.
func (ms *Membership) NumMembers() int { return ms.list.NumMembers() }

// Health returns memberlist's awareness score: 0 is healthy, higher means
// this node's own probes are failing (it may be the one cut off).
func (ms *Membership) Health() int { return ms.list.GetHealthScore() }

// Close stops gossip without leaving: the others will declare this node
// failed. Pending events are dropped. It does not close the mesh. Safe to
// call twice.
func (ms *Membership) Close() error {
	ms.closeOnce.Do(func() {
		ms.list.Shutdown()
		close(ms.stop)
		<-ms.evDone
		ms.log.Info("membership closed")
	})
	return nil
}

// DCTable groups members by their DCID, each group sorted by ID: the
// federation's table of data centers, from a WAN pool's Members. Leaving
// members, members whose metadata did not decode and members with no DCID
// are left out.
func DCTable(members []Member) map[int][]Member {
	t := make(map[int][]Member)
	for _, m := range members {
		if m.Leaving || m.MetaErr != nil || m.Meta.DCID == 0 {
			continue
		}
		t[m.Meta.DCID] = append(t[m.Meta.DCID], m)
	}
	for _, ms := range t {
		slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(string(a.ID), string(b.ID)) })
	}
	return t
}

func toMember(n *memberlist.Node) Member {
	m := Member{
		ID:   NodeID(n.Name),
		Addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))),
	}
	var flags byte
	m.Meta, flags, m.MetaErr = decodeMeta(n.Meta)
	m.Leaving = flags&metaLeaving != 0
	return m
}

func (ms *Membership) queue(ev Event) {
	ms.evMu.Lock()
	ms.evQueue = append(ms.evQueue, ev)
	ms.evMu.Unlock()
	select {
	case ms.evSignal <- struct{}{}:
	default:
	}
}

// pumpEvents hands queued events to onEvent in order until Close.
func (ms *Membership) pumpEvents(onEvent func(Event)) {
	defer close(ms.evDone)
	for {
		select {
		case <-ms.stop:
			return
		case <-ms.evSignal:
		}
		ms.evMu.Lock()
		evs := ms.evQueue
		ms.evQueue = nil
		ms.evMu.Unlock()
		for _, ev := range evs {
			ms.noteEvent(ev)
			ms.log.Info("member "+ev.Type.String(), "member", string(ev.Member.ID), "addr", ev.Member.Addr)
			if onEvent != nil {
				onEvent(ev)
			}
		}
	}
}

// eventDelegate turns memberlist's callbacks, made under its locks, into
// queued events.
type eventDelegate Membership

func (d *eventDelegate) NotifyJoin(n *memberlist.Node) {
	(*Membership)(d).queue(Event{Type: EventJoin, Member: toMember(n)})
}

// NotifyLeave reports a member gone. memberlist v0.7.0 tells a leave from
// a failure only in its private state (the Node's State field is never
// set), so a leaving node first gossips the leaving flag in its metadata
// (Membership.Leave); a member gone without it failed.
func (d *eventDelegate) NotifyLeave(n *memberlist.Node) {
	m := toMember(n)
	t := EventFail
	if m.Leaving {
		t = EventLeave
	}
	(*Membership)(d).queue(Event{Type: t, Member: m})
}

func (d *eventDelegate) NotifyUpdate(n *memberlist.Node) {
	(*Membership)(d).queue(Event{Type: EventUpdate, Member: toMember(n)})
}

// metaDelegate gives memberlist this node's metadata; no user messages or
// state are exchanged.
type metaDelegate Membership

func (d *metaDelegate) NodeMeta(limit int) []byte {
	d.metaMu.Lock()
	defer d.metaMu.Unlock()
	if len(d.meta) > limit {
		return nil
	}
	return d.meta
}

func (d *metaDelegate) NotifyMsg([]byte)                           {}
func (d *metaDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *metaDelegate) LocalState(join bool) []byte                { return nil }
func (d *metaDelegate) MergeRemoteState(buf []byte, join bool)     {}

// memberlistLog adapts memberlist's "[LEVEL] memberlist: msg" lines to
// slog, so the node runs one logger.
type memberlistLog struct{ log *slog.Logger }

func (l *memberlistLog) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\n")
	level := slog.LevelInfo
	if strings.HasPrefix(msg, "[") {
		if tag, rest, ok := strings.Cut(msg[1:], "]"); ok {
			switch tag {
			case "DEBUG", "TRACE":
				level = slog.LevelDebug
			case "WARN":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			}
			msg = strings.TrimSpace(rest)
		}
	}
	msg = strings.TrimPrefix(msg, "memberlist: ")
	l.log.Log(context.Background(), level, msg)
	return len(p), nil
}

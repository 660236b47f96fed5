package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/tg"
	"github.com/gotd/td/tgerr"
	"github.com/hashicorp/raft"

	"github.com/mtnode/mtnode/cluster"
	"github.com/mtnode/mtnode/config"
	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/protocol"
	"github.com/mtnode/mtnode/storage"
)

// The federation: this DC's view of the others through the WAN pool (see
// DESIGN.md, "Federation"). Every clustered node is in its DC's LAN pool
// and in the federation's WAN pool, over the one mesh; the DC table
// (which DCs exist and where their clients connect) is read from the WAN
// pool's live members, never stored.

// wanPeersKey is where a node keeps the mesh addresses of the WAN members
// of other DCs it last knew, so a restart rejoins the federation with no
// --join-wan.
const wanPeersKey = "wan_peers"

// maxWANPeers bounds the stored WAN peers.
const maxWANPeers = 64

type federation struct {
	c   *clusterNode
	wan *cluster.Membership
	// ready is wan, for onEvent: the pool's first event (its own join)
	// comes before NewMembership returns.
	ready  atomic.Pointer[cluster.Membership]
	meta   *storage.Table
	phones []config.PhoneDC // longest prefix first
	// seeds are the configured join_wan addresses and the stored peers.
	seeds  []string
	joined atomic.Bool // configured or stored peers: this DC belongs to a federation

	mu    sync.Mutex
	saved []string // the peers last stored

	next atomic.Uint32 // spreads cross-DC requests over the other DC's members

	copyMu  sync.Mutex
	freshAt map[string]time.Time // user keys last read from their home
	downAt  map[int]time.Time    // DCs whose last read failed
	probeAt map[int]time.Time    // when each down DC was last probed
}

func newFederation(c *clusterNode, gossipKey []byte, meta *storage.Table) (*federation, error) {
	phones, err := config.ParsePhoneDCs(c.cfg.Federation.PhoneDCs)
	if err != nil {
		return nil, err
	}
	f := &federation{c: c, meta: meta, phones: sortPhones(phones)}
	f.seeds = config.SplitAddrs(c.cfg.Cluster.JoinWAN)
	if b, err := meta.Get([]byte(wanPeersKey)); err == nil {
		var stored []string
		if json.Unmarshal(b, &stored) == nil {
			f.saved = stored
			for _, a := range stored {
				if !slices.Contains(f.seeds, a) {
					f.seeds = append(f.seeds, a)
				}
			}
		}
	}
	f.joined.Store(len(f.seeds) > 0)
	f.wan, err = cluster.NewMembership(cluster.MembershipConfig{
		Mesh:      c.mesh,
		WAN:       true,
		GossipKey: gossipKey,
		Meta:      c.nodeMeta(),
		OnEvent:   f.onEvent,
		Logger:    c.log,
	})
	if err != nil {
		return nil, err
	}
	f.ready.Store(f.wan)
	return f, nil
}

// sortPhones orders a prefix table longest prefix first, so the first
// match is the longest.
func sortPhones(phones []config.PhoneDC) []config.PhoneDC {
	sort.SliceStable(phones, func(i, j int) bool { return len(phones[i].Prefix) > len(phones[j].Prefix) })
	return phones
}

// federated reports whether this DC belongs to a federation: it was told
// to join one, knew one before a restart, or sees another DC.
func (f *federation) federated() bool {
	if f.joined.Load() {
		return true
	}
	if f.wan == nil {
		return false
	}
	for _, m := range f.wan.Members() {
		if m.MetaErr == nil && m.Meta.DCID != 0 && m.Meta.DCID != f.c.cfg.DC {
			return true
		}
	}
	return false
}

// joinLoop joins the seeds until one answers, then returns; the WAN pool
// keeps itself together after that.
func (f *federation) joinLoop(ctx context.Context) {
	if len(f.seeds) == 0 {
		return
	}
	for attempt := 0; ; attempt++ {
		n, err := f.wan.JoinAny(ctx, f.seeds)
		if err == nil && n > 0 {
			f.c.log.Info("joined the federation", "contacted", n, "members", f.wan.NumMembers())
			return
		}
		if attempt%10 == 0 {
			f.c.log.Warn("WAN join failed, retrying", "addrs", f.seeds, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// lanJoined puts a member of this DC that joined the LAN pool into the
// WAN pool too, so the whole DC federates through whichever node was told
// --join-wan, and a DC's nodes all know every DC.
func (f *federation) lanJoined(m cluster.Member) {
	wan := f.ready.Load()
	if wan == nil || m.ID == f.c.id {
		return
	}
	for _, w := range wan.Members() {
		if w.ID == m.ID {
			return
		}
	}
	f.c.spawn(func() {
		if _, err := wan.Join([]string{m.MeshAddr()}); err != nil {
			f.c.log.Debug("WAN join of a DC member", "member", string(m.ID), "err", err)
		}
	})
}

// onEvent keeps the stored WAN peers current: members of other DCs.
func (f *federation) onEvent(ev cluster.Event) {
	f.c.log.Info("federation membership", "event", ev.Type.String(), "member", string(ev.Member.ID),
		"dc", ev.Member.Meta.DCID, "addr", ev.Member.Addr)
	wan := f.ready.Load()
	if wan == nil {
		return
	}
	// The live members of other DCs, then those stored before: a DC cut
	// off for a while must still know whom to rejoin after a restart.
	var peers []string
	for _, m := range wan.Members() {
		if m.MetaErr == nil && m.Meta.DCID != f.c.cfg.DC && len(peers) < maxWANPeers {
			peers = append(peers, m.MeshAddr())
		}
	}
	if len(peers) == 0 {
		return // forget nobody: a DC alone for a while still belongs
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.saved {
		if len(peers) < maxWANPeers && !slices.Contains(peers, p) {
			peers = append(peers, p)
		}
	}
	sort.Strings(peers)
	if slices.Equal(peers, f.saved) {
		return
	}
	b, _ := json.Marshal(peers)
	if err := f.meta.Put([]byte(wanPeersKey), b); err != nil {
		f.c.log.Warn("store WAN peers", "err", err)
		return
	}
	f.saved = peers
	f.joined.Store(true)
}

// table is the DC table: every DC with live members, its members sorted
// by ID. This DC is always in it (from the LAN pool, which knows its own
// DC first).
func (f *federation) table() map[int][]cluster.Member {
	t := cluster.DCTable(f.wan.Members())
	t[f.c.cfg.DC] = cluster.DCTable(f.c.members.Members())[f.c.cfg.DC]
	return t
}

// membersOf are the live members of DC dc, this node's own first when dc
// is its own.
func (f *federation) membersOf(dc int) []cluster.Member {
	return f.table()[dc]
}

// dcOptions lists every DC's client addresses for help.getConfig.
func (f *federation) dcOptions() []tg.DCOption {
	t := f.table()
	dcs := make([]int, 0, len(t))
	for dc := range t {
		dcs = append(dcs, dc)
	}
	sort.Ints(dcs)
	var out []tg.DCOption
	for _, dc := range dcs {
		for _, m := range t[dc] {
			if o, ok := dcOption(dc, m.Meta.ClientAddr, m.Meta.MediaOnly, false); ok {
				out = append(out, o)
			}
			if o, ok := dcOption(dc, m.Meta.IPv6Addr, m.Meta.MediaOnly, true); ok {
				out = append(out, o)
			}
		}
	}
	return out
}

// dcOption is one client address as help.getConfig lists it; clients need
// a literal IP.
func dcOption(dc int, addr string, media, v6 bool) (tg.DCOption, bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return tg.DCOption{}, false
	}
	p, err := strconv.Atoi(port)
	ip := net.ParseIP(host)
	if err != nil || p <= 0 || p > 65535 || ip == nil || ip.IsUnspecified() || (ip.To4() == nil) != v6 {
		return tg.DCOption{}, false
	}
	return tg.DCOption{ID: dc, IPAddress: ip.String(), Port: p, Ipv6: v6, MediaOnly: media}, true
}

// phoneHome is the home DC of a normalized phone number. A DC that is
// not federated homes every number itself.
func (f *federation) phoneHome(phone string) int {
	if !f.federated() {
		return f.c.cfg.DC
	}
	// Test numbers: 99966XYYYY lives in DC X.
	if len(phone) == 10 && strings.HasPrefix(phone, "99966") && phone[5] >= '1' && phone[5] <= '9' {
		return int(phone[5] - '0')
	}
	for _, p := range f.phones {
		if strings.HasPrefix(phone, p.Prefix) {
			return p.DC
		}
	}
	return f.c.cfg.Federation.DefaultDC
}

// usernameDC is the DC that keeps the federation's usernames, 0 when
// this DC is not federated (it keeps its own).
func (f *federation) usernameDC() int {
	if !f.federated() {
		return 0
	}
	return f.c.cfg.Federation.UsernameDC
}

// homes says where federation-wide directory keys live.
func (f *federation) homes() messaging.Homes {
	return messaging.Homes{Phone: f.phoneHome, UsernameDC: f.usernameDC()}
}

// claimUsername takes a username for user uid at the federation's
// username DC, releasing old. claimed is false when that DC is this one:
// the local command does it all.
func (f *federation) claimUsername(ctx context.Context, uid int64, old, name string) (claimed bool, err error) {
	dc := f.usernameDC()
	if dc == 0 || dc == f.c.cfg.DC {
		return false, nil
	}
	body, err := messaging.EncodeCommand(messaging.ClaimUsername{UserID: uid, Username: name, Old: old}, messaging.Env{})
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, f.c.cfg.Cluster.HoldTimeout.Duration)
	defer cancel()
	st, resp, err := f.dcRequest(ctx, dc, append([]byte{opDCClaim}, body...))
	if err != nil {
		return false, err
	}
	if st != stOK {
		return false, statusErr(st, resp)
	}
	return true, nil
}

// serveDCClaim runs another DC's username claim here, the username DC.
func (c *clusterNode) serveDCClaim(ctx context.Context, body []byte) (byte, []byte) {
	cmd, _, err := messaging.DecodeCommand(body)
	claim, ok := cmd.(messaging.ClaimUsername)
	if err != nil || !ok {
		return stFailed, []byte("bad username claim")
	}
	if c.fed.usernameDC() != c.cfg.DC {
		return stFailed, []byte("this DC does not keep the federation's usernames")
	}
	if messaging.HomeDC(claim.UserID) == c.cfg.DC {
		return stFailed, []byte("a claim for a user of this DC must come from here")
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Cluster.HoldTimeout.Duration)
	defer cancel()
	if _, err = c.proposeTo(ctx, c.layout.DirGroup(), claim); err != nil {
		return rejectionStatus(err)
	}
	return stOK, nil
}

// errNoFederationSecrets: no member of another DC answered with the
// federation's secrets.
var errNoFederationSecrets = errors.New("no other DC answered")

// fetchSecrets asks the members of other DCs for the federation's shared
// secrets, which a DC adopts when it forms so that every DC presents the
// same server key and derives the same access hashes.
func (f *federation) fetchSecrets(ctx context.Context) (map[string][]byte, error) {
	for dc, ms := range f.table() {
		if dc == f.c.cfg.DC {
			continue
		}
		for _, m := range ms {
			if s, err := f.c.rt.fetchSecretsAt(ctx, raft.ServerAddress(m.MeshAddr())); err == nil {
				return s, nil
			}
		}
	}
	return nil, errNoFederationSecrets
}

func (f *federation) close() {
	if err := f.wan.Depart(time.Second); err != nil {
		f.c.log.Debug("WAN depart", "err", err)
	}
	f.wan.Close()
}

// Cross-DC requests (node-to-node RPC over the mesh, to any member of
// the other DC; that member routes inside its own DC).
const (
	opDCGet    byte = 9  // body: a directory key homed in the receiver's DC; ok body: its value
	opDCInbox  byte = 10 // body: JSON dcBatch; ok once every step is applied or skipped
	opDCClaim  byte = 11 // body: an encoded messaging.ClaimUsername, for the username DC
	opDCImport byte = 12 // body: an encoded messaging.ImportAuthorization; ok body: the user's record
	opDCCall   byte = 13 // body: JSON forwardedCall (routing.assist); ok body: the result's TL
)

// relayedKey marks the context of a call another DC carried here: it is
// answered here, never carried on.
type relayedKey struct{}

func relayed(ctx context.Context) bool { return ctx.Value(relayedKey{}) != nil }

// relayCall carries a call to DC dc (routing.assist) and answers as that
// DC did. A sign-in there also signs the key in here, as a guest of that
// DC, so this DC's later calls know whose the key is.
func (f *federation) relayCall(ctx context.Context, dc int, call *protocol.Call, body []byte) (bin.Encoder, error) {
	req := encodeCall(call, 0, body)
	req[0] = opDCCall
	st, resp, err := f.dcRequest(ctx, dc, req)
	if err != nil {
		f.c.log.Debug("relay to another DC failed", "dc", dc, "err", err)
		return nil, errCallFailed
	}
	switch st {
	case stOK:
	case stRPCError:
		te, err := parseRPCError(resp)
		if err != nil {
			return nil, errCallFailed
		}
		return nil, te
	default:
		f.c.log.Debug("relay to another DC failed", "dc", dc, "status", st, "body", string(resp))
		return nil, errCallFailed
	}
	f.c.metrics.forwarded.WithLabelValues("relayed").Inc()
	id, _ := (&bin.Buffer{Buf: body}).PeekID()
	if id == tg.AuthSignInRequestTypeID || id == tg.AuthSignUpRequestTypeID {
		if err := f.signedInThere(ctx, call, resp); err != nil {
			f.c.log.Warn("record a guest authorization", "dc", dc, "err", err)
			return nil, errCallFailed
		}
	}
	return rawTL(resp), nil
}

// signedInThere records, after a sign-in carried to another DC, that the
// caller's key is signed in as that DC's user.
func (f *federation) signedInThere(ctx context.Context, call *protocol.Call, resp []byte) error {
	var box tg.AuthAuthorizationBox
	if err := box.Decode(&bin.Buffer{Buf: slices.Clone(resp)}); err != nil {
		return err
	}
	a, ok := box.Authorization.(*tg.AuthAuthorization)
	if !ok {
		return nil // sign-up required: nothing signed in yet
	}
	u, ok := a.User.(*tg.User)
	if !ok {
		return errors.New("no user in the authorization")
	}
	var dev messaging.Device
	if ci := call.Client; ci != nil {
		dev = messaging.Device{Model: ci.DeviceModel, System: ci.SystemVersion, App: ci.AppVersion, APIID: ci.APIID}
	}
	_, err := f.c.proposeTo(ctx, f.c.layout.DirGroup(), messaging.GuestAuthorization{UserID: u.ID, PermKeyID: call.PermKeyID, Device: dev})
	return err
}

// serveDCCall answers a call another DC carried here for one of its
// keys. A key signed in here must be that DC's (the authorization says
// which DC its key lives in); the call is then routed as any other.
func (r *router) serveDCCall(ctx context.Context, body []byte) (byte, []byte) {
	call, _, err := parseCall(body, len(r.c.groups))
	if err != nil {
		return stFailed, []byte(err.Error())
	}
	if call.KeyDC = r.c.peerDC(ctx); call.KeyDC == 0 || call.KeyDC == r.c.cfg.DC {
		return stFailed, []byte("a carried call from no other DC")
	}
	if call.PermKeyID != 0 {
		sr := r.c.newShardReader(ctx)
		a, ok, err := messaging.GetAuthorization(sr, call.PermKeyID)
		sr.close()
		if err != nil {
			return stFailed, []byte(err.Error())
		}
		if ok && a.KeyDC != call.KeyDC {
			b, _ := json.Marshal(rpcError{Code: 401, Message: "AUTH_KEY_UNREGISTERED"})
			return stRPCError, b
		}
	}
	return callAnswer(r.Handle(context.WithValue(ctx, relayedKey{}, true), call))
}

// peerKey carries, in a served RPC's context, the node that sent it.
type peerKey struct{}

// peerDC is the DC of the node that sent the RPC being served, 0 if
// unknown: its certificate proves its ID, its gossip names its DC.
func (c *clusterNode) peerDC(ctx context.Context) int {
	id, _ := ctx.Value(peerKey{}).(cluster.NodeID)
	for _, m := range c.fed.wan.Members() {
		if m.ID == id && m.MetaErr == nil {
			return m.Meta.DCID
		}
	}
	return 0
}

// knownDC reports whether dc is a live DC of the federation.
func (f *federation) knownDC(dc int) bool { return len(f.membersOf(dc)) > 0 }

// importAuthorization takes an exported token at the user's home DC.
func (f *federation) importAuthorization(ctx context.Context, cmd messaging.ImportAuthorization) (*messaging.User, error) {
	body, err := messaging.EncodeCommand(cmd, messaging.Env{})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, f.c.cfg.Cluster.HoldTimeout.Duration)
	defer cancel()
	st, resp, err := f.dcRequest(ctx, messaging.HomeDC(cmd.UserID), append([]byte{opDCImport}, body...))
	if err != nil {
		return nil, err
	}
	if st != stOK {
		return nil, statusErr(st, resp)
	}
	var u messaging.User
	if err := json.Unmarshal(resp, &u); err != nil || u.ID != cmd.UserID {
		return nil, fmt.Errorf("bad user record from DC %d", messaging.HomeDC(cmd.UserID))
	}
	return &u, nil
}

// serveDCImport takes, at a user's home, a token another DC presents for
// one of its keys. The key's DC is the sender's, proved by its mesh
// certificate and named by its gossip.
func (c *clusterNode) serveDCImport(ctx context.Context, body []byte) (byte, []byte) {
	cmd, _, err := messaging.DecodeCommand(body)
	imp, ok := cmd.(messaging.ImportAuthorization)
	if err != nil || !ok {
		return stFailed, []byte("bad import")
	}
	if messaging.HomeDC(imp.UserID) != c.cfg.DC || imp.KeyDC != c.peerDC(ctx) {
		return stFailed, []byte("import for a user not of this DC, or a key not of the sender's DC")
	}
	if _, err := c.proposeTo(ctx, c.layout.DirGroup(), imp); err != nil {
		return rejectionStatus(err)
	}
	sr := c.newShardReader(ctx)
	defer sr.close()
	v, err := sr.Get(append([]byte("user/"), be64(imp.UserID)...))
	if err != nil {
		return stFailed, []byte(err.Error())
	}
	return stOK, v
}

// rejectionStatus answers a failed proposal: a rejection as the
// Telegram error it carries, anything else as a failure.
func rejectionStatus(err error) (byte, []byte) {
	var te *tgerr.Error
	if errors.Is(err, messaging.ErrRejected) && errors.As(err, &te) {
		b, _ := json.Marshal(rpcError{Code: te.Code, Message: te.Message})
		return stRPCError, b
	}
	return stFailed, []byte(err.Error())
}

func be64(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

// dcBatch is a group's outbox entries for the users of another DC.
type dcBatch struct {
	SrcDC, SrcGroup int
	Seqs            []int64
	Steps           [][]byte
}

// parseDCBatch decodes and bounds an opDCInbox body.
func parseDCBatch(body []byte) (dcBatch, error) {
	var b dcBatch
	if err := json.Unmarshal(body, &b); err != nil {
		return b, fmt.Errorf("bad dc batch: %w", err)
	}
	size := 0
	for _, s := range b.Steps {
		size += len(s)
	}
	switch {
	case b.SrcDC < 1 || b.SrcDC > cluster.MaxDCID || b.SrcGroup < 0 || b.SrcGroup >= 0xffff:
		return b, fmt.Errorf("bad dc batch: source %d/%d", b.SrcDC, b.SrcGroup)
	case len(b.Seqs) != len(b.Steps) || len(b.Steps) == 0 || len(b.Steps) > messaging.InboxMaxSteps:
		return b, fmt.Errorf("bad dc batch: %d seqs, %d steps", len(b.Seqs), len(b.Steps))
	case size > 2*messaging.InboxMaxBytes:
		return b, fmt.Errorf("bad dc batch: %d bytes", size)
	}
	for i := 1; i < len(b.Seqs); i++ {
		if b.Seqs[i] <= b.Seqs[i-1] {
			return b, errors.New("bad dc batch: seqs out of order")
		}
	}
	return b, nil
}

// dcRequest sends req to the members of DC dc in turn until one answers
// (any answer but a transport failure), within ctx.
func (f *federation) dcRequest(ctx context.Context, dc int, req []byte) (byte, []byte, error) {
	ms := f.membersOf(dc)
	if len(ms) == 0 {
		return 0, nil, fmt.Errorf("%w: DC %d has no live member", messaging.ErrUnavailable, dc)
	}
	start := int(f.next.Add(1))
	var lastErr error
	for i := range ms {
		m := ms[(start+i)%len(ms)]
		st, body, err := f.c.rt.requestAt(ctx, m.ID, m.Addr, req)
		if err == nil {
			return st, body, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return 0, nil, fmt.Errorf("%w: DC %d: %w", messaging.ErrUnavailable, dc, lastErr)
}

// dcGetTimeout bounds one read of another DC's directory.
const dcGetTimeout = 5 * time.Second

// get reads a directory key homed in DC dc.
func (f *federation) get(ctx context.Context, dc int, k []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, dcGetTimeout)
	defer cancel()
	st, body, err := f.dcRequest(ctx, dc, append([]byte{opDCGet}, k...))
	if err != nil {
		return nil, err
	}
	switch st {
	case stOK:
		return body, nil
	case stNotFound:
		return nil, storage.ErrNotFound
	}
	return nil, statusErr(st, body)
}

// serveDCGet answers another DC's read of a key homed here.
func (c *clusterNode) serveDCGet(ctx context.Context, k []byte) (byte, []byte) {
	if len(k) == 0 || len(k) > maxReadKey {
		return stFailed, []byte("bad dc read: key length")
	}
	if dc, ok := messaging.DCOfKey(k, c.fed.homes()); !ok || dc != c.cfg.DC {
		return stFailed, []byte("bad dc read: key not homed here")
	}
	sr := c.newShardReader(ctx)
	defer sr.close()
	v, err := sr.Get(k)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return stNotFound, nil
	case err != nil:
		return stFailed, []byte(err.Error())
	}
	return stOK, v
}

// carryTimeout bounds one batch to another DC, all its groups included.
const carryTimeout = 10 * time.Second

// carry delivers group src's outbox entries for DC dc's users there.
func (f *federation) carry(ctx context.Context, dc, src int, entries []messaging.OutboxEntry) error {
	b := dcBatch{SrcDC: f.c.cfg.DC, SrcGroup: src}
	for _, e := range entries {
		b.Seqs, b.Steps = append(b.Seqs, e.Seq), append(b.Steps, e.Step)
	}
	body, err := json.Marshal(b)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, carryTimeout)
	defer cancel()
	st, resp, err := f.dcRequest(ctx, dc, append([]byte{opDCInbox}, body...))
	if err != nil {
		return err
	}
	if st != stOK {
		return statusErr(st, resp)
	}
	return nil
}

// acceptDCBatch applies another DC's batch: its steps split by the group
// of this DC that holds each user's box, as one Inbox per group, which
// skips what that group already applied from the source. It answers
// once every group took its part, so the sender acknowledges nothing
// that is not here.
func (c *clusterNode) acceptDCBatch(ctx context.Context, b dcBatch) error {
	src := messaging.RemoteSource(b.SrcDC, b.SrcGroup)
	per := map[int]*messaging.Inbox{}
	for i, raw := range b.Steps {
		step, _, err := messaging.DecodeCommand(raw)
		if err != nil {
			c.log.Warn("undecodable step from another DC", "dc", b.SrcDC, "group", b.SrcGroup, "seq", b.Seqs[i], "err", err)
			continue
		}
		g := c.layout.DestOf(step)
		if g < 0 {
			c.log.Warn("step for a user of another DC", "dc", b.SrcDC, "kind", step.Kind())
			continue
		}
		in := per[g]
		if in == nil {
			in = &messaging.Inbox{Group: g, Src: src}
			per[g] = in
		}
		in.Seqs, in.Steps = append(in.Seqs, b.Seqs[i]), append(in.Steps, raw)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Cluster.HoldTimeout.Duration)
	defer cancel()
	errs := make(chan error, len(per))
	for _, in := range per {
		go func() {
			_, err := c.proposeTo(ctx, in.Group, *in)
			errs <- err
		}()
	}
	var first error
	for range per {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Copies of other DCs' users (messaging.RemoteUser): a record read from
// its home within copyFresh is served from this DC's copy with no WAN
// round trip. After a failed read of a DC, reads of it serve copies at
// once, and one background read every dcProbeEvery finds out when it
// answers again: a cut link costs one timeout, not one per read.
const (
	copyFresh    = 30 * time.Second
	dcProbeEvery = 5 * time.Second
	maxFreshes   = 100000
)

// remoteGet reads a key homed in DC dc. A user record comes from its
// home, refreshing this DC's copy when it changed, or from the copy when
// the home cannot be reached or answered recently; other keys (phone
// index entries) only from the home.
func (r *shardReader) remoteGet(dc int, k []byte) ([]byte, error) {
	f := r.c.fed
	if !bytes.HasPrefix(k, []byte("user/")) {
		return f.get(r.ctx, dc, k)
	}
	local, lerr := r.localGet(k)
	if lerr == nil && f.fresh(k) {
		return local, nil
	}
	if lerr == nil && f.down(dc) {
		f.probe(dc, k, local)
		return local, nil
	}
	v, err := f.get(r.ctx, dc, k)
	switch {
	case err == nil:
		f.touch(k, dc, true)
		if lerr != nil || !bytes.Equal(v, local) {
			f.storeCopy(k, v)
		}
		return v, nil
	case errors.Is(err, storage.ErrNotFound):
		return nil, err
	}
	f.touch(k, dc, false)
	if lerr == nil {
		return local, nil
	}
	return nil, err
}

// fresh reports whether k was read from its home within copyFresh.
func (f *federation) fresh(k []byte) bool {
	f.copyMu.Lock()
	defer f.copyMu.Unlock()
	at, ok := f.freshAt[string(k)]
	return ok && time.Since(at) < copyFresh
}

// down reports whether the last read of DC dc failed.
func (f *federation) down(dc int) bool {
	f.copyMu.Lock()
	defer f.copyMu.Unlock()
	_, ok := f.downAt[dc]
	return ok
}

// probe reads k from DC dc in the background, at most once per
// dcProbeEvery per DC: the DC is up again (and the copy refreshed) once
// it answers.
func (f *federation) probe(dc int, k, local []byte) {
	f.copyMu.Lock()
	if time.Since(f.probeAt[dc]) < dcProbeEvery {
		f.copyMu.Unlock()
		return
	}
	if f.probeAt == nil {
		f.probeAt = map[int]time.Time{}
	}
	f.probeAt[dc] = time.Now()
	f.copyMu.Unlock()
	k, local = slices.Clone(k), slices.Clone(local)
	f.c.spawn(func() {
		v, err := f.get(f.c.ctx, dc, k)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return
		}
		f.touch(k, dc, true)
		if err == nil && !bytes.Equal(v, local) {
			f.storeCopy(k, v)
		}
	})
}

// touch records a read of k from DC dc: answered (fresh) or failed.
func (f *federation) touch(k []byte, dc int, ok bool) {
	f.copyMu.Lock()
	defer f.copyMu.Unlock()
	if f.freshAt == nil || len(f.freshAt) >= maxFreshes {
		f.freshAt = map[string]time.Time{}
	}
	if f.downAt == nil {
		f.downAt = map[int]time.Time{}
	}
	if ok {
		f.freshAt[string(k)] = time.Now()
		delete(f.downAt, dc)
	} else {
		f.downAt[dc] = time.Now()
	}
}

// storeCopy proposes this DC's copy of a user record, in the background:
// a copy that fails to store is stored at a later read.
func (f *federation) storeCopy(k, v []byte) {
	id := int64(binary.BigEndian.Uint64(k[len("user/"):]))
	if len(v) > messaging.MaxRemoteRecord {
		return
	}
	cmd := messaging.RemoteUser{ID: id, Record: append([]byte(nil), v...)}
	f.c.spawn(func() {
		ctx, cancel := context.WithTimeout(f.c.ctx, f.c.cfg.Cluster.HoldTimeout.Duration)
		defer cancel()
		if _, err := f.c.proposeTo(ctx, f.c.layout.DirGroup(), cmd); err != nil {
			f.c.log.Debug("store a copy of another DC's user", "user", id, "err", err)
		}
	})
}

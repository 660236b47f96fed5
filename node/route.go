package node

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/tg"
	"github.com/gotd/td/tgerr"
	"github.com/hashicorp/raft"

	"github.com/mtnode/mtnode/cluster"
	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/protocol"
	"github.com/mtnode/mtnode/replication"
	"github.com/mtnode/mtnode/storage"
)

// Node-to-node RPC over the mesh (cluster.KindRPC): one request frame,
// one response frame per stream.
//
//	request:  op (1) | body
//	response: status (1) | body
const (
	opCall     byte = 1 // body: JSON forwardedCall; ok body: the result's TL
	opLoadKey  byte = 2 // body: key id (8); ok body: the key record
	opStoreKey byte = 3 // body: key id (8) | record
	opSecrets  byte = 4 // ok body: JSON map of the DC's secrets
	opStatus   byte = 5 // ok body: JSON NodeStatus
	opRead     byte = 6 // body: JSON readRequest; ok body: JSON readResponse
	opPropose  byte = 7 // body: group (4) | an encoded messaging.Inbox
	opReadIdx  byte = 8 // body: group (4); ok body: read index (8)

	stOK         byte = 0
	stRPCError   byte = 1 // body: JSON rpcError, a Telegram error for the client
	stNotLeader  byte = 2 // body: the leader's raft address, if known
	stNotFound   byte = 3
	stFailed     byte = 4 // body: text, logged; the client sees INTERNAL
	stWrongGroup byte = 5 // body: group (4) the call must run at
)

// Bounds on what a peer may send.
const (
	maxRPCRequest  = 2 << 20
	maxRPCResponse = 32 << 20
)

// errNotLeader is a peer's answer that it does not lead the group asked.
type errNotLeader struct{ hint raft.ServerAddress }

func (e errNotLeader) Error() string { return "peer is not the leader (hint " + string(e.hint) + ")" }

// forwardedCall is a protocol.Call on the wire.
type forwardedCall struct {
	// Group is the call's home group, which the receiver must lead.
	Group                int
	AuthKeyID, PermKeyID int64
	SessionID, MsgID     int64
	Layer                int
	NoUpdates            bool
	Client               *protocol.ClientInfo `json:",omitempty"`
	Body                 []byte
	// KeyDC is the DC of the caller's key, for a call another DC carried
	// here (protocol.Call.KeyDC).
	KeyDC int `json:",omitempty"`
}

type rpcError struct {
	Code    int
	Message string
}

// rawTL is an already encoded TL object.
type rawTL []byte

func (r rawTL) Encode(b *bin.Buffer) error { b.Put(r); return nil }

// router answers client calls on a clustered node: on the leader of the
// call's home group it runs the API locally, elsewhere it forwards the
// call to that leader over the mesh and relays the answer, retrying
// across elections and leader changes until cluster.hold_timeout.
type router struct {
	c     *clusterNode
	local protocol.Handler

	hintMu sync.Mutex
	hints  map[replication.ShardID]hint // leaders learned from peers
}

// hint is a group's leader as a peer last named it.
type hint struct {
	addr raft.ServerAddress
	at   time.Time
}

func newRouter(c *clusterNode) *router {
	r := &router{c: c, hints: map[replication.ShardID]hint{}}
	c.rt = r
	c.mesh.Handle(cluster.KindRPC, r.serve)
	return r
}

// errCallFailed is what a client gets when no leader answered in time.
var errCallFailed = tgerr.New(500, "RPC_CALL_FAIL")

// runLocal runs a call on this node, which leads its home group. A call
// that wrote went through raft, which fails on a deposed leader. A call
// that only read must not answer from a deposed leader's stale replica
// (one partitioned away keeps believing it leads for up to the leader
// lease), so it answers only after raft confirms, with a quorum, the
// leadership of every group it read locally as leader (VerifyLeader: one
// heartbeat round, shared by concurrent calls); otherwise it is
// unavailable here and retried at the real leader.
func (r *router) runLocal(ctx context.Context, call *protocol.Call) (bin.Encoder, error) {
	t := &callTrack{}
	res, err := r.local.Handle(context.WithValue(ctx, callTrackKey{}, t), call)
	t.mu.Lock()
	wrote, led := t.wrote, t.led
	t.mu.Unlock()
	if wrote || errors.Is(err, messaging.ErrUnavailable) {
		return res, err
	}
	futs := make([]raft.Future, 0, len(led))
	for g := range led {
		futs = append(futs, r.c.groups[g].Raft().VerifyLeader())
	}
	for _, f := range futs {
		if verr := f.Error(); verr != nil {
			return nil, fmt.Errorf("%w: verify leadership: %w", messaging.ErrUnavailable, verr)
		}
	}
	return res, err
}

// localMethods need no state and describe the node the client is talking
// to (its own address in help.getConfig), so every node answers them
// itself, even when cut off from the leader.
var localMethods = map[uint32]bool{
	tg.HelpGetConfigRequestTypeID:    true,
	tg.HelpGetNearestDCRequestTypeID: true,
}

// guestMethods are what a key signed in as a user of another DC may call
// here; anything else is about the user's data and answers
// USER_MIGRATE_X with the user's home DC.
var guestMethods = map[uint32]bool{
	tg.AuthImportAuthorizationRequestTypeID: true,
}

// Handle implements protocol.Handler. With routing.assist, a call that
// belongs to another DC (it would answer PHONE_MIGRATE_X or
// USER_MIGRATE_X) is carried there and answered as if local.
func (r *router) Handle(ctx context.Context, call *protocol.Call) (bin.Encoder, error) {
	if !r.c.cfg.Routing.Assist || relayed(ctx) {
		return r.handle(ctx, call)
	}
	body := slices.Clone(call.Body.Buf)
	res, err := r.handle(ctx, call)
	if dc, ok := r.migrateTarget(err); ok {
		return r.c.fed.relayCall(ctx, dc, call, body)
	}
	return res, err
}

// migrateTarget is the DC a PHONE_MIGRATE_X or USER_MIGRATE_X error names.
func (r *router) migrateTarget(err error) (int, bool) {
	te, ok := tgerr.As(err)
	if !ok || te.Code != 303 || (te.Type != "PHONE_MIGRATE" && te.Type != "USER_MIGRATE") {
		return 0, false
	}
	return te.Argument, te.Argument != r.c.cfg.DC && te.Argument > 0
}

func (r *router) handle(ctx context.Context, call *protocol.Call) (bin.Encoder, error) {
	if id, err := call.Body.PeekID(); err == nil && localMethods[id] {
		return r.local.Handle(ctx, call)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, r.c.cfg.Cluster.HoldTimeout.Duration)
	defer cancel()
	body := slices.Clone(call.Body.Buf)
	var next raft.ServerAddress // the leader a peer just named
	result := "ok"
	defer func() { r.c.metrics.forwardSeconds.Observe(time.Since(start).Seconds()) }()
	home, uid := r.homeOf(ctx, call)
	if dc := messaging.HomeDC(uid); uid != 0 && dc != 0 && dc != r.c.cfg.DC {
		// A key signed in as a user of another DC (an imported
		// authorization): the user's data is at home.
		if id, _ := call.Body.PeekID(); !guestMethods[id] {
			return nil, tgerr.New(303, fmt.Sprintf("USER_MIGRATE_%d", dc))
		}
	}
	if res, err, ok := r.followerRead(ctx, call, home, body); ok {
		return res, err
	}
	for attempt := 0; ; attempt++ {
		var wg errWrongGroup
		if r.c.groups[home].IsLeader() {
			lc := *call
			lc.Body = &bin.Buffer{Buf: slices.Clone(body)}
			res, err := r.runLocal(ctx, &lc)
			if errors.As(err, &wg) && wg.g != int(home) {
				home, next = replication.ShardID(wg.g), ""
				continue // the command belongs elsewhere: run it there
			}
			if !errors.Is(err, messaging.ErrUnavailable) {
				return res, err
			}
		} else if addr := cmpOr(next, r.leaderOf(ctx, home)); addr != "" {
			next = ""
			res, err := r.forward(ctx, home, addr, encodeCall(call, int(home), body))
			if err == nil {
				r.c.metrics.forwarded.WithLabelValues(result).Inc()
				return res, nil
			}
			var te *tgerr.Error
			if errors.As(err, &te) {
				r.c.metrics.forwarded.WithLabelValues("rpc_error").Inc()
				return nil, te
			}
			var nl errNotLeader
			switch {
			case errors.As(err, &wg) && wg.g != int(home):
				home = replication.ShardID(wg.g)
				continue
			case errors.As(err, &nl):
				r.setHint(home, nl.hint)
				if nl.hint != addr {
					next = nl.hint
					continue // straight to the leader it named
				}
			default:
				r.c.log.Debug("forward failed", "leader", string(addr), "err", err)
				r.setHint(home, "")
			}
			result = "retried"
		}
		if !sleepCtx(ctx, backoff(attempt)) {
			r.c.metrics.forwarded.WithLabelValues("timeout").Inc()
			return nil, errCallFailed
		}
	}
}

func cmpOr(a, b raft.ServerAddress) raft.ServerAddress {
	if a != "" {
		return a
	}
	return b
}

func backoff(attempt int) time.Duration {
	return min(time.Duration(attempt+1)*20*time.Millisecond, 250*time.Millisecond)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func encodeCall(call *protocol.Call, group int, body []byte) []byte {
	b, _ := json.Marshal(forwardedCall{
		Group:     group,
		AuthKeyID: call.AuthKeyID, PermKeyID: call.PermKeyID,
		SessionID: call.SessionID, MsgID: call.MsgID,
		Layer: call.Layer, NoUpdates: call.NoUpdates, Client: call.Client,
		Body: body, KeyDC: call.KeyDC,
	})
	return append([]byte{opCall}, b...)
}

// leaderOf returns group g's leader address: raft's own view on a voter
// or staged replica, else one learned from peers (a node with no replica,
// or one removed from the group, hears nothing from raft).
func (r *router) leaderOf(ctx context.Context, g replication.ShardID) raft.ServerAddress {
	if addr, id := r.c.groups[g].Leader(); id != "" && r.c.inGroupOf(g) {
		return addr
	}
	r.hintMu.Lock()
	h := r.hints[g]
	r.hintMu.Unlock()
	if h.addr != "" || time.Since(h.at) < 500*time.Millisecond {
		return h.addr
	}
	// Ask the members; the one that leads says so.
	var found raft.ServerAddress
	for _, m := range r.c.dcMembers() {
		if m.ID == r.c.id {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := r.statusAt(sctx, m.ID, m.Addr)
		cancel()
		if err != nil || int(g) >= len(st.Groups) {
			continue
		}
		gs := st.Groups[g]
		if gs.State == raft.Leader.String() {
			found = raft.ServerAddress(gs.LeaderAddr)
			break
		}
		if found == "" && gs.LeaderAddr != "" {
			found = raft.ServerAddress(gs.LeaderAddr)
		}
	}
	r.setHint(g, found)
	return found
}

// inGroupOf reports whether this node is in group g's configuration.
func (c *clusterNode) inGroupOf(g replication.ShardID) bool {
	for _, s := range c.configurationOf(g) {
		if cluster.NodeID(s.ID) == c.id {
			return true
		}
	}
	return false
}

func (r *router) setHint(g replication.ShardID, a raft.ServerAddress) {
	r.hintMu.Lock()
	r.hints[g] = hint{addr: a, at: time.Now()}
	r.hintMu.Unlock()
}

// attemptTimeout bounds one forwarding attempt when nothing says the
// leader changed: a leader killed mid-call leaves a connection that looks
// open until QUIC's idle timeout, and the call must move on long before.
const attemptTimeout = 3 * time.Second

// attemptCtx bounds one attempt against group g's leader at addr: it ends
// after attemptTimeout, or as soon as this replica's raft names another
// leader.
func (r *router) attemptCtx(ctx context.Context, g replication.ShardID, addr raft.ServerAddress) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if now, id := r.c.groups[g].Leader(); id != "" && now != addr {
					cancel()
					return
				}
			}
		}
	}()
	return ctx, cancel
}

// forward sends an opCall to group g's leader at addr and decodes its
// answer.
func (r *router) forward(ctx context.Context, g replication.ShardID, addr raft.ServerAddress, req []byte) (bin.Encoder, error) {
	actx, cancel := r.attemptCtx(ctx, g, addr)
	defer cancel()
	st, body, err := r.request(actx, addr, req)
	if err != nil {
		return nil, err
	}
	switch st {
	case stOK:
		return rawTL(body), nil
	case stRPCError:
		te, err := parseRPCError(body)
		if err != nil {
			return nil, err
		}
		return nil, te
	case stFailed:
		r.c.log.Error("forwarded call failed on the leader", "leader", string(addr), "err", string(body))
		return nil, tgerr.New(500, "INTERNAL")
	}
	return nil, statusErr(st, body)
}

func statusErr(st byte, body []byte) error {
	switch st {
	case stNotLeader:
		return errNotLeader{hint: raft.ServerAddress(body)}
	case stWrongGroup:
		if len(body) != 4 {
			return errors.New("bad wrong-group answer")
		}
		return fmt.Errorf("%w: %w", messaging.ErrUnavailable, errWrongGroup{g: int(binary.BigEndian.Uint32(body))})
	case stFailed:
		return fmt.Errorf("peer failed: %s", body)
	case stNotFound:
		return storage.ErrNotFound
	case stRPCError:
		te, err := parseRPCError(body)
		if err != nil {
			return err
		}
		return fmt.Errorf("%w: %w", messaging.ErrRejected, te)
	}
	return fmt.Errorf("peer answered status %d", st)
}

// request runs one RPC against the node at raft address addr.
func (r *router) request(ctx context.Context, addr raft.ServerAddress, req []byte) (byte, []byte, error) {
	id, hp, err := cluster.ParseRaftAddress(addr)
	if err != nil {
		return 0, nil, err
	}
	return r.requestAt(ctx, id, hp, req)
}

func (r *router) requestAt(ctx context.Context, id cluster.NodeID, hp string, req []byte) (byte, []byte, error) {
	s, err := r.c.mesh.Open(ctx, id, hp, cluster.KindRPC)
	if err != nil {
		return 0, nil, err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		s.SetDeadline(dl)
	}
	// A stream read does not watch ctx: cut it off when ctx ends early
	// (the leader changed under the call).
	stop := context.AfterFunc(ctx, func() { s.SetDeadline(time.Now()) })
	defer stop()
	if err := cluster.WriteFrame(s, req); err != nil {
		return 0, nil, err
	}
	resp, err := cluster.ReadFrame(s, nil, maxRPCResponse)
	if err != nil {
		return 0, nil, err
	}
	if len(resp) == 0 {
		return 0, nil, errors.New("empty response")
	}
	return resp[0], resp[1:], nil
}

// serve answers one RPC stream from a peer.
func (r *router) serve(ctx context.Context, peer cluster.NodeID, s *cluster.Stream) {
	defer s.Close()
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	req, err := cluster.ReadFrame(s, nil, maxRPCRequest)
	if err != nil || len(req) == 0 {
		s.Reset()
		return
	}
	s.SetReadDeadline(time.Time{})
	ctx, cancel := context.WithTimeout(context.WithValue(ctx, peerKey{}, peer), r.c.cfg.Cluster.HoldTimeout.Duration)
	defer cancel()
	st, body := r.dispatch(ctx, req[0], req[1:])
	s.SetWriteDeadline(time.Now().Add(10 * time.Second))
	cluster.WriteFrame(s, append([]byte{st}, body...))
}

func (r *router) notLeader(g replication.ShardID) (byte, []byte) {
	addr, _ := r.c.groups[g].Leader()
	return stNotLeader, []byte(addr)
}

func (r *router) dispatch(ctx context.Context, op byte, body []byte) (byte, []byte) {
	switch op {
	case opCall:
		call, g, err := parseCall(body, len(r.c.groups))
		if err != nil {
			return stFailed, []byte(err.Error())
		}
		if !r.c.groups[g].IsLeader() {
			return r.notLeader(g)
		}
		res, err := r.runLocal(ctx, call)
		var wg errWrongGroup
		switch {
		case errors.As(err, &wg):
			return stWrongGroup, binary.BigEndian.AppendUint32(nil, uint32(wg.g))
		case errors.Is(err, messaging.ErrUnavailable):
			return r.notLeader(g)
		}
		return callAnswer(res, err)
	case opLoadKey:
		id, _, err := parseKeyRequest(op, body)
		if err != nil {
			return stFailed, []byte(err.Error())
		}
		g := r.c.keyShard(id)
		rec, ok, err := r.c.localAuthKey(id)
		switch {
		case err != nil:
			return stFailed, []byte(err.Error())
		case ok:
			return stOK, rec
		case !r.c.groups[g].IsLeader():
			return r.notLeader(g)
		}
		return stNotFound, nil
	case opStoreKey:
		id, rec, err := parseKeyRequest(op, body)
		if err != nil {
			return stFailed, []byte(err.Error())
		}
		g := r.c.keyShard(id)
		if !r.c.groups[g].IsLeader() {
			return r.notLeader(g)
		}
		if err := r.c.proposeKey(ctx, id, rec); err != nil {
			if errors.Is(err, messaging.ErrUnavailable) {
				return r.notLeader(g)
			}
			return stFailed, []byte(err.Error())
		}
		return stOK, nil
	case opSecrets:
		s, ok := r.c.localSecrets()
		if !ok {
			return r.notLeader(metaGroup)
		}
		b, _ := json.Marshal(s)
		return stOK, b
	case opStatus:
		b, _ := json.Marshal(r.c.status())
		return stOK, b
	case opRead:
		q, err := parseReadRequest(body, len(r.c.groups))
		if err != nil {
			return stFailed, []byte(err.Error())
		}
		if !r.c.groups[q.Group].IsLeader() {
			return r.notLeader(replication.ShardID(q.Group))
		}
		resp, err := r.c.serveRead(q)
		if err != nil {
			return stFailed, []byte(err.Error())
		}
		b, _ := json.Marshal(resp)
		return stOK, b
	case opReadIdx:
		if len(body) != 4 || int(binary.BigEndian.Uint32(body)) >= len(r.c.groups) {
			return stFailed, []byte("bad read index request")
		}
		g := replication.ShardID(binary.BigEndian.Uint32(body))
		if !r.c.groups[g].IsLeader() {
			return r.notLeader(g)
		}
		idx, err := r.c.groups[g].ReadIndex()
		if err != nil {
			return r.notLeader(g)
		}
		return stOK, binary.BigEndian.AppendUint64(nil, idx)
	case opPropose:
		g, cmd, err := parsePropose(body, r.c.layout)
		if err != nil {
			return stFailed, []byte(err.Error())
		}
		if !r.c.groups[g].IsLeader() {
			return r.notLeader(replication.ShardID(g))
		}
		if _, err := r.c.applyOn(ctx, replication.ShardID(g), cmd, messaging.Env{}); err != nil {
			if errors.Is(err, messaging.ErrUnavailable) {
				return r.notLeader(replication.ShardID(g))
			}
			return rejectionStatus(err)
		}
		return stOK, nil
	case opDCGet:
		return r.c.serveDCGet(ctx, body)
	case opDCClaim:
		return r.c.serveDCClaim(ctx, body)
	case opDCImport:
		return r.c.serveDCImport(ctx, body)
	case opDCCall:
		return r.serveDCCall(ctx, body)
	case opDCInbox:
		b, err := parseDCBatch(body)
		if err != nil {
			return stFailed, []byte(err.Error())
		}
		if err := r.c.acceptDCBatch(ctx, b); err != nil {
			return stFailed, []byte(err.Error())
		}
		return stOK, nil
	}
	return stFailed, []byte(fmt.Sprintf("unknown op %d", op))
}

// callAnswer is a call's answer on the wire: its result's TL, a Telegram
// error for the client, or a failure.
func callAnswer(res bin.Encoder, err error) (byte, []byte) {
	if err != nil {
		var te *tgerr.Error
		if errors.As(err, &te) {
			b, _ := json.Marshal(rpcError{Code: te.Code, Message: te.Message})
			return stRPCError, b
		}
		return stFailed, []byte(err.Error())
	}
	var b bin.Buffer
	if err := res.Encode(&b); err != nil {
		return stFailed, []byte("encode result: " + err.Error())
	}
	return stOK, b.Buf
}

// Parsers of what peers send. Every field a peer controls is bounded;
// FuzzRPC feeds them arbitrary bytes.

// maxErrorMessage bounds a relayed Telegram error's text.
const maxErrorMessage = 256

// parseCall decodes an opCall body into the call the API runs and its
// home group (below groups).
func parseCall(body []byte, groups int) (*protocol.Call, replication.ShardID, error) {
	var fc forwardedCall
	if err := json.Unmarshal(body, &fc); err != nil {
		return nil, 0, fmt.Errorf("bad call: %w", err)
	}
	if len(fc.Body) < 4 {
		return nil, 0, errors.New("bad call: no method")
	}
	if fc.Layer < 0 || fc.Layer > 10000 {
		return nil, 0, fmt.Errorf("bad call: layer %d", fc.Layer)
	}
	if fc.Group < 0 || fc.Group >= groups {
		return nil, 0, fmt.Errorf("bad call: group %d", fc.Group)
	}
	if fc.KeyDC < 0 || fc.KeyDC > cluster.MaxDCID {
		return nil, 0, fmt.Errorf("bad call: key DC %d", fc.KeyDC)
	}
	return &protocol.Call{
		AuthKeyID: fc.AuthKeyID, PermKeyID: fc.PermKeyID,
		SessionID: fc.SessionID, MsgID: fc.MsgID,
		Layer: fc.Layer, NoUpdates: fc.NoUpdates, Client: fc.Client,
		Body: &bin.Buffer{Buf: fc.Body}, KeyDC: fc.KeyDC,
	}, replication.ShardID(fc.Group), nil
}

// parseKeyRequest decodes an opLoadKey (id) or opStoreKey (id, record)
// body.
func parseKeyRequest(op byte, body []byte) (id int64, rec []byte, err error) {
	if len(body) < 8 {
		return 0, nil, errors.New("bad key request: short")
	}
	id, rec = int64(binary.BigEndian.Uint64(body)), body[8:]
	switch {
	case op == opLoadKey && len(rec) != 0:
		return 0, nil, errors.New("bad key request: trailing bytes")
	case op == opStoreKey && (len(rec) == 0 || len(rec) > messaging.MaxAuthKeyRecord):
		return 0, nil, fmt.Errorf("bad key request: record of %d bytes", len(rec))
	}
	return id, rec, nil
}

// parseRPCError decodes a stRPCError body into the error the client gets.
func parseRPCError(body []byte) (*tgerr.Error, error) {
	var e rpcError
	if err := json.Unmarshal(body, &e); err != nil {
		return nil, fmt.Errorf("bad rpc error: %w", err)
	}
	if e.Code < -1000 || e.Code > 1000 || e.Message == "" || len(e.Message) > maxErrorMessage {
		return nil, fmt.Errorf("bad rpc error: code %d, %d-byte message", e.Code, len(e.Message))
	}
	return tgerr.New(e.Code, e.Message), nil
}

// toLeader runs req against group g's leader, following leader changes,
// until ctx ends.
func (r *router) toLeader(ctx context.Context, g replication.ShardID, req []byte) (byte, []byte, error) {
	var lastErr error = errors.New("no leader")
	var next raft.ServerAddress
	for attempt := 0; ; attempt++ {
		if addr := cmpOr(next, r.leaderOf(ctx, g)); addr != "" {
			next = ""
			actx, cancel := r.attemptCtx(ctx, g, addr)
			st, body, err := r.request(actx, addr, req)
			cancel()
			if err == nil && st != stNotLeader {
				return st, body, nil
			}
			if err == nil {
				r.setHint(g, raft.ServerAddress(body))
				err = errNotLeader{hint: raft.ServerAddress(body)}
				if raft.ServerAddress(body) != addr {
					next = raft.ServerAddress(body)
				}
			} else {
				r.setHint(g, "")
			}
			lastErr = err
		}
		if !sleepCtx(ctx, backoff(attempt)) {
			return 0, nil, fmt.Errorf("%w: %w", messaging.ErrUnavailable, lastErr)
		}
	}
}

// fetchSecrets asks the leader for the DC's secrets.
func (r *router) fetchSecrets(ctx context.Context) (map[string][]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	addr := r.leaderOf(ctx, metaGroup)
	if addr == "" {
		return nil, errors.New("no leader")
	}
	return r.fetchSecretsAt(ctx, addr)
}

// fetchSecretsAt asks the node at addr ("id@host:port") for its DC's
// secrets.
func (r *router) fetchSecretsAt(ctx context.Context, addr raft.ServerAddress) (map[string][]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, body, err := r.request(ctx, addr, []byte{opSecrets})
	if err != nil {
		return nil, err
	}
	if st != stOK {
		return nil, statusErr(st, body)
	}
	var s map[string][]byte
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, err
	}
	for _, n := range secretNames {
		if len(s[n]) == 0 {
			return nil, fmt.Errorf("secret %s missing", n)
		}
	}
	return s, nil
}

// NodeStatus asks a member for its status.
func (r *router) NodeStatus(ctx context.Context, id cluster.NodeID) (NodeStatus, error) {
	for _, m := range r.c.members.Members() {
		if m.ID == id {
			return r.statusAt(ctx, id, m.Addr)
		}
	}
	return NodeStatus{}, fmt.Errorf("%s is not a live member", id)
}

func (r *router) statusAt(ctx context.Context, id cluster.NodeID, hp string) (NodeStatus, error) {
	var st NodeStatus
	code, body, err := r.requestAt(ctx, id, hp, []byte{opStatus})
	if err != nil {
		return st, err
	}
	if code != stOK {
		return st, statusErr(code, body)
	}
	err = json.Unmarshal(body, &st)
	return st, err
}

// localAuthKey reads an auth key record from this node's replica of its
// shard (found false when the node holds none).
func (c *clusterNode) localAuthKey(id int64) (rec []byte, ok bool, err error) {
	g := c.keyShard(id)
	if !c.inGroupOf(g) {
		return nil, false, nil
	}
	err = c.groups[g].View(func(tx *storage.Txn) error {
		rec, ok, err = messaging.AuthKey(tx, id)
		return err
	})
	return rec, ok, err
}

// proposeKey stores an auth key through its shard; this node must lead
// it.
func (c *clusterNode) proposeKey(ctx context.Context, id int64, rec []byte) error {
	_, err := c.applyOn(ctx, c.keyShard(id), messaging.StoreAuthKey{ID: id, Data: rec}, messaging.Env{Now: time.Now().Unix()})
	return err
}

// clusterKeys is the protocol.KeyStore of a clustered node: auth keys live
// in the data group, so a key made through any node works on every node.
type clusterKeys struct{ r *router }

func (k clusterKeys) LoadKey(id int64) (*protocol.AuthKey, error) {
	rec, ok, err := k.r.c.localAuthKey(id)
	if err != nil {
		return nil, err
	}
	if !ok {
		// Not here (yet): this node may hold no replica, or lag. The
		// leader's answer is the truth.
		g := k.r.c.keyShard(id)
		if k.r.c.groups[g].IsLeader() {
			return nil, protocol.ErrKeyNotFound
		}
		ctx, cancel := context.WithTimeout(context.Background(), k.r.c.cfg.Cluster.HoldTimeout.Duration)
		defer cancel()
		st, body, err := k.r.toLeader(ctx, g, binary.BigEndian.AppendUint64([]byte{opLoadKey}, uint64(id)))
		if err != nil {
			return nil, err
		}
		switch st {
		case stOK:
			rec = body
		case stNotFound:
			return nil, protocol.ErrKeyNotFound
		default:
			return nil, statusErr(st, body)
		}
	}
	var key protocol.AuthKey
	if err := key.UnmarshalBinary(rec); err != nil {
		return nil, err
	}
	return &key, nil
}

func (k clusterKeys) StoreKey(key *protocol.AuthKey) error {
	rec, err := key.MarshalBinary()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), k.r.c.cfg.Cluster.HoldTimeout.Duration)
	defer cancel()
	g := k.r.c.keyShard(key.ID())
	for attempt := 0; ; attempt++ {
		if k.r.c.groups[g].IsLeader() {
			err = k.r.c.proposeKey(ctx, key.ID(), rec)
			if !errors.Is(err, messaging.ErrUnavailable) {
				return err
			}
		} else {
			req := binary.BigEndian.AppendUint64([]byte{opStoreKey}, uint64(key.ID()))
			st, body, err := k.r.toLeader(ctx, g, append(req, rec...))
			if err != nil {
				return err
			}
			if st == stOK {
				return nil
			}
			return statusErr(st, body)
		}
		if !sleepCtx(ctx, backoff(attempt)) {
			return err
		}
	}
}

// replicatedState is the api.State of a clustered node: each command goes
// through its group, which this node must lead (the router runs the call
// at the leader of the group its command belongs to; errWrongGroup sends
// it there); reads go to each key's group (shardReader).
type replicatedState struct {
	c      *clusterNode
	notify messaging.Notifier
}

func (c *clusterNode) state() replicatedState { return replicatedState{c: c, notify: c.notify} }

func (s replicatedState) Apply(ctx context.Context, cmd messaging.Command, env messaging.Env) (any, error) {
	g := s.c.layout.GroupOf(cmd)
	if !s.c.groups[g].IsLeader() {
		return nil, fmt.Errorf("%w: %w", messaging.ErrUnavailable, errWrongGroup{g: g})
	}
	trackOf(ctx).markWrote()
	a, err := s.c.applyFull(ctx, replication.ShardID(g), cmd, env)
	if err == nil && g == s.c.layout.DirGroup() && len(a.Outbox) > 0 {
		// A directory command's steps (an authorization's entry in its
		// user's group) are carried before the client hears of it, so the
		// user's group pushes to a device as soon as it has signed in.
		s.c.pumps[g].wait(ctx, a.Outbox)
	}
	return a.Result, err
}

// applyOn proposes cmd to group g, which this node should lead. Failures
// that leave the outcome to another leader wrap messaging.ErrUnavailable.
func (c *clusterNode) applyOn(ctx context.Context, g replication.ShardID, cmd messaging.Command, env messaging.Env) (any, error) {
	a, err := c.applyFull(ctx, g, cmd, env)
	return a.Result, err
}

func (c *clusterNode) applyFull(ctx context.Context, g replication.ShardID, cmd messaging.Command, env messaging.Env) (messaging.Applied, error) {
	start := time.Now()
	res, err := c.reps[g].ProposeApplied(ctx, c.groups[g], cmd, env)
	if err == nil {
		c.metrics.applySeconds.Observe(time.Since(start).Seconds())
		return res, nil
	}
	if errors.Is(err, replication.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
		errors.Is(err, raft.ErrRaftShutdown) || errors.Is(err, raft.ErrEnqueueTimeout) ||
		errors.Is(err, raft.ErrLeadershipTransferInProgress) || errors.Is(err, raft.ErrAbortedByRestore) {
		return res, fmt.Errorf("%w: %w", messaging.ErrUnavailable, err)
	}
	return res, err
}

func (s replicatedState) View(ctx context.Context, fn func(tx storage.Reader) error) error {
	r := s.c.newShardReader(ctx)
	defer r.close()
	return fn(r)
}

func (s replicatedState) Publish(events []messaging.Event) {
	if len(events) > 0 && s.notify != nil {
		s.notify.Notify(events)
	}
}

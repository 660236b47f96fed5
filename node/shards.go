package node

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/tg"

	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/protocol"
	"github.com/mtnode/mtnode/replication"
	"github.com/mtnode/mtnode/storage"
)

// Reads across groups (DESIGN.md, "Sharded messaging"). A call runs on
// the leader of its home group; what it reads of other groups comes from
// their leaders over the mesh (opRead), except the directory, which every
// replica may serve (see shardReader).

// callTrack is what a call did, kept in its context: whether it proposed
// a command, and which groups it read locally as their leader (a
// read-only call confirms those leaderships before answering).
type callTrack struct {
	mu    sync.Mutex
	wrote bool
	led   map[int]bool
	// caughtUp, when follower is set, is a group this node follows and
	// has caught up to its leader's read index for this call: read
	// locally.
	follower bool
	caughtUp int
}

type callTrackKey struct{}

func trackOf(ctx context.Context) *callTrack {
	t, _ := ctx.Value(callTrackKey{}).(*callTrack)
	return t
}

func (t *callTrack) markWrote() {
	if t != nil {
		t.mu.Lock()
		t.wrote = true
		t.mu.Unlock()
	}
}

func (t *callTrack) markLed(g int) {
	if t != nil {
		t.mu.Lock()
		if t.led == nil {
			t.led = map[int]bool{}
		}
		t.led[g] = true
		t.mu.Unlock()
	}
}

// errWrongGroup says a command belongs to a group this node does not
// lead: the call must run at that group's leader.
type errWrongGroup struct{ g int }

func (e errWrongGroup) Error() string { return fmt.Sprintf("command belongs to group %d", e.g) }

// shardReader is the storage.Reader of a call on a clustered node. Each
// key is read from its group (messaging.Layout.GroupOfKey):
//
//   - from this node's replica when this node leads the group: current,
//     and confirmed with a quorum before a read-only call answers;
//   - for the directory, from this node's replica when it holds one,
//     leader or not: profiles, usernames and authorizations a few
//     milliseconds old are what a client would have seen a moment
//     earlier. A key missing there is asked of the leader, so a user or
//     authorization created a moment ago on another node is found;
//   - otherwise from the group's leader over the mesh.
type shardReader struct {
	c     *clusterNode
	ctx   context.Context
	snaps map[int]*storage.Snapshot
	// follower[g]: this node's replica of g is read though it does not
	// lead g.
	follower map[int]bool
}

// followerMethods only read, mostly the caller's own group: a node
// holding a replica of that group serves them itself, after a read index
// from the leader (followerRead), instead of forwarding the call.
var followerMethods = map[uint32]bool{
	tg.MessagesGetHistoryRequestTypeID:       true,
	tg.MessagesSearchRequestTypeID:           true,
	tg.MessagesGetMessagesRequestTypeID:      true,
	tg.MessagesGetDialogsRequestTypeID:       true,
	tg.MessagesGetPeerDialogsRequestTypeID:   true,
	tg.MessagesGetPinnedDialogsRequestTypeID: true,
	tg.UpdatesGetStateRequestTypeID:          true,
	tg.UpdatesGetDifferenceRequestTypeID:     true,
	tg.ContactsGetContactsRequestTypeID:      true,
	tg.ContactsGetBlockedRequestTypeID:       true,
	tg.ContactsResolveUsernameRequestTypeID:  true,
	tg.ContactsSearchRequestTypeID:           true,
	tg.UsersGetUsersRequestTypeID:            true,
	tg.UsersGetFullUserRequestTypeID:         true,
	tg.AccountGetAuthorizationsRequestTypeID: true,
	tg.AccountCheckUsernameRequestTypeID:     true,
}

// followerRead serves a read-only call on a replica of its home group
// that does not lead it: the leader confirms its leadership and names the
// last command committed (opReadIdx, replication.Group.ReadIndex); once
// this replica has applied it, every write acknowledged before the call
// is here, and the call runs locally, reading its home group from this
// replica (reads of other groups go where they always go). ok is false
// when the call is not such a read, or the read index could not be had:
// the caller then forwards the call to the leader as usual.
func (r *router) followerRead(ctx context.Context, call *protocol.Call, home replication.ShardID, body []byte) (_ bin.Encoder, _ error, ok bool) {
	id, err := call.Body.PeekID()
	grp := r.c.groups[home]
	if err != nil || !followerMethods[id] || grp.IsLeader() || !r.c.inGroupOf(home) {
		return nil, nil, false
	}
	ictx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	st, resp, err := r.toLeader(ictx, home, binary.BigEndian.AppendUint32([]byte{opReadIdx}, uint32(home)))
	if err != nil || st != stOK || len(resp) != 8 {
		r.c.metrics.followerReads.WithLabelValues("forwarded").Inc()
		return nil, nil, false
	}
	if err := grp.WaitApplied(ictx, binary.BigEndian.Uint64(resp)); err != nil {
		r.c.metrics.followerReads.WithLabelValues("forwarded").Inc()
		return nil, nil, false
	}
	t := &callTrack{follower: true, caughtUp: int(home)}
	lc := *call
	lc.Body = &bin.Buffer{Buf: slices.Clone(body)}
	res, err := r.local.Handle(context.WithValue(ctx, callTrackKey{}, t), &lc)
	t.mu.Lock()
	led := t.led
	t.mu.Unlock()
	if errors.Is(err, messaging.ErrUnavailable) {
		r.c.metrics.followerReads.WithLabelValues("forwarded").Inc()
		return nil, nil, false
	}
	for g := range led { // other groups this node happened to lead
		if verr := r.c.groups[g].Raft().VerifyLeader().Error(); verr != nil {
			r.c.metrics.followerReads.WithLabelValues("forwarded").Inc()
			return nil, nil, false
		}
	}
	r.c.metrics.followerReads.WithLabelValues("local").Inc()
	return res, err, true
}

func (c *clusterNode) newShardReader(ctx context.Context) *shardReader {
	return &shardReader{c: c, ctx: ctx, snaps: map[int]*storage.Snapshot{}, follower: map[int]bool{}}
}

func (r *shardReader) close() {
	for _, s := range r.snaps {
		if s != nil {
			s.Discard()
		}
	}
}

// local returns this node's snapshot of group g if reads may use it.
func (r *shardReader) local(g int) *storage.Txn {
	if s, ok := r.snaps[g]; ok {
		if s == nil {
			return nil
		}
		return &s.Txn
	}
	grp := r.c.groups[g]
	t := trackOf(r.ctx)
	switch {
	case t != nil && t.follower && t.caughtUp == g:
	case grp.IsLeader():
		t.markLed(g)
	case g == r.c.layout.DirGroup() && r.c.inGroupOf(replication.ShardID(g)):
		r.follower[g] = true
	default:
		r.snaps[g] = nil
		return nil
	}
	s := grp.Snapshot()
	r.snaps[g] = s
	return &s.Txn
}

func (r *shardReader) Get(k []byte) ([]byte, error) {
	if dc, ok := messaging.DCOfKey(k, r.c.fed.homes()); ok && dc != r.c.cfg.DC && dc != 0 {
		return r.remoteGet(dc, k)
	}
	return r.localGet(k)
}

// localGet reads a key of this DC from its group.
func (r *shardReader) localGet(k []byte) ([]byte, error) {
	g, err := r.c.layout.GroupOfKey(k)
	if err != nil {
		return nil, err
	}
	if tx := r.local(g); tx != nil {
		v, err := tx.Get(k)
		if !errors.Is(err, storage.ErrNotFound) || !r.follower[g] {
			return v, err
		}
	}
	resp, err := r.c.rt.remoteRead(r.ctx, readRequest{Group: g, Key: k})
	if err != nil {
		return nil, err
	}
	if !resp.Found {
		return nil, storage.ErrNotFound
	}
	return resp.Values[0], nil
}

func (r *shardReader) Iterate(prefix, start []byte, reverse bool, fn func(k, v []byte) (bool, error)) error {
	g, err := r.c.layout.GroupOfKey(prefix)
	if err != nil {
		return err
	}
	if tx := r.local(g); tx != nil {
		return tx.Iterate(prefix, start, reverse, fn)
	}
	req := readRequest{Group: g, Scan: true, Prefix: prefix, Start: start, Reverse: reverse}
	for {
		resp, err := r.c.rt.remoteRead(r.ctx, req)
		if err != nil {
			return err
		}
		for i, k := range resp.Keys {
			more, err := fn(k, resp.Values[i])
			if err != nil || !more {
				return err
			}
		}
		if !resp.More || len(resp.Keys) == 0 {
			return nil
		}
		last := resp.Keys[len(resp.Keys)-1]
		req.Start, req.After = last, last
	}
}

// readRequest is an opRead body: one key, or a page of a prefix scan
// from Start (skipping After, the last key of the previous page).
type readRequest struct {
	Group   int
	Key     []byte `json:",omitempty"`
	Scan    bool   `json:",omitempty"`
	Prefix  []byte `json:",omitempty"`
	Start   []byte `json:",omitempty"`
	After   []byte `json:",omitempty"`
	Reverse bool   `json:",omitempty"`
}

type readResponse struct {
	Found  bool     `json:",omitempty"`
	Keys   [][]byte `json:",omitempty"`
	Values [][]byte
	More   bool `json:",omitempty"`
}

// Bounds of one remote read page.
const (
	readPageKeys  = 256
	readPageBytes = 1 << 20
	maxReadKey    = 4096
)

// parseReadRequest decodes and bounds an opRead body.
func parseReadRequest(body []byte, groups int) (readRequest, error) {
	var q readRequest
	if err := json.Unmarshal(body, &q); err != nil {
		return q, fmt.Errorf("bad read: %w", err)
	}
	switch {
	case q.Group < 0 || q.Group >= groups:
		return q, fmt.Errorf("bad read: group %d", q.Group)
	case len(q.Key) > maxReadKey || len(q.Prefix) > maxReadKey || len(q.Start) > maxReadKey || len(q.After) > maxReadKey:
		return q, errors.New("bad read: key too long")
	case q.Scan == (len(q.Key) > 0):
		return q, errors.New("bad read: want exactly one of key and scan")
	}
	return q, nil
}

// serveRead answers an opRead from this node's replica of the group,
// which it leads (checked by the caller).
func (c *clusterNode) serveRead(q readRequest) (readResponse, error) {
	var resp readResponse
	err := c.groups[q.Group].View(func(tx *storage.Txn) error {
		if !q.Scan {
			v, err := tx.Get(q.Key)
			if errors.Is(err, storage.ErrNotFound) {
				return nil
			}
			resp.Found, resp.Values = err == nil, [][]byte{v}
			return err
		}
		size := 0
		return tx.Iterate(q.Prefix, q.Start, q.Reverse, func(k, v []byte) (bool, error) {
			if q.After != nil && string(k) == string(q.After) {
				return true, nil
			}
			if len(resp.Keys) >= readPageKeys || size >= readPageBytes {
				resp.More = true
				return false, nil
			}
			resp.Keys = append(resp.Keys, append([]byte(nil), k...))
			resp.Values = append(resp.Values, v)
			size += len(k) + len(v)
			return true, nil
		})
	})
	return resp, err
}

// remoteRead runs q at the group's leader, following leader changes for
// up to the hold timeout.
func (r *router) remoteRead(ctx context.Context, q readRequest) (readResponse, error) {
	var resp readResponse
	b, _ := json.Marshal(q)
	ctx, cancel := context.WithTimeout(ctx, r.c.cfg.Cluster.HoldTimeout.Duration)
	defer cancel()
	st, body, err := r.toLeader(ctx, replication.ShardID(q.Group), append([]byte{opRead}, b...))
	if err != nil {
		return resp, err
	}
	if st != stOK {
		return resp, statusErr(st, body)
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return resp, fmt.Errorf("bad read response: %w", err)
	}
	if q.Scan && len(resp.Keys) != len(resp.Values) {
		return resp, errors.New("bad read response: keys and values differ")
	}
	if resp.Found && len(resp.Values) != 1 {
		return resp, errors.New("bad read response: no value")
	}
	return resp, nil
}

// proposeTo runs cmd on group g: here if this node leads g, else at the
// leader (opPropose, which accepts only outbox batches).
func (c *clusterNode) proposeTo(ctx context.Context, g int, cmd messaging.Command) (any, error) {
	if c.groups[g].IsLeader() {
		res, err := c.applyOn(ctx, replication.ShardID(g), cmd, messaging.Env{})
		if !errors.Is(err, messaging.ErrUnavailable) {
			return res, err
		}
	}
	entry, err := messaging.EncodeCommand(cmd, messaging.Env{})
	if err != nil {
		return nil, err
	}
	req := binary.BigEndian.AppendUint32([]byte{opPropose}, uint32(g))
	st, body, err := c.rt.toLeader(ctx, replication.ShardID(g), append(req, entry...))
	if err != nil {
		return nil, err
	}
	if st != stOK {
		return nil, statusErr(st, body)
	}
	return nil, nil
}

// parsePropose decodes an opPropose body: the group and an encoded
// command, which must be an Inbox for that group or, for the directory,
// a copy of another DC's user or a username claim.
func parsePropose(body []byte, l messaging.Layout) (int, messaging.Command, error) {
	if len(body) < 4 {
		return 0, nil, errors.New("bad propose: short")
	}
	g := int(binary.BigEndian.Uint32(body))
	if g >= l.Groups() {
		return 0, nil, fmt.Errorf("bad propose: group %d", g)
	}
	cmd, _, err := messaging.DecodeCommand(body[4:])
	if err != nil {
		return 0, nil, err
	}
	switch cmd.(type) {
	case messaging.RemoteUser, messaging.ClaimUsername, messaging.ImportAuthorization, messaging.GuestAuthorization:
		if g == l.DirGroup() {
			return g, cmd, nil
		}
	}
	in, ok := cmd.(messaging.Inbox)
	if !ok || in.Group != g || l.GroupOf(in) != g || !l.ValidSource(in.Src) {
		return 0, nil, fmt.Errorf("bad propose: %s for group %d", cmd.Kind(), g)
	}
	return g, cmd, nil
}

// dirMethods are the methods whose command belongs to the directory
// (messaging.Layout.GroupOf): logins, sign-up, authorizations, profile.
var dirMethods = map[uint32]bool{
	tg.AuthSendCodeRequestTypeID:              true,
	tg.AuthResendCodeRequestTypeID:            true,
	tg.AuthCancelCodeRequestTypeID:            true,
	tg.AuthSignInRequestTypeID:                true,
	tg.AuthSignUpRequestTypeID:                true,
	tg.AuthLogOutRequestTypeID:                true,
	tg.AuthResetAuthorizationsRequestTypeID:   true,
	tg.AccountResetAuthorizationRequestTypeID: true,
	tg.AccountUpdateProfileRequestTypeID:      true,
	tg.AccountUpdateUsernameRequestTypeID:     true,
	tg.AccountGetAuthorizationsRequestTypeID:  true,
	tg.AccountCheckUsernameRequestTypeID:      true,
}

// homeOf is the group a call should run at: the directory for its
// methods and for callers not signed in, else the caller's own group,
// where what the call reads and writes mostly lives. A guess that proves
// wrong (the command belongs elsewhere) costs one more hop, not
// correctness: errWrongGroup moves the call.
//
// uid is the user the caller's key is signed in as, 0 for none.
func (r *router) homeOf(ctx context.Context, call *protocol.Call) (_ replication.ShardID, uid int64) {
	id, err := call.Body.PeekID()
	if err != nil || call.PermKeyID == 0 {
		return r.c.dirGroup(), 0
	}
	sr := r.c.newShardReader(ctx)
	defer sr.close()
	a, ok, err := messaging.GetAuthorization(sr, call.PermKeyID)
	if err != nil || !ok {
		return r.c.dirGroup(), 0
	}
	if dirMethods[id] {
		return r.c.dirGroup(), a.UserID
	}
	return replication.ShardID(r.c.layout.UserGroup(a.UserID)), a.UserID
}

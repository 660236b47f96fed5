package protocol

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Bounds on what one session remembers. A client controls how many messages
// it sends, so every per-session structure is capped.
const (
	// msgWindow is how many client msg_ids a session remembers for duplicate
	// detection. An id older than all of them is answered with code 20.
	msgWindow = 1024
	// maxCachedResults and maxCachedBytes bound the answers kept for
	// resending until the client acknowledges them.
	maxCachedResults = 256
	maxCachedBytes   = 4 << 20
)

// msgState is what a session knows of one client msg_id.
type msgState uint8

const (
	msgReceived msgState = iota + 1 // being processed
	msgDone                         // answered (or nothing to answer)
)

// session is MTProto session state: shared by every connection that uses the
// same (auth key, session_id), and kept across reconnects.
type session struct {
	id  int64
	key *AuthKey

	mu        sync.Mutex
	announced bool // new_session_created sent
	seq       int32
	ids       []int64 // sorted, the last msgWindow client msg_ids
	state     map[int64]msgState
	results   map[int64][]byte // client msg_id → encoded rpc_result
	sentFor   map[int64]int64  // our msg_id of an rpc_result → client msg_id
	resOrder  []int64
	resBytes  int
	done      *sync.Cond
	conn      *conn // where pushes go; nil while no connection is attached
	layer     int
	client    *ClientInfo // from the session's initConnection
	lastUsed  time.Time

	// subscribed is set by the first call not wrapped in
	// invokeWithoutUpdates; quiet while every call so far was wrapped.
	// Quiet sessions (file transfer connections) get no pushes.
	subscribed, quiet bool
}

func newSession(key *AuthKey, id int64, now time.Time) *session {
	s := &session{
		id:       id,
		key:      key,
		state:    make(map[int64]msgState),
		results:  make(map[int64][]byte),
		sentFor:  make(map[int64]int64),
		lastUsed: now,
	}
	s.done = sync.NewCond(&s.mu)
	return s
}

// nextSeq returns the seqno for the next outgoing message.
func (s *session) nextSeq(content bool) int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if content {
		n := s.seq*2 + 1
		s.seq++
		return n
	}
	return s.seq * 2
}

// admitResult says what to do with an incoming msg_id.
type admitResult int

const (
	admitNew admitResult = iota
	admitDuplicate
	admitTooOld
)

// admit records a client msg_id. Ids are kept sorted in a window so that an
// id older than everything remembered can be told apart from a new one.
func (s *session) admit(id int64, now time.Time) admitResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastUsed = now
	if _, ok := s.state[id]; ok {
		return admitDuplicate
	}
	if len(s.ids) >= msgWindow && id < s.ids[0] {
		return admitTooOld
	}
	i := sort.Search(len(s.ids), func(i int) bool { return s.ids[i] >= id })
	s.ids = append(s.ids, 0)
	copy(s.ids[i+1:], s.ids[i:])
	s.ids[i] = id
	s.state[id] = msgReceived
	if len(s.ids) > msgWindow {
		delete(s.state, s.ids[0])
		s.ids = s.ids[1:]
	}
	return admitNew
}

// finish marks a message processed and, for an RPC, keeps its answer for
// resending until acknowledged.
func (s *session) finish(id int64, result []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.state[id]; ok {
		s.state[id] = msgDone
	}
	if result != nil {
		s.results[id] = result
		s.resOrder = append(s.resOrder, id)
		s.resBytes += len(result)
		for len(s.resOrder) > maxCachedResults || s.resBytes > maxCachedBytes {
			old := s.resOrder[0]
			s.resOrder = s.resOrder[1:]
			if r, ok := s.results[old]; ok {
				s.resBytes -= len(r)
				delete(s.results, old)
			}
		}
		if len(s.sentFor) > 2*maxCachedResults {
			for sid, req := range s.sentFor {
				if _, ok := s.results[req]; !ok {
					delete(s.sentFor, sid)
				}
			}
		}
	}
	s.done.Broadcast()
}

// sent records that our message serverID carried the answer to reqID, so
// that the client's msgs_ack for it can release the cached answer.
func (s *session) sent(serverID, reqID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.results[reqID]; ok {
		s.sentFor[serverID] = reqID
	}
}

// result returns a cached answer for a client msg_id.
func (s *session) result(id int64) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.results[id]
	return r, ok
}

// ack drops cached answers the client has acknowledged. The client acks our
// message ids, not its own, so they are mapped through sentFor.
func (s *session) ack(serverIDs []int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sid := range serverIDs {
		req, ok := s.sentFor[sid]
		if !ok {
			continue
		}
		delete(s.sentFor, sid)
		if r, ok := s.results[req]; ok {
			s.resBytes -= len(r)
			delete(s.results, req)
		}
	}
}

// status reports the msgs_state_info byte for a client msg_id.
func (s *session) status(id int64, now time.Time) byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.state[id]; ok {
		return 4
	}
	if id>>32 > now.Add(msgIDMaxFuture).Unix() {
		return 3
	}
	if len(s.ids) >= msgWindow && id < s.ids[0] {
		return 1
	}
	if id>>32 < now.Add(-msgIDMaxPast).Unix() {
		return 1
	}
	return 2
}

// waitDone blocks until every id is processed (invokeAfterMsgs), the
// deadline passes or ctx ends. It reports whether they all finished.
func (s *session) waitDone(ctx context.Context, ids []int64, deadline time.Time) bool {
	wake := func() {
		s.mu.Lock()
		s.done.Broadcast()
		s.mu.Unlock()
	}
	timer := time.AfterFunc(time.Until(deadline), wake)
	defer timer.Stop()
	stop := context.AfterFunc(ctx, wake)
	defer stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		pending := false
		for _, id := range ids {
			if st, ok := s.state[id]; !ok || st != msgDone {
				pending = true
				break
			}
		}
		if !pending {
			return true
		}
		if !time.Now().Before(deadline) || ctx.Err() != nil {
			return false
		}
		s.done.Wait()
	}
}

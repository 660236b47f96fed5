package protocol

import (
	"sync"
	"time"
)

// msgIDs issues server message ids: unix time in the high 32 bits, strictly
// increasing, ≡ 1 mod 4 for responses and ≡ 3 mod 4 for messages the server
// sends on its own, as the spec requires.
type msgIDs struct {
	now func() time.Time

	mu   sync.Mutex
	last int64
}

func (g *msgIDs) next(response bool) int64 {
	t := g.now()
	id := t.Unix()<<32 | int64(uint32(uint64(t.Nanosecond())*(1<<32)/1e9))
	id &^= 3
	g.mu.Lock()
	if id <= g.last {
		id = (g.last + 4) &^ 3
	}
	if response {
		id |= 1
	} else {
		id |= 3
	}
	g.last = id
	g.mu.Unlock()
	return id
}

// Client message id rules (https://core.telegram.org/mtproto/description#message-identifier-msg-id).
const (
	msgIDMaxPast   = 300 * time.Second
	msgIDMaxFuture = 30 * time.Second
)

// bad_msg_notification error codes.
const (
	badMsgIDTooLow         = 16
	badMsgIDTooHigh        = 17
	badMsgIDParity         = 18
	badMsgContainerID      = 19
	badMsgTooOld           = 20
	badMsgSeqNoTooLow      = 32
	badMsgSeqNoTooHigh     = 33
	badMsgSeqNoEven        = 34
	badMsgSeqNoOdd         = 35
	badMsgServerSalt       = 48
	badMsgInvalidContainer = 64
)

// checkMsgTime returns the bad_msg_notification code for a client msg_id
// whose time or parity is wrong, or 0.
func checkMsgTime(id int64, now time.Time) int {
	if id&3 != 0 {
		return badMsgIDParity
	}
	t := id >> 32
	if t < now.Add(-msgIDMaxPast).Unix() {
		return badMsgIDTooLow
	}
	if t > now.Add(msgIDMaxFuture).Unix() {
		return badMsgIDTooHigh
	}
	return 0
}

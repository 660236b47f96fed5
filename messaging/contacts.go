package messaging

import (
	"github.com/mtnode/mtnode/storage"
)

// Block list keys:
//
//	block/<owner>/<other>        int64 sequence: owner has blocked other
//	blockseq/<owner>/<seq>       other, the block list newest first by seq
//	blockn/<owner>               int64 count, for contacts.blockedSlice
//	blocknext/<owner>            int64 last sequence given out

// IsBlocked reports whether owner has blocked other. Commands that deliver
// something from other to owner (messages, calls) check it and refuse with
// YOU_BLOCKED_USER / USER_IS_BLOCKED as Telegram does.
func IsBlocked(tx *storage.Txn, owner, other int64) (bool, error) {
	_, ok, err := getInt(tx, key("block", owner, other))
	return ok, err
}

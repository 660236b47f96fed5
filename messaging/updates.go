package messaging

import (
	"encoding/binary"
	"slices"

	"github.com/mtnode/mtnode/storage"
)

// UpdateLogKeep is how many pts of a user's update log are kept. A client
// further behind than that is answered differenceTooLong (api) and
// refetches its state, so older entries are never read again and go.
const UpdateLogKeep = 10000

// The log is trimmed as its pts crosses a multiple of updateTrimEvery, at
// most updateTrimBatch entries at a time (bounding one command's
// transaction; a log from before trimming catches up pass by pass).
const (
	updateTrimEvery = 1024
	updateTrimBatch = 4096
)

// State is a user's counters. Pts counts entries of the user's update log;
// NextMsgID is the id the next message in the user's box gets (private
// chats and basic groups share one id sequence per user, as in Telegram).
// Trimmed is the pts up to which the log was trimmed.
type State struct {
	Pts       int   `json:"pts"`
	NextMsgID int   `json:"next_msg_id"`
	Date      int64 `json:"date"`
	Trimmed   int   `json:"trimmed,omitempty"`
}

// UpdateRecord is one entry of a user's update log: the TL-encoded update
// (its pts fields already set) at Pts, spanning PtsCount.
type UpdateRecord struct {
	Pts      int    `json:"pts"`
	PtsCount int    `json:"pts_count"`
	Date     int64  `json:"date"`
	Update   []byte `json:"update"`
}

// GetState loads a user's counters (zero State for a new user).
func GetState(tx storage.Reader, uid int64) (State, error) {
	var s State
	_, err := getJSON(tx, key("state", uid), &s)
	if s.NextMsgID == 0 {
		s.NextMsgID = 1
	}
	return s, err
}

// PutState stores a user's counters.
func PutState(tx *storage.Txn, uid int64, s State) error {
	return putJSON(tx, key("state", uid), s)
}

// AppendUpdate reserves ptsCount pts for uid, lets build encode the update
// with its final pts, stores it in the log and returns the event to push.
// The log is the truth: pushes may be lost, getDifference replays the log.
func AppendUpdate(tx *storage.Txn, uid int64, now int64, ptsCount int, build func(pts int) ([]byte, error)) (Event, error) {
	s, err := GetState(tx, uid)
	if err != nil {
		return Event{}, err
	}
	return appendUpdate(tx, uid, &s, now, ptsCount, build)
}

// appendUpdate is AppendUpdate on counters s the caller already read (and
// may have changed): it stores them once, with the log entry.
func appendUpdate(tx *storage.Txn, uid int64, s *State, now int64, ptsCount int, build func(pts int) ([]byte, error)) (Event, error) {
	s.Pts += ptsCount
	s.Date = now
	upd, err := build(s.Pts)
	if err != nil {
		return Event{}, err
	}
	if err := putJSON(tx, key("upd", uid, s.Pts), UpdateRecord{Pts: s.Pts, PtsCount: ptsCount, Date: now, Update: upd}); err != nil {
		return Event{}, err
	}
	if s.Pts/updateTrimEvery != (s.Pts-ptsCount)/updateTrimEvery && s.Pts-UpdateLogKeep > s.Trimmed {
		if err := trimUpdates(tx, uid, s); err != nil {
			return Event{}, err
		}
	}
	if err := PutState(tx, uid, *s); err != nil {
		return Event{}, err
	}
	return Event{UserID: uid, Pts: s.Pts, PtsCount: ptsCount, Update: upd}, nil
}

// trimUpdates deletes uid's log entries at pts <= s.Pts-UpdateLogKeep,
// from s.Trimmed on (so it never walks what earlier passes deleted), at
// most updateTrimBatch of them, and advances s.Trimmed.
func trimUpdates(tx *storage.Txn, uid int64, s *State) error {
	upTo := s.Pts - UpdateLogKeep
	var dead [][]byte
	done := true
	tx.IterateKeys(key("upd", uid, ""), key("upd", uid, s.Trimmed+1), false, func(k []byte) bool {
		if len(k) < 8 {
			return true
		}
		pts := int(int64(binary.BigEndian.Uint64(k[len(k)-8:])))
		if pts > upTo {
			return false
		}
		if len(dead) == updateTrimBatch {
			done = false
			return false
		}
		dead = append(dead, slices.Clone(k))
		return true
	})
	for _, k := range dead {
		if err := tx.Delete(k); err != nil {
			return err
		}
	}
	if done {
		s.Trimmed = upTo
	} else {
		s.Trimmed = int(int64(binary.BigEndian.Uint64(dead[len(dead)-1][len(dead[len(dead)-1])-8:])))
	}
	return nil
}

// UpdatesSince lists log entries with pts > from, oldest first, at most
// limit of them.
func UpdatesSince(tx storage.Reader, uid int64, from, limit int) ([]UpdateRecord, error) {
	var out []UpdateRecord
	err := tx.Iterate(key("upd", uid, ""), key("upd", uid, from+1), false, func(k, v []byte) (bool, error) {
		var r UpdateRecord
		if _, err := getJSONBytes(v, &r); err != nil {
			return false, err
		}
		out = append(out, r)
		return len(out) < limit, nil
	})
	return out, err
}

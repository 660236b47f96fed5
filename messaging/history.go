package messaging

import (
	"strings"

	"github.com/mtnode/mtnode/storage"
)

// HistoryMax is the largest page of messages.
const HistoryMax = 100

// scanMax bounds how many index entries one history or search call may
// walk: add_offset and a search that matches little cannot make a call
// read a whole large chat.
const scanMax = 10000

// HistoryQuery selects a page of a dialog as https://core.telegram.org/api/offsets
// specifies. The dialog is a list newest first; the page starts at
// offsetFromID(OffsetID) + AddOffset, where offsetFromID counts the
// messages with id >= OffsetID (with OffsetDate instead, the messages sent
// at or after it; with neither, zero). It holds Limit messages, and then
// MaxID, MinID (and, for searches, MaxDate and MinDate) filter it.
type HistoryQuery struct {
	OffsetID   int
	OffsetDate int64
	AddOffset  int
	Limit      int
	MaxID      int
	MinID      int
	MinDate    int64
	MaxDate    int64
}

// Page is one page of messages, newest first.
type Page struct {
	Msgs []*Message
	// Count is how many messages the whole list holds: the dialog's size
	// for history, the matches for a search.
	Count int
	// Inexact is set when Count is a lower bound: a search stopped at its
	// scan bound.
	Inexact bool
}

// History returns a page of uid's dialog with p.
func History(tx storage.Reader, uid int64, p Peer, q HistoryQuery) (Page, error) {
	d, ok, err := GetDialog(tx, uid, p)
	if err != nil || !ok {
		return Page{}, err
	}
	pg, err := page(tx, uid, p, d, q, nil)
	pg.Count = d.Count
	return pg, err
}

// Search returns a page of the messages of uid's dialog with p whose text
// contains text (case-insensitively), and from the user from if from is
// not 0. An empty text matches every message.
func Search(tx storage.Reader, uid int64, p Peer, text string, from int64, q HistoryQuery) (Page, error) {
	d, ok, err := GetDialog(tx, uid, p)
	if err != nil || !ok {
		return Page{}, err
	}
	needle := strings.ToLower(text)
	match := func(m *Message) bool {
		if from != 0 && m.From != from {
			return false
		}
		return strings.Contains(strings.ToLower(m.Text), needle)
	}
	return page(tx, uid, p, d, q, match)
}

// page builds the window. With match nil every message counts and only the
// window's messages are loaded; with match set, messages are loaded to be
// tested and the scan goes on past the window (within scanMax) to count
// the matches.
func page(tx storage.Reader, uid int64, p Peer, d *Dialog, q HistoryQuery, match func(*Message) bool) (Page, error) {
	limit := clampLimit(q.Limit, HistoryMax)
	// start: the first id that is not newer than the page's anchor.
	start := d.TopMessage + 1
	switch {
	case q.OffsetID > 0:
		start = min(q.OffsetID, start)
	case q.OffsetDate > 0:
		id, err := lastBefore(tx, uid, p, d.TopMessage, q.OffsetDate)
		if err != nil {
			return Page{}, err
		}
		start = id + 1
	}
	prefix := histPrefix(uid, p)
	scanned := 0
	inexact := false
	load := func(e histEntry) (*Message, bool, error) {
		m, ok, err := GetMessage(tx, uid, e.ID)
		if err != nil || !ok {
			return nil, false, err
		}
		if match != nil && !match(m) {
			return nil, false, nil
		}
		return m, true, nil
	}
	// newer: ids >= start, ascending, for a negative add_offset. Without a
	// predicate only the entries are kept; the window's messages are
	// loaded below.
	type item struct {
		e histEntry
		m *Message
	}
	var newer []item
	if q.AddOffset < 0 {
		want := min(-q.AddOffset, scanMax)
		err := tx.Iterate(prefix, key("hist", uid, p.key(), start), false, func(k, v []byte) (bool, error) {
			e, err := decodeHist(k, v)
			if err != nil {
				return false, err
			}
			if scanned++; scanned > scanMax {
				inexact = true
				return false, nil
			}
			var m *Message
			if match != nil {
				var ok bool
				if m, ok, err = load(e); err != nil || !ok {
					return err == nil, err
				}
			}
			newer = append(newer, item{e, m})
			return len(newer) < want, nil
		})
		if err != nil {
			return Page{}, err
		}
	}
	// The window is positions [a, a+limit) of the newest-first list, with
	// a = offsetFromID + add_offset. newer[j] sits at offsetFromID-1-j, so
	// the window holds newer[j] for j >= n-limit (n = -add_offset); the
	// older side then gives the rest, after skipping a positive add_offset.
	out := make([]*Message, 0, limit)
	lowest := max(0, -q.AddOffset-limit)
	for j := len(newer) - 1; j >= lowest; j-- {
		m := newer[j].m
		if m == nil {
			var ok bool
			var err error
			if m, ok, err = load(newer[j].e); err != nil {
				return Page{}, err
			} else if !ok {
				continue
			}
		}
		out = append(out, m)
	}
	take := limit
	if q.AddOffset < 0 {
		take = max(0, limit+q.AddOffset)
	}
	take += len(out)
	skip := max(q.AddOffset, 0)
	matches := 0
	if start > 1 && !inexact && (take > len(out) || match != nil) {
		err := tx.Iterate(prefix, key("hist", uid, p.key(), start-1), true, func(k, v []byte) (bool, error) {
			full := len(out) >= take
			if full && match == nil {
				return false, nil
			}
			if scanned++; scanned > scanMax {
				inexact = true
				return false, nil
			}
			e, err := decodeHist(k, v)
			if err != nil {
				return false, err
			}
			if match == nil {
				if skip > 0 {
					skip--
					return true, nil
				}
				m, ok, err := load(e)
				if err != nil || !ok {
					return err == nil, err
				}
				out = append(out, m)
				return true, nil
			}
			m, ok, err := load(e)
			if err != nil || !ok {
				return err == nil, err
			}
			matches++
			switch {
			case skip > 0:
				skip--
			case !full:
				out = append(out, m)
			}
			return true, nil
		})
		if err != nil {
			return Page{}, err
		}
	}
	filtered := out[:0]
	for _, m := range out {
		switch {
		case q.MaxID > 0 && m.ID >= q.MaxID,
			q.MinID > 0 && m.ID <= q.MinID,
			q.MaxDate > 0 && m.Date >= q.MaxDate,
			q.MinDate > 0 && m.Date <= q.MinDate:
			continue
		}
		filtered = append(filtered, m)
	}
	if match != nil && start <= d.TopMessage && !inexact {
		// The matches newer than the anchor count too.
		err := tx.Iterate(prefix, key("hist", uid, p.key(), start), false, func(k, v []byte) (bool, error) {
			if scanned++; scanned > scanMax {
				inexact = true
				return false, nil
			}
			e, err := decodeHist(k, v)
			if err != nil {
				return false, err
			}
			_, ok, err := load(e)
			if ok {
				matches++
			}
			return err == nil, err
		})
		if err != nil {
			return Page{}, err
		}
	}
	return Page{Msgs: filtered, Count: matches, Inexact: inexact}, nil
}

// lastBefore finds the newest message of the dialog sent before date (0
// if none). Dates never decrease with ids in a box (boxDate), so a binary
// search over ids finds it with O(log n) seeks.
func lastBefore(tx storage.Reader, uid int64, p Peer, top int, date int64) (int, error) {
	prefix := histPrefix(uid, p)
	lo, hi, ans := 1, top, 0
	for lo <= hi {
		mid := lo + (hi-lo)/2
		var e histEntry
		found := false
		err := tx.Iterate(prefix, key("hist", uid, p.key(), mid), true, func(k, v []byte) (bool, error) {
			var err error
			e, err = decodeHist(k, v)
			found = err == nil
			return false, err
		})
		if err != nil {
			return 0, err
		}
		switch {
		case !found:
			lo = mid + 1
		case e.Date < date:
			ans, lo = e.ID, mid+1
		default:
			hi = e.ID - 1
		}
	}
	return ans, nil
}

// GetMessages loads uid's copies of ids; a missing id (never sent, deleted,
// or someone else's) is nil.
func GetMessages(tx storage.Reader, uid int64, ids []int) ([]*Message, error) {
	out := make([]*Message, len(ids))
	for i, id := range ids {
		m, ok, err := GetMessage(tx, uid, id)
		if err != nil {
			return nil, err
		}
		if ok {
			out[i] = m
		}
	}
	return out, nil
}

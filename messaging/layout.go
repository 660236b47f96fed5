package messaging

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Layout says which raft group holds each key and runs each command (see
// DESIGN.md, "Sharding the state"):
//
//   - group 0, the metadata group: the DC's cluster-wide facts (its shared
//     secrets, among them the server RSA key, and its shard count). It is
//     written once when the DC forms and read at every start, so it stays
//     small and idle, and a busy directory never delays a node's start;
//   - group 1, the directory: logins, users' public records, phone and
//     username indexes, the user id sequence and authorizations: whatever
//     must be unique DC-wide or is looked up by every call;
//   - groups 2..Shards+1, by owner id: each user's boxes, update log,
//     dialogs, contacts and blocks, and the auth keys by key id.
//
// The zero Layout puts everything in group 0: a standalone node, where a
// command's cross-user steps run inline.
type Layout struct {
	// Shards is the number of user shards; 0 means one group.
	Shards int
	// ShardOf maps an id to [0, n). It must be the same function on every
	// node of a DC for as long as the DC lives.
	ShardOf func(id int64, n int) int
	// DC is this DC's id when it may federate with others: a step for a
	// user homed elsewhere (HomeDC of the id) then goes to that DC's
	// outbox destination (RemoteDest). 0 keeps every user local.
	DC int
}

// RemoteDest is the outbox destination for the users of DC dc: negative,
// apart from this DC's groups.
func RemoteDest(dc int) int { return -dc }

// RemoteDC returns the DC of a remote destination, 0 for a local group.
func RemoteDC(dest int) int {
	if dest < 0 {
		return -dest
	}
	return 0
}

// RemoteSource is how a group names, in its inbox marks, group g of DC
// dc sending to it from another DC: negative, apart from local groups.
func RemoteSource(dc, g int) int { return -(dc<<16 | g) }

// ValidSource reports whether src names a local group of l or a group of
// another DC.
func (l Layout) ValidSource(src int) bool {
	if src >= 0 {
		return src < l.Groups()
	}
	dc, g := -src>>16, -src&0xffff
	return dc >= 1 && dc <= maxDCID && dc != l.DC && g < 0xffff
}

// maxDCID is the largest DC id (config's range).
const maxDCID = 1000

// stepUser is the user whose box an outbox step changes.
func stepUser(cmd Command) (int64, bool) {
	switch c := cmd.(type) {
	case DeliverMessage:
		return c.To, true
	case EditCopy:
		return c.Owner, true
	case DeleteCopies:
		return c.Owner, true
	case ReadOutbox:
		return c.Author, true
	case BlockedBy:
		return c.User, true
	}
	return 0, false
}

// DestOf is where a step goes: its group here, or RemoteDest of the DC
// its user is homed in.
func (l Layout) DestOf(step Command) int {
	if r, ok := step.(RevokeGuest); ok && l.DC != 0 && r.KeyDC != l.DC {
		return RemoteDest(r.KeyDC)
	}
	if l.DC != 0 {
		if u, ok := stepUser(step); ok {
			if dc := HomeDC(u); dc != 0 && dc != l.DC {
				return RemoteDest(dc)
			}
		}
	}
	return l.GroupOf(step)
}

// Homes says where federation-wide directory keys live.
type Homes struct {
	// Phone is a number's home DC.
	Phone func(phone string) int
	// UsernameDC keeps the federation's usernames.
	UsernameDC int
}

// DCOfKey says which DC holds a directory key that may belong to another
// DC: a user's public record (user/<id>) lives in the id's home DC, a
// phone's index entry (phone/<digits>) in the number's home DC, a
// username's (uname/<name>) in the username DC. ok is false for every
// other key, which is this DC's.
func DCOfKey(k []byte, h Homes) (dc int, ok bool) {
	kind, rest, _ := bytes.Cut(k, []byte{'/'})
	switch string(kind) {
	case "uname":
		if h.UsernameDC != 0 {
			return h.UsernameDC, true
		}
	case "user":
		if len(rest) == 8 {
			return HomeDC(int64(binary.BigEndian.Uint64(rest))), true
		}
	case "phone":
		if h.Phone != nil && len(rest) > 0 {
			return h.Phone(string(rest)), true
		}
	}
	return 0, false
}

// MetaGroup is the group of the DC's cluster-wide facts.
const MetaGroup = 0

// DirGroup is the group of the directory.
func (l Layout) DirGroup() int {
	if l.Shards <= 0 {
		return MetaGroup
	}
	return 1
}

// UserGroup is the group holding uid's boxes.
func (l Layout) UserGroup(uid int64) int {
	if l.Shards <= 0 {
		return MetaGroup
	}
	return 2 + l.ShardOf(uid, l.Shards)
}

// KeyGroup is the group holding auth key id.
func (l Layout) KeyGroup(id int64) int { return l.UserGroup(id) }

// Groups is the number of groups: the metadata group, the directory and
// the shards, or 1 for the zero Layout.
func (l Layout) Groups() int {
	if l.Shards <= 0 {
		return 1
	}
	return 2 + l.Shards
}

// What each key prefix belongs to.
var (
	dirPrefixes = map[string]bool{
		"login": true, "logingc": true, "user": true, "phone": true, "uname": true,
		"seq": true, "auth": true, "uauth": true,
	}
	userPrefixes = map[string]bool{
		"state": true, "upd": true, "msg": true, "hist": true, "rid": true, "dlv": true,
		"dlg": true, "dord": true, "dcount": true, "dpin": true,
		"contact": true, "contactn": true, "block": true, "blockseq": true,
		"blockn": true, "blocknext": true, "blockedby": true, "dev": true,
	}
)

// GroupOfKey returns the group holding key k (or, for a scan, every key
// under prefix k): its first part names the kind of record, and for
// per-user records the next 8 bytes are the owner. Keys a query cannot
// read remotely (a group's outbox, which only its own pump reads) are
// refused.
func (l Layout) GroupOfKey(k []byte) (int, error) {
	kind, rest, _ := bytes.Cut(k, []byte{'/'})
	switch {
	case string(kind) == "secret":
		return MetaGroup, nil
	case dirPrefixes[string(kind)]:
		return l.DirGroup(), nil
	case userPrefixes[string(kind)] || string(kind) == "authkey":
		if len(rest) < 8 {
			return 0, fmt.Errorf("messaging: key %q names no owner", kind)
		}
		return l.UserGroup(int64(binary.BigEndian.Uint64(rest))), nil
	}
	return 0, fmt.Errorf("messaging: key of kind %q has no group", kind)
}

// GroupOf returns the group that runs cmd. Every command reads and writes
// only that group's keys; what it causes elsewhere goes through the
// outbox (outbox.go).
func (l Layout) GroupOf(cmd Command) int {
	switch c := cmd.(type) {
	case StoreAuthKey:
		return l.KeyGroup(c.ID)
	case ImportContacts:
		return l.UserGroup(c.Owner)
	case DeleteContacts:
		return l.UserGroup(c.Owner)
	case Block:
		return l.UserGroup(c.Owner)
	case Unblock:
		return l.UserGroup(c.Owner)
	case BlockedBy:
		return l.UserGroup(c.User)
	case DeviceIndex:
		return l.UserGroup(c.User)
	case SaveDraft:
		return l.UserGroup(c.User)
	case ToggleDialogPin:
		return l.UserGroup(c.User)
	case SendMessage:
		return l.UserGroup(c.From)
	case ForwardMessages:
		return l.UserGroup(c.From)
	case DeliverMessage:
		return l.UserGroup(c.To)
	case EditMessage:
		return l.UserGroup(c.User)
	case EditCopy:
		return l.UserGroup(c.Owner)
	case DeleteMessages:
		return l.UserGroup(c.User)
	case DeleteCopies:
		return l.UserGroup(c.Owner)
	case ReadHistory:
		return l.UserGroup(c.User)
	case ReadOutbox:
		return l.UserGroup(c.Author)
	case Inbox:
		return c.Group
	case OutboxAck:
		return c.Group
	case InitSecrets:
		return MetaGroup
	}
	// The directory's commands: logins, sign-up, authorizations,
	// profiles, usernames.
	return l.DirGroup()
}

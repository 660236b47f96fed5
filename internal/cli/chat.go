package cli

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/gotd/td/telegram"
	"github.com/gotd/td/tg"
)

// resolved is a peer found by a PEER argument.
type resolved struct {
	input tg.InputPeerClass
	user  *tg.User
}

// resolvePeer finds the user PEER names: "@name" by
// contacts.resolveUsername; a phone number among the contacts, then among
// the chats (whose users show their phone to a user who is their contact),
// and failing both by importing it as a contact named newName
// (contacts.importContacts), which is how Telegram hands out a user's access
// hash for a phone.
// withPeer runs f in a signed-in session with PEER resolved: the common
// start of send and history.
func (o options) withPeer(ctx context.Context, peer, newName string, f func(ctx context.Context, c *telegram.Client, self *tg.User, to resolved) error) error {
	if err := o.sessionExists(); err != nil {
		return err
	}
	c, err := o.newClient(nil, nil)
	if err != nil {
		return err
	}
	return o.runSession(ctx, c, o.Timeout, func(ctx context.Context) error {
		self, err := requireSignedIn(ctx, c)
		if err != nil {
			return err
		}
		to, err := resolvePeer(ctx, c.API(), self, peer, newName)
		if err != nil {
			return err
		}
		return f(ctx, c, self, to)
	})
}

func resolvePeer(ctx context.Context, api *tg.Client, self *tg.User, peer, newName string) (resolved, error) {
	peer = strings.TrimSpace(peer)
	if isPhone(peer) {
		phone := cleanPhone(peer)
		if phone == self.Phone {
			return resolved{input: &tg.InputPeerSelf{}, user: self}, nil
		}
		return resolvePhone(ctx, api, phone, newName)
	}
	name := strings.TrimPrefix(peer, "@")
	if name == "" {
		return resolved{}, fmt.Errorf("peer %q: want a phone number or @username", peer)
	}
	if strings.EqualFold(name, self.Username) {
		return resolved{input: &tg.InputPeerSelf{}, user: self}, nil
	}
	res, err := api.ContactsResolveUsername(ctx, &tg.ContactsResolveUsernameRequest{Username: name})
	if err != nil {
		return resolved{}, fmt.Errorf("resolve @%s: %w", name, err)
	}
	p, ok := res.Peer.(*tg.PeerUser)
	if !ok {
		return resolved{}, fmt.Errorf("@%s is not a user", name)
	}
	for _, u := range res.Users {
		if u, ok := u.(*tg.User); ok && u.ID == p.UserID {
			return resolved{input: u.AsInputPeer(), user: u}, nil
		}
	}
	return resolved{}, fmt.Errorf("resolve @%s: user %d missing from the answer", name, p.UserID)
}

// isPhone says whether a PEER argument is a phone number: digits, with an
// optional "+" and separators.
func isPhone(s string) bool {
	s = strings.TrimPrefix(s, "+")
	digits := 0
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			digits++
		case r == ' ' || r == '-' || r == '(' || r == ')':
		default:
			return false
		}
	}
	return digits > 0
}

func resolvePhone(ctx context.Context, api *tg.Client, phone, newName string) (resolved, error) {
	contacts, err := api.ContactsGetContacts(ctx, 0)
	if err != nil {
		return resolved{}, fmt.Errorf("contacts.getContacts: %w", err)
	}
	if cs, ok := contacts.(*tg.ContactsContacts); ok {
		if u, ok := withPhone(cs.Users, phone); ok {
			return resolved{input: u.AsInputPeer(), user: u}, nil
		}
	}
	dialogs, err := api.MessagesGetDialogs(ctx, &tg.MessagesGetDialogsRequest{
		OffsetPeer: &tg.InputPeerEmpty{},
		Limit:      100,
	})
	if err != nil {
		return resolved{}, fmt.Errorf("messages.getDialogs: %w", err)
	}
	if d, ok := dialogs.AsModified(); ok {
		if u, ok := withPhone(d.GetUsers(), phone); ok {
			return resolved{input: u.AsInputPeer(), user: u}, nil
		}
	}
	clientID, err := randomID()
	if err != nil {
		return resolved{}, err
	}
	// A contact needs a name, and Telegram shows a contact by the name
	// it was saved under.
	first, last, _ := strings.Cut(strings.TrimSpace(newName), " ")
	if first == "" {
		first = "+" + phone
	}
	imp, err := api.ContactsImportContacts(ctx, []tg.InputPhoneContact{{
		ClientID:  clientID,
		Phone:     phone,
		FirstName: first,
		LastName:  strings.TrimSpace(last),
	}})
	if err != nil {
		return resolved{}, fmt.Errorf("contacts.importContacts: %w", err)
	}
	for _, ic := range imp.Imported {
		if ic.ClientID != clientID {
			continue
		}
		for _, u := range imp.Users {
			if u, ok := u.(*tg.User); ok && u.ID == ic.UserID {
				return resolved{input: u.AsInputPeer(), user: u}, nil
			}
		}
	}
	return resolved{}, fmt.Errorf("no account has the phone number +%s", phone)
}

// withPhone finds the user with phone among users.
func withPhone(users []tg.UserClass, phone string) (*tg.User, bool) {
	for _, u := range users {
		if u, ok := u.(*tg.User); ok && u.Phone == phone {
			return u, true
		}
	}
	return nil, false
}

// randomID returns a random non-zero int64, as random_id and client_id want.
func randomID() (int64, error) {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("random id: %w", err)
		}
		if id := int64(binary.LittleEndian.Uint64(b[:])); id != 0 {
			return id, nil
		}
	}
}

// nameFlag registers --name, the name a phone number is saved under when
// it has to be added to the contacts.
func nameFlag(name *string) func(fs *flag.FlagSet) {
	return func(fs *flag.FlagSet) {
		fs.StringVar(name, "name", "", "name to save a new contact under (default: the phone number)")
	}
}

func runSend(ctx context.Context, opts options, args []string, stdio IO) error {
	var name string
	pos, err := parseArgs(stdio, "send", &opts, args, nameFlag(&name))
	if err != nil {
		return err
	}
	if len(pos) < 2 {
		return usageError(stdio, "send: want PEER and TEXT")
	}
	text := strings.Join(pos[1:], " ")
	if strings.TrimSpace(text) == "" {
		return usageError(stdio, "send: empty TEXT")
	}
	return opts.withPeer(ctx, pos[0], name, func(ctx context.Context, c *telegram.Client, self *tg.User, to resolved) error {
		rid, err := randomID()
		if err != nil {
			return err
		}
		upd, err := c.API().MessagesSendMessage(ctx, &tg.MessagesSendMessageRequest{
			Peer:     to.input,
			Message:  text,
			RandomID: rid,
		})
		if err != nil {
			return fmt.Errorf("messages.sendMessage: %w", err)
		}
		if id, ok := sentMessageID(upd, rid); ok {
			fmt.Fprintf(stdio.Stdout, "sent message %d to %s\n", id, displayName(to.user))
		} else {
			fmt.Fprintf(stdio.Stdout, "sent to %s\n", displayName(to.user))
		}
		return nil
	})
}

// sentMessageID finds the new message's id in a sendMessage answer.
func sentMessageID(u tg.UpdatesClass, randomID int64) (int, bool) {
	switch u := u.(type) {
	case *tg.UpdateShortSentMessage:
		return u.ID, true
	case *tg.Updates:
		return idIn(u.Updates, randomID)
	case *tg.UpdatesCombined:
		return idIn(u.Updates, randomID)
	case *tg.UpdateShort:
		return idIn([]tg.UpdateClass{u.Update}, randomID)
	}
	return 0, false
}

func idIn(updates []tg.UpdateClass, randomID int64) (int, bool) {
	for _, u := range updates {
		if m, ok := u.(*tg.UpdateMessageID); ok && m.RandomID == randomID {
			return m.ID, true
		}
	}
	for _, u := range updates {
		if m, ok := u.(*tg.UpdateNewMessage); ok {
			return m.Message.GetID(), true
		}
	}
	return 0, false
}

func runHistory(ctx context.Context, opts options, args []string, stdio IO) error {
	limit := 20
	var name string
	pos, err := parseArgs(stdio, "history", &opts, args, func(fs *flag.FlagSet) {
		fs.IntVar(&limit, "limit", limit, "how many of the newest messages to print")
		nameFlag(&name)(fs)
	})
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError(stdio, "history: want one PEER")
	}
	if limit < 1 {
		return usageError(stdio, "history: --limit must be positive")
	}
	return opts.withPeer(ctx, pos[0], name, func(ctx context.Context, c *telegram.Client, self *tg.User, peer resolved) error {
		names := newNames(self)
		names.add(peer.user)
		var msgs []*tg.Message
		offsetID := 0
		// getHistory answers newest first, at most 100 a page.
		for len(msgs) < limit {
			page := min(limit-len(msgs), 100)
			res, err := c.API().MessagesGetHistory(ctx, &tg.MessagesGetHistoryRequest{
				Peer: peer.input, OffsetID: offsetID, Limit: page,
			})
			if err != nil {
				return fmt.Errorf("messages.getHistory: %w", err)
			}
			m, ok := res.AsModified()
			if !ok {
				return fmt.Errorf("messages.getHistory: unexpected %T", res)
			}
			names.addAll(m.GetUsers())
			got := m.GetMessages()
			for _, mc := range got {
				if msg, ok := mc.(*tg.Message); ok {
					msgs = append(msgs, msg)
				}
				if id := mc.GetID(); offsetID == 0 || id < offsetID {
					offsetID = id
				}
			}
			if len(got) < page {
				break
			}
		}
		slices.Reverse(msgs)
		for _, m := range msgs {
			printMessage(stdio.Stdout, names, self.ID, m)
		}
		return nil
	})
}

// names maps user ids to display names.
type names map[int64]string

func newNames(self *tg.User) names {
	n := names{}
	n.add(self)
	return n
}

func (n names) add(u *tg.User) {
	if u != nil {
		n[u.ID] = displayName(u)
	}
}

func (n names) addAll(us []tg.UserClass) {
	for _, u := range us {
		if u, ok := u.(*tg.User); ok {
			n.add(u)
		}
	}
}

func (n names) name(id int64) string {
	if s, ok := n[id]; ok {
		return s
	}
	return fmt.Sprintf("user %d", id)
}

// senderID is the user who wrote m, which a private chat's message may
// leave implicit: the viewer if outgoing, else the chat's other side.
func senderID(selfID int64, m *tg.Message) int64 {
	if from, ok := m.GetFromID(); ok {
		if p, ok := from.(*tg.PeerUser); ok {
			return p.UserID
		}
	}
	if m.Out {
		return selfID
	}
	if p, ok := m.PeerID.(*tg.PeerUser); ok {
		return p.UserID
	}
	return 0
}

// dateLayout is how dates are printed: local time, to the second.
const dateLayout = "2006-01-02 15:04:05"

// printMessage writes "date  sender: text", one line; newlines in the text
// are shown as "\n" so one message stays one line.
func printMessage(w io.Writer, n names, selfID int64, m *tg.Message) {
	date := time.Unix(int64(m.Date), 0).Format(dateLayout)
	text := strings.ReplaceAll(m.Message, "\n", `\n`)
	if text == "" && m.Media != nil {
		text = "[media]"
	}
	fmt.Fprintf(w, "%s  %s: %s\n", date, n.name(senderID(selfID, m)), text)
}

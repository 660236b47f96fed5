package e2e

import (
	"context"
	"crypto/rand"
	binenc "encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gotd/td/telegram"
	"github.com/gotd/td/telegram/auth"
	"github.com/gotd/td/telegram/dcs"
	"github.com/gotd/td/telegram/updates"
	"github.com/gotd/td/tg"

	"github.com/mtnode/mtnode/internal/mtclient"
)

// signUp signs phone (a test number) in, signing it up if new, with gotd's
// test authenticator, keeping the key in sessionFile. It returns the user.
func signUp(t *testing.T, n *node, sessionFile, phone string) *tg.User {
	t.Helper()
	c := newClient(t, n, mtclient.Intermediate, sessionFile)
	var self *tg.User
	err := runClient(c, func(ctx context.Context) error {
		flow := auth.NewFlow(auth.TestUser(phone, 1), auth.SendCodeOptions{})
		if err := c.Auth().IfNecessary(ctx, flow); err != nil {
			return fmt.Errorf("sign in %s: %w", phone, err)
		}
		var err error
		self, err = c.Self(ctx)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return self
}

// crashText is the text of message i, which is how B recognises it.
func crashText(i int) string { return fmt.Sprintf("crash %03d", i) }

// TestCrashMidStream kills the node with SIGKILL while A sends to B, then
// restarts it on the same directory and port. Every send the node
// acknowledged must be on disk: B finds each message exactly once, in its
// history and in getDifference from the pts it saved before, and A's
// retries of unacknowledged sends (same random_id) create no duplicate.
// B's second device stays online through the crash with gotd's updates
// manager and catches up on its own. Auth keys, pts and dialogs survive:
// nobody makes a new key.
func TestCrashMidStream(t *testing.T) {
	t.Parallel()
	const (
		total     = 300 // messages A sends in all
		killAfter = 100 // acknowledgements before the kill
		workers   = 8   // concurrent sends, so some are in flight at the kill
	)
	dir, sessions := t.TempDir(), t.TempDir()
	sessA, sessB := filepath.Join(sessions, "a.json"), filepath.Join(sessions, "b.json")
	// The restart below reuses the port: take it outside the ephemeral
	// range, where no parallel test's outgoing connection can grab it.
	n := startNode(t, dir, "--client-addr", freeAddr(t, "tcp"))

	signUp(t, n, sessA, "9996610101")
	b := signUp(t, n, sessB, "9996610102")
	sessB2 := filepath.Join(sessions, "b2.json")
	signUp(t, n, sessB2, b.Phone)
	keyA, keyB := storedKeyID(t, sessA), storedKeyID(t, sessB)

	// A finds B by phone; B notes where its update log stands.
	var toB tg.InputPeerClass
	a := newClient(t, n, mtclient.Intermediate, sessA)
	if err := runClient(a, func(ctx context.Context) error {
		var err error
		toB, err = importPhone(ctx, a.API(), b.Phone)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var before *tg.UpdatesState
	bc := newClient(t, n, mtclient.Intermediate, sessB)
	if err := runClient(bc, func(ctx context.Context) (err error) {
		before, err = bc.API().UpdatesGetState(ctx)
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// B's second device listens through everything.
	online := startOnline(t, n, sessB2, b.ID)

	// Message i always goes with random_id base+i, in both phases.
	var rb [8]byte
	if _, err := rand.Read(rb[:]); err != nil {
		t.Fatal(err)
	}
	base := int64(binenc.LittleEndian.Uint64(rb[:])>>2) + 1
	send := func(ctx context.Context, api *tg.Client, i int) (int, error) {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		rid := base + int64(i)
		u, err := api.MessagesSendMessage(ctx, &tg.MessagesSendMessageRequest{
			Peer: toB, Message: crashText(i), RandomID: rid,
		})
		if err != nil {
			return 0, err
		}
		if id, ok := sentID(u, rid); ok {
			return id, nil
		}
		return 0, fmt.Errorf("sendMessage answered %T without the message id", u)
	}

	// Phase 1: A sends until the node has acknowledged killAfter messages,
	// then the node is killed with sends in flight.
	var (
		mu       sync.Mutex
		acked    = make([]int, total) // A's message id once acknowledged
		nAcked   int
		early    []error // failures before the kill
		killed   atomic.Bool
		killDone = make(chan struct{})
		next     atomic.Int64
	)
	a = newClient(t, n, mtclient.Intermediate, sessA)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err := a.Run(ctx, func(ctx context.Context) error {
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for !killed.Load() {
					i := int(next.Add(1) - 1)
					if i >= total {
						return
					}
					id, err := send(ctx, a.API(), i)
					mu.Lock()
					switch {
					case err == nil:
						acked[i] = id
						nAcked++
						if nAcked == killAfter && killed.CompareAndSwap(false, true) {
							go func() { n.kill(); close(killDone) }()
						}
					case !killed.Load():
						early = append(early, fmt.Errorf("send %d: %w", i, err))
					}
					mu.Unlock()
					if err != nil {
						return
					}
				}
			})
		}
		wg.Wait()
		return nil
	})
	cancel()
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Logf("A's first client: %v", err)
	}
	if len(early) > 0 {
		t.Fatalf("sends failed before the kill: %v", early)
	}
	if !killed.Load() {
		t.Fatalf("only %d of %d sends acknowledged; the node was never killed", nAcked, total)
	}
	<-killDone
	phase1 := append([]int(nil), acked...)
	attempted := min(int(next.Load()), total)
	t.Logf("%d sends acknowledged before the kill, %d attempted", nAcked, attempted)

	// Phase 2: the node comes back on the same directory and port; A's
	// client resumes its session and retries every unacknowledged send with
	// the same random_id, plus some acknowledged ones: a retry must give
	// back the first message, never a second.
	n2 := startNode(t, dir, "--client-addr", n.ClientAddr)
	a = newClient(t, n2, mtclient.Intermediate, sessA)
	if err := runClient(a, func(ctx context.Context) error {
		for i := range total {
			if acked[i] != 0 {
				continue
			}
			id, err := send(ctx, a.API(), i)
			if err != nil {
				return fmt.Errorf("retry %d: %w", i, err)
			}
			acked[i] = id
			if i < attempted {
				t.Logf("send %d, in flight at the kill, retried: message %d", i, id)
			}
		}
		again := 0
		for i := range total {
			if phase1[i] == 0 || again == 3 {
				continue
			}
			again++
			id, err := send(ctx, a.API(), i)
			if err != nil {
				return fmt.Errorf("resend acknowledged %d: %w", i, err)
			}
			if id != phase1[i] {
				return fmt.Errorf("resend of acknowledged %d (same random_id) gave message %d, first send gave %d", i, id, phase1[i])
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// A's history holds every message under the id its send was answered
	// with, before and after the crash.
	a = newClient(t, n2, mtclient.Intermediate, sessA)
	if err := runClient(a, func(ctx context.Context) error {
		hist, err := history(ctx, a.API(), toB)
		if err != nil {
			return err
		}
		if len(hist) != total {
			return fmt.Errorf("A's history with B has %d messages, want %d", len(hist), total)
		}
		for i, id := range acked {
			if hist[id] != crashText(i) {
				return fmt.Errorf("A's message %d (acknowledged for %q) is %q", id, crashText(i), hist[id])
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// B's view: history, getDifference from the saved state, pts and the
	// dialog with A.
	bc = newClient(t, n2, mtclient.Intermediate, sessB)
	if err := runClient(bc, func(ctx context.Context) error {
		api := bc.API()
		hist, err := history(ctx, api, nil)
		if err != nil {
			return err
		}
		if err := exactlyOnce("B's history", hist, total); err != nil {
			return err
		}
		diff, err := difference(ctx, api, before)
		if err != nil {
			return err
		}
		if err := exactlyOnce("B's getDifference", diff, total); err != nil {
			return err
		}
		st, err := api.UpdatesGetState(ctx)
		if err != nil {
			return err
		}
		if st.Pts != before.Pts+total {
			return fmt.Errorf("B's pts went from %d to %d over %d messages", before.Pts, st.Pts, total)
		}
		return dialogWith(ctx, api, hist)
	}); err != nil {
		t.Fatal(err)
	}

	// The online device saw every message once, live or through the
	// getDifference its gap manager made after the restart.
	waitFor(t, callTimeout, func() error { return online.complete(total) })
	online.stop(t)

	if got := storedKeyID(t, sessA); got != keyA {
		t.Errorf("A's auth key changed: %s, then %s", keyA, got)
	}
	if got := storedKeyID(t, sessB); got != keyB {
		t.Errorf("B's auth key changed: %s, then %s", keyB, got)
	}
	m, err := scrape(n2)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := m.get("mtnode_handshakes_total", map[string]string{"result": "ok"}); v != 0 {
		t.Errorf("restarted node made %v auth keys; the clients' keys were not reused", v)
	}
}

// onlineDevice is a client that stays connected, through the node's crash,
// with gotd's updates gap manager, and counts the messages it is handed.
type onlineDevice struct {
	cancel context.CancelFunc
	done   chan error

	mu   sync.Mutex
	seen map[string]int // text → times handed to the handler
}

func startOnline(t *testing.T, n *node, sessionFile string, selfID int64) *onlineDevice {
	t.Helper()
	return startOnlineAt(t, n, 1, sessionFile, selfID, nil)
}

// startOnlineAt is startOnline for a node of DC dc, reached through r
// (nil: directly, over the intermediate transport).
func startOnlineAt(t *testing.T, n *node, dc int, sessionFile string, selfID int64, r dcs.Resolver) *onlineDevice {
	t.Helper()
	o := &onlineDevice{done: make(chan error, 1), seen: map[string]int{}}
	d := tg.NewUpdateDispatcher()
	d.OnNewMessage(func(_ context.Context, _ tg.Entities, u *tg.UpdateNewMessage) error {
		if m, ok := u.Message.(*tg.Message); ok {
			o.mu.Lock()
			o.seen[m.Message]++
			o.mu.Unlock()
		}
		return nil
	})
	gaps := updates.New(updates.Config{Handler: d})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	o.cancel = cancel
	// gotd does not ask for the difference when it reconnects; an app
	// does, and so does this device: every connection after the first
	// sends the manager updatesTooLong, which makes it call getDifference.
	var readies atomic.Int32
	onState := func(s telegram.ConnectionState) {
		if s == telegram.ConnectionStateReady && readies.Add(1) > 1 {
			go func() { _ = gaps.Handle(ctx, &tg.UpdatesTooLong{}) }()
		}
	}
	c, err := mtclient.New(mtclient.Options{
		Addr:          n.ClientAddr,
		DC:            dc,
		PublicKeyFile: n.PublicKey,
		SessionFile:   sessionFile,
		Telegram:      telegram.Options{UpdateHandler: gaps, OnConnectionState: onState, Resolver: r},
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	started := make(chan struct{})
	go func() {
		o.done <- c.Run(ctx, func(ctx context.Context) error {
			return gaps.Run(ctx, c.API(), selfID, updates.AuthOptions{
				Forget:  true,
				OnStart: func(context.Context) { close(started) },
			})
		})
	}()
	t.Cleanup(o.cancel)
	select {
	case <-started:
	case err := <-o.done:
		t.Fatalf("online device: %v", err)
	case <-time.After(callTimeout):
		t.Fatal("online device did not start")
	}
	return o
}

// complete reports whether the device was handed each of the total
// messages exactly once.
func (o *onlineDevice) complete(total int) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := range total {
		if c := o.seen[crashText(i)]; c != 1 {
			return fmt.Errorf("online device got %q %d times, want once", crashText(i), c)
		}
	}
	if len(o.seen) != total {
		return fmt.Errorf("online device got %d distinct messages, want %d", len(o.seen), total)
	}
	return nil
}

// times is how often the device was handed text.
func (o *onlineDevice) times(text string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.seen[text]
}

// stop ends the device's session; it must not have failed on its own.
func (o *onlineDevice) stop(t *testing.T) {
	t.Helper()
	select {
	case err := <-o.done:
		t.Fatalf("online device stopped early: %v", err)
	default:
	}
	o.cancel()
	if err := <-o.done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("online device: %v", err)
	}
}

// importPhone imports phone as a contact and returns the user as a peer.
func importPhone(ctx context.Context, api *tg.Client, phone string) (tg.InputPeerClass, error) {
	res, err := api.ContactsImportContacts(ctx, []tg.InputPhoneContact{{ClientID: 1, Phone: phone, FirstName: "Peer"}})
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", phone, err)
	}
	if len(res.Imported) != 1 {
		return nil, fmt.Errorf("import %s: %d imported", phone, len(res.Imported))
	}
	for _, u := range res.Users {
		if u, ok := u.(*tg.User); ok && u.ID == res.Imported[0].UserID {
			return u.AsInputPeer(), nil
		}
	}
	return nil, fmt.Errorf("import %s: user missing from the answer", phone)
}

// sentID finds the id of the message a sendMessage answer created.
func sentID(u tg.UpdatesClass, randomID int64) (int, bool) {
	var ups []tg.UpdateClass
	switch u := u.(type) {
	case *tg.UpdateShortSentMessage:
		return u.ID, true
	case *tg.Updates:
		ups = u.Updates
	case *tg.UpdateShort:
		ups = []tg.UpdateClass{u.Update}
	}
	for _, up := range ups {
		if m, ok := up.(*tg.UpdateMessageID); ok && m.RandomID == randomID {
			return m.ID, true
		}
	}
	return 0, false
}

// history pages through the viewer's chat with peer (nil: the only chat,
// found in the dialog list) and maps message ids to texts.
func history(ctx context.Context, api *tg.Client, peer tg.InputPeerClass) (map[int]string, error) {
	if peer == nil {
		d, err := api.MessagesGetDialogs(ctx, &tg.MessagesGetDialogsRequest{OffsetPeer: &tg.InputPeerEmpty{}, Limit: 10})
		if err != nil {
			return nil, fmt.Errorf("messages.getDialogs: %w", err)
		}
		md, _ := d.AsModified()
		if md == nil || len(md.GetDialogs()) != 1 || len(md.GetUsers()) == 0 {
			return nil, fmt.Errorf("dialogs: %v, want one chat", d)
		}
		dlg, ok := md.GetDialogs()[0].(*tg.Dialog)
		if !ok {
			return nil, fmt.Errorf("dialog %T, want a chat", md.GetDialogs()[0])
		}
		p, ok := dlg.Peer.(*tg.PeerUser)
		if !ok {
			return nil, fmt.Errorf("dialog with %v, want a user", dlg.Peer)
		}
		for _, u := range md.GetUsers() {
			if u, ok := u.(*tg.User); ok && u.ID == p.UserID {
				peer = u.AsInputPeer()
			}
		}
		if peer == nil {
			return nil, fmt.Errorf("dialog's user %d missing from the answer", p.UserID)
		}
	}
	out := map[int]string{}
	offset := 0
	for {
		res, err := api.MessagesGetHistory(ctx, &tg.MessagesGetHistoryRequest{Peer: peer, OffsetID: offset, Limit: 100})
		if err != nil {
			return nil, fmt.Errorf("messages.getHistory: %w", err)
		}
		m, ok := res.AsModified()
		if !ok {
			return nil, fmt.Errorf("messages.getHistory: %T", res)
		}
		msgs := m.GetMessages()
		for _, mc := range msgs {
			msg, ok := mc.(*tg.Message)
			if !ok {
				continue
			}
			if _, dup := out[msg.ID]; dup {
				return nil, fmt.Errorf("messages.getHistory: message %d twice", msg.ID)
			}
			out[msg.ID] = msg.Message
			if offset == 0 || msg.ID < offset {
				offset = msg.ID
			}
		}
		if len(msgs) < 100 {
			return out, nil
		}
	}
}

// difference collects the new messages updates.getDifference brings from
// state, following slices, mapped id to text.
func difference(ctx context.Context, api *tg.Client, state *tg.UpdatesState) (map[int]string, error) {
	out := map[int]string{}
	add := func(msgs []tg.MessageClass) error {
		for _, mc := range msgs {
			if m, ok := mc.(*tg.Message); ok {
				if _, dup := out[m.ID]; dup {
					return fmt.Errorf("getDifference: message %d twice", m.ID)
				}
				out[m.ID] = m.Message
			}
		}
		return nil
	}
	pts, date, qts := state.Pts, state.Date, state.Qts
	for range 100 {
		d, err := api.UpdatesGetDifference(ctx, &tg.UpdatesGetDifferenceRequest{Pts: pts, Date: date, Qts: qts})
		if err != nil {
			return nil, fmt.Errorf("updates.getDifference: %w", err)
		}
		switch d := d.(type) {
		case *tg.UpdatesDifferenceEmpty:
			return out, nil
		case *tg.UpdatesDifference:
			return out, add(d.NewMessages)
		case *tg.UpdatesDifferenceSlice:
			if err := add(d.NewMessages); err != nil {
				return nil, err
			}
			s := d.IntermediateState
			if s.Pts <= pts {
				return nil, fmt.Errorf("getDifference slice did not advance pts from %d", pts)
			}
			pts, date, qts = s.Pts, s.Date, s.Qts
		default:
			return nil, fmt.Errorf("updates.getDifference from pts %d: %T", pts, d)
		}
	}
	return nil, errors.New("getDifference: too many slices")
}

// exactlyOnce checks that msgs holds crashText(0..total-1), each once, and
// nothing else.
func exactlyOnce(what string, msgs map[int]string, total int) error {
	seen := map[string]int{}
	for _, text := range msgs {
		seen[text]++
	}
	for i := range total {
		if c := seen[crashText(i)]; c != 1 {
			return fmt.Errorf("%s has %q %d times, want once", what, crashText(i), c)
		}
	}
	if len(msgs) != total {
		return fmt.Errorf("%s has %d messages, want %d", what, len(msgs), total)
	}
	return nil
}

// dialogWith checks B's dialog list after the restart: one chat, whose top
// message is the newest of hist.
func dialogWith(ctx context.Context, api *tg.Client, hist map[int]string) error {
	d, err := api.MessagesGetDialogs(ctx, &tg.MessagesGetDialogsRequest{OffsetPeer: &tg.InputPeerEmpty{}, Limit: 10})
	if err != nil {
		return fmt.Errorf("messages.getDialogs: %w", err)
	}
	md, _ := d.AsModified()
	if md == nil || len(md.GetDialogs()) != 1 {
		return fmt.Errorf("dialogs after restart: %v, want one", d)
	}
	top := 0
	for id := range hist {
		top = max(top, id)
	}
	dlg, ok := md.GetDialogs()[0].(*tg.Dialog)
	if !ok {
		return fmt.Errorf("dialog %T, want a chat", md.GetDialogs()[0])
	}
	if got := dlg.TopMessage; got != top {
		return fmt.Errorf("dialog's top message %d, want %d", got, top)
	}
	return nil
}

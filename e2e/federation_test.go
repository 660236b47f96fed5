package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotd/td/telegram"
	"github.com/gotd/td/telegram/auth"
	"github.com/gotd/td/tg"
	"github.com/gotd/td/tgerr"

	hist "github.com/mtnode/mtnode/internal/history"
	"github.com/mtnode/mtnode/internal/mtclient"
	"github.com/mtnode/mtnode/messaging"
)

// fedHarness is a federation of DCs of real mtnode processes on loopback,
// sharing one set of cluster secrets (one CA, one gossip key).
type fedHarness struct {
	t       *testing.T
	secrets string
	toml    string
	dcs     map[int]*dcHarness
}

func newFed(t *testing.T, toml string) *fedHarness {
	t.Helper()
	f := &fedHarness{t: t, secrets: filepath.Join(t.TempDir(), "secrets"), toml: toml, dcs: map[int]*dcHarness{}}
	if r := runCmd(t, 30*time.Second, "keygen", "--out", f.secrets); r.code != 0 {
		t.Fatalf("mtnode keygen: %s", r)
	}
	return f
}

// form starts DC dc with n nodes, each also given extra arguments. Every
// DC but the first joins the federation through the first node of the
// lowest DC already running.
func (f *fedHarness) form(dc, n int, extra ...string) *dcHarness {
	f.t.Helper()
	d := newDCWith(f.t, f.secrets, f.toml)
	d.prefix = fmt.Sprintf("d%d", dc)
	d.extra = append([]string{"--dc", fmt.Sprint(dc)}, extra...)
	if seed := f.seed(); seed != "" {
		d.extra = append(d.extra, "--join-wan", seed)
	}
	f.dcs[dc] = d
	d.form(n)
	return d
}

// seed is the mesh address of the first node of the lowest running DC.
func (f *fedHarness) seed() string {
	var ids []int
	for dc := range f.dcs {
		ids = append(ids, dc)
	}
	if len(ids) == 0 {
		return ""
	}
	slices.Sort(ids)
	d := f.dcs[ids[0]]
	return d.id(0) + "@" + d.mesh[0]
}

// client builds a gotd client that knows only node i of DC dc.
func (f *fedHarness) client(dc, i int, sessionFile string) *telegram.Client {
	f.t.Helper()
	n := f.dcs[dc].nodes[i]
	c, err := mtclient.New(mtclient.Options{
		Addr: n.ClientAddr, DC: dc, PublicKeyFile: n.PublicKey,
		Transport: mtclient.Intermediate, SessionFile: sessionFile,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// dcsInConfig is the set of DC ids a client of node n sees in
// help.getConfig.
func dcsInConfig(ctx context.Context, c *telegram.Client) ([]int, error) {
	cfg, err := c.API().HelpGetConfig(ctx)
	if err != nil {
		return nil, err
	}
	var ids []int
	for _, o := range cfg.DCOptions {
		if !slices.Contains(ids, o.ID) {
			ids = append(ids, o.ID)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// waitConfigDCs waits until a client of DC dc's node i lists exactly want.
func (f *fedHarness) waitConfigDCs(dc, i int, want ...int) {
	f.t.Helper()
	waitFor(f.t, 60*time.Second, func() error {
		c := f.client(dc, i, "")
		var got []int
		err := runClient(c, func(ctx context.Context) (err error) {
			got, err = dcsInConfig(ctx, c)
			return err
		})
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("dc%d node %d lists DCs %v, want %v", dc, i, got, want)
		}
		return nil
	})
}

// fedSignUp signs the test number phone up with a client that knows only
// node i of DC dc, following whatever migration the server asks for, and
// returns the user. The code is the number's DC digit repeated.
func (f *fedHarness) fedSignUp(dc, i int, sessionFile, phone string) *tg.User {
	f.t.Helper()
	c := f.client(dc, i, sessionFile)
	var self *tg.User
	err := runClient(c, func(ctx context.Context) error {
		flow := auth.NewFlow(auth.TestUser(phone, int(phone[5]-'0')), auth.SendCodeOptions{})
		if err := c.Auth().IfNecessary(ctx, flow); err != nil {
			return fmt.Errorf("sign in %s: %w", phone, err)
		}
		var err error
		self, err = c.Self(ctx)
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return self
}

// TestFederation runs DC1 and DC2 of three nodes each, then a one-node
// DC3 joining later, and checks what a federation must do for clients
// that know only one DC's address.
func TestFederation(t *testing.T) {
	t.Parallel()
	f := newFed(t, "")
	f.form(1, 3)
	f.form(2, 3)
	f.waitConfigDCs(1, 0, 1, 2)
	f.waitConfigDCs(2, 1, 1, 2)

	// A client told only DC1's address signs up with a DC2 test number:
	// PHONE_MIGRATE_2 moves it, and its account lives in DC2.
	dir := t.TempDir()
	sessB := filepath.Join(dir, "b.json")
	b := f.fedSignUp(1, 0, sessB, "9996621001")
	if got := messaging.HomeDC(b.ID); got != 2 {
		t.Fatalf("user of 9996621001 has id %d, homed in DC %d; want DC 2", b.ID, got)
	}
	// A DC1 number signs up in DC1 from a client that knows only DC2.
	sessA := filepath.Join(dir, "a.json")
	a := f.fedSignUp(2, 2, sessA, "9996611001")
	if got := messaging.HomeDC(a.ID); got != 1 {
		t.Fatalf("user of 9996611001 has id %d, homed in DC %d; want DC 1", a.ID, got)
	}

	// A DC joining the federation appears in clients' help.getConfig, with
	// nothing restarted.
	f.form(3, 1)
	f.waitConfigDCs(1, 2, 1, 2, 3)
	f.waitConfigDCs(3, 0, 1, 2, 3)
	sessC := filepath.Join(dir, "c.json")
	c := f.fedSignUp(3, 0, sessC, "9996631001")
	if got := messaging.HomeDC(c.ID); got != 3 {
		t.Fatalf("user of 9996631001 homed in DC %d; want DC 3", got)
	}

	// Users of DC1, DC2 and DC3 message each other in all directions, each
	// on a node of its home DC: everything arrives live and in history.
	users := []fedUser{
		{name: "a", dc: 1, node: 1, sess: sessA, user: a, phone: "9996611001"},
		{name: "b", dc: 2, node: 2, sess: sessB, user: b, phone: "9996621001"},
		{name: "c", dc: 3, node: 0, sess: sessC, user: c, phone: "9996631001"},
	}
	f.chatAllWays(users, 0)
	f.editDeleteRead(users[0], users[1])

	// Usernames are unique across the federation: a (DC1) and b (DC2)
	// race for the same names; exactly one wins each, and c (DC3)
	// resolves every name to its winner.
	for k := range 4 {
		name := fmt.Sprintf("fedname%d", k)
		won := make([]error, 2)
		var wg sync.WaitGroup
		for i, u := range users[:2] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cl := f.client(u.dc, u.node, u.sess)
				won[i] = runClient(cl, func(ctx context.Context) error {
					_, err := cl.API().AccountUpdateUsername(ctx, name)
					return err
				})
			}()
		}
		wg.Wait()
		winner := -1
		for i, err := range won {
			switch {
			case err == nil && winner < 0:
				winner = i
			case err == nil:
				t.Fatalf("%s: both a and b took it", name)
			case !tgerr.Is(err, "USERNAME_OCCUPIED"):
				t.Fatalf("%s for %s: %v, want success or USERNAME_OCCUPIED", name, users[i].name, err)
			}
		}
		if winner < 0 {
			t.Fatalf("%s: nobody took it: %v", name, won)
		}
		cl := f.client(3, 0, sessC)
		if err := runClient(cl, func(ctx context.Context) error {
			r, err := cl.API().ContactsResolveUsername(ctx, &tg.ContactsResolveUsernameRequest{Username: name})
			if err != nil {
				return fmt.Errorf("resolve %s: %w", name, err)
			}
			if p, ok := r.Peer.(*tg.PeerUser); !ok || p.UserID != users[winner].user.ID {
				return fmt.Errorf("%s resolves to %v, want %s", name, r.Peer, users[winner].name)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	// A client that asks for DC2 in its obfuscated2 header but reaches a
	// node of DC1 (as through an MTProxy) is relayed to DC2 and served
	// there: b's key and session work as at home.
	n1 := f.dcs[1].nodes[1]
	relayed, err := mtclient.New(mtclient.Options{
		Addr: n1.ClientAddr, DC: 2, PublicKeyFile: n1.PublicKey,
		Transport: mtclient.Obfuscated2, SessionFile: sessB,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := runClient(relayed, func(ctx context.Context) error {
		self, err := relayed.Self(ctx)
		if err != nil {
			return fmt.Errorf("b through a DC1 node: %w", err)
		}
		if self.ID != b.ID {
			return fmt.Errorf("b through a DC1 node is user %d, want %d", self.ID, b.ID)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if m, err := scrape(n1); err != nil {
		t.Fatal(err)
	} else if v, _ := m.get("mtnode_proxy_relayed_total", map[string]string{"result": "ok"}); v == 0 {
		t.Error("DC1's node relayed no client to DC2")
	}

	// b, signed in at home (DC2), imports its authorization into DC1
	// (gotd's DC pool exports and imports it). There, calls about b's data
	// answer USER_MIGRATE_2; ended from home, the imported authorization
	// stops working at DC1 too.
	cb := f.client(2, 0, sessB)
	if err := runClient(cb, func(ctx context.Context) error {
		inv, err := cb.DC(ctx, 1, 1)
		if err != nil {
			return fmt.Errorf("authorization transfer to DC1: %w", err)
		}
		defer inv.Close()
		at1 := tg.NewClient(inv)
		_, err = at1.UsersGetUsers(ctx, []tg.InputUserClass{&tg.InputUserSelf{}})
		if rpcErr, ok := tgerr.As(err); !ok || rpcErr.Type != "USER_MIGRATE" || rpcErr.Argument != 2 {
			return fmt.Errorf("users.getUsers at DC1 with the imported authorization: %v, want USER_MIGRATE_2", err)
		}
		auths, err := cb.API().AccountGetAuthorizations(ctx)
		if err != nil {
			return err
		}
		var imported int64
		for _, a := range auths.Authorizations {
			if !a.Current {
				imported = a.Hash
			}
		}
		if imported == 0 {
			return fmt.Errorf("home lists no authorization besides the current one: %+v", auths.Authorizations)
		}
		if _, err := cb.API().AccountResetAuthorization(ctx, imported); err != nil {
			return fmt.Errorf("end the imported authorization at home: %w", err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			_, err = at1.UsersGetUsers(ctx, []tg.InputUserClass{&tg.InputUserSelf{}})
			if tgerr.Is(err, "AUTH_KEY_UNREGISTERED") {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("DC1 after the authorization ended at home: %v, want AUTH_KEY_UNREGISTERED", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}); err != nil {
		t.Fatal(err)
	}
}

// fedUser is a signed-up user of a federation test and where it
// connects.
type fedUser struct {
	name     string
	dc, node int
	sess     string
	user     *tg.User
	phone    string
}

// fedText is the text round r's message from one user to another.
func fedText(r int, from, to string) string { return fmt.Sprintf("round %d: %s to %s", r, from, to) }

// chatAllWays has every user, online on its home DC, send one message to
// every other, and checks that each arrives live exactly once and is in
// both users' histories.
func (f *fedHarness) chatAllWays(users []fedUser, round int) {
	f.t.Helper()
	online := make([]*onlineDevice, len(users))
	for i, u := range users {
		online[i] = startOnlineAt(f.t, f.dcs[u.dc].nodes[u.node], u.dc, u.sess, u.user.ID, nil)
		defer online[i].stop(f.t)
	}
	for i, u := range users {
		c := f.client(u.dc, u.node, u.sess)
		err := runClient(c, func(ctx context.Context) error {
			for j, v := range users {
				if i == j {
					continue
				}
				peer, err := importPhone(ctx, c.API(), v.phone)
				if err != nil {
					return fmt.Errorf("%s imports %s: %w", u.name, v.name, err)
				}
				if _, err := c.API().MessagesSendMessage(ctx, &tg.MessagesSendMessageRequest{
					Peer: peer, Message: fedText(round, u.name, v.name), RandomID: int64(round*100 + i*10 + j + 1),
				}); err != nil {
					return fmt.Errorf("%s sends to %s: %w", u.name, v.name, err)
				}
			}
			return nil
		})
		if err != nil {
			f.t.Fatal(err)
		}
	}
	for i, u := range users {
		waitFor(f.t, 30*time.Second, func() error {
			for _, v := range users {
				if v.name == u.name {
					continue
				}
				if n := online[i].times(fedText(round, v.name, u.name)); n != 1 {
					return fmt.Errorf("%s was handed %q %d times live, want once", u.name, fedText(round, v.name, u.name), n)
				}
			}
			return nil
		})
	}
	for i, u := range users {
		c := f.client(u.dc, u.node, u.sess)
		err := runClient(c, func(ctx context.Context) error {
			for j, v := range users {
				if i == j {
					continue
				}
				peer, err := importPhone(ctx, c.API(), v.phone)
				if err != nil {
					return err
				}
				h, err := history(ctx, c.API(), peer)
				if err != nil {
					return err
				}
				texts := map[string]int{}
				for _, m := range h {
					texts[m]++
				}
				for _, want := range []string{fedText(round, u.name, v.name), fedText(round, v.name, u.name)} {
					if texts[want] != 1 {
						return fmt.Errorf("%s's history with %s holds %q %d times, want once: %v", u.name, v.name, want, texts[want], h)
					}
				}
			}
			return nil
		})
		if err != nil {
			f.t.Fatal(err)
		}
	}
}

// setFaults programs the mesh fault rules of every node of DC dc.
func (f *fedHarness) setFaults(dc int, rules string) {
	f.t.Helper()
	d := f.dcs[dc]
	for i, n := range d.nodes {
		req, _ := http.NewRequest(http.MethodPost, "http://"+n.HTTPAddr+"/debug/faults", strings.NewReader(rules))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			f.t.Fatalf("faults on %s: %v", d.id(i), err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			f.t.Fatalf("faults on %s: %d %s", d.id(i), resp.StatusCode, body)
		}
	}
}

// cut drops all mesh traffic between DCs x and y, both ways; "" heals.
func (f *fedHarness) cut(x, y int) {
	f.t.Helper()
	rules := func(other int) string {
		var rs []string
		for _, m := range f.dcs[other].mesh {
			rs = append(rs, "drop "+m)
		}
		return strings.Join(rs, "; ")
	}
	f.setFaults(x, rules(y))
	f.setFaults(y, rules(x))
}

// wanText is the text of message i from user u in the partition test.
func wanText(u string, i int) string { return fmt.Sprintf("wan %s %03d", u, i) }

// wanIndex parses wanText.
func wanIndex(text, u string) (int, bool) {
	var i int
	if _, err := fmt.Sscanf(text, "wan "+u+" %d", &i); err != nil || text != wanText(u, i) {
		return 0, false
	}
	return i, true
}

// TestFederationWANPartition cuts DC1 from DC2 (every mesh packet between
// them dropped by the nodes' fault injectors) while a user of each sends
// to the other. Each DC keeps serving its own user: every send is
// acknowledged during the cut. After healing, every acknowledged message
// is in the recipient's box exactly once, in the sender's order, checked
// over the recorded history.
func TestFederationWANPartition(t *testing.T) {
	t.Parallel()
	f := newFed(t, "fault_injection = true\n")
	f.form(1, 3)
	f.form(2, 3)
	f.waitConfigDCs(1, 0, 1, 2)
	dir := t.TempDir()
	users := []fedUser{
		{name: "a", dc: 1, node: 0, sess: filepath.Join(dir, "a.json"), phone: "9996611002"},
		{name: "b", dc: 2, node: 1, sess: filepath.Join(dir, "b.json"), phone: "9996621002"},
	}
	for i := range users {
		users[i].user = f.fedSignUp(users[i].dc, users[i].node, users[i].sess, users[i].phone)
	}
	// Before the cut: they talk once, so each DC has a copy of the other's
	// user, and each client has the other as a peer.
	f.chatAllWays(users, 0)
	peers := make([]tg.InputPeerClass, len(users))
	for i, u := range users {
		c := f.client(u.dc, u.node, u.sess)
		if err := runClient(c, func(ctx context.Context) (err error) {
			peers[i], err = importPhone(ctx, c.API(), users[1-i].phone)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}

	f.cut(1, 2)
	t.Log("cut DC1 from DC2")
	const n = 15
	rec := hist.NewRecorder(hist.Options{})
	rid := func(u, i int) int64 { return int64(900000 + u*1000 + i) }
	var wg sync.WaitGroup
	errs := make(chan error, len(users))
	for ui, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Spread over the DC's nodes: any of them serves its users.
			for i := range n {
				node := i % len(f.dcs[u.dc].nodes)
				c := f.client(u.dc, node, u.sess)
				op := rec.BeginSend(ui, u.name, rid(ui, i))
				err := runClient(c, func(ctx context.Context) error {
					res, err := c.API().MessagesSendMessage(ctx, &tg.MessagesSendMessageRequest{
						Peer: peers[ui], Message: wanText(u.name, i), RandomID: rid(ui, i),
					})
					if err != nil {
						return err
					}
					id, ok := sentID(res, rid(ui, i))
					if !ok {
						return fmt.Errorf("no message id in %T", res)
					}
					op.Ok(id)
					return nil
				})
				if err != nil {
					op.Unknown()
					errs <- fmt.Errorf("%s's send %d during the cut: %w", u.name, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err) // a DC cut off from another still serves its own users
	}
	// Nothing crossed yet: the sends wait in DC1's and DC2's outboxes.
	for ui, u := range users {
		v := users[1-ui]
		c := f.client(v.dc, v.node, v.sess)
		if err := runClient(c, func(ctx context.Context) error {
			h, err := history(ctx, c.API(), peers[1-ui])
			if err != nil {
				return err
			}
			for _, text := range h {
				if _, ok := wanIndex(text, u.name); ok {
					return fmt.Errorf("%s's message %q reached %s across the cut", u.name, text, v.name)
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	// The queues are visible: each DC's metrics show steps waiting for
	// the other.
	queued := func(dc, to int) (float64, error) {
		total := 0.0
		for _, nd := range f.dcs[dc].nodes {
			m, err := scrape(nd)
			if err != nil {
				return 0, err
			}
			v, _ := m.get("mtnode_dc_queue_depth", map[string]string{"dc": fmt.Sprint(to)})
			total += v
		}
		return total, nil
	}
	waitFor(t, 15*time.Second, func() error {
		for _, p := range [][2]int{{1, 2}, {2, 1}} {
			q, err := queued(p[0], p[1])
			if err != nil {
				return err
			}
			if q < n {
				return fmt.Errorf("DC%d reports %v steps queued for DC%d, want at least %d", p[0], q, p[1], n)
			}
		}
		return nil
	})

	// A node of each DC dies (kill -9) and comes back while the link is
	// still down: the queued steps are in raft, not in a pump's memory.
	// Restarted, it injects no faults until told again; the other DC's
	// rules drop its traffic both ways meanwhile, and it is cut again
	// before the other DC's node restarts.
	for _, dc := range []int{1, 2} {
		d := f.dcs[dc]
		d.nodes[0].kill()
		d.restart(0)
		f.cut(1, 2)
	}
	t.Log("killed and restarted a node of each DC during the cut")

	f.setFaults(1, "")
	f.setFaults(2, "")
	t.Log("healed")
	waitFor(t, 60*time.Second, func() error {
		for _, p := range [][2]int{{1, 2}, {2, 1}} {
			q, err := queued(p[0], p[1])
			if err != nil {
				return err
			}
			if q != 0 {
				return fmt.Errorf("DC%d still reports %v steps queued for DC%d", p[0], q, p[1])
			}
		}
		return nil
	})
	final := map[string][]hist.Entry{}
	for ui, u := range users {
		v := users[1-ui]
		c := f.client(v.dc, v.node, v.sess)
		var got []hist.Entry
		err := runClient(c, func(ctx context.Context) error {
			op := rec.BeginRead(2, u.name)
			deadline := time.Now().Add(60 * time.Second)
			for {
				h, err := history(ctx, c.API(), peers[1-ui])
				if err != nil {
					op.Unknown()
					return err
				}
				got = got[:0]
				for _, id := range sortedIDs(h) {
					if i, ok := wanIndex(h[id], u.name); ok {
						got = append(got, hist.Entry{RandomID: rid(ui, i)})
					}
				}
				if len(got) >= n || time.Now().After(deadline) {
					op.ReadOk(got)
					return nil
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		final[u.name] = got
		if len(got) != n {
			t.Errorf("%s's box has %d of %s's %d messages after healing", v.name, len(got), u.name, n)
		}
	}
	res, err := rec.Check(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Ok() {
		path := filepath.Join(t.TempDir(), "history.html")
		res.WriteVisualization(path)
		t.Fatalf("history check: %s (visualization in %s)", res, path)
	}
	if err := rec.Audit(final); err != nil {
		t.Fatal(err)
	}
	t.Logf("history: %s", res)
}

// TestFederationAssist runs DCs with routing.assist on. DC2 advertises a
// client address nobody can connect to, so a client that followed a
// migration would fail: a user homed in DC2 signs up, chats and gets
// live updates through DC1 alone, which carries its calls to DC2 and
// relays DC2's pushes.
func TestFederationAssist(t *testing.T) {
	t.Parallel()
	f := newFed(t, "\n[routing]\nassist = true\n")
	f.form(1, 1)
	f.form(2, 1, "--public-addr", "127.0.0.1:1")
	f.waitConfigDCs(1, 0, 1, 2)
	dir := t.TempDir()
	users := []fedUser{
		{name: "a", dc: 1, sess: filepath.Join(dir, "a.json"), phone: "9996611003"},
		{name: "b", dc: 1, sess: filepath.Join(dir, "b.json"), phone: "9996621003"},
	}
	for i := range users {
		users[i].user = f.fedSignUp(1, 0, users[i].sess, users[i].phone)
	}
	if got := messaging.HomeDC(users[1].user.ID); got != 2 {
		t.Fatalf("b, signed up through DC1 with a DC2 number, is homed in DC %d; want 2", got)
	}
	f.chatAllWays(users, 0)
	f.chatAllWays(users, 1)
	m, err := scrape(f.dcs[1].nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := m.get("mtnode_forwarded_calls_total", map[string]string{"result": "relayed"}); v == 0 {
		t.Error("DC1 carried no call to DC2")
	}
}

// editDeleteRead has u (homed in one DC) edit one message to v (homed in
// another) and delete another for both, and v read the chat and look u
// up: the edit, the revoking delete and the read receipt cross the DCs
// as the message did, and v sees u's full profile.
func (f *fedHarness) editDeleteRead(u, v fedUser) {
	f.t.Helper()
	var keep, drop int
	cu := f.client(u.dc, u.node, u.sess)
	if err := runClient(cu, func(ctx context.Context) error {
		peer, err := importPhone(ctx, cu.API(), v.phone)
		if err != nil {
			return err
		}
		for i, text := range []string{"to be edited", "to be deleted"} {
			rid := int64(5000 + i)
			res, err := cu.API().MessagesSendMessage(ctx, &tg.MessagesSendMessageRequest{Peer: peer, Message: text, RandomID: rid})
			if err != nil {
				return err
			}
			id, ok := sentID(res, rid)
			if !ok {
				return fmt.Errorf("no id for %q", text)
			}
			if i == 0 {
				keep = id
			} else {
				drop = id
			}
		}
		if _, err := cu.API().MessagesEditMessage(ctx, &tg.MessagesEditMessageRequest{Peer: peer, ID: keep, Message: "edited across DCs"}); err != nil {
			return fmt.Errorf("edit: %w", err)
		}
		_, err = cu.API().MessagesDeleteMessages(ctx, &tg.MessagesDeleteMessagesRequest{ID: []int{drop}, Revoke: true})
		return err
	}); err != nil {
		f.t.Fatal(err)
	}
	cv := f.client(v.dc, v.node, v.sess)
	if err := runClient(cv, func(ctx context.Context) error {
		peer, err := importPhone(ctx, cv.API(), u.phone)
		if err != nil {
			return err
		}
		deadline := time.Now().Add(deliverySettle)
		for {
			h, err := history(ctx, cv.API(), peer)
			if err != nil {
				return err
			}
			texts := map[string]bool{}
			top := 0
			for id, t := range h {
				texts[t] = true
				top = max(top, id)
			}
			if texts["edited across DCs"] && !texts["to be edited"] && !texts["to be deleted"] {
				if _, err := cv.API().MessagesReadHistory(ctx, &tg.MessagesReadHistoryRequest{Peer: peer, MaxID: top}); err != nil {
					return fmt.Errorf("read: %w", err)
				}
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s's history with %s after edit and delete: %v", v.name, u.name, h)
			}
			time.Sleep(20 * time.Millisecond)
		}
		full, err := cv.API().UsersGetFullUser(ctx, &tg.InputUser{UserID: u.user.ID, AccessHash: accessHashOf(peer)})
		if err != nil {
			return fmt.Errorf("users.getFullUser of %s: %w", u.name, err)
		}
		if full.FullUser.ID != u.user.ID {
			return fmt.Errorf("users.getFullUser of %s answered user %d", u.name, full.FullUser.ID)
		}
		return nil
	}); err != nil {
		f.t.Fatal(err)
	}
	// u's side of the chat shows it read.
	cu = f.client(u.dc, u.node, u.sess)
	if err := runClient(cu, func(ctx context.Context) error {
		peer, err := importPhone(ctx, cu.API(), v.phone)
		if err != nil {
			return err
		}
		deadline := time.Now().Add(deliverySettle)
		for {
			pd, err := cu.API().MessagesGetPeerDialogs(ctx, []tg.InputDialogPeerClass{&tg.InputDialogPeer{Peer: peer}})
			if err != nil {
				return err
			}
			if len(pd.Dialogs) == 1 {
				if d, ok := pd.Dialogs[0].(*tg.Dialog); ok && d.ReadOutboxMaxID >= keep {
					return nil
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s's dialog with %s never showed the read receipt: %+v", u.name, v.name, pd.Dialogs)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}); err != nil {
		f.t.Fatal(err)
	}
}

// accessHashOf is a user peer's access hash.
func accessHashOf(p tg.InputPeerClass) int64 {
	if u, ok := p.(*tg.InputPeerUser); ok {
		return u.AccessHash
	}
	return 0
}

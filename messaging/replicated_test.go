package messaging

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mtnode/mtnode/replication"
	"github.com/mtnode/mtnode/storage"
)

// syncNotifier records events; safe for raft's and the test's goroutines.
type syncNotifier struct {
	mu     sync.Mutex
	events []Event
}

func (n *syncNotifier) Notify(ev []Event) {
	n.mu.Lock()
	n.events = append(n.events, ev...)
	n.mu.Unlock()
}

func (n *syncNotifier) take() []Event {
	n.mu.Lock()
	defer n.mu.Unlock()
	ev := n.events
	n.events = nil
	return ev
}

type msgReplica struct {
	id  raft.ServerID
	db  *storage.DB
	sm  *Replicated
	rec *syncNotifier
	g   *replication.Group
}

// newMsgCluster starts a 3-replica group of Replicated on raft's
// in-memory transport, each replica on its own Badger.
func newMsgCluster(t *testing.T) []*msgReplica {
	t.Helper()
	conf := raft.DefaultConfig()
	// Elections quick enough for a test, leadership steady under a
	// loaded CI machine: these tests compare results in lockstep, and a
	// leader lost mid-commit leaves a command's outcome unknown (at 50 ms
	// a run under the race detector elsewhere lost one).
	conf.HeartbeatTimeout = 300 * time.Millisecond
	conf.ElectionTimeout = 300 * time.Millisecond
	conf.LeaderLeaseTimeout = 150 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.SnapshotInterval = time.Hour
	conf.SnapshotThreshold = 1 << 40
	quiet := slog.New(slog.DiscardHandler)

	var rs []*msgReplica
	var trans []*raft.InmemTransport
	var servers []raft.Server
	for i := range 3 {
		id := raft.ServerID(fmt.Sprintf("n%d", i))
		addr, tr := raft.NewInmemTransport(raft.ServerAddress(id))
		trans = append(trans, tr)
		servers = append(servers, raft.Server{ID: id, Address: addr})
		dir := t.TempDir()
		db, err := storage.Open(dir, quiet)
		if err != nil {
			t.Fatal(err)
		}
		rec := &syncNotifier{}
		r := &msgReplica{id: id, db: db, sm: NewReplicated(rec), rec: rec}
		c := *conf
		r.g, err = replication.NewGroup(replication.Config{
			Shard: 3, ID: id, DB: db, Transport: tr, StateMachine: r.sm,
			Raft: &c, SnapshotDir: filepath.Join(dir, "snaps"), Logger: quiet,
		})
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	for i, a := range trans {
		for j, b := range trans {
			if i != j {
				a.Connect(servers[j].Address, b)
			}
		}
	}
	t.Cleanup(func() {
		for _, r := range rs {
			if err := r.g.Close(); err != nil {
				t.Error(err)
			}
			if err := r.db.Close(); err != nil {
				t.Error(err)
			}
		}
	})
	if err := rs[0].g.Bootstrap(servers); err != nil {
		t.Fatal(err)
	}
	return rs
}

// leader waits for and returns the replica that leads.
func leader(t *testing.T, rs []*msgReplica) *msgReplica {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range rs {
			if r.g.IsLeader() {
				return r
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no leader")
	return nil
}

// replicaDump is every key and value of a replica's messaging state.
func replicaDump(t *testing.T, r *msgReplica) string {
	t.Helper()
	var b strings.Builder
	if err := r.g.View(func(tx *storage.Txn) error {
		return tx.Iterate(nil, nil, false, func(k, v []byte) (bool, error) {
			fmt.Fprintf(&b, "%x=%x\n", k, v)
			return true, nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// lockstep applies every command to a 3-replica group (through the leader)
// and to a single-node Machine, and checks they answer alike.
type lockstep struct {
	t   *testing.T
	rs  []*msgReplica
	m   *Machine
	db  *storage.DB
	rec *recordNotifier
	now int64
	rng *rand.Rand
}

// do applies cmd to both; it returns the result and whether the command
// was rejected (the two sides must agree on both).
func (l *lockstep) do(cmd Command) (any, error) {
	l.t.Helper()
	l.now++
	env := Env{Now: l.now}
	for i := range env.Rand {
		env.Rand[i] = byte(l.rng.Uint32())
	}
	want, werr := l.m.Apply(context.Background(), cmd, env)
	var got any
	var gerr error
	for range 100 {
		ld := leader(l.t, l.rs)
		got, gerr = ld.sm.Propose(context.Background(), ld.g, cmd, env)
		if !errors.Is(gerr, replication.ErrNotLeader) {
			break
		}
	}
	if (werr == nil) != (gerr == nil) || (werr != nil && werr.Error() != gerr.Error()) {
		l.t.Fatalf("%s: machine err %v, replicated err %v", cmd.Kind(), werr, gerr)
	}
	if !reflect.DeepEqual(got, want) {
		l.t.Fatalf("%s: replicated result %#v, machine %#v", cmd.Kind(), got, want)
	}
	return got, gerr
}

func (l *lockstep) must(cmd Command) any {
	l.t.Helper()
	res, err := l.do(cmd)
	if err != nil {
		l.t.Fatalf("%s: %v", cmd.Kind(), err)
	}
	return res
}

func (l *lockstep) signUp(phone, first string, perm int64) *User {
	l.t.Helper()
	sent := l.must(SendCode{Phone: phone, Length: 5, TTL: 300, TestNumbers: true}).(*SentCode)
	r := l.must(SignIn{Phone: phone, Hash: sent.Hash, Code: sent.Code, PermKeyID: perm}).(*SignInResult)
	if !r.SignUpRequired {
		l.t.Fatalf("sign in of new phone: %+v", r)
	}
	return l.must(SignUp{Phone: phone, Hash: sent.Hash, FirstName: first, DC: 1, PermKeyID: perm}).(*SignInResult).User
}

// TestReplicatedMatchesMachine runs a realistic chat through a 3-replica
// group and through one Machine: every replica must end byte-identical to
// the single node, and only the proposer may push events.
func TestReplicatedMatchesMachine(t *testing.T) {
	rs := newMsgCluster(t)
	rec := &recordNotifier{}
	m, db := openMachine(t, rec)
	l := &lockstep{t: t, rs: rs, m: m, db: db, rec: rec, now: 1_700_000_000, rng: rand.New(rand.NewPCG(1, 2))}

	alice := l.signUp("9996611111", "Alice", 101)
	bob := l.signUp("9996622222", "Bob", 102)
	auth := map[int64]int64{alice.ID: 101, bob.ID: 102}
	l.must(ImportContacts{Owner: alice.ID, Contacts: []PhoneContact{{ClientID: 1, Phone: "9996622222", FirstName: "Bob", UserID: bob.ID}}})

	type sentMsg struct {
		from, rid int64
		id        int
	}
	var sent []sentMsg
	dups := 0
	for i := range 200 {
		from, to := alice.ID, bob.ID
		if l.rng.IntN(2) == 1 {
			from, to = to, from
		}
		rid := l.rng.Int64()
		if i%10 == 9 && len(sent) > 0 {
			// A client retry: same sender, same random_id.
			s := sent[l.rng.IntN(len(sent))]
			from, rid = s.from, s.rid
			if from == alice.ID {
				to = bob.ID
			} else {
				to = alice.ID
			}
		}
		out, err := l.do(SendMessage{From: from, Auth: auth[from], To: UserPeer(to), RandomID: rid, Text: fmt.Sprintf("message %d", i)})
		if errors.Is(err, ErrRejected) {
			dups++ // a retry of a message deleted since: RANDOM_ID_DUPLICATE
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		res := out.(Sent)
		if res.Duplicate {
			dups++
			continue
		}
		sent = append(sent, sentMsg{from: from, rid: rid, id: res.Msg.ID})
		switch {
		case i%7 == 3:
			l.must(EditMessage{User: from, Auth: auth[from], Peer: UserPeer(to), ID: res.Msg.ID, Text: fmt.Sprintf("edited %d", i)})
		case i%13 == 5:
			l.must(DeleteMessages{User: from, Auth: auth[from], IDs: []int{res.Msg.ID}, Revoke: i%2 == 0})
		case i%17 == 0:
			l.must(ReadHistory{User: to, Auth: auth[to], Peer: UserPeer(from), MaxID: 1 << 30})
		}
	}
	if dups == 0 || len(sent) < 150 {
		t.Fatalf("sequence has %d sends and %d retries", len(sent), dups)
	}
	// A rejection goes through the log too and must be rejected alike.
	if _, err := l.do(EditMessage{User: alice.ID, Auth: 101, Peer: UserPeer(bob.ID), ID: 1 << 20, Text: "x"}); !errors.Is(err, ErrRejected) {
		t.Fatalf("edit of a missing message: %v", err)
	}

	ld := leader(t, rs)
	want := ld.g.AppliedIndex()
	deadline := time.Now().Add(10 * time.Second)
	for _, r := range rs {
		for r.g.AppliedIndex() < want {
			if time.Now().After(deadline) {
				t.Fatalf("%s applied %d of %d", r.id, r.g.AppliedIndex(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	single := (&fixture{t: t, db: db}).dump()
	if strings.Count(single, "\n") < 400 {
		t.Fatalf("single node holds only %d records", strings.Count(single, "\n"))
	}
	for _, r := range rs {
		if got := replicaDump(t, r); got != single {
			t.Errorf("%s: state differs from the single node (%d vs %d bytes)", r.id, len(got), len(single))
		}
	}
	for _, uid := range []int64{alice.ID, bob.ID} {
		var ws State
		if err := m.View(func(tx storage.Reader) (err error) { ws, err = GetState(tx, uid); return }); err != nil {
			t.Fatal(err)
		}
		if ws.Pts < 100 {
			t.Errorf("user %d: pts %d, want the chat's updates", uid, ws.Pts)
		}
		for _, r := range rs {
			var gs State
			if err := r.g.View(func(tx *storage.Txn) (err error) { gs, err = GetState(tx, uid); return }); err != nil {
				t.Fatal(err)
			}
			if gs != ws {
				t.Errorf("%s: user %d state %+v, single node %+v", r.id, uid, gs, ws)
			}
		}
	}

	// Events: the proposers together pushed exactly what the single node
	// pushed, in the same order; with one leader throughout, that is the
	// leader alone.
	var pushed []Event
	for _, r := range rs {
		pushed = append(pushed, r.rec.take()...)
	}
	if !reflect.DeepEqual(pushed, rec.events) {
		t.Errorf("replicated pushed %d events, single node %d", len(pushed), len(rec.events))
	}
}

// TestReplicatedConcurrentProposals: concurrent proposers batch in raft
// and in the FSM; every replica still ends byte-identical.
func TestReplicatedConcurrentProposals(t *testing.T) {
	rs := newMsgCluster(t)
	ld := leader(t, rs)
	propose := proposeTo(ld)
	mk := func(phone string, perm, now int64) int64 { return signUpVia(t, propose, phone, perm, now) }
	a, b := mk("9996633333", 201, 1_700_000_000), mk("9996644444", 202, 1_700_000_010)

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from, to, auth := a, b, int64(201)
			if i%2 == 1 {
				from, to, auth = b, a, 202
			}
			_, err := propose(SendMessage{From: from, Auth: auth, To: UserPeer(to), RandomID: int64(i % 48), Text: "hi"}, 1_700_000_100+int64(i))
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := ld.g.AppliedIndex()
	deadline := time.Now().Add(10 * time.Second)
	for _, r := range rs {
		for r.g.AppliedIndex() < want {
			if time.Now().After(deadline) {
				t.Fatalf("%s applied %d of %d", r.id, r.g.AppliedIndex(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	first := replicaDump(t, rs[0])
	for _, r := range rs[1:] {
		if replicaDump(t, r) != first {
			t.Errorf("%s: state differs from %s", r.id, rs[0].id)
		}
	}
	for _, r := range rs {
		if r != ld && len(r.rec.take()) > 0 {
			t.Errorf("follower %s pushed events", r.id)
		}
	}
}

func TestReplicatedRejectsUndecodable(t *testing.T) {
	rs := newMsgCluster(t)
	ld := leader(t, rs)
	if _, err := ld.g.Apply(context.Background(), []byte{codecVersion, 3, 'x', 'y', 'z'}); !errors.Is(err, ErrCodec) {
		t.Fatalf("undecodable entry: %v", err)
	}
}

// TestReplicatedPushWhenLeader: with PushWhenLeader, events go out from
// the replica that leads when their entries are applied, once each, in
// commit order (pts increasing per user), and followers push nothing.
func TestReplicatedPushWhenLeader(t *testing.T) {
	rs := newMsgCluster(t)
	for _, r := range rs {
		r.sm.PushWhenLeader(r.g.IsLeader)
	}
	ld := leader(t, rs)
	propose := proposeTo(ld)
	mk := func(phone string, perm, now int64) int64 { return signUpVia(t, propose, phone, perm, now) }
	a, b := mk("9996655555", 301, 1_700_000_000), mk("9996666666", 302, 1_700_000_010)
	ld.rec.take()
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			if _, err := propose(SendMessage{From: a, Auth: 301, To: UserPeer(b), RandomID: int64(1000 + i), Text: "hi"}, 1_700_000_100+int64(i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	want := 32 * 2 // an event for A's copy and one for B's
	deadline := time.Now().Add(10 * time.Second)
	var got []Event
	for len(got) < want && time.Now().Before(deadline) {
		got = append(got, ld.rec.take()...)
		time.Sleep(5 * time.Millisecond)
	}
	if len(got) != want {
		t.Fatalf("leader pushed %d events, want %d", len(got), want)
	}
	last := map[int64]int{}
	for _, ev := range got {
		if ev.Pts <= last[ev.UserID] {
			t.Fatalf("user %d: pts %d pushed after %d", ev.UserID, ev.Pts, last[ev.UserID])
		}
		last[ev.UserID] = ev.Pts
	}
	for _, r := range rs {
		if r != ld && len(r.rec.take()) > 0 {
			t.Errorf("follower %s pushed events", r.id)
		}
	}
}

// proposeTo proposes commands through replica r at the given time.
func proposeTo(r *msgReplica) func(Command, int64) (any, error) {
	return func(cmd Command, now int64) (any, error) {
		return r.sm.Propose(context.Background(), r.g, cmd, envAt(now, byte(now)))
	}
}

// signUpVia signs phone up through propose (code, sign-in, sign-up at now,
// now+1, now+2) for perm key perm and returns the new user's id.
func signUpVia(t *testing.T, propose func(Command, int64) (any, error), phone string, perm, now int64) int64 {
	t.Helper()
	sent, err := propose(SendCode{Phone: phone, Length: 5, TTL: 300, TestNumbers: true}, now)
	if err != nil {
		t.Fatal(err)
	}
	h, code := sent.(*SentCode).Hash, sent.(*SentCode).Code
	if _, err := propose(SignIn{Phone: phone, Hash: h, Code: code, PermKeyID: perm}, now+1); err != nil {
		t.Fatal(err)
	}
	r, err := propose(SignUp{Phone: phone, Hash: h, FirstName: "U", DC: 1, PermKeyID: perm}, now+2)
	if err != nil {
		t.Fatal(err)
	}
	return r.(*SignInResult).User.ID
}

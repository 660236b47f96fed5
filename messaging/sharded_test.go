package messaging

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/mtnode/mtnode/storage"
)

// shardedDC applies commands the way a sharded DC does: each group is a
// Replicated over its own table, a command runs on Layout.GroupOf's group,
// and pump carries outboxes as the node's pump does (Inbox there, then
// OutboxAck here).
type shardedDC struct {
	t      *testing.T
	l      Layout
	tables []*storage.Table
	reps   []*Replicated
	idx    uint64
}

func newShardedDC(t *testing.T, home map[int64]int) *shardedDC {
	return newShardedDCAt(t, 0, home)
}

// newShardedDCAt is newShardedDC for DC dc of a federation (0: none).
func newShardedDCAt(t *testing.T, dc int, home map[int64]int) *shardedDC {
	_, db := openMachine(t, nil)
	d := &shardedDC{t: t, l: Layout{Shards: 3, DC: dc, ShardOf: func(id int64, n int) int { return home[id] }}}
	for g := range d.l.Groups() {
		d.tables = append(d.tables, db.Table(fmt.Sprintf("g%d", g)))
		r := NewReplicated(nil)
		r.SetLayout(d.l)
		d.reps = append(d.reps, r)
	}
	return d
}

func (d *shardedDC) apply(cmd Command, env Env) (Applied, error) {
	d.t.Helper()
	g := d.l.GroupOf(cmd)
	entry, err := EncodeCommand(cmd, env)
	if err != nil {
		d.t.Fatal(err)
	}
	d.idx++
	tx := d.tables[g].Begin()
	defer tx.Discard()
	v, err := d.reps[g].ApplyCommand(&tx.Txn, d.idx, entry)
	if err != nil {
		return Applied{}, err
	}
	if err := tx.Commit(); err != nil {
		d.t.Fatal(err)
	}
	return v.(Applied), nil
}

// pump carries every outbox once; with resend, each batch is proposed
// twice, as after a leader that died before its ack.
func (d *shardedDC) pump(resend bool) int {
	d.t.Helper()
	carried := 0
	for g, tbl := range d.tables {
		var pending map[int][]OutboxEntry
		if err := tbl.View(func(tx *storage.Txn) (err error) {
			pending, err = PendingOutbox(tx, d.l.Groups(), nil)
			return err
		}); err != nil {
			d.t.Fatal(err)
		}
		for dest, es := range pending {
			if dest < 0 {
				continue // another DC's: the test carries it
			}
			in := Inbox{Group: dest, Src: g}
			for _, e := range es {
				in.Seqs, in.Steps = append(in.Seqs, e.Seq), append(in.Steps, e.Step)
			}
			for range map[bool]int{false: 1, resend: 2} {
				if _, err := d.apply(in, Env{}); err != nil {
					d.t.Fatal(err)
				}
			}
			if _, err := d.apply(OutboxAck{Group: g, Marks: []OutboxMark{{Dest: dest, Upto: in.Seqs[len(in.Seqs)-1]}}}, Env{}); err != nil {
				d.t.Fatal(err)
			}
			carried += len(es)
		}
	}
	return carried
}

// box dumps uid's records (every per-user prefix) from t.
func box(t *testing.T, tbl *storage.Table, uid int64) string {
	t.Helper()
	var b strings.Builder
	if err := tbl.View(func(tx *storage.Txn) error {
		for _, p := range slices.Sorted(maps.Keys(userPrefixes)) {
			if err := tx.Iterate(key(p, uid), nil, false, func(k, v []byte) (bool, error) {
				fmt.Fprintf(&b, "%q=%x\n", k, v)
				return true, nil
			}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestShardedMatchesOneGroup: a conversation among users of different
// groups, pumped after every command (twice per batch), leaves each
// user's box byte for byte as one Machine leaves it, and the outboxes
// empty.
func TestShardedMatchesOneGroup(t *testing.T) {
	dave := UserID(1, 4)
	home := map[int64]int{alice: 0, bob: 1, carol: 0, dave: 2}
	d := newShardedDC(t, home)
	m, db := openMachine(t, nil)
	now := int64(1_700_000_000)
	run := func(cmd Command) any {
		t.Helper()
		now++
		env := envAt(now, byte(now))
		want, werr := m.Apply(context.Background(), cmd, env)
		_, gerr := d.apply(cmd, env)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%s: one group %v, sharded %v", cmd.Kind(), werr, gerr)
		}
		d.pump(true)
		return want
	}
	send := func(from, to int64, rid int64, text string) *Message {
		return run(SendMessage{From: from, Auth: authOf(from), To: UserPeer(to), RandomID: rid, Text: text}).(Sent).Msg
	}
	a1 := send(alice, bob, 1, "a→b 1")
	send(bob, alice, 2, "b→a 1")
	send(alice, carol, 3, "a→c, same group")
	a2 := send(alice, bob, 4, "a→b 2")
	send(dave, bob, 5, "d→b")
	send(alice, bob, 1, "a→b 1 again") // a retry: no second copy anywhere
	run(EditMessage{User: alice, Auth: authOf(alice), Peer: UserPeer(bob), ID: a1.ID, Text: "a→b 1 edited"})
	run(ReadHistory{User: bob, Auth: authOf(bob), Peer: UserPeer(alice)})
	run(ForwardMessages{From: bob, Auth: authOf(bob), FromPeer: UserPeer(alice), IDs: []int{2}, RandomIDs: []int64{6}, To: UserPeer(dave)})
	run(DeleteMessages{User: alice, Auth: authOf(alice), IDs: []int{a2.ID}, Revoke: true})
	run(DeleteMessages{User: bob, Auth: authOf(bob), IDs: []int{1}, Revoke: true}) // bob's copy of a→b 1: alice's goes too
	run(Block{Owner: dave, Other: alice, Auth: authOf(dave)})
	// dave's block reached alice's group: her send is refused there.
	if run(SendMessage{From: alice, Auth: authOf(alice), To: UserPeer(dave), RandomID: 7, Text: "x"}) != nil {
		t.Fatal("a send to a user who blocked the author was accepted")
	}
	run(Unblock{Owner: dave, Other: alice, Auth: authOf(dave)})
	send(alice, dave, 8, "after the unblock")
	for _, u := range []int64{alice, bob, carol, dave} {
		want := box(t, db.Table("msg"), u)
		got := box(t, d.tables[d.l.UserGroup(u)], u)
		if got != want {
			t.Errorf("box of %d differs:\nsharded:\n%s\none group:\n%s", u, got, want)
		}
	}
	if n := d.pump(false); n != 0 {
		t.Fatalf("%d steps left in outboxes", n)
	}
}

// TestOutboxKeepsOrderAndDedupes: many sends queued before any pump
// arrive once each, in send order, however often batches are re-sent.
func TestOutboxKeepsOrderAndDedupes(t *testing.T) {
	d := newShardedDC(t, map[int64]int{alice: 0, bob: 2})
	const n = InboxMaxSteps + 44 // more than one batch
	for i := range n {
		if _, err := d.apply(SendMessage{From: alice, To: UserPeer(bob), RandomID: int64(i + 1), Text: fmt.Sprint(i)}, envAt(int64(1000+i), 1)); err != nil {
			t.Fatal(err)
		}
	}
	for d.pump(true) > 0 {
	}
	err := d.tables[d.l.UserGroup(bob)].View(func(tx *storage.Txn) error {
		pg, err := History(tx, bob, UserPeer(alice), HistoryQuery{Limit: 100})
		if err != nil {
			return err
		}
		if pg.Count != n {
			t.Errorf("bob has %d messages, want %d", pg.Count, n)
		}
		for i, m := range pg.Msgs { // newest first
			if want := fmt.Sprint(n - 1 - i); m.Text != want {
				t.Fatalf("message %d is %q, want %q", i, m.Text, want)
			}
		}
		st, err := GetState(tx, bob)
		if err == nil && st.Pts != n {
			t.Errorf("bob's pts %d, want %d", st.Pts, n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// view runs fn on group g's table.
func (d *shardedDC) view(g int, fn func(tx *storage.Txn)) {
	d.t.Helper()
	if err := d.tables[g].View(func(tx *storage.Txn) error { fn(tx); return nil }); err != nil {
		d.t.Fatal(err)
	}
}

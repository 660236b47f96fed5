package e2e

import (
	"context"
	"crypto/rand"
	binenc "encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gotd/td/telegram"
	"github.com/gotd/td/tg"

	hist "github.com/mtnode/mtnode/internal/history"
	"github.com/mtnode/mtnode/internal/mtclient"
)

// chatLoad is A sending to B from one device per node, each send recorded
// in a history for the linearizability check.
type chatLoad struct {
	t    *testing.T
	d    *dcHarness
	toB  tg.InputPeerClass
	base int64 // message i goes with random_id base+i
	rec  *hist.Recorder

	next  atomic.Int64
	acks  atomic.Int64
	stop  atomic.Bool
	max   int
	mu    sync.Mutex
	acked map[int]int // i → A's message id
	tried map[int]bool
	errs  map[string]int // failure kinds, for the log
	wg    sync.WaitGroup
}

func loadText(i int) string { return "load " + strconv.Itoa(i) }

func loadIndex(text string) (int, bool) {
	s, ok := strings.CutPrefix(text, "load ")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(s)
	return i, err == nil
}

func (l *chatLoad) rid(i int) int64 { return l.base + int64(i) }

// send sends message i through api and records the outcome.
func (l *chatLoad) send(ctx context.Context, client int, api *tg.Client, i int) error {
	op := l.rec.BeginSend(client, "ab", l.rid(i))
	ctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	u, err := api.MessagesSendMessage(ctx, &tg.MessagesSendMessageRequest{
		Peer: l.toB, Message: loadText(i), RandomID: l.rid(i),
	})
	id, ok := 0, false
	if err == nil {
		if id, ok = sentID(u, l.rid(i)); !ok {
			err = fmt.Errorf("sendMessage answered %T without the message id", u)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tried[i] = true
	if err != nil {
		op.Unknown()
		l.errs[errKind(err)]++
		return err
	}
	op.Ok(id)
	if prev, dup := l.acked[i]; dup && prev != id {
		l.t.Errorf("random_id of message %d acknowledged as %d, then %d", i, prev, id)
	}
	l.acked[i] = id
	l.acks.Add(1)
	return nil
}

func errKind(err error) string {
	s := err.Error()
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// device runs one of A's devices against node k until the load stops.
func (l *chatLoad) device(k int, sessionFile string) {
	c, err := mtclient.New(mtclient.Options{
		Addr:          l.d.client[k],
		PublicKeyFile: l.d.nodes[0].PublicKey,
		SessionFile:   sessionFile,
		Telegram:      telegram.Options{},
	})
	if err != nil {
		l.t.Error(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.wg.Go(func() {
		defer cancel()
		err := c.Run(ctx, func(ctx context.Context) error {
			for !l.stop.Load() {
				i := int(l.next.Add(1) - 1)
				if i >= l.max {
					return nil
				}
				if err := l.send(ctx, k, c.API(), i); err != nil {
					// The node may be down: back off a little.
					time.Sleep(50 * time.Millisecond)
				}
				// A steady load, not a flood: the history stays small
				// enough to check.
				time.Sleep(15 * time.Millisecond)
			}
			return nil
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			l.t.Logf("device %d: %v", k, err)
		}
	})
}

// waitAcks waits until n more sends were acknowledged.
func (l *chatLoad) waitAcks(n int, what string) {
	l.t.Helper()
	target := l.acks.Load() + int64(n)
	start := time.Now()
	waitFor(l.t, 60*time.Second, func() error {
		if got := l.acks.Load(); got < target {
			return fmt.Errorf("%s: %d of %d acknowledgements", what, got, target)
		}
		return nil
	})
	l.t.Logf("%s: %d acknowledgements in %v", what, n, time.Since(start).Round(time.Millisecond))
}

// TestClusterSurvivesKills runs A's sends to B through all three nodes of
// a DC while nodes die: kill -9 of the leader, of a follower, of two nodes
// in turn with a restart between, and finally of all three at once (a
// power cut). Sends whose outcome was unknown are retried with the same
// random_id at the end. Then every acknowledged message is in both boxes
// exactly once, in acknowledged order, and the recorded history of sends
// and reads is linearizable (porcupine).
func TestClusterSurvivesKills(t *testing.T) {
	t.Parallel()
	d := newDC(t, "")
	d.form(3)
	sessions := t.TempDir()
	var sessA [3]string
	var userA *tg.User
	for k := range 3 {
		sessA[k] = filepath.Join(sessions, fmt.Sprintf("a%d.json", k))
		userA = signUp(t, d.nodes[k], sessA[k], "9996610301")
	}
	// Every send is a command on A's group first: the busiest group.
	gA := userGroup(userA.ID)
	sessB := filepath.Join(sessions, "b.json")
	b := signUp(t, d.nodes[1], sessB, "9996610302")

	var rb [8]byte
	if _, err := rand.Read(rb[:]); err != nil {
		t.Fatal(err)
	}
	l := &chatLoad{
		t: t, d: d, base: int64(binenc.LittleEndian.Uint64(rb[:])>>2) + 1,
		rec: hist.NewRecorder(hist.Options{}), max: 20000,
		acked: map[int]int{}, tried: map[int]bool{}, errs: map[string]int{},
	}
	a := newClient(t, d.nodes[0], mtclient.Intermediate, sessA[0])
	if err := runClient(a, func(ctx context.Context) (err error) {
		l.toB, err = importPhone(ctx, a.API(), b.Phone)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for k := range 3 {
		l.device(k, sessA[k])
	}
	t.Cleanup(func() { l.stop.Store(true); l.wg.Wait() })

	l.waitAcks(50, "warm-up")
	lead := d.groupLeader(gA)
	killed := time.Now()
	d.nodes[lead].kill()
	l.waitAcks(1, "first ack after killing "+d.id(lead)+", the leader of A's group")
	t.Logf("writes resumed %v after kill -9 of the leader of A's group", time.Since(killed).Round(time.Millisecond))
	newLead := d.groupLeader(gA, (lead+1)%3, (lead+2)%3)
	t.Logf("new leader of A's group %d: %s", gA, d.id(newLead))
	l.waitAcks(50, "two nodes")
	d.restart(lead)
	l.waitAcks(50, "leader back")

	follower := (d.leader() + 1) % 3
	d.nodes[follower].kill()
	l.waitAcks(50, "follower "+d.id(follower)+" down")
	d.restart(follower)
	l.waitAcks(50, "follower back")

	x := d.groupLeader(gA)
	y := (x + 2) % 3
	d.nodes[x].kill()
	l.waitAcks(30, d.id(x)+" down")
	d.restart(x)
	l.waitAcks(30, d.id(x)+" back")
	d.nodes[y].kill()
	l.waitAcks(30, d.id(y)+" down")
	d.restart(y)
	l.waitAcks(30, d.id(y)+" back")

	l.stop.Store(true)
	l.wg.Wait()

	// Power cut: every node killed at once, then all restarted.
	for _, n := range d.nodes {
		n.kill()
	}
	for i := range d.nodes {
		d.nodes[i] = d.launch(i)
	}
	for _, n := range d.nodes {
		n.waitServing(clusterStart)
	}
	d.leader()

	l.mu.Lock()
	var retry []int
	for i := range l.tried {
		if _, ok := l.acked[i]; !ok {
			retry = append(retry, i)
		}
	}
	attempted := len(l.tried)
	t.Logf("%d sends attempted, %d acknowledged, %d to retry; failures: %v", attempted, len(l.acked), len(retry), l.errs)
	l.mu.Unlock()
	slices.Sort(retry)

	a = newClient(t, d.nodes[2], mtclient.Intermediate, sessA[2])
	var histA map[int]string
	if err := runClient(a, func(ctx context.Context) (err error) {
		for _, i := range retry {
			if err := l.send(ctx, 2, a.API(), i); err != nil {
				return fmt.Errorf("retry %d: %w", i, err)
			}
		}
		op := l.rec.BeginRead(2, "ab")
		histA, err = history(ctx, a.API(), l.toB)
		if err != nil {
			op.Unknown()
			return err
		}
		var entries []hist.Entry
		for _, id := range sortedIDs(histA) {
			i, ok := loadIndex(histA[id])
			if !ok {
				return fmt.Errorf("A's history has %q", histA[id])
			}
			entries = append(entries, hist.Entry{RandomID: l.rid(i), MsgID: id})
		}
		op.ReadOk(entries)
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// A's box: every attempted send once, under its acknowledged id.
	if len(histA) != attempted {
		t.Errorf("A's history has %d messages, %d were attempted (and all acknowledged by now)", len(histA), attempted)
	}
	for i, id := range l.acked {
		if histA[id] != loadText(i) {
			t.Errorf("A's message %d, acknowledged for %q, is %q", id, loadText(i), histA[id])
		}
	}

	// B's box: the same messages once each, in A's order.
	bc := newClient(t, d.nodes[0], mtclient.Intermediate, sessB)
	if err := runClient(bc, func(ctx context.Context) error {
		histB, err := settledHistory(ctx, bc.API(), nil, attempted)
		if err != nil {
			return err
		}
		if len(histB) != attempted {
			return fmt.Errorf("B's history has %d messages, want %d", len(histB), attempted)
		}
		seen := map[int]bool{}
		last := 0
		for _, id := range sortedIDs(histB) {
			i, ok := loadIndex(histB[id])
			if !ok || seen[i] || !l.tried[i] {
				return fmt.Errorf("B's message %d is %q (duplicate or never sent)", id, histB[id])
			}
			seen[i] = true
			if l.acked[i] < last {
				return fmt.Errorf("B's order differs from A's at %q", histB[id])
			}
			last = l.acked[i]
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	res, err := l.rec.Check(2 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Ok() {
		path := filepath.Join(t.TempDir(), "history.html")
		res.WriteVisualization(path)
		t.Fatalf("history check: %s (visualization in %s)", res, path)
	}
	final := map[string][]hist.Entry{"ab": nil}
	for _, id := range sortedIDs(histA) {
		i, _ := loadIndex(histA[id])
		final["ab"] = append(final["ab"], hist.Entry{RandomID: l.rid(i), MsgID: id})
	}
	if err := l.rec.Audit(final); err != nil {
		t.Fatal(err)
	}
	t.Logf("history: %s", res)
}

func sortedIDs(m map[int]string) []int {
	ids := make([]int, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

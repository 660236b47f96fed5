package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gotd/td/telegram/auth"
	"github.com/gotd/td/tg"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mtnode/mtnode/cluster"
	"github.com/mtnode/mtnode/config"
)

// startCluster runs n clustered nodes in this process (for the race
// detector and the leak check; the e2e package runs real processes).
func startCluster(t *testing.T, n int) []*Node {
	t.Helper()
	secrets := t.TempDir()
	if _, err := cluster.Keygen(secrets, time.Now()); err != nil {
		t.Fatal(err)
	}
	var nodes []*Node
	var cfgs []*config.Config
	for i := range n {
		cfg := config.Default()
		cfg.DataDir = t.TempDir()
		cfg.ClientAddr = "127.0.0.1:0"
		cfg.HTTPAddr = "127.0.0.1:0"
		cfg.Auth.TestNumbers = "on"
		cfg.Cluster.SecretsDir = secrets
		cfg.Cluster.NodeID = fmt.Sprintf("n%d", i+1)
		cfg.Cluster.MeshAddr = "127.0.0.1:0"
		cfg.Cluster.BootstrapExpect = n
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		if testing.Verbose() {
			log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("test-node", i+1)
		}
		nd, err := New(&cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		nodes, cfgs = append(nodes, nd), append(cfgs, &cfg)
	}
	var mesh []string
	for _, nd := range nodes {
		mesh = append(mesh, nd.cl.mesh.Addr().String())
	}
	for _, cfg := range cfgs {
		cfg.Cluster.Join = strings.Join(mesh, ",")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, n)
	for _, nd := range nodes {
		go func() { done <- nd.Run(ctx) }()
	}
	t.Cleanup(func() {
		cancel()
		for range nodes {
			if err := <-done; err != nil {
				t.Errorf("node run: %v", err)
			}
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for _, nd := range nodes {
		for !nd.ready.Load() {
			if time.Now().After(deadline) {
				t.Fatal("the cluster did not form")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nodes
}

// TestClusterInProcess: three clustered nodes in one process; A on the
// first writes to B on the third, B's devices on the second and third
// get every message pushed once, through forwarding and the push bus.
// Stopping the nodes leaves no goroutine behind (TestMain's leak check).
func TestClusterInProcess(t *testing.T) {
	nodes := startCluster(t, 3)
	// A sits on a node that does not lead the data group and holds none of
	// B's sessions: the push bus must send it none of B's updates.
	lead := -1
	for i, n := range nodes {
		if n.cl.group.IsLeader() {
			lead = i
		}
	}
	if lead < 0 {
		t.Fatal("no leader")
	}
	x := (lead + 1) % 3
	a := newDevice(t, nodes[x], "a")
	a.start(t, auth.TestUser("9996610701", 1))
	b := newDevice(t, nodes[(x+1)%3], "b")
	b.start(t, auth.TestUser("9996610702", 1))
	b2 := newDevice(t, nodes[(x+2)%3], "b2")
	b2.start(t, auth.TestUser("9996610702", 1))

	ctx := ctxT(t)
	imp, err := a.api.ContactsImportContacts(ctx, []tg.InputPhoneContact{{ClientID: 1, Phone: b.self.Phone, FirstName: "B"}})
	if err != nil {
		t.Fatal(err)
	}
	var peer *tg.InputPeerUser
	for _, u := range imp.Users {
		if u, ok := u.(*tg.User); ok && u.ID == b.self.ID {
			peer = inputPeer(u)
		}
	}
	if peer == nil {
		t.Fatal("B not imported")
	}
	const total = 10
	for i := range total {
		if _, err := a.api.MessagesSendMessage(ctx, &tg.MessagesSendMessageRequest{
			Peer: peer, Message: fmt.Sprintf("m%d", i), RandomID: int64(500 + i),
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []*device{b, b2} {
		waitFor(t, d.name+"'s messages", func() bool {
			defer d.seen.lock()()
			return len(d.seen.msgs) >= total
		})
		d.seen.mu.Lock()
		for i, m := range d.seen.msgs {
			if i >= total || m.Message != fmt.Sprintf("m%d", i) {
				t.Errorf("%s got %q as message %d", d.name, m.Message, i)
			}
		}
		d.seen.mu.Unlock()
	}
	if st := nodes[1].cl.status(); len(st.Group.Voters) != 3 || st.Group.Leader == "" {
		t.Fatalf("status: %+v", st.Group)
	}
	if !nodes[lead].cl.group.IsLeader() {
		t.Skip("leadership moved during the test; the subscription check needs a stable leader")
	}
	if got := testutil.ToFloat64(nodes[x].cl.metrics.pushFrames.WithLabelValues("received")); got != 0 {
		t.Errorf("A's node received %v update frames; it holds no session they are for", got)
	}
	var received float64
	for _, i := range []int{(x + 1) % 3, (x + 2) % 3} {
		received += testutil.ToFloat64(nodes[i].cl.metrics.pushFrames.WithLabelValues("received"))
	}
	if received == 0 && lead == x {
		t.Error("no update frame crossed the push bus")
	}
}

// TestFollowerReadsInProcess: A's devices on every node read A's history
// right after each send acknowledged through another node. Calls on a
// node that follows A's group are served there after a read index, and
// still see every acknowledged send.
func TestFollowerReadsInProcess(t *testing.T) {
	nodes := startCluster(t, 3)
	a := newDevice(t, nodes[0], "a")
	a.start(t, auth.TestUser("9996610711", 1))
	b := newDevice(t, nodes[1], "b")
	b.start(t, auth.TestUser("9996610712", 1))
	var readers []*device
	for i, n := range nodes {
		d := newDevice(t, n, fmt.Sprint("a", i))
		d.start(t, auth.TestUser("9996610711", 1))
		readers = append(readers, d)
	}
	ctx := ctxT(t)
	imp, err := a.api.ContactsImportContacts(ctx, []tg.InputPhoneContact{{ClientID: 1, Phone: b.self.Phone, FirstName: "B"}})
	if err != nil || len(imp.Users) != 1 {
		t.Fatalf("import: %v", err)
	}
	peer := inputPeer(imp.Users[0].(*tg.User))
	local := func() (n float64) {
		for _, nd := range nodes {
			n += testutil.ToFloat64(nd.cl.metrics.followerReads.WithLabelValues("local"))
		}
		return n
	}
	before := local()
	for i := range 5 {
		text := fmt.Sprint("f", i)
		if _, err := a.api.MessagesSendMessage(ctx, &tg.MessagesSendMessageRequest{Peer: peer, Message: text, RandomID: int64(700 + i)}); err != nil {
			t.Fatal(err)
		}
		for _, d := range readers {
			h, err := d.api.MessagesGetHistory(ctx, &tg.MessagesGetHistoryRequest{Peer: peer, Limit: 10})
			if err != nil {
				t.Fatalf("%s: %v", d.name, err)
			}
			msgs := h.(*tg.MessagesMessages).Messages
			if len(msgs) != i+1 || msgs[0].(*tg.Message).Message != text {
				t.Fatalf("%s read %d messages right after send %d was acknowledged", d.name, len(msgs), i+1)
			}
		}
	}
	// Two of the three nodes follow A's group: their reads were theirs.
	if got := local() - before; got < 5 {
		t.Errorf("%v history reads served by followers, want at least 5", got)
	}
}

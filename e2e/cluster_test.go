package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gotd/td/tg"

	"github.com/mtnode/mtnode/cluster"
	"github.com/mtnode/mtnode/internal/freeport"
	"github.com/mtnode/mtnode/internal/mtclient"
	mtnode "github.com/mtnode/mtnode/node"
)

// clusterStart bounds how long a forming or restarting DC may take to
// serve: gossip, an election and, on first start, the RSA key.
const clusterStart = 60 * time.Second

// dcHarness is one data center of real mtnode processes on loopback. Each
// node keeps its ports across restarts, so clients reconnect to it.
type dcHarness struct {
	t       *testing.T
	secrets string
	config  string
	// prefix starts every node ID (node IDs are unique federation-wide);
	// extra is appended to every start's arguments.
	prefix string
	extra  []string
	wrap   [][]string // per node: command prefix (network namespace)
	dirs   []string
	mesh   []string
	client []string
	http   []string
	nodes  []*node
}

// freeAddr returns a loopback address for a node, free now and outside
// the ports outgoing connections take (see package freeport).
func freeAddr(t *testing.T, network string) string {
	t.Helper()
	addr, err := freeport.Addr(network)
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// newDC makes cluster secrets with mtnode keygen and a config file with
// toml (appended to the [cluster] table), without starting anything.
func newDC(t *testing.T, toml string) *dcHarness {
	t.Helper()
	secrets := filepath.Join(t.TempDir(), "secrets")
	if r := runCmd(t, 30*time.Second, "keygen", "--out", secrets); r.code != 0 {
		t.Fatalf("mtnode keygen: %s", r)
	}
	return newDCWith(t, secrets, toml)
}

// newDCWith is newDC with the cluster secrets of secrets, made before
// (the DCs of a federation share them).
func newDCWith(t *testing.T, secrets, toml string) *dcHarness {
	t.Helper()
	d := &dcHarness{t: t, secrets: secrets}
	d.config = filepath.Join(t.TempDir(), "mtnode.toml")
	doc := fmt.Sprintf("[auth]\ntest_numbers = \"on\"\n[cluster]\nsecrets_dir = %q\n%s", d.secrets, toml)
	if err := os.WriteFile(d.config, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

// add allocates node i's directory and loopback ports.
func (d *dcHarness) add() int {
	return d.addAt(nil, freeAddr(d.t, "udp"), freeAddr(d.t, "tcp"), freeAddr(d.t, "tcp"))
}

// addAt allocates node i with the given addresses, run under wrap.
func (d *dcHarness) addAt(wrap []string, mesh, client, http string) int {
	d.wrap = append(d.wrap, wrap)
	d.dirs = append(d.dirs, d.t.TempDir())
	d.mesh = append(d.mesh, mesh)
	d.client = append(d.client, client)
	d.http = append(d.http, http)
	d.nodes = append(d.nodes, nil)
	return len(d.dirs) - 1
}

func (d *dcHarness) launch(i int, extra ...string) *node {
	return launchNodeIn(d.t, d.wrap[i], d.dirs[i], d.args(i, extra...)...)
}

func (d *dcHarness) id(i int) string { return fmt.Sprintf("%sn%d", d.prefix, i+1) }

func (d *dcHarness) args(i int, extra ...string) []string {
	return append([]string{
		"--config", d.config,
		"--node-id", d.id(i),
		"--mesh-addr", d.mesh[i],
		"--client-addr", d.client[i],
		"--http-addr", d.http[i],
	}, append(slices.Clone(d.extra), extra...)...)
}

// form starts n fresh nodes with --bootstrap-expect n, each told to join
// all the others, and waits until all serve. Nodes not allocated yet get
// loopback addresses.
func (d *dcHarness) form(n int) {
	d.t.Helper()
	for len(d.dirs) < n {
		d.add()
	}
	for i := range n {
		d.nodes[i] = d.launch(i,
			"--bootstrap-expect", fmt.Sprint(n),
			"--join", strings.Join(d.mesh[:n], ","))
	}
	for i := range n {
		d.nodes[i].waitServing(clusterStart)
	}
}

// join starts a new node that joins through node 0.
func (d *dcHarness) join() int {
	d.t.Helper()
	i := d.add()
	d.nodes[i] = d.launch(i, "--join", d.mesh[0])
	d.nodes[i].waitServing(clusterStart)
	return i
}

// restart starts node i again on its directory and ports, with no --join:
// it finds its peers in its own raft state.
func (d *dcHarness) restart(i int) {
	d.t.Helper()
	d.nodes[i] = d.launch(i)
	d.nodes[i].waitServing(clusterStart)
}

// status reads node i's /cluster/status about itself.
func (d *dcHarness) status(i int) (mtnode.ClusterStatus, error) {
	return d.getStatus(i, "/cluster/status?members=0")
}

// statusFull reads node i's /cluster/status with every member.
func (d *dcHarness) statusFull(i int) (mtnode.ClusterStatus, error) {
	return d.getStatus(i, "/cluster/status")
}

func (d *dcHarness) getStatus(i int, path string) (mtnode.ClusterStatus, error) {
	var st mtnode.ClusterStatus
	code, body, err := httpGet(d.nodes[i], path)
	if err != nil {
		return st, err
	}
	if code != 200 {
		return st, fmt.Errorf("%s: %d %s", path, code, body)
	}
	return st, json.Unmarshal([]byte(body), &st)
}

// leader waits until the live nodes agree on a leader of the metadata
// group (group 0) and returns its index.
func (d *dcHarness) leader(live ...int) int {
	d.t.Helper()
	return d.groupLeader(0, live...)
}

// groupLeader waits until the live nodes agree on a leader of group g and
// returns its index.
//
// userGroup is the group holding user uid's box in a DC of the default
// shard count.
func userGroup(uid int64) int { return 2 + int(cluster.ShardOf(uid, cluster.DefaultShards)) }

func (d *dcHarness) groupLeader(g int, live ...int) int {
	d.t.Helper()
	if len(live) == 0 {
		for i := range d.nodes {
			live = append(live, i)
		}
	}
	idx := -1
	waitFor(d.t, clusterStart, func() error {
		var lead string
		for _, i := range live {
			st, err := d.status(i)
			if err != nil {
				return err
			}
			if g >= len(st.Self.Groups) {
				return fmt.Errorf("node %s reports %d groups", d.id(i), len(st.Self.Groups))
			}
			gs := st.Self.Groups[g]
			if gs.Leader == "" || (lead != "" && gs.Leader != lead) {
				return fmt.Errorf("node %s sees leader %q of group %d, others %q", d.id(i), gs.Leader, g, lead)
			}
			lead = gs.Leader
		}
		for i := range d.nodes {
			if d.id(i) == lead {
				idx = i
				return nil
			}
		}
		return fmt.Errorf("leader %q is no node of the test", lead)
	})
	return idx
}

// voters is the data group's voters as its leader reports them (a node
// removed from the group no longer hears of changes: its own view is
// stale).
func (d *dcHarness) voters() ([]string, error) {
	for i, n := range d.nodes {
		select {
		case <-n.done:
			continue // not running
		default:
		}
		st, err := d.status(i)
		if err != nil || st.Self.Group.State != "Leader" {
			continue
		}
		v := slices.Clone(st.Self.Group.Voters)
		slices.Sort(v)
		return v, nil
	}
	return nil, errors.New("no node leads the data group")
}

// TestClusterFormsAndChats forms a 3-node DC with --bootstrap-expect 3.
// Every node presents the same server key; users connected to different
// nodes chat, pushes reach a device on a third node, and every client sees
// the same history. mtnode status reports the three voters and a leader.
func TestClusterFormsAndChats(t *testing.T) {
	t.Parallel()
	d := newDC(t, "")
	d.form(3)
	n0, n1, n2 := d.nodes[0], d.nodes[1], d.nodes[2]
	for _, n := range d.nodes[1:] {
		if n.Fingerprint != n0.Fingerprint {
			t.Fatalf("node %s presents key %s, node %s %s", n.NodeID, n.Fingerprint, n0.NodeID, n0.Fingerprint)
		}
	}

	sessions := t.TempDir()
	sessA, sessB, sessB2 := filepath.Join(sessions, "a.json"), filepath.Join(sessions, "b.json"), filepath.Join(sessions, "b2.json")
	signUp(t, n0, sessA, "9996610201")
	b := signUp(t, n2, sessB, "9996610202")
	signUp(t, n1, sessB2, b.Phone)
	online := startOnline(t, n1, sessB2, b.ID)

	const total = 30
	a := newClient(t, n0, mtclient.Intermediate, sessA)
	if err := runClient(a, func(ctx context.Context) error {
		toB, err := importPhone(ctx, a.API(), b.Phone)
		if err != nil {
			return err
		}
		for i := range total {
			if _, err := a.API().MessagesSendMessage(ctx, &tg.MessagesSendMessageRequest{
				Peer: toB, Message: crashText(i), RandomID: int64(1000 + i),
			}); err != nil {
				return fmt.Errorf("send %d: %w", i, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// B reads through the third node: all, once, in order.
	bc := newClient(t, n2, mtclient.Intermediate, sessB)
	if err := runClient(bc, func(ctx context.Context) error {
		hist, err := settledHistory(ctx, bc.API(), nil, total)
		if err != nil {
			return err
		}
		if err := exactlyOnce("B's history", hist, total); err != nil {
			return err
		}
		return inOrder("B's history", hist)
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, callTimeout, func() error { return online.complete(total) })
	online.stop(t)

	r := runCmd(t, 20*time.Second, "status", "--http", n1.HTTPAddr, "--json")
	if r.code != 0 {
		t.Fatalf("mtnode status: %s", r)
	}
	var st mtnode.ClusterStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("mtnode status --json: %v\n%s", err, r.stdout)
	}
	if len(st.Members) != 3 || len(st.Self.Group.Voters) != 3 || st.Self.Group.Leader == "" {
		t.Fatalf("status: %d members, voters %v, leader %q", len(st.Members), st.Self.Group.Voters, st.Self.Group.Leader)
	}
	for _, m := range st.Members {
		if m.Status == nil {
			t.Fatalf("status: member %s unreachable: %s", m.ID, m.Error)
		}
	}
	if r := runCmd(t, 20*time.Second, "status", "--http", n1.HTTPAddr); r.code != 0 || !strings.Contains(r.stdout, "leader") {
		t.Fatalf("mtnode status: %s", r)
	}

	// Leadership of the DC's groups (metadata, directory and 16 shards)
	// spreads: the autopilot hands each group to its preferred
	// leader, which cluster.Place balances.
	var ms []cluster.Member
	for i := range d.nodes {
		ms = append(ms, cluster.Member{ID: cluster.NodeID(d.id(i))})
	}
	want := make([]int, len(d.nodes))
	groups := 2 + cluster.DefaultShards // metadata, directory, shards
	for _, sh := range cluster.Place(groups, ms, 3).Shards {
		want[int(sh.Leader[1]-'1')]++
	}
	waitFor(t, 90*time.Second, func() error {
		var leads []int
		for i := range d.nodes {
			st, err := d.status(i)
			if err != nil {
				return err
			}
			if len(st.Self.Groups) != groups {
				return fmt.Errorf("%s has %d groups, want %d", d.id(i), len(st.Self.Groups), groups)
			}
			leads = append(leads, st.Self.Leads)
		}
		if !slices.Equal(leads, want) {
			return fmt.Errorf("groups led per node: %v, placement prefers %v", leads, want)
		}
		return nil
	})
}

// inOrder checks that message ids order the texts as they were sent.
func inOrder(what string, hist map[int]string) error {
	ids := make([]int, 0, len(hist))
	for id := range hist {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for k, id := range ids {
		if hist[id] != crashText(k) {
			return fmt.Errorf("%s: message %d is %q, want %q", what, id, hist[id], crashText(k))
		}
	}
	return nil
}

// targetVoters is where cluster.Place puts the data group's voters among
// ids.
func targetVoters(ids []string, rf int) []string {
	var ms []cluster.Member
	for _, id := range ids {
		ms = append(ms, cluster.Member{ID: cluster.NodeID(id)})
	}
	var out []string
	for _, v := range cluster.Place(1, ms, rf).Shards[0].Voters {
		out = append(out, string(v))
	}
	slices.Sort(out)
	return out
}

// sendN has A (on node from) send texts loadText(first..first+n-1) to B.
func sendN(t *testing.T, from *node, sessA, phoneB string, first, n int) {
	t.Helper()
	a := newClient(t, from, mtclient.Intermediate, sessA)
	if err := runClient(a, func(ctx context.Context) error {
		toB, err := importPhone(ctx, a.API(), phoneB)
		if err != nil {
			return err
		}
		for i := first; i < first+n; i++ {
			if _, err := a.API().MessagesSendMessage(ctx, &tg.MessagesSendMessageRequest{
				Peer: toB, Message: loadText(i), RandomID: int64(7000 + i),
			}); err != nil {
				return fmt.Errorf("send %d: %w", i, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// checkBox has B (on node at) read the chat and find loadText(0..total-1),
// each once, in order.
// deliverySettle bounds how long a recipient's box may trail the sender's
// acknowledgements: a message reaches it through the sender group's
// outbox, milliseconds later, or once the pump runs again after a restart.
const deliverySettle = 15 * time.Second

// settledHistory reads a history (as history does) until it holds at
// least want messages or deliverySettle has passed, and returns the last
// read, or its error; the caller checks it.
func settledHistory(ctx context.Context, api *tg.Client, peer tg.InputPeerClass, want int) (map[int]string, error) {
	deadline := time.Now().Add(deliverySettle)
	for {
		h, err := history(ctx, api, peer)
		if (err == nil && len(h) >= want) || time.Now().After(deadline) {
			return h, err
		}
		select {
		case <-ctx.Done():
			return h, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func checkBox(t *testing.T, at *node, sessB string, total int) {
	t.Helper()
	bc := newClient(t, at, mtclient.Intermediate, sessB)
	if err := runClient(bc, func(ctx context.Context) error {
		h, err := settledHistory(ctx, bc.API(), nil, total)
		if err != nil {
			return err
		}
		if len(h) != total {
			return fmt.Errorf("B's history on %s has %d messages, want %d", at.NodeID, len(h), total)
		}
		for k, id := range sortedIDs(h) {
			if h[id] != loadText(k) {
				return fmt.Errorf("B's message %d on %s is %q, want %q", id, at.NodeID, h[id], loadText(k))
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestClusterGrowsAndShrinks adds a 4th and a 5th node to a 3-node DC.
// Placement then wants the data group's voters on n2, n4 and n5: the
// autopilot stages the new nodes, which are seeded by snapshot (the test
// keeps only 64 log entries), promotes them and removes n1 and n3. The new
// nodes serve clients. Then n5 leaves with mtnode leave: its replica moves
// back to n3 before it goes, and nothing is lost.
func TestClusterGrowsAndShrinks(t *testing.T) {
	t.Parallel()
	d := newDC(t, "snapshot_entries = 64\nsnapshot_interval = \"1s\"\n")
	d.form(3)
	sessions := t.TempDir()
	sessA, sessB := filepath.Join(sessions, "a.json"), filepath.Join(sessions, "b.json")
	signUp(t, d.nodes[0], sessA, "9996610401")
	b := signUp(t, d.nodes[1], sessB, "9996610402")
	sendN(t, d.nodes[0], sessA, b.Phone, 0, 150)
	// Wait for the replicas' snapshots, which truncate their logs: a new
	// replica can then only be seeded by a snapshot.
	waitFor(t, 30*time.Second, func() error {
		for _, n := range d.nodes {
			m, err := scrape(n)
			if err != nil {
				return err
			}
			if v, _ := m.get("mtnode_raft_snapshot_bytes", nil); v == 0 {
				return fmt.Errorf("%s has no snapshot yet", n.NodeID)
			}
		}
		return nil
	})

	d.join()
	d.join()
	ids := []string{"n1", "n2", "n3", "n4", "n5"}
	want := targetVoters(ids, 3)
	waitFor(t, 90*time.Second, func() error {
		v, err := d.voters()
		if err != nil {
			return err
		}
		if !slices.Equal(v, want) {
			return fmt.Errorf("voters %v, want %v", v, want)
		}
		return nil
	})
	for _, i := range []int{3, 4} {
		if !strings.Contains(d.nodes[i].out.String(), "Installed remote snapshot") {
			t.Errorf("%s did not install a snapshot", d.id(i))
		}
	}
	sendN(t, d.nodes[3], sessA, b.Phone, 150, 20)
	checkBox(t, d.nodes[4], sessB, 170)

	// n5 leaves gracefully; its replica goes back to n3 first.
	leaving := 4
	r := runCmd(t, 3*time.Minute, "leave", "--http", d.nodes[leaving].HTTPAddr)
	if r.code != 0 {
		t.Fatalf("mtnode leave: %s", r)
	}
	select {
	case <-d.nodes[leaving].done:
		if !d.nodes[leaving].state.Success() {
			t.Fatalf("left node exited with %s", d.nodes[leaving].exitString())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("left node did not exit")
	}
	want = targetVoters(ids[:4], 3)
	waitFor(t, 90*time.Second, func() error {
		v, err := d.voters()
		if err != nil {
			return err
		}
		if !slices.Equal(v, want) {
			return fmt.Errorf("voters %v, want %v after n5 left", v, want)
		}
		return nil
	})
	sendN(t, d.nodes[0], sessA, b.Phone, 170, 10)
	checkBox(t, d.nodes[2], sessB, 180)
}

// TestClusterNodeMovesAddress restarts a follower on a new mesh address.
// Its node ID is stored in its data directory, so it is the same member:
// the leader rewrites its raft address, and the DC keeps three voters and
// serves through the moved node.
func TestClusterNodeMovesAddress(t *testing.T) {
	t.Parallel()
	d := newDC(t, "")
	d.form(3)
	moved := (d.leader() + 1) % 3
	d.nodes[moved].stop(syscall.SIGTERM, 20*time.Second)
	d.mesh[moved] = freeAddr(t, "udp")
	d.nodes[moved] = d.launch(moved, "--join", d.mesh[(moved+1)%3])
	d.nodes[moved].waitServing(clusterStart)
	want := cluster.RaftAddress(cluster.NodeID(d.id(moved)), d.mesh[moved])
	waitFor(t, 30*time.Second, func() error {
		ls, err := d.statusFull(d.leader())
		if err != nil {
			return err
		}
		for _, m := range ls.Members {
			if m.ID == d.id(moved) && m.MeshAddr != d.mesh[moved] {
				return fmt.Errorf("gossip has %s at %s", m.ID, m.MeshAddr)
			}
		}
		return nil
	})
	sessions := t.TempDir()
	sessA, sessB := filepath.Join(sessions, "a.json"), filepath.Join(sessions, "b.json")
	signUp(t, d.nodes[moved], sessA, "9996610601")
	b := signUp(t, d.nodes[(moved+1)%3], sessB, "9996610602")
	sendN(t, d.nodes[moved], sessA, b.Phone, 0, 5)
	checkBox(t, d.nodes[moved], sessB, 5)
	waitFor(t, 30*time.Second, func() error {
		l := d.leader()
		if !strings.Contains(d.nodes[l].out.String(), string(want)) {
			return fmt.Errorf("leader %s has not rewritten the address to %s", d.id(l), want)
		}
		v, err := d.voters()
		if err != nil {
			return err
		}
		if len(v) != 3 {
			return fmt.Errorf("voters %v", v)
		}
		return nil
	})
}

// TestClusterRetryJoinAndSafeRestart starts two nodes of a DC whose config
// lists every member under retry_join, and the third only later: they keep
// trying and form the DC once it is up. A node restarted with the same
// flags, --bootstrap-expect included, rejoins the DC it belongs to rather
// than forming a new one, and its data is intact.
func TestClusterRetryJoinAndSafeRestart(t *testing.T) {
	t.Parallel()
	d := newDC(t, "")
	for range 3 {
		d.add()
	}
	doc, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	doc = append(doc, fmt.Sprintf("retry_join = %q\n", strings.Join(d.mesh, ","))...)
	if err := os.WriteFile(d.config, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--bootstrap-expect", "3"}
	d.nodes[0] = d.launch(0, flags...)
	d.nodes[1] = d.launch(1, flags...)
	time.Sleep(3 * time.Second) // the first two retry meanwhile
	d.nodes[2] = d.launch(2, flags...)
	for _, n := range d.nodes {
		n.waitServing(clusterStart)
	}
	sessions := t.TempDir()
	sessA, sessB := filepath.Join(sessions, "a.json"), filepath.Join(sessions, "b.json")
	signUp(t, d.nodes[0], sessA, "9996610801")
	b := signUp(t, d.nodes[2], sessB, "9996610802")
	sendN(t, d.nodes[0], sessA, b.Phone, 0, 3)

	d.nodes[1].stop(syscall.SIGTERM, 20*time.Second)
	d.nodes[1] = d.launch(1, flags...)
	d.nodes[1].waitServing(clusterStart)
	if strings.Contains(d.nodes[1].out.String(), "bootstrapped a new data center") {
		t.Fatal("the restarted node bootstrapped a new data center")
	}
	waitFor(t, 30*time.Second, func() error {
		v, err := d.voters()
		if err != nil {
			return err
		}
		if len(v) != 3 {
			return fmt.Errorf("voters %v", v)
		}
		return nil
	})
	checkBox(t, d.nodes[1], sessB, 3)
	// The gauges are refreshed every second.
	waitFor(t, 10*time.Second, func() error {
		m, err := scrape(d.nodes[0])
		if err != nil {
			return err
		}
		for _, name := range []string{"mtnode_raft_applied_index", "mtnode_gossip_members", "mtnode_raft_groups_led"} {
			if _, ok := m.get(name, nil); !ok {
				return fmt.Errorf("metric %s missing", name)
			}
		}
		if v, _ := m.get("mtnode_gossip_members", nil); v != 3 {
			return fmt.Errorf("mtnode_gossip_members = %v, want 3", v)
		}
		return nil
	})
}

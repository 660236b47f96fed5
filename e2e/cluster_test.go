package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gotd/td/tg"

	"github.com/mtnode/mtnode/cluster"
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
	dirs    []string
	mesh    []string
	client  []string
	http    []string
	nodes   []*node
}

// freeAddr returns a loopback address with a port that was free a moment
// ago on network ("tcp" or "udp").
func freeAddr(t *testing.T, network string) string {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// newDC makes cluster secrets with mtnode keygen and a config file with
// toml (appended to the [cluster] table), without starting anything.
func newDC(t *testing.T, toml string) *dcHarness {
	t.Helper()
	d := &dcHarness{t: t, secrets: filepath.Join(t.TempDir(), "secrets")}
	if r := runCmd(t, 30*time.Second, "keygen", "--out", d.secrets); r.code != 0 {
		t.Fatalf("mtnode keygen: %s", r)
	}
	d.config = filepath.Join(t.TempDir(), "mtnode.toml")
	doc := fmt.Sprintf("[cluster]\nsecrets_dir = %q\n%s", d.secrets, toml)
	if err := os.WriteFile(d.config, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

// add allocates node i's directory and ports.
func (d *dcHarness) add() int {
	d.dirs = append(d.dirs, d.t.TempDir())
	d.mesh = append(d.mesh, freeAddr(d.t, "udp"))
	d.client = append(d.client, freeAddr(d.t, "tcp"))
	d.http = append(d.http, freeAddr(d.t, "tcp"))
	d.nodes = append(d.nodes, nil)
	return len(d.dirs) - 1
}

func (d *dcHarness) id(i int) string { return fmt.Sprintf("n%d", i+1) }

func (d *dcHarness) args(i int, extra ...string) []string {
	return append([]string{
		"--config", d.config,
		"--node-id", d.id(i),
		"--mesh-addr", d.mesh[i],
		"--client-addr", d.client[i],
		"--http-addr", d.http[i],
	}, extra...)
}

// form starts n fresh nodes with --bootstrap-expect n, each told to join
// all the others, and waits until all serve.
func (d *dcHarness) form(n int) {
	d.t.Helper()
	for range n {
		d.add()
	}
	for i := range n {
		d.nodes[i] = launchNode(d.t, d.dirs[i], d.args(i,
			"--bootstrap-expect", fmt.Sprint(n),
			"--join", strings.Join(d.mesh[:n], ","))...)
	}
	for i := range n {
		d.nodes[i].waitServing(clusterStart)
	}
}

// join starts a new node that joins through node 0.
func (d *dcHarness) join() int {
	d.t.Helper()
	i := d.add()
	d.nodes[i] = launchNode(d.t, d.dirs[i], d.args(i, "--join", d.mesh[0])...)
	d.nodes[i].waitServing(clusterStart)
	return i
}

// restart starts node i again on its directory and ports, with no --join:
// it finds its peers in its own raft state.
func (d *dcHarness) restart(i int) {
	d.t.Helper()
	d.nodes[i] = launchNode(d.t, d.dirs[i], d.args(i)...)
	d.nodes[i].waitServing(clusterStart)
}

// status reads node i's /cluster/status about itself.
func (d *dcHarness) status(i int) (mtnode.ClusterStatus, error) {
	var st mtnode.ClusterStatus
	code, body, err := httpGet(d.nodes[i], "/cluster/status?members=0")
	if err != nil {
		return st, err
	}
	if code != 200 {
		return st, fmt.Errorf("/cluster/status: %d %s", code, body)
	}
	return st, json.Unmarshal([]byte(body), &st)
}

// leader waits until the live nodes agree on a leader and returns its
// index.
func (d *dcHarness) leader(live ...int) int {
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
			if st.Self.Group.Leader == "" || (lead != "" && st.Self.Group.Leader != lead) {
				return fmt.Errorf("node %s sees leader %q, others %q", d.id(i), st.Self.Group.Leader, lead)
			}
			lead = st.Self.Group.Leader
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

// voters is the data group's voters as node i reports them.
func (d *dcHarness) voters(i int) ([]string, error) {
	st, err := d.status(i)
	if err != nil {
		return nil, err
	}
	v := slices.Clone(st.Self.Group.Voters)
	slices.Sort(v)
	return v, nil
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
		hist, err := history(ctx, bc.API(), nil)
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

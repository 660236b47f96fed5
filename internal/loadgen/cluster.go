package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mtnode/mtnode/cluster"
	"github.com/mtnode/mtnode/internal/freeport"
)

// childCluster is a data center of n child nodes on loopback: secrets made
// with cluster.Keygen, one data dir and fixed ports per node (so a killed
// node restarts where its peers and clients look for it), formed with
// --bootstrap-expect n and every node told to --join all mesh addresses.
// With a dcSpec it is one DC of a federation (see federation.go).
type childCluster struct {
	bin   string
	procs int
	root  string // temp dir: secrets (unless shared) and every node's data
	spec  dcSpec
	log   *slog.Logger
	httpc *http.Client

	mesh, client, http []string
	nodes              []*child // nodes[i] is nil while node i is down
}

// dcSpec places a child DC in a federation of several; the zero value is
// a DC on its own (DC 1, its own secrets, node ids n1, n2, ...).
type dcSpec struct {
	// dc is the DC id (--dc); 0 leaves the node's default. Set, it also
	// prefixes node ids (d2n1), which must be unique federation-wide.
	dc int
	// secrets is a secrets dir shared by the federation's DCs (one CA, one
	// gossip key, one server key), made by the caller; empty makes the
	// DC's own in its temp dir.
	secrets string
	// joinWAN is "id@mesh-addr" of a node of another DC (--join-wan).
	joinWAN string
	// env is added to every node's environment: MTNODE_* settings that
	// have no flag, such as cluster.fault_injection.
	env []string
}

// clusterStartTimeout bounds forming the DC or restarting one node:
// gossip, an election and, on first start, the RSA server key.
const clusterStartTimeout = 90 * time.Second

// startCluster forms an n-node DC and returns once every node serves.
func startCluster(ctx context.Context, bin string, procs, n int, log *slog.Logger) (*childCluster, error) {
	return startDC(ctx, bin, procs, n, dcSpec{}, log)
}

// startDC forms an n-node DC placed by spec and returns once every node
// serves.
func startDC(ctx context.Context, bin string, procs, n int, spec dcSpec, log *slog.Logger) (cl *childCluster, err error) {
	root, err := os.MkdirTemp("", "mtnode-bench-cluster-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	c0 := &childCluster{bin: bin, procs: procs, root: root, spec: spec, log: log,
		httpc: &http.Client{Timeout: 2 * time.Second}}
	cl = c0
	defer func() {
		if err != nil {
			c0.Close()
		}
	}()
	if spec.secrets == "" {
		if _, err := cluster.Keygen(cl.secrets(), time.Now()); err != nil {
			return nil, fmt.Errorf("cluster keygen: %w", err)
		}
	}
	for range n {
		m, err := freeAddr("udp")
		if err != nil {
			return nil, err
		}
		c, err := freeAddr("tcp")
		if err != nil {
			return nil, err
		}
		h, err := freeAddr("tcp")
		if err != nil {
			return nil, err
		}
		cl.mesh, cl.client, cl.http = append(cl.mesh, m), append(cl.client, c), append(cl.http, h)
	}
	cl.nodes = make([]*child, n)
	for i := range n {
		args := append(cl.args(i), "--bootstrap-expect", fmt.Sprint(n), "--join", strings.Join(cl.mesh, ","))
		if cl.nodes[i], err = spawnChild(bin, procs, spec.env, args); err != nil {
			return nil, err
		}
	}
	for i, c := range cl.nodes {
		if err := c.waitServing(ctx, clusterStartTimeout); err != nil {
			cl.nodes[i] = nil
			return nil, fmt.Errorf("node %s: %w", cl.id(i), err)
		}
	}
	return cl, nil
}

func (cl *childCluster) secrets() string {
	if cl.spec.secrets != "" {
		return cl.spec.secrets
	}
	return filepath.Join(cl.root, "secrets")
}

func (cl *childCluster) id(i int) string {
	if cl.spec.dc > 0 {
		return fmt.Sprintf("d%dn%d", cl.spec.dc, i+1)
	}
	return fmt.Sprintf("n%d", i+1)
}

func (cl *childCluster) dataDir(i int) string {
	return filepath.Join(cl.root, cl.id(i))
}

// args are node i's flags; forming adds --bootstrap-expect and --join, a
// restart finds its peers in its own raft state.
func (cl *childCluster) args(i int) []string {
	args := []string{"run",
		"--data-dir", cl.dataDir(i),
		"--cluster", cl.secrets(),
		"--node-id", cl.id(i),
		"--mesh-addr", cl.mesh[i],
		"--client-addr", cl.client[i],
		"--http-addr", cl.http[i],
		"--log-format", "json",
		"--log-level", "info",
	}
	if cl.spec.dc > 0 {
		args = append(args, "--dc", fmt.Sprint(cl.spec.dc))
	}
	if cl.spec.joinWAN != "" {
		args = append(args, "--join-wan", cl.spec.joinWAN)
	}
	return args
}

// kill ends node i with SIGKILL and waits until the process is gone.
func (cl *childCluster) kill(i int) {
	if c := cl.nodes[i]; c != nil {
		c.kill()
		_ = c.Close() // reports the early exit, which is the point
		cl.nodes[i] = nil
	}
}

// restart starts node i again on its data dir and ports, told to --join
// the others' mesh addresses (as an operator restarting it would), and
// waits until it serves.
func (cl *childCluster) restart(ctx context.Context, i int) error {
	if cl.nodes[i] != nil {
		return fmt.Errorf("node %s is running", cl.id(i))
	}
	var peers []string
	for k, m := range cl.mesh {
		if k != i {
			peers = append(peers, m)
		}
	}
	c, err := spawnChild(cl.bin, cl.procs, cl.spec.env, append(cl.args(i), "--join", strings.Join(peers, ",")))
	if err != nil {
		return err
	}
	if err := c.waitServing(ctx, clusterStartTimeout); err != nil {
		return fmt.Errorf("restart node %s: %w", cl.id(i), err)
	}
	cl.nodes[i] = c
	return nil
}

// groupStatus is the part of GET /cluster/status?members=0 read here.
type groupStatus struct {
	Self struct {
		ID string `json:"id"`
		// Groups is every raft group as this node sees it, index = group
		// number (0 the metadata group, 1 the directory, 2.. the users' boxes).
		Groups []raftGroupStatus `json:"groups"`
		// Leads counts the groups this node leads.
		Leads int `json:"leads"`
	} `json:"self"`
}

// raftGroupStatus is one raft group as one node sees it.
type raftGroupStatus struct {
	Shard        uint32   `json:"shard"`
	State        string   `json:"state"`
	Leader       string   `json:"leader"`
	Voters       []string `json:"voters"`
	AppliedIndex uint64   `json:"applied_index"`
	CommitIndex  uint64   `json:"commit_index"`
}

// led are the groups the node leads, by number.
func (st *groupStatus) led() []int {
	var gs []int
	for g, x := range st.Self.Groups {
		if x.State == "Leader" {
			gs = append(gs, g)
		}
	}
	return gs
}

// status reads node i's view of itself.
func (cl *childCluster) status(ctx context.Context, i int) (groupStatus, error) {
	var st groupStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+cl.http[i]+"/cluster/status?members=0", nil)
	if err != nil {
		return st, err
	}
	resp, err := cl.httpc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("/cluster/status: %s %s", resp.Status, body)
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, err
	}
	if len(st.Self.Groups) == 0 {
		return st, errors.New("/cluster/status lists no groups")
	}
	return st, nil
}

// sweep reads the status of every running node; sts[i] is nil where node
// i is down or did not answer (last is then the latest such error).
func (cl *childCluster) sweep(ctx context.Context) (sts []*groupStatus, last error) {
	sts = make([]*groupStatus, len(cl.nodes))
	for i, c := range cl.nodes {
		if c == nil {
			continue
		}
		st, err := cl.status(ctx, i)
		if err != nil {
			last = err
			continue
		}
		sts[i] = &st
	}
	return sts, last
}

// leadersIn maps each group that a node of one sweep reports itself
// Leader of to that node (the first such node, by index).
func leadersIn(sts []*groupStatus) map[int]int {
	by := map[int]int{}
	for i, st := range sts {
		if st == nil {
			continue
		}
		for _, g := range st.led() {
			if _, ok := by[g]; !ok {
				by[g] = i
			}
		}
	}
	return by
}

// groupCount is how many groups the answering nodes of a sweep list.
func groupCount(sts []*groupStatus) int {
	n := 0
	for _, st := range sts {
		if st != nil {
			n = max(n, len(st.Self.Groups))
		}
	}
	return n
}

// mostLeading polls the running nodes until, in one sweep, every group
// has a node that reports itself its Leader, and returns the node leading
// the most groups (its `leads`; ties: the lowest index), the groups it
// leads by its own status, and how many groups there are. Bounded by
// timeout.
func (cl *childCluster) mostLeading(ctx context.Context, timeout time.Duration) (node int, led []int, groups int, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		sts, err := cl.sweep(ctx)
		if err != nil {
			last = err
		}
		if n := groupCount(sts); n > 0 {
			if by := leadersIn(sts); len(by) == n {
				best := -1
				for i, st := range sts {
					if st != nil && (best < 0 || st.Self.Leads > sts[best].Self.Leads) {
						best = i
					}
				}
				if led := sts[best].led(); len(led) > 0 {
					return best, led, n, nil
				}
			} else {
				last = fmt.Errorf("%d of %d groups have a leader", len(by), n)
			}
		}
		select {
		case <-ctx.Done():
			if last == nil {
				last = errors.New("no node answers")
			}
			return -1, nil, 0, fmt.Errorf("find the node leading the most groups: %w (last: %v)", ctx.Err(), last)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// leaders polls the running nodes (node skip, the killed one, is down
// already) every 10 ms until, in one sweep, each of groups has a node
// other than skip that reports itself its Leader, and returns that node
// per group. Bounded by timeout.
func (cl *childCluster) leaders(ctx context.Context, skip int, groups []int, timeout time.Duration) (map[int]int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		sts, err := cl.sweep(ctx)
		if err != nil {
			last = err
		}
		if skip >= 0 && skip < len(sts) {
			sts[skip] = nil
		}
		by := leadersIn(sts)
		var missing []int
		for _, g := range groups {
			if _, ok := by[g]; !ok {
				missing = append(missing, g)
			}
		}
		if len(missing) == 0 {
			return by, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("new leaders: %w: groups %v have none (last error: %v)", ctx.Err(), missing, last)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Close stops every running node (interrupt, then kill after stopTimeout)
// at once and removes the cluster's directory. A node that exited on its
// own is an error; one that had to be killed on shutdown is only logged
// (the last nodes of a DC may wait for a quorum that is gone).
func (cl *childCluster) Close() error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i, c := range cl.nodes {
		if c == nil {
			continue
		}
		cl.nodes[i] = nil
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.Close()
			if err == nil {
				return
			}
			if errors.Is(err, errKilled) {
				cl.log.Warn("cluster node did not stop after interrupt; killed", "node", cl.id(i))
				return
			}
			mu.Lock()
			errs = append(errs, fmt.Errorf("node %s: %w", cl.id(i), err))
			mu.Unlock()
		}()
	}
	wg.Wait()
	os.RemoveAll(cl.root)
	return errors.Join(errs...)
}

// freeAddr returns a loopback address for a child node (see package
// freeport: not from the ephemeral range the bench's clients use).
func freeAddr(network string) (string, error) { return freeport.Addr(network) }

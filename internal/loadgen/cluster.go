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
type childCluster struct {
	bin   string
	procs int
	root  string // temp dir: secrets and every node's data
	log   *slog.Logger
	httpc *http.Client

	mesh, client, http []string
	nodes              []*child // nodes[i] is nil while node i is down
}

// clusterStartTimeout bounds forming the DC or restarting one node:
// gossip, an election and, on first start, the RSA server key.
const clusterStartTimeout = 90 * time.Second

// startCluster forms an n-node DC and returns once every node serves.
func startCluster(ctx context.Context, bin string, procs, n int, log *slog.Logger) (cl *childCluster, err error) {
	root, err := os.MkdirTemp("", "mtnode-bench-cluster-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	c0 := &childCluster{bin: bin, procs: procs, root: root, log: log,
		httpc: &http.Client{Timeout: 2 * time.Second}}
	cl = c0
	defer func() {
		if err != nil {
			c0.Close()
		}
	}()
	if _, err := cluster.Keygen(cl.secrets(), time.Now()); err != nil {
		return nil, fmt.Errorf("cluster keygen: %w", err)
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
		if cl.nodes[i], err = spawnChild(bin, procs, args); err != nil {
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

func (cl *childCluster) secrets() string { return filepath.Join(cl.root, "secrets") }
func (cl *childCluster) id(i int) string { return fmt.Sprintf("n%d", i+1) }
func (cl *childCluster) dataDir(i int) string {
	return filepath.Join(cl.root, cl.id(i))
}

// args are node i's flags; forming adds --bootstrap-expect and --join, a
// restart finds its peers in its own raft state.
func (cl *childCluster) args(i int) []string {
	return []string{"run",
		"--data-dir", cl.dataDir(i),
		"--cluster", cl.secrets(),
		"--node-id", cl.id(i),
		"--mesh-addr", cl.mesh[i],
		"--client-addr", cl.client[i],
		"--http-addr", cl.http[i],
		"--log-format", "json",
		"--log-level", "info",
	}
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
	c, err := spawnChild(cl.bin, cl.procs, append(cl.args(i), "--join", strings.Join(peers, ",")))
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
		ID    string `json:"id"`
		Group struct {
			State        string `json:"state"`
			Leader       string `json:"leader"`
			AppliedIndex uint64 `json:"applied_index"`
			CommitIndex  uint64 `json:"commit_index"`
		} `json:"group"`
	} `json:"self"`
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
	return st, json.Unmarshal(body, &st)
}

// leader polls the running nodes, except skip, until one reports itself
// Leader, and returns its index; bounded by timeout.
func (cl *childCluster) leader(ctx context.Context, skip int, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		for i, c := range cl.nodes {
			if i == skip || c == nil {
				continue
			}
			st, err := cl.status(ctx, i)
			if err != nil {
				last = err
				continue
			}
			if st.Self.Group.State == "Leader" {
				return i, nil
			}
		}
		select {
		case <-ctx.Done():
			if last == nil {
				last = errors.New("no node reports itself Leader")
			}
			return -1, fmt.Errorf("find leader: %w (last: %v)", ctx.Err(), last)
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

package replication

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/goleak"

	"github.com/mtnode/mtnode/storage"
)

// checkLeaks fails t if goroutines started during it are still running
// after its cleanups (registered first, so it runs last). Badger's
// process-wide daemons are ignored.
func checkLeaks(t *testing.T) {
	t.Helper()
	opts := []goleak.Option{
		goleak.IgnoreCurrent(),
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2/z.(*AllocatorPool).freeupAllocators"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
	}
	t.Cleanup(func() { goleak.VerifyNone(t, opts...) })
}

// newFaultCluster is newTestCluster with every replica's in-memory
// transport wrapped in a FaultyTransport driven by one Faults.
func newFaultCluster(t *testing.T, n int, seed uint64) (*testCluster, *Faults) {
	faults := NewFaults(seed)
	faults.FailAfter(5 * time.Millisecond)
	c := &testCluster{t: t, shard: 7, conf: testRaftConfig}
	for i := range n {
		r := &replica{id: raft.ServerID(fmt.Sprintf("n%d", i)), dir: t.TempDir()}
		r.addr, r.trans = raft.NewInmemTransport(raft.ServerAddress(r.id))
		c.replicas = append(c.replicas, r)
	}
	for _, a := range c.replicas {
		for _, b := range c.replicas {
			if a != b {
				a.trans.Connect(b.addr, b.trans)
			}
		}
	}
	t.Cleanup(c.close)
	var servers []raft.Server
	for _, r := range c.replicas {
		r.db = openDB(t, r.dir)
		r.sm = &kvMachine{}
		g, err := NewGroup(Config{
			Shard: c.shard, ID: r.id, DB: r.db, Transport: NewFaultyTransport(r.trans, faults),
			StateMachine: r.sm, Raft: c.conf(), SnapshotDir: t.TempDir(), Logger: quiet(),
		})
		if err != nil {
			t.Fatal(err)
		}
		r.g = g
		servers = append(servers, raft.Server{ID: r.id, Address: r.addr})
	}
	if err := c.replicas[0].g.Bootstrap(servers); err != nil {
		t.Fatal(err)
	}
	return c, faults
}

// leaderOf waits for one of rs to lead and returns it.
func leaderOf(t *testing.T, rs []*replica) *replica {
	t.Helper()
	var l *replica
	waitFor(t, 10*time.Second, "a leader", func() bool {
		for _, r := range rs {
			if r.g.IsLeader() {
				l = r
				return true
			}
		}
		return false
	})
	return l
}

// applyAmong commits cmd through whichever of rs leads, retrying across
// elections and injected losses. Commands must be idempotent: a failed
// attempt may still have been committed.
func applyAmong(t *testing.T, rs []*replica, cmd []byte) {
	t.Helper()
	var last error
	for range 100 {
		l := leaderOf(t, rs)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := l.g.Apply(ctx, cmd)
		cancel()
		if err == nil {
			return
		}
		last = err
	}
	t.Fatalf("apply: no commit after 100 attempts: %v", last)
}

// hasKeys fails unless g holds kv/<prefix><i> for every i < n.
func hasKeys(t *testing.T, r *replica, prefix string, n int) {
	t.Helper()
	err := r.g.View(func(tx *storage.Txn) error {
		for i := range n {
			if _, err := tx.Get([]byte(fmt.Sprintf("kv/%s%03d", prefix, i))); err != nil {
				return fmt.Errorf("%s%03d: %w", prefix, i, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", r.id, err)
	}
}

func TestPartitionedLeaderCannotCommitAndCatchesUp(t *testing.T) {
	checkLeaks(t)
	c, faults := newFaultCluster(t, 3, 1)
	for i := range 10 {
		applyAmong(t, c.replicas, setCmd(fmt.Sprintf("a%03d", i), []byte("v")))
	}
	old := c.leader()
	c.converged(old.g.AppliedIndex())
	before := old.g.AppliedIndex()

	faults.Partition([]raft.ServerAddress{old.addr})
	var rest []*replica
	for _, r := range c.replicas {
		if r != old {
			rest = append(rest, r)
		}
	}
	// The cut-off leader cannot reach a quorum: its proposal fails (its
	// lease runs out and it steps down) and nothing is applied.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	_, err := old.g.Apply(ctx, setCmd("lost", []byte("v")))
	cancel()
	if err == nil {
		t.Fatal("isolated leader committed a command")
	}
	waitFor(t, 5*time.Second, "isolated leader to step down", func() bool { return !old.g.IsLeader() })

	nl := leaderOf(t, rest)
	for i := range 100 {
		applyAmong(t, rest, setCmd(fmt.Sprintf("b%03d", i), []byte("v")))
	}
	if got := old.g.AppliedIndex(); got != before {
		t.Fatalf("isolated replica applied index moved %d -> %d", before, got)
	}
	if old.g.IsLeader() {
		t.Fatal("isolated replica leads again")
	}

	faults.Heal()
	nl = leaderOf(t, rest)
	applyAmong(t, rest, setCmd("healed", []byte("v")))
	state := c.converged(nl.g.AppliedIndex())
	if _, id := old.g.Leader(); id == old.id || old.g.IsLeader() {
		t.Fatalf("old leader did not step down: leader %q", id)
	}
	for _, r := range c.replicas {
		hasKeys(t, r, "a", 10)
		hasKeys(t, r, "b", 100)
		if r.sm.dups.Load() != 0 {
			t.Fatalf("%s applied %d entries twice", r.id, r.sm.dups.Load())
		}
	}
	t.Logf("converged at index %d, %d bytes of state", nl.g.AppliedIndex(), len(state))
}

func TestLossyNetworkStillCommits(t *testing.T) {
	checkLeaks(t)
	c, faults := newFaultCluster(t, 3, 42)
	c.leader()
	faults.Drop(0.2)
	for i := range 200 {
		applyAmong(t, c.replicas, setCmd(fmt.Sprintf("k%03d", i), []byte("v")))
	}
	faults.Drop(0)
	l := c.leader()
	c.converged(l.g.AppliedIndex())
	for _, r := range c.replicas {
		hasKeys(t, r, "k", 200)
		if r.sm.dups.Load() != 0 {
			t.Fatalf("%s applied %d entries twice", r.id, r.sm.dups.Load())
		}
	}
}

func TestDelayedNetworkStillCommits(t *testing.T) {
	checkLeaks(t)
	c, faults := newFaultCluster(t, 3, 7)
	c.leader()
	faults.Delay(2 * time.Millisecond)
	start := time.Now()
	for i := range 20 {
		applyAmong(t, c.replicas, setCmd(fmt.Sprintf("k%03d", i), []byte("v")))
	}
	if took := time.Since(start); took < 20*2*time.Millisecond {
		t.Fatalf("20 delayed commits took only %v", took)
	}
	faults.Delay(0)
	c.converged(c.leader().g.AppliedIndex())
	for _, r := range c.replicas {
		hasKeys(t, r, "k", 20)
	}
}

func TestFaultsPartitionSides(t *testing.T) {
	f := NewFaults(1)
	f.Partition([]raft.ServerAddress{"a"}, []raft.ServerAddress{"b", "c"})
	for _, tc := range []struct {
		x, y raft.ServerAddress
		want bool
	}{
		{"a", "b", false}, {"b", "a", false}, {"b", "c", true}, {"a", "a", true},
		{"d", "e", true}, {"d", "a", false}, {"c", "d", false},
	} {
		if got := f.Reachable(tc.x, tc.y); got != tc.want {
			t.Errorf("Reachable(%s, %s) = %v, want %v", tc.x, tc.y, got, tc.want)
		}
	}
	f.Heal()
	if !f.Reachable("a", "b") {
		t.Fatal("healed network still cut")
	}
}

func TestFaultsDropIsSeeded(t *testing.T) {
	draw := func(seed uint64) []loss {
		f := NewFaults(seed)
		f.Drop(0.3)
		out := make([]loss, 200)
		for i := range out {
			out[i], _, _ = f.decide("a", "b")
		}
		return out
	}
	a, b, other := draw(5), draw(5), draw(6)
	lost := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, decision %d differs", i)
		}
		if a[i] != delivered {
			lost++
		}
	}
	if lost < 30 || lost > 90 {
		t.Fatalf("lost %d of 200 at p=0.3", lost)
	}
	if fmt.Sprint(a) == fmt.Sprint(other) {
		t.Fatal("different seeds drew the same decisions")
	}
}

// An inbound RPC from a cut-off sender is refused even when the sender's
// own transport is not faulty.
func TestFaultyTransportRefusesInboundFromCutPeer(t *testing.T) {
	checkLeaks(t)
	faults := NewFaults(1)
	faults.FailAfter(time.Millisecond)
	aAddr, a := raft.NewInmemTransport("a")
	bAddr, bInner := raft.NewInmemTransport("b")
	a.Connect(bAddr, bInner)
	bInner.Connect(aAddr, a)
	b := NewFaultyTransport(bInner, faults)
	stop := make(chan struct{})
	served := make(chan struct{})
	go func() {
		defer close(served)
		for {
			select {
			case rpc := <-b.Consumer():
				rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
			case <-stop:
				return
			}
		}
	}()
	defer func() { close(stop); <-served; b.Close() }()
	req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{Addr: a.EncodePeer("a", aAddr)}}
	var resp raft.AppendEntriesResponse
	if err := a.AppendEntries("b", bAddr, req, &resp); err != nil || !resp.Success {
		t.Fatalf("healthy: %v %v", err, resp.Success)
	}
	faults.Partition([]raft.ServerAddress{aAddr})
	if err := a.AppendEntries("b", bAddr, req, &resp); !errors.Is(err, ErrPartitioned) {
		t.Fatalf("inbound from cut peer accepted: %v", err)
	}
	// Outbound the other way fails too, after FailAfter.
	if err := b.AppendEntries("a", aAddr, req, &resp); !errors.Is(err, ErrPartitioned) {
		t.Fatalf("outbound to cut peer: %v", err)
	}
	if _, err := b.AppendEntriesPipeline("a", aAddr); !errors.Is(err, ErrPartitioned) {
		t.Fatalf("pipeline to cut peer: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

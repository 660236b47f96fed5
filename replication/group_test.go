package replication

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mtnode/mtnode/storage"
)

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testRaftConfig is fast enough for tests (raft's own inmemConfig).
func testRaftConfig() *raft.Config {
	c := raft.DefaultConfig()
	c.HeartbeatTimeout = 50 * time.Millisecond
	c.ElectionTimeout = 50 * time.Millisecond
	c.LeaderLeaseTimeout = 50 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.SnapshotInterval = time.Hour // tests snapshot explicitly
	c.SnapshotThreshold = 1 << 40
	return c
}

type replica struct {
	id    raft.ServerID
	dir   string
	db    *storage.DB
	addr  raft.ServerAddress
	trans *raft.InmemTransport
	sm    *kvMachine
	g     *Group
}

type testCluster struct {
	t        testing.TB
	shard    ShardID
	conf     func() *raft.Config
	replicas []*replica
}

func newTestCluster(t testing.TB, n int, conf func() *raft.Config) *testCluster {
	c := &testCluster{t: t, shard: 7, conf: conf}
	for i := range n {
		c.add(i)
	}
	var servers []raft.Server
	for _, r := range c.replicas {
		servers = append(servers, raft.Server{ID: r.id, Address: r.addr})
	}
	if err := c.replicas[0].g.Bootstrap(servers); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	return c
}

// add creates replica i with a fresh database and starts it.
func (c *testCluster) add(i int) *replica {
	r := &replica{id: raft.ServerID(fmt.Sprintf("n%d", i)), dir: c.t.TempDir()}
	c.replicas = append(c.replicas, r)
	c.start(r)
	return r
}

// start opens r's database and group on a new transport wired to the rest.
func (c *testCluster) start(r *replica) {
	t := c.t
	if r.db == nil {
		r.db = openDB(t, r.dir)
	}
	r.addr, r.trans = raft.NewInmemTransport(raft.ServerAddress(r.id))
	for _, o := range c.replicas {
		if o == r || o.trans == nil {
			continue
		}
		o.trans.Disconnect(r.addr)
		o.trans.Connect(r.addr, r.trans)
		r.trans.Connect(o.addr, o.trans)
	}
	r.sm = &kvMachine{}
	g, err := NewGroup(Config{
		Shard: c.shard, ID: r.id, DB: r.db, Transport: r.trans, StateMachine: r.sm,
		Raft: c.conf(), SnapshotDir: filepath.Join(r.dir, "snaps"), SnapshotChunk: 512, Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	r.g = g
}

// stop shuts r's group down and closes its database.
func (c *testCluster) stop(r *replica) {
	if r.g != nil {
		if err := r.g.Close(); err != nil {
			c.t.Error(err)
		}
		r.g = nil
	}
	if r.db != nil {
		if err := r.db.Close(); err != nil {
			c.t.Error(err)
		}
		r.db = nil
	}
}

func (c *testCluster) close() {
	for _, r := range c.replicas {
		c.stop(r)
	}
}

func (c *testCluster) running() []*replica {
	var out []*replica
	for _, r := range c.replicas {
		if r.g != nil {
			out = append(out, r)
		}
	}
	return out
}

// leader waits for exactly one running leader and returns it.
func (c *testCluster) leader() *replica {
	c.t.Helper()
	var l *replica
	waitFor(c.t, 10*time.Second, "a leader", func() bool {
		l = nil
		for _, r := range c.running() {
			if r.g.IsLeader() {
				if l != nil {
					return false
				}
				l = r
			}
		}
		return l != nil
	})
	return l
}

// apply proposes cmd to the current leader, retrying across elections.
func (c *testCluster) apply(cmd []byte) any {
	c.t.Helper()
	for range 50 {
		l := c.leader()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		v, err := l.g.Apply(ctx, cmd)
		cancel()
		if err == nil {
			return v
		}
		if errors.Is(err, ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			continue
		}
		c.t.Fatalf("apply: %v", err)
	}
	c.t.Fatal("apply: no stable leader")
	return nil
}

// membership runs a configuration change on the leader, retrying across
// elections.
func (c *testCluster) membership(change func(leader *Group) error) {
	c.t.Helper()
	for range 50 {
		err := change(c.leader().g)
		if err == nil {
			return
		}
		if !errors.Is(err, raft.ErrNotLeader) && !errors.Is(err, raft.ErrLeadershipLost) {
			c.t.Fatalf("membership change: %v", err)
		}
	}
	c.t.Fatal("membership change: no stable leader")
}

// converged waits until every running replica has applied index and holds
// the same state, and returns that state.
func (c *testCluster) converged(index uint64) string {
	c.t.Helper()
	var want string
	waitFor(c.t, 15*time.Second, fmt.Sprintf("replicas to apply %d and agree", index), func() bool {
		want = ""
		for i, r := range c.running() {
			if r.g.AppliedIndex() < index {
				return false
			}
			got := dumpTable(c.t, r.g.data)
			if i == 0 {
				want = got
			} else if got != want {
				return false
			}
		}
		return true
	})
	return want
}

func counter(t testing.TB, g *Group, key string) uint64 {
	t.Helper()
	var n uint64
	err := g.View(func(tx *storage.Txn) error {
		v, err := tx.Get([]byte("kv/" + key))
		if err != nil {
			return err
		}
		n = binary.BigEndian.Uint64(v)
		return nil
	})
	if err != nil {
		t.Fatalf("read counter %s: %v", key, err)
	}
	return n
}

func TestThreeReplicasApplyTheSameCommands(t *testing.T) {
	c := newTestCluster(t, 3, testRaftConfig)
	l := c.leader()
	// Concurrent proposers, so raft batches and ApplyBatch sees runs.
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 125 {
				var cmd []byte
				switch {
				case i%50 == 49:
					cmd = rejectCmd(fmt.Sprintf("bad%d", w))
				case i%2 == 0:
					cmd = incCmd("hits")
				default:
					cmd = setCmd(fmt.Sprintf("w%d-%d", w, i), []byte("v"))
				}
				if _, err := l.g.Apply(context.Background(), cmd); err != nil && !errors.Is(err, errRejectedByTest) {
					t.Errorf("apply: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	last := l.g.Raft().AppliedIndex()
	c.converged(l.g.AppliedIndex())
	if got := counter(t, l.g, "hits"); got != 8*63 {
		t.Fatalf("hits = %d, want %d", got, 8*63)
	}
	for _, r := range c.replicas {
		if r.sm.dups.Load() != 0 {
			t.Fatalf("%s applied %d entries twice", r.id, r.sm.dups.Load())
		}
		if _, err := r.db.Table(shardTable).Sub(c.shard.prefix()).Sub(dataPrefix).Get([]byte("kv/bad0")); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("%s kept a rejected write: %v", r.id, err)
		}
	}
	t.Logf("1000 commands, last raft index %d", last)
}

func TestLeaderLossElectsAndContinues(t *testing.T) {
	c := newTestCluster(t, 3, testRaftConfig)
	for range 100 {
		c.apply(incCmd("n"))
	}
	old := c.leader()
	c.stop(old)
	for range 100 {
		c.apply(incCmd("n"))
	}
	nl := c.leader()
	if nl == old {
		t.Fatal("stopped replica still leads")
	}
	c.converged(nl.g.AppliedIndex())
	if got := counter(t, nl.g, "n"); got != 200 {
		t.Fatalf("n = %d, want 200", got)
	}
	// The old leader comes back from its Badger and catches up without
	// applying anything twice.
	c.start(old)
	c.apply(incCmd("n"))
	c.converged(nl.g.AppliedIndex())
	if got := counter(t, old.g, "n"); got != 201 {
		t.Fatalf("restarted replica n = %d, want 201", got)
	}
	if old.sm.dups.Load() != 0 {
		t.Fatalf("restarted replica applied %d entries twice", old.sm.dups.Load())
	}
}

func TestRestartSkipsAppliedEntries(t *testing.T) {
	c := newTestCluster(t, 3, testRaftConfig)
	for range 200 {
		c.apply(incCmd("n"))
	}
	l := c.leader()
	c.converged(l.g.AppliedIndex())
	// A snapshot exists too, and the restart must not restore it: the
	// state in Badger is newer.
	if err := l.g.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		c.apply(incCmd("n"))
	}
	c.converged(l.g.AppliedIndex())
	// Restart everyone (a whole-shard power cut): raft replays its log
	// from the snapshot, and the FSM skips what it already applied.
	for _, r := range c.replicas {
		c.stop(r)
	}
	for _, r := range c.replicas {
		c.start(r)
	}
	c.apply(incCmd("n"))
	l = c.leader()
	c.converged(l.g.AppliedIndex())
	for _, r := range c.replicas {
		if got := counter(t, r.g, "n"); got != 211 {
			t.Fatalf("%s n = %d, want 211", r.id, got)
		}
		if r.sm.calls.Load() != 1 || r.sm.dups.Load() != 0 || r.sm.restored != 0 {
			t.Fatalf("%s after restart: %d applies (want 1), %d duplicates, restored %d", r.id, r.sm.calls.Load(), r.sm.dups.Load(), r.sm.restored)
		}
	}
}

func TestLaggingReplicaIsSeededBySnapshot(t *testing.T) {
	conf := func() *raft.Config {
		c := testRaftConfig()
		c.TrailingLogs = 10
		return c
	}
	c := newTestCluster(t, 1, conf)
	for i := range 300 {
		c.apply(setCmd(fmt.Sprintf("k%03d", i), make([]byte, 100)))
	}
	l := c.leader()
	if err := l.g.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	first := l.g.Raft().Stats()["last_snapshot_index"]
	// The log before the snapshot is gone, so new replicas need it. They
	// are staged as non-voters, caught up, then promoted, as placement
	// will do: a voter added while it is far behind can cost a one-node
	// group its quorum.
	for _, i := range []int{1, 2} {
		r := c.add(i)
		if err := l.g.Raft().AddNonvoter(r.id, r.addr, 0, 5*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	c.converged(l.g.AppliedIndex())
	for _, r := range c.replicas[1:] {
		c.membership(func(l *Group) error { return l.Raft().AddVoter(r.id, r.addr, 0, 5*time.Second).Error() })
	}
	for range 20 {
		c.apply(incCmd("after"))
	}
	state := c.converged(c.leader().g.AppliedIndex())
	for _, r := range c.replicas[1:] {
		if r.sm.restored == 0 {
			t.Fatalf("%s was not seeded by snapshot", r.id)
		}
		if r.sm.calls.Load() != 20 {
			t.Fatalf("%s applied %d commands itself, want 20 after the snapshot", r.id, r.sm.calls.Load())
		}
	}
	t.Logf("snapshot at %s, state %d bytes", first, len(state))

	// A restore interrupted by a crash is redone at the next start.
	r := c.replicas[2]
	c.stop(r)
	db := openDB(t, r.dir)
	if err := db.Table(shardTable).Sub(c.shard.prefix()).Put(keyRestoring, []byte{0}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Table(shardTable).Sub(c.shard.prefix()).Sub(dataPrefix).DeleteRange(nil, []byte("kv/k150"), 0); err != nil {
		t.Fatal(err)
	}
	r.db = db
	c.start(r)
	if r.sm.restored == 0 {
		t.Fatal("interrupted restore not redone at start")
	}
	c.apply(incCmd("after"))
	c.converged(c.leader().g.AppliedIndex())
}

func TestRunAndCloseLifecycle(t *testing.T) {
	c := newTestCluster(t, 1, testRaftConfig)
	r := c.leader()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.g.Run(ctx) }()
	c.apply(incCmd("n"))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := r.g.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := r.g.Apply(context.Background(), incCmd("n")); err == nil {
		t.Fatal("apply after close succeeded")
	}
}

// TestFollowerReadIndex: a follower that waits for the leader's read
// index sees every write acknowledged before, though it learns of commits
// only every CommitTimeout; ReadIndex refuses on a follower.
func TestFollowerReadIndex(t *testing.T) {
	c := newTestCluster(t, 3, func() *raft.Config {
		rc := testRaftConfig()
		rc.CommitTimeout = 300 * time.Millisecond
		return rc
	})
	l := c.leader()
	var f *replica
	for _, r := range c.running() {
		if r != l {
			f = r
		}
	}
	for i := range 5 {
		if _, err := l.g.Apply(context.Background(), incCmd("n")); err != nil {
			t.Fatal(err)
		}
		idx, err := l.g.ReadIndex()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = f.g.WaitApplied(ctx, idx)
		cancel()
		if err != nil {
			t.Fatalf("follower did not reach read index %d: %v", idx, err)
		}
		if got := counter(t, f.g, "n"); got != uint64(i+1) {
			t.Fatalf("follower read %d after %d acknowledged writes", got, i+1)
		}
	}
	if _, err := f.g.ReadIndex(); err == nil {
		t.Fatal("ReadIndex on a follower succeeded")
	}
}

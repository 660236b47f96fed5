package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mtnode/mtnode/storage"
)

// ErrNotLeader is returned by Group.Apply on a replica that is not the
// shard's leader: the command was not applied, send it to Leader().
var ErrNotLeader = errors.New("not the shard leader")

// Config builds one Group.
type Config struct {
	// Shard is the shard this group replicates.
	Shard ShardID
	// ID is this replica's stable server ID inside the group.
	ID raft.ServerID
	// DB is the node's database; the group's log, stable store and state
	// live under the shard's prefixes in it.
	DB *storage.DB
	// Transport carries this group's raft RPCs (the QUIC mesh in a node,
	// raft.NewInmemTransport in tests).
	Transport raft.Transport
	// StateMachine is applied to committed commands.
	StateMachine StateMachine
	// Raft, if set, is the base raft configuration (DefaultRaftConfig if
	// nil); LocalID, Logger and NoSnapshotRestoreOnStart are set by the
	// group.
	Raft *raft.Config
	// SnapshotDir holds the group's snapshot files; empty means
	// <data dir>/raft/<shard>.
	SnapshotDir string
	// SnapshotRetain is how many snapshot files to keep (0: 2).
	SnapshotRetain int
	// SnapshotChunk bounds a snapshot chunk in bytes (0: 1 MiB).
	SnapshotChunk int
	// Logger receives the group's and raft's logs.
	Logger *slog.Logger
}

// DefaultRaftConfig is raft's configuration tuned for many groups per
// node. The idle cost of a group is dominated by the leader's timers: a
// heartbeat to each follower every HeartbeatTimeout/10 and a commit-index
// AppendEntries to each follower every CommitTimeout. Raft's defaults
// (1 s and 50 ms) make the second twenty RPCs a second per follower per
// idle group; CommitTimeout only delays how soon followers learn the
// commit index when nothing new is written (the leader commits and answers
// without it), so it goes to 500 ms. Heartbeat and election stay at 1 s:
// fail-over within 1-2 s matters more to users than a heartbeat per 100
// ms costs. The snapshot settings keep about 16k entries of log.
func DefaultRaftConfig() *raft.Config {
	c := raft.DefaultConfig()
	c.HeartbeatTimeout = time.Second
	c.ElectionTimeout = time.Second
	c.LeaderLeaseTimeout = 500 * time.Millisecond
	c.CommitTimeout = 500 * time.Millisecond
	c.SnapshotThreshold = 16384
	c.TrailingLogs = 16384
	c.SnapshotInterval = 2 * time.Minute
	c.MaxAppendEntries = 256
	return c
}

// Group is one shard's raft group on this node: a raft instance over the
// shard's Badger-backed log, stable store and state machine.
type Group struct {
	shard ShardID
	raft  *raft.Raft
	fsm   *FSM
	data  *storage.Table
	logs  raft.LogStore
	snaps raft.SnapshotStore
	log   *slog.Logger

	closeOnce sync.Once
	closeErr  error
	closed    chan struct{}
}

// NewGroup opens the shard's stores and starts its raft instance (raft
// runs its own goroutines from here until Close). A fresh group has no
// configuration: call Bootstrap on one replica, or AddVoter from a
// leader.
func NewGroup(cfg Config) (*Group, error) {
	if cfg.DB == nil || cfg.Transport == nil || cfg.StateMachine == nil || cfg.ID == "" {
		return nil, errors.New("replication: Config needs DB, Transport, StateMachine and ID")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "replication", "shard", cfg.Shard.String(), "id", string(cfg.ID))
	logs, err := NewLogStore(cfg.DB, cfg.Shard)
	if err != nil {
		return nil, fmt.Errorf("open log store: %w", err)
	}
	stable := NewStableStore(cfg.DB, cfg.Shard)
	fsm, err := NewFSM(cfg.DB, cfg.Shard, cfg.StateMachine, log, cfg.SnapshotChunk)
	if err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	dir := cfg.SnapshotDir
	if dir == "" {
		dir = filepath.Join(cfg.DB.Dir(), "raft", cfg.Shard.String())
	}
	retain := cfg.SnapshotRetain
	if retain <= 0 {
		retain = 2
	}
	hl := NewHCLogger(log)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, retain, hl.Named("snapshots"))
	if err != nil {
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	restore, err := mustRestore(fsm, logs, snaps)
	if err != nil {
		return nil, err
	}
	var rc raft.Config
	if cfg.Raft != nil {
		rc = *cfg.Raft
	} else {
		rc = *DefaultRaftConfig()
	}
	rc.LocalID = cfg.ID
	rc.Logger = hl.Named("raft")
	// The state is durable in Badger, so raft need not rebuild it from the
	// latest snapshot on every start; it does only when mustRestore says
	// the state is behind or broken.
	rc.NoSnapshotRestoreOnStart = !restore
	if restore {
		log.Warn("state behind latest snapshot, restoring it", "applied-index", fsm.AppliedIndex(), "interrupted-restore", fsm.Incomplete())
	}
	cache, err := raft.NewLogCache(512, logs)
	if err != nil {
		return nil, fmt.Errorf("log cache: %w", err)
	}
	r, err := raft.NewRaft(&rc, fsm, cache, stable, snaps, cfg.Transport)
	if err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}
	return &Group{
		shard:  cfg.Shard,
		raft:   r,
		fsm:    fsm,
		logs:   cache,
		data:   cfg.DB.Table(shardTable).Sub(cfg.Shard.prefix()).Sub(dataPrefix),
		snaps:  snaps,
		log:    log,
		closed: make(chan struct{}),
	}, nil
}

// mustRestore decides whether raft must restore the latest snapshot at
// start. Normally not: the state in Badger is at least as new as any
// snapshot taken from it. It must when a restore was interrupted, or when
// the applied index is behind the latest snapshot because a snapshot sent
// by the leader was stored but not yet restored when the node stopped. A
// snapshot raft took itself may end past the applied index only by
// entries that are not commands (the leader's no-op, configuration
// changes); those are still in the log, and then no restore is needed.
func mustRestore(fsm *FSM, logs raft.LogStore, snaps raft.SnapshotStore) (bool, error) {
	if fsm.Incomplete() {
		return true, nil
	}
	metas, err := snaps.List()
	if err != nil {
		return false, fmt.Errorf("list snapshots: %w", err)
	}
	if len(metas) == 0 {
		return false, nil
	}
	latest := metas[0].Index
	for i := fsm.AppliedIndex() + 1; i <= latest; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil || l.Type == raft.LogCommand {
			return true, nil
		}
	}
	return false, nil
}

// Shard is the shard this group replicates.
func (g *Group) Shard() ShardID { return g.shard }

// Raft is the underlying raft instance, for membership changes, stats and
// observers.
func (g *Group) Raft() *raft.Raft { return g.raft }

// Bootstrap makes servers the group's first configuration. Call it on one
// replica of a new group only; on a group with state it returns
// raft.ErrCantBootstrap.
func (g *Group) Bootstrap(servers []raft.Server) error {
	return g.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
}

// Apply proposes cmd and waits until it is committed and applied here,
// returning the state machine's result (or its rejection). On a follower
// it returns ErrNotLeader. Other errors (leadership lost, shutdown) leave
// the outcome unknown: retry idempotently.
func (g *Group) Apply(ctx context.Context, cmd []byte) (any, error) {
	var timeout time.Duration
	if dl, ok := ctx.Deadline(); ok {
		if timeout = time.Until(dl); timeout <= 0 {
			return nil, context.DeadlineExceeded
		}
	}
	f := g.raft.Apply(cmd, timeout)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return nil, ErrNotLeader
		}
		return nil, fmt.Errorf("apply: %w", err)
	}
	resp, ok := f.Response().(Response)
	if !ok {
		return nil, fmt.Errorf("apply: unexpected response %T", f.Response())
	}
	return resp.Value, resp.Err
}

// Leader returns the current leader's address and ID, empty if unknown.
func (g *Group) Leader() (raft.ServerAddress, raft.ServerID) { return g.raft.LeaderWithID() }

// LastSnapshotSize is the size in bytes of the replica's latest snapshot
// (0 if none).
func (g *Group) LastSnapshotSize() (int64, error) {
	metas, err := g.snaps.List()
	if err != nil || len(metas) == 0 {
		return 0, err
	}
	return metas[0].Size, nil
}

// IsLeader reports whether this replica leads the group.
func (g *Group) IsLeader() bool { return g.raft.State() == raft.Leader }

// AppliedIndex is the index of the last command applied on this replica.
// Entries raft handles itself (a new leader's no-op, configuration
// changes) never reach the state machine, so an idle group's last such
// entries leave it below the commit index of a caught-up replica.
func (g *Group) AppliedIndex() uint64 { return g.fsm.AppliedIndex() }

// View reads this replica's copy of the shard's data. It is as fresh as
// the replica's applied index: linearizable only on a leader after
// Barrier or VerifyLeader.
func (g *Group) View(fn func(tx *storage.Txn) error) error { return g.data.View(fn) }

// ReadIndex is the leader's half of a linearizable read on a follower
// (raft's read index): it confirms this replica's leadership with a
// quorum, then returns the index of the last command committed before the
// confirmation. Every write acknowledged before the call began is at or
// below it, so a follower whose state machine has applied it (WaitApplied)
// may serve the read. raft's own entries (no-ops, configuration changes)
// are skipped: state machines never apply them. It fails on a follower,
// and when the last command is too far back in the log to find cheaply
// (the caller then reads at the leader instead).
func (g *Group) ReadIndex() (uint64, error) {
	c := g.raft.CommitIndex()
	if err := g.raft.VerifyLeader().Error(); err != nil {
		return 0, err
	}
	for i := c; i > 0 && c-i < readIndexScan; i-- {
		var l raft.Log
		if err := g.logs.GetLog(i, &l); err != nil {
			return 0, fmt.Errorf("read index: entry %d: %w", i, err)
		}
		if l.Type == raft.LogCommand {
			return i, nil
		}
	}
	if c < readIndexScan {
		return 0, nil // no command yet
	}
	return 0, fmt.Errorf("read index: no command in the %d entries up to %d", readIndexScan, c)
}

// readIndexScan bounds ReadIndex's walk back over raft's own entries.
const readIndexScan = 64

// WaitApplied waits until this replica's state machine has applied index
// i, or ctx ends.
func (g *Group) WaitApplied(ctx context.Context, i uint64) error {
	for g.fsm.AppliedIndex() < i {
		t := time.NewTimer(time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Snapshot opens a read-only snapshot of the state machine's data, for
// reads that span several groups; Discard it when done.
func (g *Group) Snapshot() *storage.Snapshot { return g.data.Snapshot() }

// Run waits until ctx ends, Close is called or the state machine fails,
// then shuts the group down. It returns the state machine's failure, or
// nil.
func (g *Group) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
	case <-g.closed:
	case <-g.fsm.Failed():
	}
	if err := g.Close(); err != nil {
		return err
	}
	return g.fsm.Err()
}

// Close shuts raft down and waits for its goroutines. Safe to call twice.
func (g *Group) Close() error {
	g.closeOnce.Do(func() {
		if err := g.raft.Shutdown().Error(); err != nil {
			g.closeErr = fmt.Errorf("shutdown raft: %w", err)
		}
		close(g.closed)
	})
	return g.closeErr
}

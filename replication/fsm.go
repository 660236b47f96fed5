package replication

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/mtnode/mtnode/storage"
)

// StateMachine is a deterministic state machine whose state lives in the
// shard's Badger range. Package messaging plugs in here.
type StateMachine interface {
	// ApplyCommand applies the command logged at index. Everything it reads
	// and writes goes through tx, which is scoped to the shard's data range
	// and may hold earlier commands of the same batch. It must depend only
	// on tx's contents, index and data, so every replica computes the same
	// writes and result. A returned error is a deterministic rejection: the
	// command's writes are dropped, the entry still counts as applied, and
	// the error is the proposer's answer. Errors must therefore never come
	// from this replica's circumstances; a state machine that cannot read
	// its own state should panic rather than reject.
	ApplyCommand(tx *storage.Txn, index uint64, data []byte) (any, error)

	// Restored is called after a snapshot replaced the whole data range;
	// index is the last command the new state includes. In-memory caches
	// of the state must be dropped here.
	Restored(index uint64)
}

// Committer is an optional extension of StateMachine: Committed is called
// after each batch of entries is committed, on raft's FSM goroutine, in log
// order, with the values ApplyCommand returned for the batch's commands
// (rejected ones left out). Work it does delays later applies.
type Committer interface {
	Committed(values []any)
}

// Response is what FSM.Apply hands raft for a command entry: the state
// machine's result, or its rejection.
type Response struct {
	Value any
	Err   error
}

// ErrFailed is returned once the FSM met a storage failure it cannot
// apply past (a commit or restore that failed). Applying later entries on
// top would diverge from the other replicas, so the FSM refuses all
// further work and its Group stops; a restart resumes from the applied
// index on disk.
var ErrFailed = errors.New("state machine failed")

// FSM adapts a StateMachine to raft.FSM (and raft.BatchingFSM). Each batch
// of committed entries is applied in one Badger transaction that also
// records the shard's applied index, so state and applied index are always
// on disk together and an entry at or below the applied index is skipped:
// raft replays the log after a restart, and nothing is applied twice.
//
// Keys: shard/<shard>/data/... is the state machine's range;
// shard/<shard>/meta/applied and meta/restoring are the FSM's own.
type FSM struct {
	sm    StateMachine
	shard *storage.Table // shard/<shard>/
	data  *storage.Table // shard/<shard>/data/
	log   *slog.Logger
	chunk int

	applied   atomic.Uint64
	restoring bool // a restore was interrupted: the data range is incomplete

	failOnce sync.Once
	failErr  atomic.Pointer[error]
	failed   chan struct{}
}

var _ raft.BatchingFSM = (*FSM)(nil)

var (
	dataPrefix    = []byte("data/")
	keyApplied    = []byte("meta/applied")
	keyRestoring  = []byte("meta/restoring")
	defaultChunk  = 1 << 20
	maxChunkBytes = 256 << 20
)

// NewFSM opens the state of one shard for sm. chunk bounds a snapshot
// chunk in bytes (0: 1 MiB).
func NewFSM(db *storage.DB, shard ShardID, sm StateMachine, log *slog.Logger, chunk int) (*FSM, error) {
	if chunk <= 0 {
		chunk = defaultChunk
	}
	t := db.Table(shardTable).Sub(shard.prefix())
	f := &FSM{sm: sm, shard: t, data: t.Sub(dataPrefix), log: log, chunk: chunk, failed: make(chan struct{})}
	v, err := t.Get(keyApplied)
	switch {
	case errors.Is(err, storage.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("read applied index: %w", err)
	case len(v) != 8:
		return nil, fmt.Errorf("read applied index: %w", errCorrupt)
	default:
		f.applied.Store(binary.BigEndian.Uint64(v))
	}
	if _, err := t.Get(keyRestoring); err == nil {
		f.restoring = true
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("read restore marker: %w", err)
	}
	return f, nil
}

// AppliedIndex is the index of the last command whose effect is on disk.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// Incomplete reports whether a snapshot restore was interrupted, leaving
// the data range unusable until a snapshot is restored again.
func (f *FSM) Incomplete() bool { return f.restoring }

// Failed is closed when the FSM stops on a storage failure; Err says why.
func (f *FSM) Failed() <-chan struct{} { return f.failed }

// Err is the failure that stopped the FSM, or nil.
func (f *FSM) Err() error {
	if p := f.failErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (f *FSM) fail(err error) {
	f.failOnce.Do(func() {
		err = fmt.Errorf("%w: %w", ErrFailed, err)
		f.failErr.Store(&err)
		f.log.Error("state machine stopped", "error", err)
		close(f.failed)
	})
}

// Apply applies one entry; see ApplyBatch.
func (f *FSM) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies committed entries in order, in as few transactions as
// it can: one per batch, unless a command is rejected (its writes must go
// while its predecessors' stay, so the run before it is redone in a fresh
// transaction: determinism makes the redo equal) or the batch outgrows a
// Badger transaction (the run so far commits and a new one starts).
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	for i := 0; i < len(logs); {
		if err := f.Err(); err != nil {
			for ; i < len(logs); i++ {
				out[i] = Response{Err: err}
			}
			break
		}
		i = f.applyRun(logs, i, out)
	}
	if c, ok := f.sm.(Committer); ok && f.Err() == nil {
		var values []any
		for _, r := range out {
			if r, ok := r.(Response); ok && r.Err == nil && r.Value != nil {
				values = append(values, r.Value)
			}
		}
		if len(values) > 0 {
			c.Committed(values)
		}
	}
	return out
}

// applyRun applies logs[start:] until the first rejection or transaction
// limit, commits, and returns where the next run starts.
func (f *FSM) applyRun(logs []*raft.Log, start int, out []any) int {
	tx := f.shard.Begin()
	defer tx.Discard()
	data := tx.Sub(dataPrefix)
	applied := f.applied.Load()
	last := applied
	for n := start; n < len(logs); n++ {
		l := logs[n]
		if l.Type != raft.LogCommand || l.Index <= applied {
			continue
		}
		v, err := f.sm.ApplyCommand(data, l.Index, l.Data)
		if errors.Is(err, storage.ErrTxnTooBig) && last > applied {
			// Commit the run before n; n starts the next one.
			tx.Discard()
			return f.redo(logs, start, n, nil, out)
		}
		if err != nil {
			tx.Discard()
			return f.redo(logs, start, n, err, out)
		}
		out[n] = Response{Value: v}
		last = l.Index
	}
	if last == applied {
		return len(logs)
	}
	if err := f.commit(tx, last); errors.Is(err, storage.ErrTxnTooBig) {
		// The applied record itself did not fit: give back the last command.
		tx.Discard()
		lastPos := len(logs) - 1
		for logs[lastPos].Index != last {
			lastPos--
		}
		return f.redo(logs, start, lastPos, nil, out)
	} else if err != nil {
		f.fail(err)
		return len(logs)
	}
	return len(logs)
}

// redo applies logs[start:end] afresh and commits them; with reject set,
// logs[end] is recorded as applied-and-rejected in the same commit.
func (f *FSM) redo(logs []*raft.Log, start, end int, reject error, out []any) int {
	tx := f.shard.Begin()
	defer tx.Discard()
	data := tx.Sub(dataPrefix)
	applied := f.applied.Load()
	last := applied
	for n := start; n < end; n++ {
		l := logs[n]
		if l.Type != raft.LogCommand || l.Index <= applied {
			continue
		}
		v, err := f.sm.ApplyCommand(data, l.Index, l.Data)
		if err != nil {
			f.fail(fmt.Errorf("redo of entry %d not deterministic: %w", l.Index, err))
			return len(logs)
		}
		out[n] = Response{Value: v}
		last = l.Index
	}
	next := end
	if reject != nil {
		out[end] = Response{Err: reject}
		last = logs[end].Index
		next = end + 1
	}
	if last == applied {
		return next
	}
	if err := f.commit(tx, last); err != nil {
		f.fail(err)
		return len(logs)
	}
	return next
}

func (f *FSM) commit(tx *storage.WriteTxn, applied uint64) error {
	if err := tx.Set(keyApplied, binary.BigEndian.AppendUint64(nil, applied)); err != nil {
		return fmt.Errorf("record applied index: %w", err)
	}
	// Lazily: on a Lazy database this write is not synced. A crash can
	// lose it only together with every write after the last sync, and
	// every entry it applies is already synced in the raft log, which
	// raft replays past the stored applied index (or, when the state
	// ended up behind the latest snapshot, Group restores that snapshot
	// first: see mustRestore).
	if err := tx.CommitLazy(); err != nil {
		return fmt.Errorf("commit entry %d: %w", applied, err)
	}
	f.applied.Store(applied)
	return nil
}

// Snapshot pins a consistent read view of the shard (its data and applied
// index); the stream is written later by Persist while applies go on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.Err(); err != nil {
		return nil, err
	}
	snap := f.shard.Snapshot()
	var applied uint64
	v, err := snap.Get(keyApplied)
	if err == nil && len(v) == 8 {
		applied = binary.BigEndian.Uint64(v)
	} else if err != nil && !errors.Is(err, storage.ErrNotFound) {
		snap.Discard()
		return nil, fmt.Errorf("snapshot: read applied index: %w", err)
	}
	return &fsmSnapshot{snap: snap, applied: applied, chunk: f.chunk}, nil
}

// Restore replaces the shard's data with a snapshot stream. Badger cannot
// swap a range atomically, so restore is made crash-safe instead: a
// durable marker is set first, the range is deleted and rewritten in
// bounded batches, and the last transaction records the applied index and
// clears the marker. A node that finds the marker at start lets raft
// restore its latest snapshot again before anything reads the range.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.Err(); err != nil {
		return err
	}
	err := f.restore(rc)
	if err != nil {
		f.fail(fmt.Errorf("restore: %w", err))
		return f.Err()
	}
	return nil
}

func (f *FSM) restore(r io.Reader) error {
	rd, err := newSnapshotReader(r)
	if err != nil {
		return err
	}
	if err := f.shard.Put(keyRestoring, binary.BigEndian.AppendUint64(nil, rd.applied)); err != nil {
		return fmt.Errorf("set restore marker: %w", err)
	}
	f.restoring = true
	if _, err := f.data.DeleteRange(nil, nil, 4096); err != nil {
		return fmt.Errorf("clear range: %w", err)
	}
	var records uint64
	for {
		kvs, err := rd.next()
		if err != nil {
			return err
		}
		if kvs == nil {
			break
		}
		records += uint64(len(kvs))
		if err := f.data.PutMany(kvs); err != nil {
			return fmt.Errorf("write chunk: %w", err)
		}
	}
	if err := rd.finish(records); err != nil {
		return err
	}
	err = f.shard.Update(func(tx *storage.Txn) error {
		if err := tx.Set(keyApplied, binary.BigEndian.AppendUint64(nil, rd.applied)); err != nil {
			return err
		}
		return tx.Delete(keyRestoring)
	})
	if err != nil {
		return fmt.Errorf("finish restore: %w", err)
	}
	f.restoring = false
	f.applied.Store(rd.applied)
	f.log.Info("snapshot restored", "applied-index", rd.applied, "records", records)
	f.sm.Restored(rd.applied)
	return nil
}

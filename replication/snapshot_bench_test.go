package replication

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
)

// snapshotMB is the state BenchmarkSnapshotInstall fills a shard with.
var snapshotMB = flag.Int("snapshot-mb", 64, "MB of state (1 KiB values) for BenchmarkSnapshotInstall")

// BenchmarkSnapshotInstall measures how fast a replica installs a
// snapshot: a shard is filled with -snapshot-mb MB of 1 KiB values through
// the FSM (batches of 1024 commands, as raft applies them), snapshotted
// into raft's FileSnapshotStore (FSM.Snapshot + Persist, with its CRC), and
// each iteration restores that file into a fresh FSM on a fresh Badger in
// a temp dir. Only the restore (opening the snapshot file, reading and
// verifying it, and writing it into Badger through FSM.Restore) is timed.
// Being a benchmark it runs only with -bench.
func BenchmarkSnapshotInstall(b *testing.B) {
	const valueSize = 1 << 10
	n := max(*snapshotMB, 1) << 20 / valueSize

	srcDB := openDB(b, b.TempDir())
	defer srcDB.Close()
	src, err := NewFSM(srcDB, 1, &kvMachine{}, quiet(), 0)
	if err != nil {
		b.Fatal(err)
	}
	value := bytes.Repeat([]byte("v"), valueSize)
	const batch = 1024
	logs := make([]*raft.Log, 0, batch)
	for i := 1; i <= n; i++ {
		// Vary the value so compression cannot make the state small.
		v := append([]byte(fmt.Sprintf("%08d", i)), value[8:]...)
		for j := 8; j < len(v); j += 64 {
			v[j] = byte(i * j)
		}
		logs = append(logs, &raft.Log{Index: uint64(i), Type: raft.LogCommand, Data: setCmd(fmt.Sprintf("key-%08d", i), v)})
		if len(logs) == batch || i == n {
			for _, r := range src.ApplyBatch(logs) {
				if resp, ok := r.(Response); ok && resp.Err != nil {
					b.Fatal(resp.Err)
				}
			}
			logs = logs[:0]
		}
	}
	if err := src.Err(); err != nil {
		b.Fatal(err)
	}

	store, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(b.TempDir(), "snaps"), 1, NewHCLogger(quiet()))
	if err != nil {
		b.Fatal(err)
	}
	snap, err := src.Snapshot()
	if err != nil {
		b.Fatal(err)
	}
	sink, err := store.Create(raft.SnapshotVersionMax, uint64(n), 1, raft.Configuration{}, 1, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := snap.Persist(sink); err != nil {
		b.Fatal(err)
	}
	snap.Release()
	metas, err := store.List()
	if err != nil || len(metas) != 1 {
		b.Fatalf("snapshots: %v %v", metas, err)
	}
	size := metas[0].Size

	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		dir, err := os.MkdirTemp(b.TempDir(), "dst")
		if err != nil {
			b.Fatal(err)
		}
		db := openDB(b, dir)
		m := &kvMachine{}
		dst, err := NewFSM(db, 1, m, quiet(), 0)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()

		meta, rc, err := store.Open(metas[0].ID)
		if err != nil {
			b.Fatal(err)
		}
		if err := dst.Restore(rc); err != nil {
			b.Fatal(err)
		}

		b.StopTimer()
		if dst.AppliedIndex() != meta.Index || m.restored != meta.Index {
			b.Fatalf("restored to %d (machine told %d), want %d", dst.AppliedIndex(), m.restored, meta.Index)
		}
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
		os.RemoveAll(dir)
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(size)*float64(b.N)/1e6/b.Elapsed().Seconds(), "MB/s")
	b.ReportMetric(float64(size)/1e6, "snapshot-MB")
	b.ReportMetric(float64(n), "keys")
}

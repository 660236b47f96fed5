package replication

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mtnode/mtnode/storage"
)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func openDB(t testing.TB, dir string) *storage.DB {
	t.Helper()
	db, err := storage.Open(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func bounds(t *testing.T, s *LogStore) (uint64, uint64) {
	t.Helper()
	f, err := s.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	return f, l
}

func TestLogStoreConformance(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	s, err := NewLogStore(db, 1)
	if err != nil {
		t.Fatal(err)
	}
	if f, l := bounds(t, s); f != 0 || l != 0 {
		t.Fatalf("empty bounds %d..%d", f, l)
	}
	var got raft.Log
	if err := s.GetLog(1, &got); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("missing log: %v", err)
	}
	at := time.Unix(1700000000, 123)
	first := &raft.Log{Index: 1, Term: 1, Type: raft.LogConfiguration, Data: []byte("cfg"), AppendedAt: at}
	if err := s.StoreLog(first); err != nil {
		t.Fatal(err)
	}
	var batch []*raft.Log
	for i := uint64(2); i <= 100; i++ {
		batch = append(batch, &raft.Log{Index: i, Term: 2, Type: raft.LogCommand, Data: []byte{byte(i)}, Extensions: []byte("x")})
	}
	if err := s.StoreLogs(batch); err != nil {
		t.Fatal(err)
	}
	if f, l := bounds(t, s); f != 1 || l != 100 {
		t.Fatalf("bounds %d..%d, want 1..100", f, l)
	}
	if err := s.GetLog(1, &got); err != nil {
		t.Fatal(err)
	}
	if got.Index != 1 || got.Term != 1 || got.Type != raft.LogConfiguration || string(got.Data) != "cfg" || !got.AppendedAt.Equal(at) || got.Extensions != nil {
		t.Fatalf("log 1 = %+v", got)
	}
	if err := s.GetLog(50, &got); err != nil || got.Index != 50 || got.Term != 2 || got.Data[0] != 50 || string(got.Extensions) != "x" || !got.AppendedAt.IsZero() {
		t.Fatalf("log 50 = %+v, %v", got, err)
	}
	// A second shard on the same database sees none of it.
	other, err := NewLogStore(db, 2)
	if err != nil {
		t.Fatal(err)
	}
	if f, l := bounds(t, other); f != 0 || l != 0 {
		t.Fatalf("other shard bounds %d..%d", f, l)
	}
	// Compaction deletes a prefix; a conflict deletes a suffix.
	if err := s.DeleteRange(1, 40); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(91, 100); err != nil {
		t.Fatal(err)
	}
	if f, l := bounds(t, s); f != 41 || l != 90 {
		t.Fatalf("after deletes %d..%d, want 41..90", f, l)
	}
	if err := s.GetLog(40, &got); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("deleted log 40: %v", err)
	}
	// A gap after a snapshot install is allowed.
	if err := s.StoreLogs([]*raft.Log{{Index: 200, Term: 3, Type: raft.LogNoop}}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, dir)
	defer db.Close()
	s, err = NewLogStore(db, 1)
	if err != nil {
		t.Fatal(err)
	}
	if f, l := bounds(t, s); f != 41 || l != 200 {
		t.Fatalf("after reopen %d..%d, want 41..200", f, l)
	}
	if err := s.DeleteRange(0, ^uint64(0)); err != nil {
		t.Fatal(err)
	}
	if f, l := bounds(t, s); f != 0 || l != 0 {
		t.Fatalf("after delete all %d..%d", f, l)
	}
}

func TestStableStoreConformance(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	s := NewStableStore(db, 1)
	// raft tells a missing key by the error text "not found".
	if _, err := s.Get([]byte("CurrentTerm")); err == nil || err.Error() != "not found" {
		t.Fatalf("missing Get: %v", err)
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); v != 0 || err == nil || err.Error() != "not found" {
		t.Fatalf("missing GetUint64: %d %v", v, err)
	}
	logs, _ := NewLogStore(db, 1)
	if has, err := raft.HasExistingState(logs, s, raft.NewInmemSnapshotStore()); err != nil || has {
		t.Fatalf("fresh state: %v %v", has, err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("n1")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "n1" {
		t.Fatalf("Get = %q %v", v, err)
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 7 {
		t.Fatalf("GetUint64 = %d %v", v, err)
	}
	if v, err := NewStableStore(db, 2).GetUint64([]byte("CurrentTerm")); v != 0 || err == nil {
		t.Fatalf("other shard sees %d %v", v, err)
	}
	if has, err := raft.HasExistingState(logs, s, raft.NewInmemSnapshotStore()); err != nil || !has {
		t.Fatalf("after term set: %v %v", has, err)
	}
}

func TestSnapshotStreamRoundTripAndTruncation(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	src, err := NewFSM(db, 1, &kvMachine{}, quiet(), 64)
	if err != nil {
		t.Fatal(err)
	}
	var logs []*raft.Log
	for i := uint64(1); i <= 300; i++ {
		logs = append(logs, &raft.Log{Index: i, Type: raft.LogCommand, Data: setCmd(string(rune('a'+i%26))+string(rune('a'+i/26)), bytes.Repeat([]byte{byte(i)}, int(i%50)))})
	}
	src.ApplyBatch(logs)
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.(*fsmSnapshot).write(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	dstM := &kvMachine{}
	dst, err := NewFSM(db, 2, dstM, quiet(), 0)
	if err != nil {
		t.Fatal(err)
	}
	// Something to be replaced.
	dst.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: setCmd("zz-stale", []byte("x"))}})
	if err := dst.Restore(io.NopCloser(bytes.NewReader(buf.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if dst.AppliedIndex() != 300 || dstM.restored != 300 {
		t.Fatalf("applied %d, restored %d", dst.AppliedIndex(), dstM.restored)
	}
	if a, b := dumpTable(t, src.data), dumpTable(t, dst.data); a != b {
		t.Fatalf("restored state differs:\n%s\n---\n%s", a, b)
	}

	// A truncated stream fails the FSM and leaves the restore marker, so
	// the next start restores again.
	bad, err := NewFSM(db, 3, &kvMachine{}, quiet(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Restore(io.NopCloser(bytes.NewReader(buf.Bytes()[:buf.Len()-5]))); !errors.Is(err, ErrFailed) {
		t.Fatalf("truncated restore: %v", err)
	}
	if again, _ := NewFSM(db, 3, &kvMachine{}, quiet(), 0); !again.Incomplete() {
		t.Fatal("restore marker not left behind")
	}
}

func TestApplyBatchRejectionKeepsNeighbours(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	m := &kvMachine{}
	f, err := NewFSM(db, 1, m, quiet(), 0)
	if err != nil {
		t.Fatal(err)
	}
	out := f.ApplyBatch([]*raft.Log{
		{Index: 1, Type: raft.LogConfiguration},
		{Index: 2, Type: raft.LogCommand, Data: incCmd("n")},
		{Index: 3, Type: raft.LogCommand, Data: rejectCmd("poison")},
		{Index: 4, Type: raft.LogCommand, Data: incCmd("n")},
		{Index: 5, Type: raft.LogNoop},
	})
	if r := out[2].(Response); !errors.Is(r.Err, errRejectedByTest) {
		t.Fatalf("entry 3: %+v", r)
	}
	if r := out[3].(Response); r.Err != nil || r.Value.(uint64) != 2 {
		t.Fatalf("entry 4: %+v", r)
	}
	if f.AppliedIndex() != 4 {
		t.Fatalf("applied %d, want 4", f.AppliedIndex())
	}
	if _, err := f.data.Get([]byte("kv/poison")); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("rejected write kept: %v", err)
	}
	// Replaying the same entries (a restart) applies nothing.
	before := m.calls.Load()
	f2, _ := NewFSM(db, 1, m, quiet(), 0)
	f2.ApplyBatch([]*raft.Log{{Index: 2, Type: raft.LogCommand, Data: incCmd("n")}, {Index: 4, Type: raft.LogCommand, Data: incCmd("n")}})
	if m.calls.Load() != before || m.dups.Load() != 0 {
		t.Fatalf("replay applied %d more, %d duplicates", m.calls.Load()-before, m.dups.Load())
	}
}

package node

import (
	"log/slog"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/storage"
)

// TestRemoteQueues fills a group's outbox for two other DCs through the
// real state machine and reads the queues as status and the pump do.
func TestRemoteQueues(t *testing.T) {
	db, err := storage.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	table := db.Table("g")
	rep := messaging.NewReplicated(nil)
	// Two shards: the owner's group is 3, the local user's 2.
	rep.SetLayout(messaging.Layout{DC: 1, Shards: 2, ShardOf: func(id int64, n int) int { return int(id % int64(n)) }})
	index := uint64(0)
	apply := func(cmd messaging.Command, now int64) {
		t.Helper()
		entry, err := messaging.EncodeCommand(cmd, messaging.Env{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		index++
		if err := table.Update(func(tx *storage.Txn) error {
			_, err := rep.ApplyCommand(tx, index, entry)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	queues := func(now int64) []DCQueue {
		t.Helper()
		var qs []DCQueue
		if err := table.View(func(tx *storage.Txn) (err error) {
			qs, err = remoteQueues(tx, 4, now)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return qs
	}
	if qs := queues(1000); len(qs) != 0 {
		t.Fatalf("queues of an empty outbox: %v", qs)
	}
	// Each block sends a BlockedBy step to the blocked user's home DC; a
	// block of a local user goes to a local group, no other DC's queue.
	owner := messaging.UserID(1, 1)
	apply(messaging.Block{Owner: owner, Other: messaging.UserID(2, 1)}, 1000)
	apply(messaging.Block{Owner: owner, Other: messaging.UserID(2, 2)}, 1010)
	apply(messaging.Block{Owner: owner, Other: messaging.UserID(3, 1)}, 1050)
	apply(messaging.Block{Owner: owner, Other: messaging.UserID(1, 2)}, 1060)
	want := []DCQueue{{DC: 2, Depth: 2, AgeSeconds: 100}, {DC: 3, Depth: 1, AgeSeconds: 50}}
	if qs := queues(1100); !slices.Equal(qs, want) {
		t.Fatalf("queues = %v, want %v", qs, want)
	}
	if err := table.View(func(tx *storage.Txn) error {
		depth, err := messaging.OutboxDepth(tx, 4)
		if depth[2] != 1 {
			t.Errorf("outbox depth %v: the local step is not queued for group 2", depth)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// DC 2 acknowledged its first step: the next one is the oldest.
	apply(messaging.OutboxAck{Marks: []messaging.OutboxMark{{Dest: messaging.RemoteDest(2), Upto: 1}}}, 1100)
	want = []DCQueue{{DC: 2, Depth: 1, AgeSeconds: 90}, {DC: 3, Depth: 1, AgeSeconds: 50}}
	if qs := queues(1100); !slices.Equal(qs, want) {
		t.Fatalf("after an ack, queues = %v, want %v", qs, want)
	}
	apply(messaging.OutboxAck{Marks: []messaging.OutboxMark{{Dest: messaging.RemoteDest(2), Upto: 2}, {Dest: messaging.RemoteDest(3), Upto: 1}}}, 1100)
	if qs := queues(1100); len(qs) != 0 {
		t.Fatalf("queues after every ack: %v", qs)
	}
}

func TestSumDCQueues(t *testing.T) {
	got := SumDCQueues(
		[]DCQueue{{DC: 3, Depth: 1, AgeSeconds: 5}},
		nil,
		[]DCQueue{{DC: 2, Depth: 4, AgeSeconds: 9}, {DC: 3, Depth: 2, AgeSeconds: 7}},
	)
	want := []DCQueue{{DC: 2, Depth: 4, AgeSeconds: 9}, {DC: 3, Depth: 3, AgeSeconds: 7}}
	if !slices.Equal(got, want) {
		t.Errorf("SumDCQueues = %v, want %v", got, want)
	}
	if got := SumDCQueues(); got != nil {
		t.Errorf("SumDCQueues() = %v, want nil", got)
	}
}

// TestDCQueueMetrics: a group's leader sets its series, a drained DC
// reads 0, DC ids out of range get none, and losing leadership deletes
// the group's series and no other's.
func TestDCQueueMetrics(t *testing.T) {
	m := newClusterMetrics(prometheus.NewRegistry())
	m.setDCQueues(5, []DCQueue{{DC: 2, Depth: 4, AgeSeconds: 30}, {DC: 3, Depth: 1, AgeSeconds: 2}, {DC: 5000, Depth: 1}})
	m.setDCQueues(6, []DCQueue{{DC: 2, Depth: 1, AgeSeconds: 1}})
	if n := testutil.CollectAndCount(m.dcQueueDepth); n != 3 {
		t.Errorf("%d depth series, want 3", n)
	}
	if v := testutil.ToFloat64(m.dcQueueDepth.WithLabelValues("2", "5")); v != 4 {
		t.Errorf("depth{dc=2,group=5} = %v, want 4", v)
	}
	if v := testutil.ToFloat64(m.dcQueueAge.WithLabelValues("2", "5")); v != 30 {
		t.Errorf("age{dc=2,group=5} = %v, want 30", v)
	}
	m.setDCQueues(5, []DCQueue{{DC: 3, Depth: 2, AgeSeconds: 3}})
	if d, a := testutil.ToFloat64(m.dcQueueDepth.WithLabelValues("2", "5")), testutil.ToFloat64(m.dcQueueAge.WithLabelValues("2", "5")); d != 0 || a != 0 {
		t.Errorf("drained DC 2 reads depth %v, age %v; want 0, 0", d, a)
	}
	m.clearDCQueues(5)
	if n := testutil.CollectAndCount(m.dcQueueDepth); n != 1 {
		t.Errorf("%d depth series after group 5 was lost, want 1", n)
	}
	if n := testutil.CollectAndCount(m.dcQueueAge); n != 1 {
		t.Errorf("%d age series after group 5 was lost, want 1", n)
	}
	if v := testutil.ToFloat64(m.dcQueueDepth.WithLabelValues("2", "6")); v != 1 {
		t.Errorf("depth{dc=2,group=6} = %v, want 1", v)
	}
}

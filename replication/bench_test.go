package replication

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func BenchmarkStoreLogs(b *testing.B) {
	for _, n := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			db := openDB(b, b.TempDir())
			defer db.Close()
			s, err := NewLogStore(db, 1)
			if err != nil {
				b.Fatal(err)
			}
			data := make([]byte, 256)
			logs := make([]*raft.Log, n)
			for i := range logs {
				logs[i] = &raft.Log{Term: 1, Type: raft.LogCommand, Data: data}
			}
			idx := uint64(0)
			b.ReportAllocs()
			b.SetBytes(int64(n * len(data)))
			for b.Loop() {
				for _, l := range logs {
					idx++
					l.Index = idx
				}
				if err := s.StoreLogs(logs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

// BenchmarkGroupApply measures commit throughput of one 3-replica group
// on the in-memory transport: every command is a log write (fsync) on each
// replica plus an apply transaction (fsync) on each.
func BenchmarkGroupApply(b *testing.B) {
	for _, par := range []int{1, 64} {
		b.Run(fmt.Sprintf("proposers=%d", par), func(b *testing.B) {
			conf := func() *raft.Config {
				c := testRaftConfig()
				c.MaxAppendEntries = 256
				return c
			}
			c := newTestCluster(b, 3, conf)
			l := c.leader()
			cmd := setCmd("k", make([]byte, 100))
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			per := b.N/par + 1
			for range par {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range per {
						if _, err := l.g.Apply(context.Background(), cmd); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(per*par)/b.Elapsed().Seconds(), "commits/s")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestIdleCost measures what idle groups cost: 3 nodes (one Badger each)
// run G groups of 3 replicas on the in-memory transport, all with elected
// leaders, and we count goroutines and CPU over a quiet window. Off by
// default (it takes ~15 s); run with MTNODE_IDLE_COST=1 -run IdleCost -v.
func TestIdleCost(t *testing.T) {
	if os.Getenv("MTNODE_IDLE_COST") == "" {
		t.Skip("set MTNODE_IDLE_COST=1 to measure")
	}
	for _, tc := range []struct {
		name string
		conf func() *raft.Config
	}{
		{"tuned", DefaultRaftConfig},
		{"raft-defaults", raft.DefaultConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const groups, nodes = 64, 3
			base := runtime.NumGoroutine()
			dbs := make([]*replica, nodes)
			for i := range dbs {
				dbs[i] = &replica{dir: t.TempDir()}
				dbs[i].db = openDB(t, dbs[i].dir)
			}
			var all []*Group
			for s := range groups {
				var trans []*raft.InmemTransport
				var addrs []raft.ServerAddress
				for n := range nodes {
					a, tr := raft.NewInmemTransport(raft.ServerAddress(fmt.Sprintf("s%d-n%d", s, n)))
					trans, addrs = append(trans, tr), append(addrs, a)
				}
				for i := range trans {
					for j := range trans {
						if i != j {
							trans[i].Connect(addrs[j], trans[j])
						}
					}
				}
				var servers []raft.Server
				for n := range nodes {
					servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprintf("n%d", n)), Address: addrs[n]})
				}
				for n := range nodes {
					g, err := NewGroup(Config{Shard: ShardID(s), ID: servers[n].ID, DB: dbs[n].db, Transport: trans[n],
						StateMachine: &kvMachine{}, Raft: tc.conf(), SnapshotDir: fmt.Sprintf("%s/snaps/%d", dbs[n].dir, s), Logger: quiet()})
					if err != nil {
						t.Fatal(err)
					}
					if n == 0 {
						if err := g.Bootstrap(servers); err != nil {
							t.Fatal(err)
						}
					}
					all = append(all, g)
				}
			}
			defer func() {
				for _, g := range all {
					_ = g.Close()
				}
				for _, d := range dbs {
					_ = d.db.Close()
				}
			}()
			waitFor(t, 60*time.Second, "every group to elect", func() bool {
				leaders := 0
				for _, g := range all {
					if g.IsLeader() {
						leaders++
					}
				}
				return leaders == groups
			})
			time.Sleep(3 * time.Second) // settle: this is the measurement window, not a wait for a condition
			gr := runtime.NumGoroutine() - base
			const window = 10 * time.Second
			c0 := cpuTime()
			time.Sleep(window)
			cpu := cpuTime() - c0
			perGroupCPU := float64(cpu) / float64(window) / groups * 100
			t.Logf("%s: %d groups x %d replicas: %d goroutines (%.1f per group, %.1f per replica); CPU %.1f%% of a core total, %.3f%% per group",
				tc.name, groups, nodes, gr, float64(gr)/groups, float64(gr)/groups/nodes, float64(cpu)/float64(window)*100, perGroupCPU)
		})
	}
}

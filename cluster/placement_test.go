package cluster

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
)

func nodes(n int) []Member {
	var ms []Member
	for i := 1; i <= n; i++ {
		ms = append(ms, Member{ID: NodeID(fmt.Sprintf("node-%d", i))})
	}
	return ms
}

// TestWeightVectors pins the rendezvous weight: nodes of different
// versions must agree on it, and changing it moves replicas.
func TestWeightVectors(t *testing.T) {
	for _, c := range []struct {
		n    NodeID
		s    ShardID
		want uint64
	}{
		{"node-1", 0, 0x94a9d40986da123d},
		{"node-1", 63, 0x41a5d7395b39d414},
		{"node-2", 1, 0x728259b01aa04c6d},
		{"a", 63, 0x914e7ff7d3f8a62f},
	} {
		if got := weight(c.n, c.s); got != c.want {
			t.Errorf("weight(%s, %d) = %#x, want %#x", c.n, c.s, got, c.want)
		}
	}
}

func TestPlaceBasics(t *testing.T) {
	ms := nodes(5)
	m := Place(64, ms, 3)
	rev := slices.Clone(ms)
	slices.Reverse(rev)
	if !reflect.DeepEqual(m, Place(64, append(rev, ms[0]), 3)) {
		t.Fatal("Place depends on member order or duplicates")
	}
	for i, sh := range m.Shards {
		if len(sh.Voters) != 3 || !slices.IsSorted(sh.Voters) || len(slices.Compact(slices.Clone(sh.Voters))) != 3 {
			t.Fatalf("shard %d voters %v", i, sh.Voters)
		}
		if !slices.Contains(sh.Voters, sh.Leader) || len(sh.NonVoters) != 0 {
			t.Fatalf("shard %d: %+v", i, sh)
		}
	}
	// rf is clamped to the eligible members; Leaving ones are not eligible.
	ms[0].Leaving = true
	for _, sh := range Place(8, ms[:2], 3).Shards {
		if !slices.Equal(sh.Voters, []NodeID{"node-2"}) || sh.Leader != "node-2" {
			t.Fatalf("two members, one leaving, rf 3: %+v", sh)
		}
	}
	for _, sh := range Place(4, nil, 3).Shards {
		if len(sh.Voters) != 0 || sh.Leader != "" {
			t.Fatalf("no members: %+v", sh)
		}
	}
}

// moved counts the replicas in b not in a, and on which nodes they land.
func moved(a, b Map) (int, map[NodeID]int) {
	n, to := 0, map[NodeID]int{}
	for i := range a.Shards {
		for _, v := range b.Shards[i].Voters {
			if !slices.Contains(a.Shards[i].Voters, v) {
				n++
				to[v]++
			}
		}
	}
	return n, to
}

func TestPlaceJoinMovesOnlyItsShare(t *testing.T) {
	for _, shards := range []int{64, 256} {
		before := Place(shards, nodes(3), 3)
		after := Place(shards, nodes(4), 3)
		n, to := moved(before, after)
		frac := float64(n) / float64(3*shards)
		t.Logf("%d shards: joining a 4th node moves %d of %d replicas (%.3f)", shards, n, 3*shards, frac)
		if frac < 0.18 || frac > 0.32 {
			t.Errorf("%d shards: moved %.3f of replicas, want about 1/4", shards, frac)
		}
		if len(to) != 1 || to["node-4"] != n {
			t.Errorf("replicas moved to %v, want only node-4", to)
		}
	}
}

func TestPlaceLeaveMovesOnlyItsReplicas(t *testing.T) {
	for _, gone := range []int{0, 2, 3} {
		all := nodes(4)
		before := Place(64, all, 3)
		id := all[gone].ID
		after := Place(64, slices.Delete(slices.Clone(all), gone, gone+1), 3)
		held := 0
		for i, sh := range before.Shards {
			if slices.Contains(sh.Voters, id) {
				held++
			}
			for _, v := range sh.Voters {
				if v != id && !slices.Contains(after.Shards[i].Voters, v) {
					t.Fatalf("shard %d lost %s, which did not leave", i, v)
				}
			}
		}
		if n, _ := moved(before, after); n != held {
			t.Errorf("%s left holding %d replicas; %d moved", id, held, n)
		}
	}
}

func TestPlaceSpreadsLeaders(t *testing.T) {
	for _, shards := range []int{64, 256} {
		for n := 1; n <= 12; n++ {
			m := Place(shards, nodes(n), 3)
			count := map[NodeID]int{}
			for _, sh := range m.Shards {
				count[sh.Leader]++
			}
			var cs []int
			for _, mm := range nodes(n) {
				cs = append(cs, count[mm.ID])
			}
			lo, hi := slices.Min(cs), slices.Max(cs)
			ratio := float64(hi) / float64(lo)
			// Exactly even is shards/n; greedy least-loaded over 3 choices
			// stays within a couple of leaders of it.
			if hi-lo > 3 || (shards/n >= 8 && ratio > 1.5) {
				t.Errorf("%d shards on %d nodes: leaders per node %d..%d (ratio %.2f)", shards, n, lo, hi, ratio)
			}
			if n == 5 || n == 12 {
				t.Logf("%d shards on %d nodes: leaders per node %d..%d", shards, n, lo, hi)
			}
		}
	}
}

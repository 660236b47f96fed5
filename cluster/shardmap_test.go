package cluster

import (
	"math"
	"slices"
	"testing"
)

// TestShardOfVectors pins ShardOf: stored data depends on it, so these
// values must never change.
func TestShardOfVectors(t *testing.T) {
	for _, c := range []struct {
		id     int64
		shards int
		want   ShardID
	}{
		{0, 64, 0},
		{1, 64, 21},
		{2<<40 | 1, 64, 39},
		{2<<40 | 2, 64, 14},
		{1<<40 | 123456789, 64, 26},
		{1<<40 | 123456789, 256, 106},
		{-1, 64, 45},
		{5<<40 | 7, 1, 0},
	} {
		if got := ShardOf(c.id, c.shards); got != c.want {
			t.Errorf("ShardOf(%#x, %d) = %d, want %d", c.id, c.shards, got, c.want)
		}
	}
}

func TestShardOfUniform(t *testing.T) {
	for _, shards := range []int{1, 3, 64, 256} {
		const n = 200_000
		counts := make([]int, shards)
		for seq := int64(1); seq <= n; seq++ {
			s := ShardOf(2<<40|seq, shards)
			if int(s) >= shards {
				t.Fatalf("ShardOf(_, %d) = %d out of range", shards, s)
			}
			counts[s]++
		}
		// A uniform hash keeps every count within a few standard
		// deviations (about sqrt(mean)) of the mean; allow 5.
		mean := float64(n) / float64(shards)
		tol := 5 * math.Sqrt(mean)
		lo, hi := slices.Min(counts), slices.Max(counts)
		if float64(lo) < mean-tol || float64(hi) > mean+tol {
			t.Errorf("%d shards: counts %d..%d, mean %.0f ± %.0f", shards, lo, hi, mean, tol)
		}
	}
}

func TestMapApply(t *testing.T) {
	m := Map{Shards: []Shard{{Voters: []NodeID{"a", "c"}, Leader: "a"}}}
	m.Apply(Step{Kind: StepAddNonVoter, Node: "b"})
	m.Apply(Step{Kind: StepAddNonVoter, Node: "a"}) // already a voter: no-op
	if want := (Shard{Voters: []NodeID{"a", "c"}, NonVoters: []NodeID{"b"}, Leader: "a"}); !shardEqual(m.Shards[0], want) {
		t.Fatalf("after add: %+v", m.Shards[0])
	}
	c := m.Clone()
	m.Apply(Step{Kind: StepPromote, Node: "b"})
	m.Apply(Step{Kind: StepRemove, Node: "a"})
	if want := (Shard{Voters: []NodeID{"b", "c"}}); !shardEqual(m.Shards[0], want) {
		t.Fatalf("after promote and remove: %+v", m.Shards[0])
	}
	m.Apply(Step{Kind: StepTransferLeader, Node: "c"})
	if m.Shards[0].Leader != "c" {
		t.Fatalf("leader %q", m.Shards[0].Leader)
	}
	if !slices.Equal(c.Shards[0].Voters, []NodeID{"a", "c"}) {
		t.Fatalf("Clone shares memory: %+v", c.Shards[0])
	}
}

func shardEqual(a, b Shard) bool {
	return slices.Equal(a.Voters, b.Voters) && slices.Equal(a.NonVoters, b.NonVoters) && a.Leader == b.Leader
}

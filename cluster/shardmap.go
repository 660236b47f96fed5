package cluster

import (
	"fmt"
	"math/bits"
	"slices"
)

// Shards: how entity IDs map to shards, and the shard map (which nodes hold
// each shard's replicas). See DESIGN.md, "Placement".

// ShardID names one shard of a data center, numbered 0..shards-1. It is
// the same number as replication.ShardID; cluster does not import
// replication, so the type is repeated.
type ShardID uint32

func (s ShardID) String() string { return fmt.Sprintf("%08x", uint32(s)) }

// DefaultShards is the shard count of a new data center (config key
// cluster.shards). It is fixed when the DC is created: ShardOf's answer
// depends on it, and every stored entity lives where it says.
//
// 16 because idle groups are not free over the real mesh: measured on a
// 3-node DC of real processes (bench/cluster-idle.sh, BENCHMARKS.md), a
// group costs about 0.25 % of a core and 11 goroutines per node, so 16
// shards idle at under a tenth of a core per node and 64 at a fifth (the
// first estimate, 64, came from raft's in-memory transport, ten times
// cheaper per replica). 16 groups still spread leadership 6/5/5 over three
// nodes and across DCs of up to 16 nodes; a DC that expects more picks
// more at creation, and heartbeats coalesced per peer would make more
// shards cheap.
const DefaultShards = 16

// ShardOf returns the shard that owns entityID in a DC of the given shard
// count (> 0).
//
// The hash is SplitMix64's finalizer over the ID's 64 bits, reduced to
// [0, shards) by Lemire's multiply-shift (high word of hash·shards). It
// must never change once data exists: every entity's shard, and so where
// its data is stored, depends on it. TestShardOfVectors pins it.
//
// IDs are dc<<40 | sequence, so consecutive sequences differ only in low
// bits; the finalizer spreads them uniformly over all shards.
func ShardOf(entityID int64, shards int) ShardID {
	if shards <= 0 {
		panic("cluster: ShardOf with no shards")
	}
	hi, _ := bits.Mul64(mix64(uint64(entityID)), uint64(shards))
	return ShardID(hi)
}

// mix64 is SplitMix64's finalizer (Steele, Lea, Flood 2014): a bijection
// with good avalanche. Its constants are part of the on-disk format.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Shard is where one shard's replicas are.
type Shard struct {
	// Voters are the raft voters, sorted.
	Voters []NodeID
	// NonVoters are staged replicas catching up, sorted. Place never
	// returns any; a current map (as raft reports it) may have them.
	NonVoters []NodeID
	// Leader is the preferred leader in a map from Place (one of Voters),
	// and the actual leader, or empty when unknown, in a current map.
	Leader NodeID
}

// Map is the shard map of a DC: Shards[i] is shard i.
type Map struct {
	Shards []Shard
}

// Clone returns a deep copy.
func (m Map) Clone() Map {
	out := Map{Shards: make([]Shard, len(m.Shards))}
	for i, s := range m.Shards {
		out.Shards[i] = Shard{
			Voters:    slices.Clone(s.Voters),
			NonVoters: slices.Clone(s.NonVoters),
			Leader:    s.Leader,
		}
	}
	return out
}

// Has reports whether n holds a replica (voter or not) of the shard.
func (s Shard) Has(n NodeID) bool {
	return slices.Contains(s.Voters, n) || slices.Contains(s.NonVoters, n)
}

// quorum is the number of voters a raft configuration of n voters needs.
func quorum(n int) int { return n/2 + 1 }

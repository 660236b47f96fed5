// Package replication puts deterministic state machines behind Raft: one
// hashicorp/raft group per shard, whose log, stable store and state all
// live in the node's one Badger under per-shard key prefixes.
//
// The parts are usable alone (LogStore, StableStore, FSM) and composed by
// Group, which runs one raft instance over a transport handed in. See
// DESIGN.md for the key layout, the applied-index invariant and the
// snapshot format.
package replication

import "fmt"

// ShardID names one shard of a data center; each shard is one Raft group.
type ShardID uint32

func (s ShardID) String() string { return fmt.Sprintf("%08x", uint32(s)) }

// prefix is the shard's key prefix inside the raft and shard tables:
// fixed width, so no shard's range contains another's.
func (s ShardID) prefix() []byte { return fmt.Appendf(nil, "%08x/", uint32(s)) }

// Tables: raftTable holds each shard's log and stable store; shardTable
// holds each shard's state (data/) and the FSM's own records (meta/).
const (
	raftTable  = "raft"
	shardTable = "shard"
)

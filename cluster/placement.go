package cluster

import (
	"cmp"
	"slices"
	"strconv"
	"time"
)

// Placement and autopilot: Place computes where each shard's replicas
// should be; Plan computes the next safe membership changes to get there.
// Both are pure and deterministic: no clock, no randomness, no I/O. See
// DESIGN.md, "Placement".

// Place returns the target shard map for shards shards over members: each
// shard's voters are the rf members with the highest rendezvous weight for
// that shard (rf is clamped to [1, eligible members]), and each shard's
// preferred leader is one of them, chosen to spread leadership evenly.
// Members that are Leaving are not eligible. With no eligible member every
// shard is empty.
//
// Rendezvous hashing moves only what it must: a joining node takes the
// slots where it now ranks in a shard's top rf (about rf/N of them), and a
// leaving node's replicas go to each shard's next-ranked node; no other
// replica moves.
func Place(shards int, members []Member, rf int) Map {
	var ids []NodeID
	for _, m := range members {
		if !m.Leaving {
			ids = append(ids, m.ID)
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	all := func(NodeID) bool { return true }
	return place(shards, func(ShardID) []NodeID { return ids }, rf, all)
}

// place ranks cands(s) for each shard s and takes the first rf as voters;
// the preferred leader is picked among voters for which canLead holds.
func place(shards int, cands func(ShardID) []NodeID, rf int, canLead func(NodeID) bool) Map {
	m := Map{Shards: make([]Shard, shards)}
	leaders := map[NodeID]int{}
	for i := range m.Shards {
		s := ShardID(i)
		ranked := rank(s, cands(s))
		r := min(max(rf, 1), len(ranked))
		top := ranked[:r]
		// Greedy: the least-loaded eligible voter, ties to the higher
		// rendezvous rank. Shards go in order, so the choice is
		// deterministic; with rf choices per shard this keeps leader
		// counts within a few of each other (TestPlaceSpreadsLeaders).
		var lead NodeID
		for _, n := range top {
			if canLead(n) && (lead == "" || leaders[n] < leaders[lead]) {
				lead = n
			}
		}
		if lead != "" {
			leaders[lead]++
		}
		voters := slices.Clone(top)
		slices.Sort(voters)
		m.Shards[i] = Shard{Voters: voters, Leader: lead}
	}
	return m
}

// rank returns the distinct nodes sorted by rendezvous weight for shard s,
// highest first, ties broken by node ID.
func rank(s ShardID, nodes []NodeID) []NodeID {
	type wn struct {
		w uint64
		n NodeID
	}
	ws := make([]wn, 0, len(nodes))
	for _, n := range nodes {
		ws = append(ws, wn{weight(n, s), n})
	}
	slices.SortFunc(ws, func(a, b wn) int {
		if c := cmp.Compare(b.w, a.w); c != 0 {
			return c
		}
		return cmp.Compare(a.n, b.n)
	})
	out := make([]NodeID, 0, len(ws))
	for i, x := range ws {
		if i > 0 && x.n == ws[i-1].n {
			continue
		}
		out = append(out, x.n)
	}
	return out
}

// weight is the rendezvous weight of node n for shard s: SplitMix64's
// finalizer over FNV-1a-64(n) plus s times the golden-ratio constant.
// Every node must compute the same weights, and changing them moves
// replicas, so it is fixed like ShardOf's hash (TestWeightVectors).
func weight(n NodeID, s ShardID) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(n); i++ {
		h ^= uint64(n[i])
		h *= 1099511628211
	}
	return mix64(h + (uint64(s)+1)*0x9e3779b97f4a7c15)
}

// StepKind is one kind of raft membership change.
type StepKind int

// Step kinds.
const (
	// StepAddNonVoter stages Node as a non-voter (raft AddNonvoter); the
	// new replica is seeded by snapshot and catches up.
	StepAddNonVoter StepKind = iota + 1
	// StepPromote makes the non-voter Node a voter (raft AddVoter). The
	// executor performs it only once Node has caught up with the leader
	// (its applied index is within a small lag); until then the step stays
	// pending and Plan keeps proposing it.
	StepPromote
	// StepRemove removes Node from the configuration (raft RemoveServer).
	StepRemove
	// StepTransferLeader asks the current leader to hand leadership to
	// Node (raft LeadershipTransferToServer).
	StepTransferLeader
)

func (k StepKind) String() string {
	switch k {
	case StepAddNonVoter:
		return "add-nonvoter"
	case StepPromote:
		return "promote"
	case StepRemove:
		return "remove"
	case StepTransferLeader:
		return "transfer-leader"
	}
	return "step(" + strconv.Itoa(int(k)) + ")"
}

// Step is one membership change of one shard.
type Step struct {
	Shard ShardID
	Kind  StepKind
	Node  NodeID
}

func (s Step) String() string { return s.Shard.String() + " " + s.Kind.String() + " " + string(s.Node) }

// Apply records in m that st was done: what the shard's configuration is
// once raft has committed it. Removing the leader leaves Leader unknown.
func (m *Map) Apply(st Step) {
	sh := &m.Shards[st.Shard]
	del := func(l []NodeID) []NodeID {
		return slices.DeleteFunc(l, func(n NodeID) bool { return n == st.Node })
	}
	ins := func(l []NodeID) []NodeID {
		if i, ok := slices.BinarySearch(l, st.Node); !ok {
			l = slices.Insert(l, i, st.Node)
		}
		return l
	}
	switch st.Kind {
	case StepAddNonVoter:
		if !slices.Contains(sh.Voters, st.Node) {
			sh.NonVoters = ins(sh.NonVoters)
		}
	case StepPromote:
		sh.NonVoters = del(sh.NonVoters)
		sh.Voters = ins(sh.Voters)
	case StepRemove:
		sh.NonVoters = del(sh.NonVoters)
		sh.Voters = del(sh.Voters)
		if sh.Leader == st.Node {
			sh.Leader = ""
		}
	case StepTransferLeader:
		sh.Leader = st.Node
	}
}

// Plan returns the next membership changes that move current (the shard
// configurations as raft reports them, with actual leaders) towards the
// target placement, at most one per shard, ordered by shard. Steps of
// different shards are independent and may run concurrently; the caller
// runs them, updates current, and plans again until Plan returns nothing.
//
// live are the members gossip reports alive; Leaving ones are alive but
// take no new replicas. downSince says since when each node not in live
// has been down (a missing entry counts as "just now"). A down node keeps
// its replicas, and its place in the target, until grace has passed; only
// then is it removed and replaced, so a restart or a short partition moves
// nothing.
//
// Per shard, in this order of priority:
//
//  1. remove a voter down for longer than grace;
//  2. remove a non-voter that is not in the target;
//  3. promote a live non-voter that is in the target (after catch-up);
//  4. add a live target node that holds no replica as a non-voter;
//  5. once every target node is a voter, remove a live voter not in the
//     target, first handing leadership away if it leads;
//  6. once the configuration is the target, move leadership to the
//     preferred leader.
//
// Safety: a shard whose live voters are fewer than a quorum gets no steps
// (its configuration cannot change; an operator must recover it), and no
// step leaves fewer than a quorum of the shard's voters alive. A shard
// with no voters is not bootstrapped here.
func Plan(current Map, live []Member, rf int, now time.Time, downSince map[NodeID]time.Time, grace time.Duration) []Step {
	alive := map[NodeID]bool{}
	var eligible []NodeID
	for _, m := range live {
		alive[m.ID] = true
		if !m.Leaving {
			eligible = append(eligible, m.ID)
		}
	}
	slices.Sort(eligible)
	eligible = slices.Compact(eligible)
	gone := func(n NodeID) bool {
		if alive[n] {
			return false
		}
		t, ok := downSince[n]
		return ok && now.Sub(t) >= grace
	}
	cands := func(s ShardID) []NodeID {
		sh := current.Shards[s]
		c := slices.Clone(eligible)
		for _, l := range [][]NodeID{sh.Voters, sh.NonVoters} {
			for _, n := range l {
				if !alive[n] && !gone(n) {
					c = append(c, n) // down within grace: keeps its place
				}
			}
		}
		return c
	}
	canLead := func(n NodeID) bool { return alive[n] }
	target := place(len(current.Shards), cands, rf, canLead)

	var steps []Step
	for i, sh := range current.Shards {
		s := ShardID(i)
		sh.Voters = slices.Sorted(slices.Values(sh.Voters))
		sh.NonVoters = slices.Sorted(slices.Values(sh.NonVoters))
		if st, ok := planShard(s, sh, target.Shards[i], alive, gone); ok {
			steps = append(steps, st)
		}
	}
	return steps
}

// planShard returns the next step for one shard, if any (see Plan).
func planShard(s ShardID, cur, want Shard, alive map[NodeID]bool, gone func(NodeID) bool) (Step, bool) {
	step := func(k StepKind, n NodeID) (Step, bool) { return Step{Shard: s, Kind: k, Node: n}, true }
	nv := len(cur.Voters)
	up := 0
	for _, n := range cur.Voters {
		if alive[n] {
			up++
		}
	}
	if nv == 0 || len(want.Voters) == 0 || up < quorum(nv) {
		return Step{}, false
	}
	inWant := func(n NodeID) bool { return slices.Contains(want.Voters, n) }

	// 1. Dead voters past grace. Removing a dead voter keeps up and
	// shrinks the quorum, so it is safe whenever the shard has quorum.
	for _, n := range cur.Voters {
		if gone(n) {
			return step(StepRemove, n)
		}
	}
	// 2. Stale non-voters: no longer wanted, or gone.
	for _, n := range cur.NonVoters {
		if !inWant(n) {
			return step(StepRemove, n)
		}
	}
	// 3. Promote caught-up staged replicas. A live promotion keeps quorum:
	// up+1 >= quorum(nv+1) whenever up >= quorum(nv).
	for _, n := range cur.NonVoters {
		if alive[n] {
			return step(StepPromote, n)
		}
	}
	// 4. Stage missing target replicas.
	for _, n := range want.Voters {
		if alive[n] && !cur.Has(n) {
			return step(StepAddNonVoter, n)
		}
	}
	// 5. Extra live voters, only once every replacement is a voter.
	complete := true
	for _, n := range want.Voters {
		if !slices.Contains(cur.Voters, n) {
			complete = false
		}
	}
	if !complete {
		return Step{}, false
	}
	for _, n := range cur.Voters {
		if inWant(n) || !alive[n] {
			continue
		}
		if n == cur.Leader && want.Leader != "" {
			return step(StepTransferLeader, want.Leader)
		}
		if up-1 >= quorum(nv-1) {
			return step(StepRemove, n)
		}
		return Step{}, false
	}
	// 6. Preferred leader, once the configuration is the target.
	if len(cur.NonVoters) == 0 && slices.Equal(cur.Voters, want.Voters) &&
		cur.Leader != "" && want.Leader != "" && cur.Leader != want.Leader {
		return step(StepTransferLeader, want.Leader)
	}
	return Step{}, false
}

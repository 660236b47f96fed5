package cluster

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"
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

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const testGrace = time.Minute

func oneShard(voters ...NodeID) Map {
	return Map{Shards: []Shard{{Voters: voters, Leader: voters[0]}}}
}

func members(ids ...NodeID) []Member {
	var ms []Member
	for _, id := range ids {
		ms = append(ms, Member{ID: id})
	}
	return ms
}

func TestPlanDeadVoterWaitsForGrace(t *testing.T) {
	cur := oneShard("a", "b", "c")
	down := map[NodeID]time.Time{"c": t0}
	if st := Plan(cur, members("a", "b"), 3, t0.Add(testGrace-1), down, testGrace); len(st) != 0 {
		t.Fatalf("within grace: %v", st)
	}
	if st := Plan(cur, members("a", "b"), 3, t0.Add(time.Hour), nil, testGrace); len(st) != 0 {
		t.Fatalf("down with no time known: %v", st)
	}
	st := Plan(cur, members("a", "b", "d"), 3, t0.Add(testGrace), down, testGrace)
	if want := []Step{{0, StepRemove, "c"}}; !reflect.DeepEqual(st, want) {
		t.Fatalf("after grace: %v, want %v", st, want)
	}
}

func TestPlanNeverBelowQuorum(t *testing.T) {
	cur := oneShard("a", "b", "c")
	live := members("a", "d", "e")
	down := map[NodeID]time.Time{"b": t0, "c": t0}
	if st := Plan(cur, live, 3, t0.Add(time.Hour), down, testGrace); len(st) != 0 {
		t.Fatalf("shard without quorum got steps: %v", st)
	}
}

// A live voter leaves the configuration only after its replacement is a
// voter, and hands leadership away first.
func TestPlanStagesBeforeRemoving(t *testing.T) {
	cur := oneShard("a", "b", "c")
	live := []Member{{ID: "a", Leaving: true}, {ID: "b"}, {ID: "c"}, {ID: "d"}}
	var got []Step
	for range 10 {
		st := Plan(cur, live, 3, t0, nil, testGrace)
		if len(st) == 0 {
			break
		}
		got = append(got, st...)
		cur.Apply(st[0])
	}
	want := []Step{
		{0, StepAddNonVoter, "d"},
		{0, StepPromote, "d"},
		{0, StepTransferLeader, cur.Shards[0].Leader},
		{0, StepRemove, "a"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("steps %v, want %v", got, want)
	}
	if !slices.Equal(cur.Shards[0].Voters, []NodeID{"b", "c", "d"}) {
		t.Fatalf("ended with %+v", cur.Shards[0])
	}
}

// sim is a data center under random membership changes, with an executor
// that applies Plan's steps the way raft would.
type sim struct {
	t       *testing.T
	rng     *rand.Rand
	shards  int
	rf      int
	next    int
	now     time.Time
	alive   map[NodeID]bool
	leaving map[NodeID]bool
	down    map[NodeID]time.Time
	cur     Map
	kinds   map[StepKind]int
}

func newSim(t *testing.T, seed uint64) *sim {
	s := &sim{
		t:       t,
		rng:     rand.New(rand.NewPCG(seed, 1)),
		shards:  1 + int(seed/3%3)*8,
		rf:      1 + int(seed%3),
		now:     t0,
		alive:   map[NodeID]bool{},
		leaving: map[NodeID]bool{},
		down:    map[NodeID]time.Time{},
		kinds:   map[StepKind]int{},
	}
	n := 1 + s.rng.IntN(4)
	for range n {
		s.alive[s.newID()] = true
	}
	s.cur = Place(s.shards, s.live(), s.rf)
	return s
}

func (s *sim) newID() NodeID {
	s.next++
	return NodeID(fmt.Sprintf("n%02d", s.next))
}

func (s *sim) live() []Member {
	var ms []Member
	for id := range s.alive {
		ms = append(ms, Member{ID: id, Leaving: s.leaving[id]})
	}
	slices.SortFunc(ms, func(a, b Member) int { return compareIDs(a.ID, b.ID) })
	return ms
}

func compareIDs(a, b NodeID) int {
	if a < b {
		return -1
	}
	if a > b {
		return 1
	}
	return 0
}

// upVoters counts a shard's voters that are alive.
func (s *sim) upVoters(sh Shard, except NodeID) int {
	n := 0
	for _, v := range sh.Voters {
		if s.alive[v] && v != except {
			n++
		}
	}
	return n
}

// elect gives every shard that lost its leader a live voter as leader.
func (s *sim) elect() {
	for i := range s.cur.Shards {
		sh := &s.cur.Shards[i]
		if sh.Leader != "" && s.alive[sh.Leader] && slices.Contains(sh.Voters, sh.Leader) {
			continue
		}
		sh.Leader = ""
		if s.upVoters(*sh, "") >= quorum(len(sh.Voters)) {
			for _, v := range sh.Voters {
				if s.alive[v] {
					sh.Leader = v
					break
				}
			}
		}
	}
}

func (s *sim) event() {
	var up, eligible []NodeID
	for _, m := range s.live() {
		up = append(up, m.ID)
		if !m.Leaving {
			eligible = append(eligible, m.ID)
		}
	}
	switch s.rng.IntN(6) {
	case 0: // join
		if len(s.alive) < 7 {
			s.alive[s.newID()] = true
		}
	case 1: // crash, only if every shard keeps a quorum
		id := up[s.rng.IntN(len(up))]
		if len(eligible) == 1 && !s.leaving[id] {
			return
		}
		for _, sh := range s.cur.Shards {
			if slices.Contains(sh.Voters, id) && s.upVoters(sh, id) < quorum(len(sh.Voters)) {
				return
			}
		}
		delete(s.alive, id)
		s.down[id] = s.now
	case 2: // a crashed node comes back
		for id := range s.down {
			s.alive[id] = true
			delete(s.down, id)
			break
		}
	case 3: // graceful leave begins
		if len(eligible) > 1 {
			s.leaving[eligible[s.rng.IntN(len(eligible))]] = true
		}
	default:
		s.now = s.now.Add(time.Duration(s.rng.IntN(3)) * testGrace / 2)
	}
	s.elect()
}

// plan plans, checks idempotence and that inputs are untouched.
func (s *sim) plan() []Step {
	before := s.cur.Clone()
	down := map[NodeID]time.Time{}
	for k, v := range s.down {
		down[k] = v
	}
	st := Plan(s.cur, s.live(), s.rf, s.now, s.down, testGrace)
	if again := Plan(s.cur, s.live(), s.rf, s.now, s.down, testGrace); !reflect.DeepEqual(st, again) {
		s.t.Fatalf("Plan not idempotent:\n%v\n%v", st, again)
	}
	if !reflect.DeepEqual(before, s.cur) || !reflect.DeepEqual(down, s.down) {
		s.t.Fatal("Plan changed its inputs")
	}
	for i := 1; i < len(st); i++ {
		if st[i].Shard <= st[i-1].Shard {
			s.t.Fatalf("steps not one per shard in order: %v", st)
		}
	}
	return st
}

// apply does one step as raft would and checks the safety rules.
func (s *sim) apply(st Step) {
	sh := s.cur.Shards[st.Shard]
	switch st.Kind {
	case StepRemove:
		if slices.Contains(sh.Voters, st.Node) && !s.alive[st.Node] {
			if since, ok := s.down[st.Node]; !ok || s.now.Sub(since) < testGrace {
				s.t.Fatalf("%v: dead voter removed within grace", st)
			}
		}
	case StepPromote, StepAddNonVoter, StepTransferLeader:
		if !s.alive[st.Node] {
			s.t.Fatalf("%v: target not alive", st)
		}
	}
	wasVoter := slices.Contains(sh.Voters, st.Node)
	s.kinds[st.Kind]++
	s.cur.Apply(st)
	sh = s.cur.Shards[st.Shard]
	if st.Kind == StepRemove && s.alive[st.Node] && wasVoter {
		// A live voter goes only once its replacement is a voter: the
		// target's voters remain, at least min(rf, eligible) of them.
		eligible := 0
		for _, m := range s.live() {
			if !m.Leaving {
				eligible++
			}
		}
		if len(sh.Voters) < min(s.rf, eligible) {
			s.t.Fatalf("%v left %v voters before replacements were voters", st, sh.Voters)
		}
	}
	if len(sh.Voters) == 0 || s.upVoters(sh, "") < quorum(len(sh.Voters)) {
		s.t.Fatalf("%v left shard with %v voters, %d alive", st, sh.Voters, s.upVoters(sh, ""))
	}
	s.elect()
}

// TestPlanRandomHistories drives random joins, crashes, returns, leaves
// and clock advances, executing a random part of each plan (promotions
// wait on catch-up), then lets the DC settle and checks it reaches Place's
// map.
func TestPlanRandomHistories(t *testing.T) {
	kinds := map[StepKind]int{}
	for seed := range uint64(300) {
		s := newSim(t, seed)
		s.kinds = kinds
		for range 60 {
			s.event()
			for _, st := range s.plan() {
				if s.rng.IntN(3) > 0 {
					s.apply(st)
				}
			}
		}
		// Settle: everyone down is now past grace; all catch-ups succeed.
		s.now = s.now.Add(testGrace)
		rounds := 0
		for st := s.plan(); len(st) > 0; st = s.plan() {
			for _, x := range st {
				s.apply(x)
			}
			if rounds++; rounds > 100 {
				t.Fatalf("seed %d: no convergence after 100 rounds: %v", seed, st)
			}
		}
		want := Place(s.shards, s.live(), s.rf)
		if !reflect.DeepEqual(normalize(s.cur), normalize(want)) {
			t.Fatalf("seed %d: settled on\n%+v\nwant\n%+v", seed, s.cur, want)
		}
	}
	t.Logf("steps applied: %v", kinds)
	for k := StepAddNonVoter; k <= StepTransferLeader; k++ {
		if kinds[k] == 0 {
			t.Errorf("no %v step was ever applied", k)
		}
	}
}

func normalize(m Map) Map {
	m = m.Clone()
	for i := range m.Shards {
		if len(m.Shards[i].NonVoters) == 0 {
			m.Shards[i].NonVoters = nil
		}
	}
	return m
}

package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mtnode/mtnode/cluster"
	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/replication"
	"github.com/mtnode/mtnode/storage"
)

// NodeStatus is what a node says about itself: on the mesh (opStatus), on
// its HTTP listener (/cluster/status) and in `mtnode status`.
type NodeStatus struct {
	ID         string `json:"id"`
	DC         int    `json:"dc"`
	MeshAddr   string `json:"mesh_addr"`
	ClientAddr string `json:"client_addr"`
	Version    string `json:"version"`
	Leaving    bool   `json:"leaving,omitempty"`
	Health     int    `json:"gossip_health"`
	// Group is the metadata group (group 0); Groups lists every group:
	// the metadata group, the directory (group 1), then the shards.
	Group  GroupStatus   `json:"group"`
	Groups []GroupStatus `json:"groups"`
	// Leads counts the groups this node leads.
	Leads int `json:"leads"`
	// DCQueues is what waits for other DCs in the outboxes of the groups
	// this node leads, read from its replicas of them: one entry per DC
	// with steps not acknowledged yet, in DC order. Each group has one
	// leader, so the DC's queues are the sum over its members
	// (SumDCQueues).
	DCQueues []DCQueue `json:"dc_queues,omitempty"`
}

// DCQueue is the steps bound for another DC that wait in outboxes: a DC
// that cannot reach another keeps them, durably, until it can.
type DCQueue struct {
	// DC is the other DC's id.
	DC int `json:"dc"`
	// Depth counts the steps not acknowledged yet (those on their way
	// included).
	Depth int `json:"depth"`
	// AgeSeconds is how long the oldest of them has waited: from the
	// time its command was proposed (by the proposer's clock) to now.
	AgeSeconds int64 `json:"age_seconds"`
}

// SumDCQueues adds lists of queues up, per DC: depths add, the oldest
// age wins. The result is in DC order.
func SumDCQueues(lists ...[]DCQueue) []DCQueue {
	var out []DCQueue
	for _, l := range lists {
		for _, q := range l {
			i, found := slices.BinarySearchFunc(out, q.DC, func(e DCQueue, dc int) int { return e.DC - dc })
			if !found {
				out = slices.Insert(out, i, DCQueue{DC: q.DC})
			}
			out[i].Depth += q.Depth
			out[i].AgeSeconds = max(out[i].AgeSeconds, q.AgeSeconds)
		}
	}
	return out
}

// remoteQueues reads one group's outbox (tx is its replica, groups the
// DC's group count) for the other DCs it holds steps for, at now (Unix
// seconds), in DC order.
func remoteQueues(tx storage.Reader, groups int, now int64) ([]DCQueue, error) {
	depth, err := messaging.OutboxDepth(tx, groups)
	if err != nil {
		return nil, fmt.Errorf("outbox depth: %w", err)
	}
	var out []DCQueue
	for dest, n := range depth {
		if dest >= 0 {
			continue
		}
		age, err := messaging.OutboxAge(tx, dest, now)
		if err != nil {
			return nil, fmt.Errorf("outbox age for dc %d: %w", messaging.RemoteDC(dest), err)
		}
		out = append(out, DCQueue{DC: messaging.RemoteDC(dest), Depth: n, AgeSeconds: age})
	}
	slices.SortFunc(out, func(a, b DCQueue) int { return a.DC - b.DC })
	return out, nil
}

// GroupStatus is one raft group as one replica sees it.
type GroupStatus struct {
	Shard        uint32   `json:"shard"`
	State        string   `json:"state"`
	Leader       string   `json:"leader,omitempty"`
	LeaderAddr   string   `json:"leader_addr,omitempty"`
	Voters       []string `json:"voters"`
	NonVoters    []string `json:"non_voters,omitempty"`
	AppliedIndex uint64   `json:"applied_index"`
	CommitIndex  uint64   `json:"commit_index"`
	LastIndex    uint64   `json:"last_index"`
	// Outbox is the steps waiting in the group's outbox, per destination
	// group, as its replica here holds it (carried ones leave at the next
	// ack).
	Outbox map[int]int `json:"outbox,omitempty"`
}

func (c *clusterNode) status() NodeStatus {
	var groups []GroupStatus
	var queues []DCQueue
	leads := 0
	now := time.Now().Unix()
	for g := range c.groups {
		gs := c.groupStatus(replication.ShardID(g))
		if gs.State == raft.Leader.String() {
			leads++
			// Only a leader's: a group's queues are counted once in the
			// DC, by whoever leads it, and its replica here is current.
			if err := c.groups[g].View(func(tx *storage.Txn) error {
				qs, err := remoteQueues(tx, len(c.groups), now)
				queues = SumDCQueues(queues, qs)
				return err
			}); err != nil {
				c.log.Warn("read queues to other DCs", "group", g, "err", err)
			}
		}
		groups = append(groups, gs)
	}
	c.mu.Lock()
	leaving := c.leaving
	c.mu.Unlock()
	return NodeStatus{
		ID:         string(c.id),
		DC:         c.cfg.DC,
		MeshAddr:   c.mesh.Addr().String(),
		ClientAddr: c.clientAddr(),
		Version:    Version,
		Leaving:    leaving,
		Health:     c.members.Health(),
		Group:      groups[metaGroup],
		Groups:     groups,
		Leads:      leads,
		DCQueues:   queues,
	}
}

// groupStatus is group g as this replica sees it.
func (c *clusterNode) groupStatus(sh replication.ShardID) GroupStatus {
	grp := c.groups[sh]
	st := grp.Raft().Stats()
	num := func(k string) uint64 { v, _ := strconv.ParseUint(st[k], 10, 64); return v }
	addr, id := grp.Leader()
	g := GroupStatus{
		Shard:        uint32(sh),
		State:        grp.Raft().State().String(),
		Leader:       string(id),
		LeaderAddr:   string(addr),
		AppliedIndex: grp.AppliedIndex(),
		CommitIndex:  num("commit_index"),
		LastIndex:    num("last_log_index"),
		Voters:       []string{},
	}
	if err := grp.View(func(tx *storage.Txn) (err error) {
		g.Outbox, err = messaging.OutboxDepth(tx, len(c.groups))
		return err
	}); err != nil {
		c.log.Warn("read outbox depth", "group", sh, "err", err)
	}
	if len(g.Outbox) == 0 {
		g.Outbox = nil
	}
	for _, s := range c.configurationOf(sh) {
		if s.Suffrage == raft.Voter {
			g.Voters = append(g.Voters, string(s.ID))
		} else {
			g.NonVoters = append(g.NonVoters, string(s.ID))
		}
	}
	return g
}

// ClusterStatus is the answer of /cluster/status: this node, and every
// live member of its DC as it reports itself (or the error reaching it).
type ClusterStatus struct {
	Self    NodeStatus     `json:"self"`
	Members []MemberStatus `json:"members"`
}

// MemberStatus is one member in ClusterStatus.
type MemberStatus struct {
	ID       string      `json:"id"`
	MeshAddr string      `json:"mesh_addr"`
	DC       string      `json:"dc"`
	Leaving  bool        `json:"leaving,omitempty"`
	Status   *NodeStatus `json:"status,omitempty"`
	Error    string      `json:"error,omitempty"`
}

// clusterStatus asks every member for its status, concurrently; one that
// does not answer within a second (a member gossip still lists after it
// died) is reported with the error.
func (c *clusterNode) clusterStatus(ctx context.Context, members bool) ClusterStatus {
	out := ClusterStatus{Self: c.status()}
	if !members {
		return out
	}
	ms := c.members.Members()
	slices.SortFunc(ms, func(a, b cluster.Member) int { return cmpID(a.ID, b.ID) })
	out.Members = make([]MemberStatus, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		e := &out.Members[i]
		*e = MemberStatus{ID: string(m.ID), MeshAddr: m.Addr, DC: m.Meta.DC, Leaving: m.Leaving}
		if m.ID == c.id {
			s := out.Self
			e.Status = &s
			continue
		}
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			s, err := c.rt.statusAt(sctx, m.ID, m.Addr)
			if err != nil {
				e.Error = err.Error()
			} else {
				e.Status = &s
			}
		})
	}
	wg.Wait()
	return out
}

// handleStatus serves GET /cluster/status; ?members=0 leaves the other
// members out.
func (c *clusterNode) handleStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(c.clusterStatus(r.Context(), r.URL.Query().Get("members") != "0"))
}

// handleLeave serves POST /cluster/leave: hand the node's replicas off,
// leave gossip, then stop the node (done is called). It answers once the
// node holds no replica or the timeout passed.
func (c *clusterNode) handleLeave(done func()) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
		defer cancel()
		err := c.leave(ctx)
		w.Header().Set("Content-Type", "application/json")
		res := map[string]string{"node": string(c.id), "result": "left"}
		if err != nil {
			res["result"] = "error"
			res["error"] = err.Error()
		}
		json.NewEncoder(w).Encode(res)
		if err == nil {
			go done()
		}
	}
}

// leave marks the node leaving, waits until the autopilot (on the leader)
// has moved its replica away, then leaves gossip.
func (c *clusterNode) leave(ctx context.Context) error {
	c.mu.Lock()
	c.leaving = true
	c.mu.Unlock()
	if err := c.members.MarkLeaving(5 * time.Second); err != nil {
		return err
	}
	c.log.Info("leaving the data center: handing off replicas")
	// The autopilot on each group's leader moves the replica away, handing
	// leadership off first where this node leads (Plan step 5).
	for {
		in := 0
		for g := range c.groups {
			if c.inGroupOf(replication.ShardID(g)) {
				in++
			}
		}
		if in == 0 {
			break
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return fmt.Errorf("%w: still a replica of %d groups", ctx.Err(), in)
		}
	}
	c.log.Info("replicas handed off; leaving gossip")
	return c.members.Leave(5 * time.Second)
}

// handleFaults serves /debug/faults when cluster.fault_injection is on:
// GET prints the mesh's fault rules, POST replaces them with the body
// (cluster.ParseFaultRules' grammar; empty heals).
func (c *clusterNode) handleFaults(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost:
		body, err := io.ReadAll(io.LimitReader(r.Body, cluster.MaxFaultRulesText+1))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rules, err := cluster.ParseFaultRules(string(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.faults.Set(rules)
		c.log.Warn("mesh fault rules set", "rules", cluster.FormatFaultRules(rules))
	default:
		http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, cluster.FormatFaultRules(c.faults.Rules())+"\n")
}

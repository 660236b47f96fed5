package node

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mtnode/mtnode/cluster"
	"github.com/mtnode/mtnode/replication"
)

// maxPromoteLag is how many entries behind the leader a staged replica may
// be when it is promoted to voter: promoting one far behind would leave
// the group a voter that cannot help commit for a while.
const maxPromoteLag = 256

// transferSettle is how long a node leads a group before the autopilot
// hands its leadership to the preferred leader.
const transferSettle = 10 * time.Second

// leaderSince is since when this node leads group g, as the autopilot saw
// it (now, the first time it sees it).
func (c *clusterNode) leaderSince(g replication.ShardID) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ledSince[g]
}

// noteLeadership records which groups this node leads now, and since when.
func (c *clusterNode) noteLeadership() {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for g, grp := range c.groups {
		sh := replication.ShardID(g)
		_, had := c.ledSince[sh]
		switch lead := grp.IsLeader(); {
		case lead && !had:
			c.ledSince[sh] = now
		case !lead && had:
			delete(c.ledSince, sh)
		}
	}
}

// autopilot runs on every node and acts on the groups the node leads: it
// moves each one's configuration toward cluster.Place's target one step at
// a time (cluster.Plan), so replicas follow members that join, leave or
// die, and leadership spreads over the nodes.
func (c *clusterNode) autopilot(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.autopilotStep(ctx)
	}
}

// currentMap is the configuration of every group this node leads (with
// this node as leader); the groups led elsewhere are left empty, which
// Plan leaves alone: their leaders plan for them.
func (c *clusterNode) currentMap() cluster.Map {
	m := cluster.Map{Shards: make([]cluster.Shard, len(c.groups))}
	for g, grp := range c.groups {
		if !grp.IsLeader() {
			continue
		}
		sh := cluster.Shard{Leader: c.id}
		for _, s := range c.configurationOf(replication.ShardID(g)) {
			if s.Suffrage == raft.Voter {
				sh.Voters = append(sh.Voters, cluster.NodeID(s.ID))
			} else {
				sh.NonVoters = append(sh.NonVoters, cluster.NodeID(s.ID))
			}
		}
		m.Shards[g] = sh
	}
	return m
}

func (c *clusterNode) autopilotStep(ctx context.Context) {
	c.noteLeadership()
	cur := c.currentMap()
	led := false
	for _, sh := range cur.Shards {
		led = led || sh.Leader != ""
	}
	if !led {
		return
	}
	live := c.dcMembers()
	c.mu.Lock()
	down := make(map[cluster.NodeID]time.Time, len(c.downSince))
	for k, v := range c.downSince {
		down[k] = v
	}
	c.mu.Unlock()
	addr := map[cluster.NodeID]string{}
	for _, m := range live {
		addr[m.ID] = m.Addr
	}
	for g, sh := range cur.Shards {
		if sh.Leader != "" {
			c.followAddresses(replication.ShardID(g), addr)
		}
	}
	steps := cluster.Plan(cur, live, c.cfg.Cluster.ReplicationFactor, time.Now(), down, c.cfg.Cluster.DeadGrace.Duration)
	for _, st := range steps {
		c.execute(ctx, st, addr)
	}
}

// followAddresses rewrites the raft address of a replica whose node now
// gossips another mesh address (it restarted elsewhere): node IDs are
// stable, addresses are not. raft's AddVoter/AddNonvoter on an existing ID
// only changes its address.
func (c *clusterNode) followAddresses(g replication.ShardID, addr map[cluster.NodeID]string) {
	r := c.groups[g].Raft()
	for _, s := range c.configurationOf(g) {
		id := cluster.NodeID(s.ID)
		now, ok := addr[id]
		if !ok || id == c.id || s.Address == cluster.RaftAddress(id, now) {
			continue
		}
		na := cluster.RaftAddress(id, now)
		var err error
		if s.Suffrage == raft.Voter {
			err = r.AddVoter(s.ID, na, 0, 10*time.Second).Error()
		} else {
			err = r.AddNonvoter(s.ID, na, 0, 10*time.Second).Error()
		}
		if err != nil {
			c.log.Warn("update replica address", "node", string(id), "addr", now, "err", err)
			continue
		}
		c.log.Info("replica moved", "node", string(id), "from", string(s.Address), "to", string(na))
	}
}

func (c *clusterNode) execute(ctx context.Context, st cluster.Step, addr map[cluster.NodeID]string) {
	g := replication.ShardID(st.Shard)
	if !c.groups[g].IsLeader() {
		return
	}
	r := c.groups[g].Raft()
	id := raft.ServerID(st.Node)
	var err error
	switch st.Kind {
	case cluster.StepAddNonVoter:
		err = r.AddNonvoter(id, cluster.RaftAddress(st.Node, addr[st.Node]), 0, 10*time.Second).Error()
	case cluster.StepPromote:
		lag, lerr := c.lagOf(ctx, st.Node, g)
		if lerr != nil || lag > maxPromoteLag {
			c.log.Debug("replica not caught up yet", "node", string(st.Node), "lag", lag, "err", lerr)
			return
		}
		err = r.AddVoter(id, cluster.RaftAddress(st.Node, addr[st.Node]), 0, 10*time.Second).Error()
	case cluster.StepRemove:
		err = r.RemoveServer(id, 0, 10*time.Second).Error()
	case cluster.StepTransferLeader:
		// A transfer blocks the group's writes until it ends, so only to a
		// node that answers and is caught up, and not in the first moments
		// of a leadership (gossip may still list a dead former leader).
		if time.Since(c.leaderSince(g)) < transferSettle {
			return
		}
		lag, lerr := c.lagOf(ctx, st.Node, g)
		if lerr != nil || lag > maxPromoteLag {
			c.log.Debug("not handing leadership to a lagging node", "node", string(st.Node), "lag", lag, "err", lerr)
			return
		}
		err = r.LeadershipTransferToServer(id, cluster.RaftAddress(st.Node, addr[st.Node])).Error()
	}
	c.metrics.autopilotSteps.WithLabelValues(st.Kind.String(), strconv.FormatBool(err == nil)).Inc()
	if err != nil {
		c.log.Warn("autopilot step failed", "step", st.String(), "err", err)
		return
	}
	c.log.Info("autopilot step", "step", st.String())
}

// lagOf asks node how far its replica of group g is behind this leader's
// applied index.
func (c *clusterNode) lagOf(ctx context.Context, node cluster.NodeID, g replication.ShardID) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := c.rt.NodeStatus(ctx, node)
	if err != nil {
		return 0, err
	}
	if int(g) >= len(st.Groups) {
		return 0, fmt.Errorf("%s reports %d groups", node, len(st.Groups))
	}
	mine, theirs := c.groups[g].AppliedIndex(), st.Groups[g].AppliedIndex
	if theirs >= mine {
		return 0, nil
	}
	return mine - theirs, nil
}

// observe keeps the raft and gossip gauges fresh and counts leader
// changes.
func (c *clusterNode) observe(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := make([]raft.ServerID, len(c.groups))
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		led := 0
		for g, grp := range c.groups {
			_, leader := grp.Leader()
			if grp.IsLeader() {
				led++
			}
			if leader == last[g] || leader == "" {
				continue
			}
			c.metrics.leaderChanges.Inc()
			if g == int(metaGroup) {
				c.log.Info("metadata group leader", "leader", string(leader))
			}
			last[g] = leader
		}
		c.metrics.groupsLed.Set(float64(led))
		for g, grp := range c.groups {
			if !c.inGroupOf(replication.ShardID(g)) {
				continue
			}
			label := groupLabel(g)
			commit := grp.Raft().CommitIndex()
			c.metrics.appliedIndex.WithLabelValues(label).Set(float64(grp.AppliedIndex()))
			c.metrics.commitIndex.WithLabelValues(label).Set(float64(commit))
			// Lag against raft's own applied index, which counts the
			// entries raft applies itself (no-ops, configuration).
			lag := 0.0
			if ra := grp.Raft().AppliedIndex(); commit > ra {
				lag = float64(commit - ra)
			}
			c.metrics.applyLag.WithLabelValues(label).Set(lag)
		}
		if c.group.IsLeader() {
			c.metrics.isLeader.Set(1)
		} else {
			c.metrics.isLeader.Set(0)
		}
		var snaps int64
		for _, grp := range c.groups {
			if sz, err := grp.LastSnapshotSize(); err == nil {
				snaps += sz
			}
		}
		c.metrics.snapshotBytes.Set(float64(snaps))
		c.metrics.members.Set(float64(c.members.NumMembers()))
		c.metrics.gossipHealth.Set(float64(c.members.Health()))
	}
}

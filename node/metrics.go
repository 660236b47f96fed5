package node

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

func groupLabel(g int) string { return strconv.Itoa(g) }

// clusterMetrics are a clustered node's replication, routing and gossip
// metrics.
type clusterMetrics struct {
	applySeconds   prometheus.Histogram
	leaderChanges  prometheus.Counter
	isLeader       prometheus.Gauge
	groupsLed      prometheus.Gauge
	appliedIndex   *prometheus.GaugeVec
	commitIndex    *prometheus.GaugeVec
	applyLag       *prometheus.GaugeVec
	snapshotBytes  prometheus.Gauge
	members        prometheus.Gauge
	gossipHealth   prometheus.Gauge
	autopilotSteps *prometheus.CounterVec
	forwarded      *prometheus.CounterVec
	forwardSeconds prometheus.Histogram
	pushFrames     *prometheus.CounterVec
	outboxPending  *prometheus.GaugeVec
	outboxSteps    *prometheus.CounterVec
	followerReads  *prometheus.CounterVec
}

func newClusterMetrics(reg prometheus.Registerer) *clusterMetrics {
	m := &clusterMetrics{
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mtnode_raft_commit_seconds", Help: "Time from proposing a command to its being committed and applied on the leader.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
		}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mtnode_raft_leader_changes_total", Help: "Leader changes of any group seen by this node.",
		}),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mtnode_raft_is_leader", Help: "1 if this node leads the data group.",
		}),
		groupsLed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mtnode_raft_groups_led", Help: "Raft groups (data group and shards) this node leads.",
		}),
		appliedIndex: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mtnode_raft_applied_index", Help: "Last command applied by this replica's state machine, by group.",
		}, []string{"group"}),
		commitIndex: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mtnode_raft_commit_index", Help: "Commit index known to this replica, by group.",
		}, []string{"group"}),
		applyLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mtnode_raft_apply_lag", Help: "Committed entries this replica has not applied yet, by group.",
		}, []string{"group"}),
		snapshotBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mtnode_raft_snapshot_bytes", Help: "Size of this node's latest snapshots, summed over its groups.",
		}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mtnode_gossip_members", Help: "Members alive or suspect in this node's view.",
		}),
		gossipHealth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mtnode_gossip_health_score", Help: "memberlist awareness score: 0 is healthy.",
		}),
		autopilotSteps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mtnode_autopilot_steps_total", Help: "Membership changes made by the autopilot, by kind and success.",
		}, []string{"kind", "ok"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mtnode_forwarded_calls_total", Help: "Client calls forwarded to the leader, by result.",
		}, []string{"result"}),
		forwardSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mtnode_forward_seconds", Help: "Time to answer a client call through the leader, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
		}),
		pushFrames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mtnode_push_bus_frames_total", Help: "Update push bus frames, by direction (sent, received, dropped).",
		}, []string{"dir"}),
		outboxPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mtnode_outbox_pending", Help: "Steps waiting in the outbox of a group this node leads, by group.",
		}, []string{"group"}),
		outboxSteps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mtnode_outbox_steps_total", Help: "Outbox steps carried to their group, or to be retried, by result.",
		}, []string{"result"}),
		followerReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mtnode_follower_reads_total", Help: "Read-only calls a follower of their group served itself (local) or forwarded after all.",
		}, []string{"result"}),
	}
	reg.MustRegister(m.applySeconds, m.leaderChanges, m.isLeader, m.groupsLed, m.appliedIndex, m.commitIndex,
		m.applyLag, m.snapshotBytes, m.members, m.gossipHealth, m.autopilotSteps, m.forwarded,
		m.forwardSeconds, m.pushFrames, m.outboxPending, m.outboxSteps, m.followerReads)
	return m
}

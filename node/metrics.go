package node

import (
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mtnode/mtnode/storage"
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
	relayed        *prometheus.CounterVec
	relayBytes     *prometheus.CounterVec
	dcQueueDepth   *prometheus.GaugeVec
	dcQueueAge     *prometheus.GaugeVec

	// dcMu guards dcSeries: per group, the DCs it has queue series for.
	dcMu     sync.Mutex
	dcSeries map[int][]int
}

// maxQueueDC is the largest DC id given a queue series: config's range
// of DC ids (1..1000). With at most 2 + 1024 groups, the queue metrics
// stay bounded whatever an outbox holds.
const maxQueueDC = 1000

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
			Name: "mtnode_forwarded_calls_total", Help: "Client calls forwarded to the leader, by result; \"relayed\": carried to another DC (routing.assist).",
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
		dcQueueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mtnode_dc_queue_depth", Help: "Steps bound for another DC not acknowledged yet, in the outbox of a group this node leads, by DC and group.",
		}, []string{"dc", "group"}),
		dcQueueAge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mtnode_dc_queue_age_seconds", Help: "Age of the oldest step bound for another DC not acknowledged yet, in the outbox of a group this node leads, by DC and group.",
		}, []string{"dc", "group"}),
		dcSeries: map[int][]int{},
	}
	m.relayed, m.relayBytes = newRelayMetrics()
	reg.MustRegister(m.applySeconds, m.leaderChanges, m.isLeader, m.groupsLed, m.appliedIndex, m.commitIndex,
		m.applyLag, m.snapshotBytes, m.members, m.gossipHealth, m.autopilotSteps, m.forwarded,
		m.forwardSeconds, m.pushFrames, m.outboxPending, m.outboxSteps, m.followerReads,
		m.dcQueueDepth, m.dcQueueAge, m.relayed, m.relayBytes)
	return m
}

// reportDCQueues sets group g's queue metrics from tx, its leader's
// replica (the snapshot the pump round reads). A failed read leaves them
// as they were.
func (c *clusterNode) reportDCQueues(g int, tx storage.Reader) {
	qs, err := remoteQueues(tx, len(c.groups), time.Now().Unix())
	if err != nil {
		c.log.Warn("read queues to other DCs", "group", g, "err", err)
		return
	}
	c.metrics.setDCQueues(g, qs)
}

// setDCQueues sets group g's queues to other DCs: a DC drained since an
// earlier call reads 0 (its series stays while this node leads g). DC
// ids outside config's range get no series.
func (m *clusterMetrics) setDCQueues(g int, qs []DCQueue) {
	group := groupLabel(g)
	m.dcMu.Lock()
	defer m.dcMu.Unlock()
	seen := m.dcSeries[g]
	for _, dc := range seen {
		if !slices.ContainsFunc(qs, func(q DCQueue) bool { return q.DC == dc }) {
			m.dcQueueDepth.WithLabelValues(strconv.Itoa(dc), group).Set(0)
			m.dcQueueAge.WithLabelValues(strconv.Itoa(dc), group).Set(0)
		}
	}
	for _, q := range qs {
		if q.DC < 1 || q.DC > maxQueueDC {
			continue
		}
		m.dcQueueDepth.WithLabelValues(strconv.Itoa(q.DC), group).Set(float64(q.Depth))
		m.dcQueueAge.WithLabelValues(strconv.Itoa(q.DC), group).Set(float64(q.AgeSeconds))
		if !slices.Contains(seen, q.DC) {
			seen = append(seen, q.DC)
		}
	}
	m.dcSeries[g] = seen
}

// clearDCQueues deletes group g's queue series: this node no longer
// leads g, and g's new leader reports them.
func (m *clusterMetrics) clearDCQueues(g int) {
	m.dcMu.Lock()
	defer m.dcMu.Unlock()
	for _, dc := range m.dcSeries[g] {
		m.dcQueueDepth.DeleteLabelValues(strconv.Itoa(dc), groupLabel(g))
		m.dcQueueAge.DeleteLabelValues(strconv.Itoa(dc), groupLabel(g))
	}
	delete(m.dcSeries, g)
}

// handleProfiler serves Go's profiler under /debug/pprof/, for the
// operator of a node or proxy, from this host only (localOnly).
func handleProfiler(mux *http.ServeMux) {
	mux.Handle("/debug/pprof/", localOnly(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/profile", localOnly(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/symbol", localOnly(http.HandlerFunc(pprof.Symbol)))
	mux.Handle("/debug/pprof/trace", localOnly(http.HandlerFunc(pprof.Trace)))
}

// localOnly serves h only to requests from a loopback address: the
// endpoints that change a node (leave, fault rules) or expose its
// internals (profiles) stay the host operator's even when http_addr is
// opened to a metrics scraper. Others get 403.
func localOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if ip, perr := netip.ParseAddr(host); err != nil || perr != nil || !ip.Unmap().IsLoopback() {
			http.Error(w, "only from this host", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

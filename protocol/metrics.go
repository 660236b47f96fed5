package protocol

import (
	"strings"

	"github.com/gotd/td/mt"
	"github.com/gotd/td/tg"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the protocol's Prometheus series. Label values come from fixed
// sets (transport names, results, TL method names) so a client cannot grow
// the number of series.
type Metrics struct {
	connsActive     prometheus.Gauge
	connsTotal      *prometheus.CounterVec
	connsRejected   prometheus.Counter
	handshakes      *prometheus.CounterVec
	handshakeActive prometheus.Gauge
	rpcs            *prometheus.CounterVec
	rpcSeconds      *prometheus.HistogramVec
	transportErrors *prometheus.CounterVec
	badMsgs         *prometheus.CounterVec
	pushDropped     prometheus.Counter

	names map[uint32]string
}

// NewMetrics registers the protocol's series with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		connsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mtnode_connections_active", Help: "Client connections open now.",
		}),
		connsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mtnode_connections_total", Help: "Client connections accepted, by transport.",
		}, []string{"transport"}),
		connsRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mtnode_connections_rejected_total", Help: "Connections closed at once because max_connections was reached.",
		}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mtnode_handshakes_total", Help: "Auth key exchanges, by result (ok, failed, busy).",
		}, []string{"result"}),
		handshakeActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mtnode_handshakes_active", Help: "Auth key exchanges in progress.",
		}),
		rpcs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mtnode_rpc_total", Help: "RPC calls, by method and result (ok or the error type).",
		}, []string{"method", "result"}),
		rpcSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mtnode_rpc_duration_seconds", Help: "RPC handling time, by method.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"method"}),
		transportErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mtnode_transport_errors_total", Help: "Transport error codes sent before closing a connection.",
		}, []string{"code"}),
		badMsgs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mtnode_bad_msg_notifications_total", Help: "bad_msg_notification and bad_server_salt sent, by code.",
		}, []string{"code"}),
		pushDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mtnode_push_dropped_total", Help: "Server-initiated messages dropped because a connection's queue was full.",
		}),
		names: make(map[uint32]string),
	}
	for _, types := range []map[uint32]string{tg.TypesMap(), mt.TypesMap()} {
		for id, name := range types {
			if i := strings.IndexByte(name, '#'); i >= 0 {
				name = name[:i]
			}
			m.names[id] = name
		}
	}
	if reg != nil {
		reg.MustRegister(m.connsActive, m.connsTotal, m.connsRejected, m.handshakes,
			m.handshakeActive, m.rpcs, m.rpcSeconds, m.transportErrors, m.badMsgs, m.pushDropped)
	}
	return m
}

// ConnsActive is the gauge of open connections, for tests and health.
func (m *Metrics) ConnsActive() prometheus.Gauge { return m.connsActive }

// method names a TL constructor for labels; unknown ids share one label.
func (m *Metrics) method(id uint32) string {
	if n, ok := m.names[id]; ok {
		return n
	}
	return "unknown"
}

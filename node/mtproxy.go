package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mtnode/mtnode/config"
	"github.com/mtnode/mtnode/protocol/transport"
	"github.com/mtnode/mtnode/proxy"
)

// Every node is an MTProxy (DESIGN.md, "MTProxy"): its client port takes
// the secretless obfuscated2 of Telegram's own DCs and, next to it, the
// MTProxy forms keyed by proxy.secrets (plain and dd secrets in the
// obfuscated2 header, ee secrets as FakeTLS). What the transport refuses
// is spliced to proxy.front, so a probe of the port sees the real site.
// The same gate fronts the storage-less `mtnode proxy`.

// Replay cache sizing. The timestamp in a FakeTLS hello is not covered
// by its MAC, so a captured hello can be re-dated and sent again any time
// later: only the cache stops that, for as long as it remembers the
// random. Like the official MTProxy we keep randoms for two days; 1<<18
// entries (about 20 MiB at 77 bytes each) hold them for up to 1.5
// accepted handshakes a second, beyond which the oldest go first.
const (
	replayEntries = 1 << 18
	replayTTL     = 48 * time.Hour
)

// learnTimeout bounds learning the front's record sizes at start.
const learnTimeout = 5 * time.Second

// maxTLSRecord is the largest TLS record payload.
const maxTLSRecord = 16384

// mtproxyGate is the MTProxy side of a client port: the transport options
// of each new connection (from the current proxy settings), fronting of
// refused connections, per-IP limits and metrics.
type mtproxyGate struct {
	log     *slog.Logger
	replays *transport.ReplayCache
	m       *proxyMetrics

	// set holds the settings new connections use; a reload swaps it.
	set atomic.Pointer[gateSettings]

	mu    sync.Mutex
	perIP map[string]int // open connections by source IP
}

// gateSettings is one version of the proxy settings.
type gateSettings struct {
	opts     transport.Options
	secrets  []config.ProxySecret // index = the label of Metadata.SecretIndex
	obfs     []config.ProxySecret // Options.Secrets, in order
	tls      []config.ProxySecret // Options.FakeTLS, in order
	front    *proxy.Front
	perIPMax int
}

func newMTProxyGate(cfg *config.Config, listen []string, reg prometheus.Registerer, log *slog.Logger) (*mtproxyGate, error) {
	g := &mtproxyGate{
		log:     log.With("component", "mtproxy"),
		replays: transport.NewReplayCache(replayEntries, replayTTL),
		m:       newProxyMetrics(reg),
		perIP:   map[string]int{},
	}
	if err := g.apply(cfg, listen); err != nil {
		return nil, err
	}
	return g, nil
}

// apply builds the settings of cfg and makes them current. The front's
// record sizes are learned here, so a reload that changes the front
// measures it again.
func (g *mtproxyGate) apply(cfg *config.Config, listen []string) error {
	p := cfg.Proxy
	s := &gateSettings{perIPMax: p.MaxConnectionsPerIP}
	for _, sec := range cfg.ProxySecrets() {
		switch sec.Kind {
		case config.ProxyEE:
			s.tls = append(s.tls, sec)
			s.opts.FakeTLS = append(s.opts.FakeTLS, transport.FakeTLSSecret{Key: sec.Key, Domain: sec.Domain})
		default:
			key := sec.Key
			s.obfs = append(s.obfs, sec)
			s.opts.Secrets = append(s.opts.Secrets, key[:])
		}
	}
	s.opts.RequireSecret = p.RequireSecret
	if len(s.opts.FakeTLS) > 0 || len(s.opts.Secrets) > 0 {
		s.opts.Replays = g.replays // ClientHellos and secret obfuscated2 headers
	}
	if p.Front != "" {
		if err := proxy.CheckNotSelf(p.Front, listen); err != nil {
			return fmt.Errorf("proxy.front: %w", err)
		}
		f, err := proxy.NewFront(proxy.FrontConfig{
			Addr: p.Front, MaxConcurrent: p.FrontMaxConcurrent,
			PerIPRate: float64(p.FrontRatePerIP) / 60, PerIPBurst: max(1, p.FrontRatePerIP/4),
			Logger: g.log,
		})
		if err != nil {
			return fmt.Errorf("proxy.front: %w", err)
		}
		s.front = f
		if len(s.tls) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), learnTimeout)
			sizes, err := proxy.LearnRecordSizes(ctx, p.Front, s.tls[0].Domain)
			cancel()
			if err != nil {
				// A front that cannot be measured now still gets probes;
				// the answer uses the built-in sizes.
				g.log.Warn("could not learn the front's TLS record sizes; using built-in ones", "front", p.Front, "err", err)
			} else {
				// Clients read one ApplicationData record after the
				// ServerHello: it stands for the front's whole encrypted
				// flight (certificates and all), so it takes their size.
				total := 0
				for _, n := range sizes {
					total += n
				}
				s.opts.TLSRecordSizes = []int{min(max(total, 1), maxTLSRecord)}
			}
		}
	}
	g.set.Store(s)
	g.log.Info("mtproxy settings", "secrets", len(s.obfs), "faketls", len(s.tls), "front", p.Front != "", "require_secret", p.RequireSecret)
	return nil
}

// options is protocol.Options.Transport: the current settings.
func (g *mtproxyGate) options() transport.Options { return g.set.Load().opts }

// admit counts an accepted connection by kind and secret, and enforces
// the per-IP limit on proxied ones (those that used a secret): a client
// over it is told -429 (flood, as Telegram DCs answer) and closed. Direct
// clients are not limited per IP: many share one address behind NAT, and
// protocol.max_connections bounds them all. release undoes admit.
func (g *mtproxyGate) admit(tc transport.Conn, meta transport.Metadata) (release func(), ok bool) {
	s := g.set.Load()
	g.m.conns.WithLabelValues(kindLabel(meta), s.secretLabel(meta)).Inc()
	if meta.SecretIndex < 0 {
		return func() {}, true
	}
	ip := sourceIP(tc.RemoteAddr())
	g.mu.Lock()
	if s.perIPMax > 0 && g.perIP[ip] >= s.perIPMax {
		g.mu.Unlock()
		g.m.limited.Inc()
		_ = tc.WriteError(-429)
		tc.Close()
		return nil, false
	}
	g.perIP[ip]++
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		if g.perIP[ip]--; g.perIP[ip] <= 0 {
			delete(g.perIP, ip)
		}
		g.mu.Unlock()
	}, true
}

// reject is protocol.Options.OnReject: a refused connection goes to the
// front, byte for byte, or is closed when there is none (or a limit says
// no).
func (g *mtproxyGate) reject(ctx context.Context, nc net.Conn, err error) {
	var rej *transport.RejectedError
	reason := "other"
	if errors.As(err, &rej) {
		reason = rej.Reason
	}
	g.m.rejected.WithLabelValues(reason).Inc()
	s := g.set.Load()
	if s.front == nil || rej == nil {
		nc.Close()
		return
	}
	before := s.front.Stats()
	if err := s.front.Splice(ctx, nc, rej.Read); err != nil && !errors.Is(err, proxy.ErrFrontLimited) {
		g.log.Debug("front splice ended", "err", err)
	}
	after := s.front.Stats()
	if after.Spliced > before.Spliced {
		g.m.fronted.Inc()
	}
	g.m.bytes.WithLabelValues("front_in").Add(float64(after.BytesToFront - before.BytesToFront))
	g.m.bytes.WithLabelValues("front_out").Add(float64(after.BytesToClient - before.BytesToClient))
}

// secretLabel names the secret a connection used for metrics without
// revealing it (config.ProxySecret.String: kind, a short hash, domain).
func (s *gateSettings) secretLabel(meta transport.Metadata) string {
	i := meta.SecretIndex
	switch {
	case i < 0:
		return "none"
	case meta.Kind == "faketls" && i < len(s.tls):
		return s.tls[i].String()
	case meta.Kind != "faketls" && i < len(s.obfs):
		return s.obfs[i].String()
	}
	return "unknown"
}

func kindLabel(meta transport.Metadata) string {
	if meta.Kind == "" {
		return "plain"
	}
	return meta.Kind
}

// sourceIP is the IP a connection came from, for per-IP limits.
func sourceIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// proxyMetrics are the MTProxy gate's.
type proxyMetrics struct {
	conns    *prometheus.CounterVec
	rejected *prometheus.CounterVec
	fronted  prometheus.Counter
	limited  prometheus.Counter
	bytes    *prometheus.CounterVec
}

func newProxyMetrics(reg prometheus.Registerer) *proxyMetrics {
	m := &proxyMetrics{
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mtnode_proxy_connections_total", Help: "Client connections accepted, by kind (plain, obfuscated2, secret, padded-secret, faketls) and secret (kind:hash(domain), or none).",
		}, []string{"kind", "secret"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mtnode_proxy_rejected_total", Help: "Connections the transport refused, by reason (replay, bad-hmac, sni, time, malformed, no-secret, http, tls, plain, timeout).",
		}, []string{"reason"}),
		fronted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mtnode_proxy_fronted_total", Help: "Refused connections spliced to the front site.",
		}),
		limited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mtnode_proxy_limited_total", Help: "Connections refused for proxy.max_connections_per_ip.",
		}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mtnode_proxy_bytes_total", Help: "Bytes spliced between refused clients and the front, by direction (front_in: to the front, front_out: to clients).",
		}, []string{"dir"}),
	}
	reg.MustRegister(m.conns, m.rejected, m.fronted, m.limited, m.bytes)
	return m
}

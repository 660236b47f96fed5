package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mtnode/mtnode/cluster"
	"github.com/mtnode/mtnode/config"
	"github.com/mtnode/mtnode/protocol"
	"github.com/mtnode/mtnode/protocol/transport"
)

// Proxy is `mtnode proxy`: a storage-less MTProxy relay (DESIGN.md,
// "MTProxy"). It holds no data and no keys of the federation's users: a
// mesh identity (a certificate of the federation's CA) and a place in
// the WAN pool, from which it learns every DC's nodes. Clients reach it
// with a proxy link; what the transport refuses goes to the front site;
// everything else is relayed, frames as they are, to a node of the DC the
// client asked for, which serves it as its own connection. Losing that
// node ends the client's connection; its reconnection is relayed to
// another.
type Proxy struct {
	cfg     *config.Config
	log     *slog.Logger
	id      cluster.NodeID
	mesh    *cluster.Mesh
	wan     *cluster.Membership
	gate    *mtproxyGate
	relay   *relayer
	reg     *prometheus.Registry
	ln, hln net.Listener

	conns chan struct{} // a slot per client connection (protocol.max_connections)
	busy  chan struct{} // a slot per -429 answer over it
	wg    sync.WaitGroup
}

// NewProxy binds the proxy's listeners and mesh; nothing is served until
// Run.
func NewProxy(cfg *config.Config, log *slog.Logger) (_ *Proxy, err error) {
	if !cfg.Clustered() {
		return nil, errors.New("mtnode proxy needs cluster.secrets_dir (--cluster): the federation's CA and gossip key")
	}
	p := &Proxy{cfg: cfg, log: log.With("component", "proxy"), reg: prometheus.NewRegistry(),
		conns: make(chan struct{}, cfg.Protocol.MaxConnections), busy: make(chan struct{}, protocol.BusyAnswers)}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	ca, err := cluster.LoadCA(cfg.Cluster.SecretsDir)
	if err != nil {
		return nil, fmt.Errorf("cluster.secrets_dir: %w", err)
	}
	cert, err := proxyCert(cfg, ca)
	if err != nil {
		return nil, err
	}
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	if p.id, err = cluster.NodeIDFromCert(leaf); err != nil {
		return nil, err
	}
	p.log = p.log.With("node", string(p.id))
	key, err := cluster.LoadGossipKey(cfg.Cluster.SecretsDir)
	if err != nil {
		return nil, fmt.Errorf("cluster.secrets_dir: %w", err)
	}
	if p.mesh, err = cluster.NewMesh(cluster.MeshConfig{ID: p.id, Addr: cfg.Cluster.MeshAddr, Cert: cert, CA: ca.Pool(), Logger: log, NoLane: !cfg.Cluster.TCPLane}); err != nil {
		return nil, fmt.Errorf("cluster.mesh_addr %s: %w", cfg.Cluster.MeshAddr, err)
	}
	// No DC: the proxy is in the WAN pool to learn the DCs, and is in no
	// DC table (cluster.DCTable skips members without a DC id).
	if p.wan, err = cluster.NewMembership(cluster.MembershipConfig{
		Mesh: p.mesh, WAN: true, GossipKey: key, Logger: log,
		Meta: cluster.NodeMeta{Version: Version},
	}); err != nil {
		return nil, err
	}
	relayed, bytes := newRelayMetrics()
	p.reg.MustRegister(relayed, bytes, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p.relay = &relayer{mesh: p.mesh, members: p.members, results: relayed, bytes: bytes, log: p.log, maxFrame: cfg.Protocol.MaxFrameSize}
	if p.ln, err = net.Listen("tcp", cfg.ClientAddr); err != nil {
		return nil, fmt.Errorf("listen client_addr %s: %w", cfg.ClientAddr, err)
	}
	listen := []string{p.ln.Addr().String()}
	if cfg.PublicAddr != "" {
		listen = append(listen, cfg.PublicAddr)
	}
	if p.gate, err = newMTProxyGate(cfg, listen, p.reg, p.log); err != nil {
		return nil, err
	}
	if cfg.HTTPAddr != "" {
		if p.hln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return nil, fmt.Errorf("listen http_addr %s: %w", cfg.HTTPAddr, err)
		}
	}
	return p, nil
}

// proxyCert is the proxy's mesh certificate: node.crt from the secrets
// directory, else one issued from ca.key for cluster.node_id (or a fresh
// id) and kept in memory only: the proxy stores nothing.
func proxyCert(cfg *config.Config, ca *cluster.CA) (tls.Certificate, error) {
	if _, err := os.Stat(filepath.Join(cfg.Cluster.SecretsDir, cluster.NodeCertFile)); err == nil {
		return cluster.LoadNodeCert(cfg.Cluster.SecretsDir)
	}
	if ca.Key == nil {
		return tls.Certificate{}, fmt.Errorf("cluster.secrets_dir %s: has neither node.crt nor ca.key to issue one", cfg.Cluster.SecretsDir)
	}
	id := cluster.NodeID(cfg.Cluster.NodeID)
	if id == "" {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return tls.Certificate{}, err
		}
		id = cluster.NodeID(fmt.Sprintf("proxy%x", b))
	}
	if err := id.Validate(); err != nil {
		return tls.Certificate{}, err
	}
	return cluster.IssueNodeCert(ca, id, nil, time.Now().Add(-time.Hour), cluster.DefaultNodeValidity)
}

// members are the live members of DC dc; DC 0 (a client that named
// none) is the lowest DC there is.
func (p *Proxy) members(dc int) []cluster.Member {
	t := cluster.DCTable(p.wan.Members())
	if dc == 0 {
		ids := make([]int, 0, len(t))
		for id := range t {
			ids = append(ids, id)
		}
		if len(ids) == 0 {
			return nil
		}
		sort.Ints(ids)
		dc = ids[0]
	}
	return t[dc]
}

// ClientAddr is the bound client address.
func (p *Proxy) ClientAddr() net.Addr { return p.ln.Addr() }

// Reload applies a configuration read again (SIGHUP): the [proxy]
// settings take effect for new connections.
func (p *Proxy) Reload(cfg *config.Config) error {
	listen := []string{p.ln.Addr().String()}
	if cfg.PublicAddr != "" {
		listen = append(listen, cfg.PublicAddr)
	}
	return p.gate.apply(cfg, listen)
}

// Run serves until ctx ends.
func (p *Proxy) Run(ctx context.Context) error {
	defer p.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := p.mesh.Run(ctx); err != nil && ctx.Err() == nil {
			p.log.Error("mesh stopped", "err", err)
		}
	}()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.joinLoop(ctx)
	}()
	var hs *http.Server
	if p.hln != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(p.reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
			if len(cluster.DCTable(p.wan.Members())) == 0 {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintln(w, "no DC known yet")
				return
			}
			fmt.Fprintln(w, "ok")
		})
		handleProfiler(mux)
		hs = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go hs.Serve(p.hln)
	}
	httpAddr := ""
	if p.hln != nil {
		httpAddr = p.hln.Addr().String()
	}
	p.log.Info("mtnode proxy serving", "client_addr", p.ln.Addr().String(), "http_addr", httpAddr,
		"mesh_addr", p.mesh.Addr().String(), "node_id", string(p.id))
	go func() {
		<-ctx.Done()
		p.ln.Close()
	}()
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			p.log.Error("accept", "err", err)
			break
		}
		select {
		case p.conns <- struct{}{}:
		default: // protocol.max_connections: -429, as a node answers
			select {
			case p.busy <- struct{}{}:
				p.wg.Add(1)
				go func() {
					defer p.wg.Done()
					defer func() { <-p.busy }()
					transport.Busy(nc, p.transportOptions(), -429, protocol.BusyAnswerTimeout)
				}()
			default:
				nc.Close()
			}
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() { <-p.conns }()
			p.serve(ctx, nc)
		}()
	}
	if hs != nil {
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		hs.Shutdown(sctx)
		scancel()
	}
	cancel()
	p.wg.Wait()
	return nil
}

// serve runs one client: refused ones go to the front, the others to the
// DC they asked for.
func (p *Proxy) serve(ctx context.Context, nc net.Conn) {
	_ = nc.SetReadDeadline(time.Now().Add(p.cfg.Protocol.HandshakeTimeout.Duration))
	tc, err := transport.Accept(nc, p.transportOptions())
	if err != nil {
		_ = nc.SetReadDeadline(time.Time{})
		p.gate.reject(ctx, nc, err)
		return
	}
	meta, _ := transport.MetadataOf(tc)
	release, ok := p.gate.admit(tc, meta)
	if !ok {
		return
	}
	defer release()
	dc := int(meta.DC)
	if dc < 0 {
		dc = -dc
	}
	p.relay.relayTo(ctx, dc, tc)
}

// transportOptions are the options of the next client's Accept.
func (p *Proxy) transportOptions() transport.Options {
	opts := p.gate.options()
	opts.RequireObfuscation = true // a relay speaks only to proxied clients
	opts.MaxFrameSize = p.cfg.Protocol.MaxFrameSize
	return opts
}

// joinLoop joins the WAN pool through cluster.join_wan (or --join) until
// a member answers; the pool keeps itself together after that.
func (p *Proxy) joinLoop(ctx context.Context) {
	seeds := config.SplitAddrs(p.cfg.Cluster.JoinWAN)
	seeds = append(seeds, config.SplitAddrs(p.cfg.Cluster.Join)...)
	if len(seeds) == 0 {
		p.log.Warn("no --join: this proxy knows no DC until one joins it")
		return
	}
	for attempt := 0; ; attempt++ {
		n, err := p.wan.JoinAny(ctx, seeds)
		if err == nil && n > 0 {
			p.log.Info("joined the federation", "contacted", n, "dcs", len(cluster.DCTable(p.wan.Members())))
			return
		}
		if attempt%10 == 0 {
			p.log.Warn("WAN join failed, retrying", "addrs", seeds, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

func (p *Proxy) close() {
	if p.wan != nil {
		p.wan.Depart(time.Second)
		p.wan.Close()
	}
	if p.mesh != nil {
		p.mesh.Close()
	}
	if p.ln != nil {
		p.ln.Close()
	}
	if p.hln != nil {
		p.hln.Close()
	}
}

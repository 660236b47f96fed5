// Package node is the composition root: it builds every component of one
// mtnode process from a config.Config, runs them and stops them in order.
// Nothing imports node except cmd/mtnode and tests.
package node

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/crypto"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mtnode/mtnode/api"
	"github.com/mtnode/mtnode/cluster"
	"github.com/mtnode/mtnode/config"
	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/protocol"
	"github.com/mtnode/mtnode/protocol/transport"
	"github.com/mtnode/mtnode/storage"
)

// PublicKeyFile is the name of the server's public key in the data dir.
const PublicKeyFile = "server.pub"

// Node is one running mtnode process.
type Node struct {
	cfg  *config.Config
	log  *slog.Logger
	db   *storage.DB
	key  *rsa.PrivateKey
	srv  *protocol.Server
	reg  *prometheus.Registry
	ln   net.Listener
	hln  net.Listener
	http *http.Server

	notify *notifier
	// gate is the client port's MTProxy side: secrets, FakeTLS, fronting.
	gate atomic.Pointer[mtproxyGate]
	// Clustered nodes only.
	cl  *clusterNode
	rt  *router
	bus *pushBus

	ready     atomic.Bool // services built; the node answers clients
	runMu     sync.Mutex
	cancel    context.CancelFunc
	closeOnce sync.Once
	closeErr  error
}

// New opens storage and binds the listeners. A standalone node also
// loads (or creates) its keys and builds its servers; a clustered node
// prepares its mesh, gossip and raft group and builds its servers in Run,
// once the data center has given it the shared keys. Nothing is served
// until Run.
func New(cfg *config.Config, log *slog.Logger) (_ *Node, err error) {
	n := &Node{cfg: cfg, log: log.With("component", "node"), reg: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	// A clustered node's state machines need no fsync of their own (raft
	// replays them from its synced log), so its database syncs explicitly
	// instead of on every write (storage.Options.Lazy).
	if n.db, err = storage.OpenWith(cfg.DataDir, log, storage.Options{Lazy: cfg.Clustered()}); err != nil {
		return nil, err
	}
	if n.ln, err = net.Listen("tcp", cfg.ClientAddr); err != nil {
		return nil, fmt.Errorf("listen client_addr %s: %w", cfg.ClientAddr, err)
	}
	if cfg.HTTPAddr != "" {
		if n.hln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return nil, fmt.Errorf("listen http_addr %s: %w", cfg.HTTPAddr, err)
		}
	}
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	n.notify = &notifier{log: log.With("component", "notify")}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if !n.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "starting")
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{}))
	handleProfiler(mux)
	mux.HandleFunc("/apiws", func(w http.ResponseWriter, r *http.Request) {
		if !n.ready.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		n.srv.WebSocketHandler().ServeHTTP(w, r)
	})
	if cfg.Clustered() {
		publicAddr := func() string {
			h, p := n.publicAddr()
			return net.JoinHostPort(h, strconv.Itoa(p))
		}
		n.cl, err = newClusterNode(cfg, log, n.db, n.notify, newClusterMetrics(n.reg), publicAddr)
		if err != nil {
			return nil, err
		}
		n.rt = newRouter(n.cl)
		n.bus = newPushBus(n.cl)
		n.notify.push = n.bus.push
		n.notify.view.Store(viewer(n.cl.state()))
		mux.HandleFunc("/cluster/status", n.cl.handleStatus)
		mux.Handle("/cluster/leave", localOnly(n.cl.handleLeave(func() { n.stopRun() })))
		if n.cl.faults != nil {
			mux.Handle("/debug/faults", localOnly(http.HandlerFunc(n.cl.handleFaults)))
		}
	} else {
		meta := n.db.Table("meta")
		var sec secrets
		if sec.key, err = loadOrCreateRSA(meta); err != nil {
			return nil, err
		}
		if sec.salt, err = loadOrCreateSecret(meta, "salt_secret"); err != nil {
			return nil, err
		}
		if sec.access, err = loadOrCreateSecret(meta, "access_secret"); err != nil {
			return nil, err
		}
		keys := authKeyStore{t: n.db.Table("authkey")}
		machine := messaging.NewMachine(n.db.Table("msg"), n.notify)
		n.notify.view.Store(viewer(api.Local(machine)))
		n.notify.push = func(perms []int64, msg bin.Encoder) {
			if srv := n.notify.srv.Load(); srv != nil {
				for _, p := range perms {
					srv.PushPerm(p, msg)
				}
			}
		}
		if err := n.build(sec, keys, api.Local(machine), nil); err != nil {
			return nil, err
		}
	}
	if n.hln != nil {
		n.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	}
	return n, nil
}

// secrets are what every node of a DC must share for clients to be served
// alike anywhere: the server RSA key, the salt secret and the access-hash
// secret.
type secrets struct {
	key    *rsa.PrivateKey
	salt   []byte
	access []byte
}

// build makes the API service and the MTProto server. route, if set, is
// the handler clients' calls go to (the cluster router, which runs the
// API where the data group's leader is).
func (n *Node) build(sec secrets, keys protocol.KeyStore, state api.State, rt *router) error {
	n.key = sec.key
	if err := writePublicKey(filepath.Join(n.cfg.DataDir, PublicKeyFile), &n.key.PublicKey); err != nil {
		return err
	}
	opts := api.Options{
		DC:          n.cfg.DC,
		PublicAddr:  n.publicAddr,
		Logger:      n.log,
		Machine:     state,
		Access:      messaging.NewAccessHashes(sec.access),
		TestNumbers: n.cfg.TestNumbersEnabled(),
		Codes:       codeSender(n.cfg, n.log),
		CodeLength:  n.cfg.Auth.CodeLength,
		CodeTTL:     n.cfg.Auth.CodeTTL.Duration,
	}
	if n.cl != nil {
		opts.DCOptions, opts.PhoneHome = n.cl.fed.dcOptions, n.cl.fed.phoneHome
		opts.ClaimUsername = n.cl.fed.claimUsername
		opts.KnownDC, opts.ImportAuthorization = n.cl.fed.knownDC, n.cl.fed.importAuthorization
	}
	svc := api.New(opts)
	var handler protocol.Handler = svc
	if rt != nil {
		rt.local = svc
		handler = rt
	}
	var route func(context.Context, transport.Conn, transport.Metadata) bool
	if n.cl != nil {
		route = n.cl.routeProxied
	}
	gate, err := newMTProxyGate(n.cfg, n.listenAddrs(), n.reg, n.log)
	if err != nil {
		return err
	}
	n.gate.Store(gate)
	srv, err := protocol.NewServer(protocol.Options{
		Route:     route,
		Admit:     gate.admit,
		OnReject:  gate.reject,
		Transport: gate.options,
		Config: protocol.Config{
			DC:               n.cfg.DC,
			MaxConnections:   n.cfg.Protocol.MaxConnections,
			MaxHandshakes:    n.cfg.Protocol.MaxHandshakes,
			IdleTimeout:      n.cfg.Protocol.IdleTimeout.Duration,
			HandshakeTimeout: n.cfg.Protocol.HandshakeTimeout.Duration,
			MaxFrameSize:     n.cfg.Protocol.MaxFrameSize,
		},
		Key:        n.key,
		Keys:       keys,
		SaltSecret: sec.salt,
		Handler:    handler,
		Logger:     n.log,
		Metrics:    protocol.NewMetrics(n.reg),
		OnPresence: n.presence(),
	})
	if err != nil {
		return err
	}
	n.srv = srv
	if n.cl != nil {
		n.cl.mesh.Handle(cluster.KindProxy, n.cl.serveRelayed(srv))
	}
	n.notify.srv.Store(srv)
	n.notify.render.Store(renderer(svc))
	if n.bus != nil {
		n.bus.srv.Store(srv)
	}
	return nil
}

// presence is the MTProto server's presence hook: the push bus's on a
// clustered node, none on a standalone one.
func (n *Node) presence() func(int64, bool) {
	if n.bus == nil {
		return nil
	}
	return n.bus.presence
}

// buildClustered waits for the DC's shared secrets and builds the servers
// over the replicated state.
func (n *Node) buildClustered(ctx context.Context) error {
	m, err := n.cl.waitSecrets(ctx, n.rt)
	if err != nil {
		return err
	}
	if want := strconv.Itoa(n.cl.layout.Shards); string(m["shards"]) != want {
		return fmt.Errorf("cluster.shards = %s, but this data center was formed with %s shards; start every node with its value", want, m["shards"])
	}
	k, err := x509.ParsePKCS1PrivateKey(m["rsa_key"])
	if err != nil {
		return fmt.Errorf("parse the DC's RSA key: %w", err)
	}
	sec := secrets{key: k, salt: m["salt_secret"], access: m["access_secret"]}
	return n.build(sec, clusterKeys{r: n.rt}, n.cl.state(), n.rt)
}

// ClientAddr is the bound MTProto TCP address.
func (n *Node) ClientAddr() net.Addr { return n.ln.Addr() }

// HTTPAddr is the bound HTTP address, or nil when HTTP is off.
func (n *Node) HTTPAddr() net.Addr {
	if n.hln == nil {
		return nil
	}
	return n.hln.Addr()
}

// PublicKeyPath is where the server's public key is written.
func (n *Node) PublicKeyPath() string { return filepath.Join(n.cfg.DataDir, PublicKeyFile) }

// publicAddr is what help.getConfig advertises.
// listenAddrs are the addresses this node answers clients on, which a
// front must not be (it would splice probes back here).
func (n *Node) listenAddrs() []string {
	out := []string{n.ln.Addr().String()}
	if n.cfg.PublicAddr != "" {
		out = append(out, n.cfg.PublicAddr)
	}
	return out
}

// Reload applies a configuration read again (SIGHUP): the [proxy]
// settings take effect for new connections at once; other changed keys
// need a restart and are named in the log.
func (n *Node) Reload(cfg *config.Config) error {
	var restart []string
	for _, k := range config.Changed(n.cfg, cfg) {
		if !config.Reloadable(k) {
			restart = append(restart, k)
		}
	}
	if len(restart) > 0 {
		n.log.Warn("configuration keys changed that need a restart", "keys", restart)
	}
	gate := n.gate.Load()
	if gate == nil {
		return errors.New("not serving yet")
	}
	if err := gate.apply(cfg, n.listenAddrs()); err != nil {
		return err
	}
	n.log.Info("configuration reloaded")
	return nil
}

func (n *Node) publicAddr() (string, int) {
	addr := n.cfg.PublicAddr
	if addr == "" {
		addr = n.ln.Addr().String()
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "127.0.0.1", 0
	}
	p, _ := strconv.Atoi(port)
	return host, p
}

// Run serves until ctx is done, then shuts down: listeners first, then
// client connections, then the HTTP server, the cluster, then storage.
func (n *Node) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n.runMu.Lock()
	n.cancel = cancel
	n.runMu.Unlock()
	errc := make(chan error, 3)
	if n.http != nil {
		go func() {
			if err := n.http.Serve(n.hln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http: %w", err)
				return
			}
			errc <- nil
		}()
	}
	if n.cl != nil {
		n.cl.run()
		n.cl.spawn(func() { n.bus.run(n.cl.ctx) })
		if err := n.buildClustered(ctx); err != nil {
			n.Close()
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	n.ready.Store(true)
	attrs := []any{
		"dc", n.cfg.DC,
		"client_addr", n.ClientAddr().String(),
		"http_addr", addrString(n.HTTPAddr()),
		"public_key", n.PublicKeyPath(),
		"fingerprint", fmt.Sprintf("%016x", uint64(crypto.RSAFingerprint(&n.key.PublicKey))),
	}
	if n.cl != nil {
		attrs = append(attrs, "node_id", string(n.cl.id), "mesh_addr", n.cl.mesh.Addr().String())
	}
	n.log.Info("mtnode serving", attrs...)
	go func() { errc <- n.srv.Serve(ctx, n.ln) }()
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	n.log.Info("shutting down")
	if err := n.Close(); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

// stopRun makes Run return (after `mtnode leave`).
func (n *Node) stopRun() {
	n.runMu.Lock()
	defer n.runMu.Unlock()
	if n.cancel != nil {
		n.cancel()
	}
}

// Close stops everything in order. Safe to call twice.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		if n.ln != nil {
			n.ln.Close()
		}
		if n.srv != nil {
			n.srv.Close()
		}
		if n.http != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = n.http.Shutdown(ctx)
			cancel()
		} else if n.hln != nil {
			n.hln.Close()
		}
		if n.cl != nil {
			n.cl.close()
		}
		if n.db != nil {
			n.closeErr = n.db.Close()
		}
	})
	return n.closeErr
}

// codeSender picks the login code delivery configured in [auth].
func codeSender(cfg *config.Config, log *slog.Logger) api.CodeSender {
	if cfg.Auth.CodeSender == "webhook" {
		return api.WebhookCodeSender(cfg.Auth.WebhookURL, nil)
	}
	return api.LogCodeSender(log)
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// loadOrCreateRSA returns the server's RSA key, generating it on first start.
// It lives in the database with the rest of the node's state; only the
// public half is written out as a file.
func loadOrCreateRSA(meta *storage.Table) (*rsa.PrivateKey, error) {
	der, err := meta.Get([]byte("rsa_key"))
	if err == nil {
		k, err := x509.ParsePKCS1PrivateKey(der)
		if err != nil {
			return nil, fmt.Errorf("parse stored RSA key: %w", err)
		}
		return k, nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("load RSA key: %w", err)
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate RSA key: %w", err)
	}
	if err := meta.Put([]byte("rsa_key"), x509.MarshalPKCS1PrivateKey(k)); err != nil {
		return nil, fmt.Errorf("store RSA key: %w", err)
	}
	return k, nil
}

func loadOrCreateSecret(meta *storage.Table, name string) ([]byte, error) {
	v, err := meta.Get([]byte(name))
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("load %s: %w", name, err)
	}
	v = make([]byte, 32)
	if _, err := rand.Read(v); err != nil {
		return nil, err
	}
	if err := meta.Put([]byte(name), v); err != nil {
		return nil, fmt.Errorf("store %s: %w", name, err)
	}
	return v, nil
}

// writePublicKey writes the key as PKCS#1 PEM, the form Telegram publishes
// its keys in, atomically so a reader never sees half a file.
func writePublicKey(path string, pub *rsa.PublicKey) error {
	data := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(pub)})
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write public key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write public key: %w", err)
	}
	return nil
}

// authKeyStore keeps auth keys in the "authkey" table, keyed by id.
type authKeyStore struct{ t *storage.Table }

func keyName(id int64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(id))
	return b[:]
}

func (s authKeyStore) LoadKey(id int64) (*protocol.AuthKey, error) {
	v, err := s.t.Get(keyName(id))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, protocol.ErrKeyNotFound
	}
	if err != nil {
		return nil, err
	}
	var k protocol.AuthKey
	if err := k.UnmarshalBinary(v); err != nil {
		return nil, err
	}
	return &k, nil
}

func (s authKeyStore) StoreKey(k *protocol.AuthKey) error {
	v, err := k.MarshalBinary()
	if err != nil {
		return err
	}
	return s.t.Put(keyName(k.ID()), v)
}

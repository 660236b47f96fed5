// Package loadgen is mtnode's load generator: it drives a node with real
// gotd/td clients over loopback and measures auth key creations per second,
// encrypted ping round trips at several concurrencies and the memory an
// idle authorized connection costs, next to the raw cost of the same
// cryptography measured in the same run.
//
// By default the node under test is a child process (`mtnode run` in a temp
// dir), so that its CPU and memory, read from its /metrics, are not mixed
// with the clients'. Every loop is bounded both in count and in time.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/gotd/td/telegram"

	"github.com/mtnode/mtnode/internal/mtclient"
)

// Scenario names one measurement.
type Scenario string

// The scenarios, in the order Run performs them.
const (
	// Crypto measures the floor: RSA-2048 decrypt, 2048-bit modexp,
	// AES-256-IGE and MTProto message crypto, on one core of this process.
	Crypto Scenario = "crypto"
	// Handshake measures auth key creations per second.
	Handshake Scenario = "handshake"
	// Ping measures encrypted ping round trips at each of Options.Conns.
	Ping Scenario = "ping"
	// Chat measures private messages per second between signed-in users
	// in pairs, at each of Options.ChatUsers, next to a raw Badger floor.
	Chat Scenario = "chat"
	// Idle measures the server's memory per idle authorized connection.
	Idle Scenario = "idle"
	// Failover kills the node leading the most raft groups of a 3-node
	// child DC under a steady chat load, Options.Failovers times, and
	// measures how long until other nodes lead those groups and until
	// sends are acknowledged again. Not in "all".
	Failover Scenario = "failover"
	// Federation forms two child DCs federated over the WAN pool and
	// measures same-DC against cross-DC messages, and the drain of a
	// backlog queued while the DCs were cut apart, without and with an
	// added WAN delay (federation.go). Not in "all".
	Federation Scenario = "federation"
	// MTProxy measures `mtnode proxy` against mtg (Options.MTProxy.MTG) in
	// FakeTLS mode: relay throughput, added latency, memory per idle
	// connection, CPU per GB (mtproxy.go). Not in "all".
	MTProxy Scenario = "mtproxy"
)

// Scenarios lists every scenario of a default run ("all"), in run order.
var Scenarios = []Scenario{Crypto, Handshake, Ping, Chat, Idle}

// AllScenarios is every scenario Run knows, in run order: Scenarios, then
// Failover, Federation and MTProxy, which run only when asked for.
var AllScenarios = []Scenario{Crypto, Handshake, Ping, Chat, Idle, Failover, Federation, MTProxy}

// ErrNoMetrics is returned by the idle scenario when the node's /metrics
// address is unknown (an external target without Options.MetricsAddr).
var ErrNoMetrics = errors.New("loadgen: node metrics address unknown")

// Options configure a run. Zero values take the defaults noted.
type Options struct {
	// Scenarios to run; all by default. They always run in Scenarios order.
	Scenarios []Scenario
	// Duration of each measured phase (each ping level, the handshake
	// loop); 10s by default. The crypto floor gets a fifth of it per
	// primitive, between 200ms and 2s.
	Duration time.Duration
	// Conns are the ping scenario's concurrent connections; 1, 64, 1024.
	Conns []int
	// ChatUsers are the chat scenario's levels: that many users (even),
	// each signed up with its own auth key and test number, in pairs;
	// 2, 100, 1000.
	ChatUsers []int
	// IdleConns is how many idle connections the idle scenario opens; 1000.
	IdleConns int
	// HandshakeWorkers run key exchanges concurrently; twice GOMAXPROCS
	// (at most 32), since gotd's client work per key (factoring pq) is CPU
	// bound and more workers would only queue for the CPU. Keep it below
	// the node's max_handshakes (64), or the excess gets -429.
	HandshakeWorkers int
	// HandshakeClient is the key exchange client of the handshake
	// scenario: HandshakeFast (default) or HandshakeGotd.
	HandshakeClient HandshakeClient
	// Nodes are the DC sizes to run against when the node is a child: 1
	// (default) is one standalone `mtnode run`; n > 1 forms a DC of n child
	// processes. The chat scenario runs once per size, in order, each on a
	// freshly formed DC, with its users spread round-robin over the nodes;
	// the other scenarios use a DC of the first size. An external target
	// (Addr) allows only 1.
	Nodes []int
	// Failovers is how many kills the failover scenario does; 5.
	Failovers int
	// Federation configures the federation scenario.
	Federation FederationOptions
	// MTProxy configures the mtproxy scenario.
	MTProxy MTProxyOptions
	// SetupConcurrency bounds connections being set up at once (each does
	// its own key exchange); 16.
	SetupConcurrency int
	// SetupTimeout bounds opening one batch of connections; 5m.
	SetupTimeout time.Duration
	// MaxOps bounds the operations of one measured phase; 10,000,000.
	MaxOps int

	// Addr and PublicKeyFile target an already running node. Without Addr
	// a node is started as a child process.
	Addr          string
	PublicKeyFile string
	// MetricsAddr is an external node's HTTP address (host:port) for
	// /metrics; without it server-side figures are left out.
	MetricsAddr string
	// DC of an external node; 1.
	DC int

	// NodeBinary is the mtnode executable to run as the child.
	NodeBinary string
	// ServerProcs, if > 0, sets the child's GOMAXPROCS.
	ServerProcs int

	// PingMethod is the round trip of the ping scenario and of the idle
	// scenario's GC nudge; PingAuto by default.
	PingMethod PingMethod

	// Transport the clients dial with; intermediate. Key exchanges always
	// use intermediate.
	Transport mtclient.Transport
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if len(o.Scenarios) == 0 {
		o.Scenarios = Scenarios
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if len(o.Conns) == 0 {
		o.Conns = []int{1, 64, 1024}
	}
	if len(o.ChatUsers) == 0 {
		o.ChatUsers = []int{2, 100, 1000}
	}
	if len(o.Nodes) == 0 {
		o.Nodes = []int{1}
	}
	if o.Failovers <= 0 {
		o.Failovers = 5
	}
	o.Federation.setDefaults()
	if o.IdleConns <= 0 {
		o.IdleConns = 1000
	}
	if o.HandshakeClient == "" {
		o.HandshakeClient = HandshakeFast
	}
	if o.HandshakeWorkers <= 0 {
		o.HandshakeWorkers = min(2*runtime.GOMAXPROCS(0), 32)
	}
	if o.SetupConcurrency <= 0 {
		o.SetupConcurrency = 16
	}
	if o.SetupTimeout <= 0 {
		o.SetupTimeout = 5 * time.Minute
	}
	if o.MaxOps <= 0 {
		o.MaxOps = 10_000_000
	}
	if o.DC == 0 {
		o.DC = 1
	}
	if o.PingMethod == "" {
		o.PingMethod = PingAuto
	}
	if o.Transport == "" {
		o.Transport = mtclient.Intermediate
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Report is everything one run measured. Nil sections were not run.
type Report struct {
	Start     time.Time
	GoVersion string
	GOOS      string
	GOARCH    string
	// NumCPU is the machine's logical CPUs as the load generator sees them.
	NumCPU int
	// ClientProcs is the load generator's GOMAXPROCS.
	ClientProcs int
	// ServerProcs is the node's GOMAXPROCS from its /metrics, 0 if unknown.
	ServerProcs int
	// ServerIdleCPU is the CPU the node used at rest before the first
	// scenario, in cores; per-operation CPU figures are net of it.
	ServerIdleCPU float64
	// LoadAvgStart and LoadAvgEnd are /proc/loadavg's three load averages
	// when the run started and ended (empty where there is none): other
	// work on the machine shows up here and in every figure.
	LoadAvgStart, LoadAvgEnd string
	// Target describes the node under test.
	Target string
	// Nodes are the DC sizes run (Options.Nodes): the chat scenario has a
	// row per size and user count, the others ran on the first size.
	Nodes     []int
	Transport mtclient.Transport
	Duration  time.Duration
	// PingMethod is the round trip measured (never PingAuto), and
	// PingNote why PingAuto chose it, if it fell back.
	PingMethod PingMethod
	PingNote   string

	Crypto    *CryptoReport
	Handshake *HandshakeReport
	Ping      []PingReport
	Chat      []ChatReport
	Idle      *IdleReport
	Failover  *FailoverReport

	Federation *FederationReport
	MTProxy    *MTProxyReport
}

// runState is what the scenarios of one run share.
type runState struct {
	t      *target
	opts   *Options
	log    *slog.Logger
	pool   *keyPool
	rep    *Report
	pinger pinger // resolved by the first scenario that needs it
}

// resolvePing settles the run's round trip on client c, once.
func (rs *runState) resolvePing(ctx context.Context, c *telegram.Client) error {
	if rs.pinger != nil {
		return nil
	}
	p, used, note, err := resolvePinger(ctx, rs.opts.PingMethod, c)
	if err != nil {
		return err
	}
	if note != "" {
		rs.log.Warn("ping fallback", "note", note)
	}
	rs.pinger, rs.rep.PingMethod, rs.rep.PingNote = p, used, note
	return nil
}

// target is the node under test.
type target struct {
	addr string
	// addrs are the client addresses of every node of a child DC (addrs[0]
	// is addr); nil for one node.
	addrs   []string
	pubFile string
	dc      int
	key     telegram.PublicKey
	metrics *scraper // nil if unknown
	// idleCPU is the node's CPU use at rest, in seconds per second, and
	// procs its GOMAXPROCS; both 0 if unknown.
	idleCPU float64
	procs   int
}

// addrFor is the node user or connection i talks to: round-robin over a
// DC's nodes.
func (t *target) addrFor(i int) string {
	if len(t.addrs) == 0 {
		return t.addr
	}
	return t.addrs[i%len(t.addrs)]
}

// Run performs the selected scenarios and returns what they measured. A
// failing scenario stops the run; the report holds what finished before.
func Run(ctx context.Context, opts Options) (rep *Report, err error) {
	opts.setDefaults()
	for _, s := range opts.Scenarios {
		if !slices.Contains(AllScenarios, s) {
			return nil, fmt.Errorf("loadgen: unknown scenario %q", s)
		}
	}
	for _, n := range opts.Nodes {
		if n < 1 || n > 9 {
			return nil, fmt.Errorf("loadgen: node count %d: want 1 to 9", n)
		}
		if n > 1 && opts.Addr != "" {
			return nil, errors.New("loadgen: more than one node needs child nodes (no --addr)")
		}
	}
	if slices.Contains(opts.Scenarios, Failover) && opts.Addr != "" {
		return nil, errors.New("loadgen: the failover scenario needs child nodes (no --addr)")
	}
	if slices.Contains(opts.Scenarios, Federation) {
		if opts.Addr != "" {
			return nil, errors.New("loadgen: the federation scenario needs child nodes (no --addr)")
		}
		if err := opts.Federation.check(); err != nil {
			return nil, err
		}
	}
	for _, n := range opts.Conns {
		if n <= 0 {
			return nil, fmt.Errorf("loadgen: connection count %d", n)
		}
	}
	for _, n := range opts.ChatUsers {
		if n < 2 || n%2 != 0 {
			return nil, fmt.Errorf("loadgen: chat users %d: want an even number, at least 2", n)
		}
	}
	rep = &Report{
		Start:        time.Now().UTC(),
		GoVersion:    runtime.Version(),
		GOOS:         runtime.GOOS,
		GOARCH:       runtime.GOARCH,
		NumCPU:       runtime.NumCPU(),
		ClientProcs:  runtime.GOMAXPROCS(0),
		Transport:    opts.Transport,
		Duration:     opts.Duration,
		Nodes:        slices.Clone(opts.Nodes),
		LoadAvgStart: loadAvg(),
	}
	defer func() { rep.LoadAvgEnd = loadAvg() }()
	log := opts.Logger.With("component", "loadgen")
	want := func(s Scenario) bool { return slices.Contains(opts.Scenarios, s) }

	// The floor runs first, while the node is idle (or not yet started).
	if want(Crypto) {
		budget := min(max(opts.Duration/5, 200*time.Millisecond), 2*time.Second)
		log.Info("measuring crypto floor", "budget_per_primitive", budget)
		cr, err := runCrypto(ctx, budget)
		if err != nil {
			return rep, fmt.Errorf("crypto: %w", err)
		}
		rep.Crypto = cr
	}
	if want(Handshake) || want(Ping) || want(Chat) || want(Idle) {
		if err := runOnTargets(ctx, &opts, rep, log); err != nil {
			return rep, err
		}
	}
	if want(Failover) {
		fr, err := runFailover(ctx, &opts, log)
		rep.Failover = fr
		if err != nil {
			return rep, fmt.Errorf("failover: %w", err)
		}
	}
	if want(Federation) {
		fr, err := runFederation(ctx, &opts, log)
		rep.Federation = fr
		if err != nil {
			return rep, fmt.Errorf("federation: %w", err)
		}
	}
	if want(MTProxy) {
		if opts.NodeBinary == "" {
			return rep, errors.New("loadgen: the mtproxy scenario needs the mtnode binary (no --addr)")
		}
		mr, err := runMTProxy(ctx, &opts, log)
		rep.MTProxy = mr
		if err != nil {
			return rep, fmt.Errorf("mtproxy: %w", err)
		}
	}
	return rep, nil
}

// runOnTargets runs the scenarios that share a target: handshake, ping,
// chat (once per DC size) and idle.
func runOnTargets(ctx context.Context, opts *Options, rep *Report, log *slog.Logger) (err error) {
	want := func(s Scenario) bool { return slices.Contains(opts.Scenarios, s) }
	t, stop, err := openTarget(ctx, opts, log, opts.Nodes[0])
	if err != nil {
		return err
	}
	defer func() {
		if cerr := stop(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	rep.Target = t.describe
	if err := t.probeMetrics(ctx, log); err != nil {
		return err
	}
	rep.ServerProcs, rep.ServerIdleCPU = t.procs, t.idleCPU
	rs := &runState{t: &t.target, opts: opts, log: log, rep: rep,
		pool: newKeyPool(&t.target, opts.HandshakeWorkers)}
	if want(Handshake) {
		log.Info("measuring handshakes", "workers", opts.HandshakeWorkers, "duration", opts.Duration)
		hr, err := runHandshakes(ctx, &t.target, opts, rs.pool)
		if err != nil {
			return fmt.Errorf("handshake: %w", err)
		}
		hr.derive(rep)
		rep.Handshake = hr
	}
	if want(Ping) {
		prs, err := runPings(ctx, rs)
		for i := range prs {
			prs[i].derive(rep)
		}
		rep.Ping = prs
		if err != nil {
			return fmt.Errorf("ping: %w", err)
		}
	}
	// newTarget stops the current target and opens a DC of n nodes.
	newTarget := func(n int) error {
		first := stop
		stop = func() error { return nil }
		if err := first(); err != nil {
			return err
		}
		nt, nstop, err := openTarget(ctx, opts, log, n)
		if err != nil {
			return err
		}
		t, stop = nt, nstop
		if err := t.probeMetrics(ctx, log); err != nil {
			return err
		}
		rs.t = &t.target
		rs.pool = newKeyPool(&t.target, opts.HandshakeWorkers)
		return nil
	}
	if want(Chat) {
		for k, n := range opts.Nodes {
			if k > 0 {
				if err := newTarget(n); err != nil {
					return fmt.Errorf("chat: %w", err)
				}
				rep.Target += fmt.Sprintf("; for chat on %d nodes, %s", n, t.describe)
			}
			crs, err := runChats(ctx, rs)
			rep.Chat = append(rep.Chat, crs...)
			if err != nil {
				return fmt.Errorf("chat, %d nodes: %w", n, err)
			}
		}
	}
	if want(Idle) {
		if opts.Addr == "" && (want(Handshake) || want(Ping) || want(Chat)) {
			// A fresh node, so that the earlier scenarios' heap peak and
			// sessions are not in the idle scenario's RSS and heap.
			if err := newTarget(opts.Nodes[0]); err != nil {
				return err
			}
			rep.Target += "; a fresh one for the idle scenario"
		}
		if t.metrics == nil {
			return fmt.Errorf("idle: %w", ErrNoMetrics)
		}
		log.Info("measuring idle connections", "conns", opts.IdleConns)
		ir, err := runIdle(ctx, rs)
		if err != nil {
			return fmt.Errorf("idle: %w", err)
		}
		rep.Idle = ir
	}
	return nil
}

type openedTarget struct {
	target
	describe string
}

// openTarget starts a child node or describes the external one.
func openTarget(ctx context.Context, opts *Options, log *slog.Logger, nodes int) (*openedTarget, func() error, error) {
	httpc := &http.Client{Timeout: 10 * time.Second}
	if opts.Addr != "" {
		if opts.PublicKeyFile == "" {
			return nil, nil, errors.New("loadgen: an external node needs its public key file")
		}
		t := &openedTarget{
			target:   target{addr: opts.Addr, pubFile: opts.PublicKeyFile, dc: opts.DC},
			describe: "external node at " + opts.Addr,
		}
		if opts.MetricsAddr != "" {
			t.metrics = &scraper{url: "http://" + opts.MetricsAddr + "/metrics", client: httpc}
		}
		if err := t.loadKey(); err != nil {
			return nil, nil, err
		}
		return t, func() error { return nil }, nil
	}
	if opts.NodeBinary == "" {
		return nil, nil, errors.New("loadgen: no node binary to start and no address to target")
	}
	if nodes > 1 {
		return openCluster(ctx, opts, log, nodes, httpc)
	}
	c, err := startChild(ctx, opts.NodeBinary, opts.ServerProcs)
	if err != nil {
		return nil, nil, err
	}
	log.Info("child node serving", "pid", c.cmd.Process.Pid, "client_addr", c.addr, "http_addr", c.http)
	t := &openedTarget{
		target: target{
			addr: c.addr, pubFile: c.pubKey, dc: 1,
			metrics: &scraper{url: "http://" + c.http + "/metrics", client: httpc},
		},
		describe: fmt.Sprintf("child process `mtnode run` (pid %d) on loopback", c.cmd.Process.Pid),
	}
	if err := t.loadKey(); err != nil {
		c.Close()
		return nil, nil, err
	}
	return t, c.Close, nil
}

// openCluster forms a DC of n child nodes; the target is all of them:
// clients round-robin over their client addresses, /metrics summed.
func openCluster(ctx context.Context, opts *Options, log *slog.Logger, n int, httpc *http.Client) (*openedTarget, func() error, error) {
	cl, err := startCluster(ctx, opts.NodeBinary, opts.ServerProcs, n, log)
	if err != nil {
		return nil, nil, err
	}
	t, err := clusterTarget(cl, httpc, true)
	if err != nil {
		cl.Close()
		return nil, nil, err
	}
	for _, c := range cl.nodes {
		log.Info("cluster node serving", "node", c.nodeID, "pid", c.cmd.Process.Pid, "client_addr", c.addr, "http_addr", c.http)
	}
	return t, cl.Close, nil
}

// clusterTarget is every running node of cl as one target, with their
// /metrics summed if metrics is set. Every node must present the same
// server key.
func clusterTarget(cl *childCluster, httpc *http.Client, metrics bool) (*openedTarget, error) {
	n0 := cl.nodes[0]
	t := &openedTarget{target: target{addr: n0.addr, pubFile: n0.pubKey, dc: 1}}
	if metrics {
		t.metrics = &scraper{url: "http://" + n0.http + "/metrics", client: httpc}
	}
	pids := make([]string, len(cl.nodes))
	for i, c := range cl.nodes {
		t.addrs = append(t.addrs, c.addr)
		if i > 0 && metrics {
			t.metrics.more = append(t.metrics.more, "http://"+c.http+"/metrics")
		}
		pids[i] = fmt.Sprint(c.cmd.Process.Pid)
	}
	t.describe = fmt.Sprintf("child DC of %d `mtnode run` processes (pids %s) on loopback, clients round-robin over them",
		len(cl.nodes), strings.Join(pids, ", "))
	if metrics {
		t.describe += ", /metrics summed over them"
	}
	if err := t.loadKey(); err != nil {
		return nil, err
	}
	for _, c := range cl.nodes[1:] {
		k, err := mtclient.LoadPublicKey(c.pubKey)
		if err != nil || k.RSA.N.Cmp(t.key.RSA.N) != 0 {
			return nil, fmt.Errorf("node %s presents another server key than %s (%v)", c.nodeID, n0.nodeID, err)
		}
	}
	return t, nil
}

// probeMetrics reads the node's GOMAXPROCS and measures its idle CPU.
func (t *target) probeMetrics(ctx context.Context, log *slog.Logger) error {
	if t.metrics == nil {
		return nil
	}
	s, err := t.metrics.scrape(ctx)
	if err != nil {
		return err
	}
	if v, ok := s.get(mGOMAXPROCS); ok {
		t.procs = int(v)
	}
	log.Info("measuring the idle node's CPU", "for", idleSample)
	t.idleCPU, err = measureIdleCPU(ctx, t.metrics)
	return err
}

func (t *target) loadKey() error {
	k, err := mtclient.LoadPublicKey(t.pubFile)
	if err != nil {
		return err
	}
	t.key = k
	return nil
}

// perSec is n per second of d.
func perSec(n float64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return n / d.Seconds()
}

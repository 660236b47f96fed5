package loadgen

import (
	"bytes"
	"context"
	"crypto/rand"
	"debug/buildinfo"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The mtproxy scenario: `mtnode proxy` against mtg in the same FakeTLS
// mode, side by side, each relaying to an echo (mtproxyupstream.go) for
// the same client (mtproxyclient.go). DESIGN.md, "The mtproxy scenario".

// MTProxyOptions configure the mtproxy scenario.
type MTProxyOptions struct {
	// MTG is the mtg executable to compare with; empty measures
	// `mtnode proxy` alone.
	MTG string
	// Streams are the throughput levels, in concurrent connections; 1, 100.
	Streams []int
	// FrameSize is the bulk frame's payload in bytes; 64 KiB. A multiple
	// of 4, as MTProto frames are.
	FrameSize int
	// InFlight bounds the bytes a stream has sent and not had back; 1 MiB
	// (two 512 KiB upload parts, as apps keep in flight). Without a bound
	// a proxy that queues is flooded (mtg's FakeTLS queue has no limit)
	// and the figure is its queue, not its relay.
	InFlight int
	// Domain is the ee secret's front domain (only its name is used; no
	// one resolves it); www.example.com.
	Domain string
	// QUIC also measures `mtnode proxy` with the mesh's TCP lane off
	// (cluster.tcp_lane = false), relaying over QUIC streams.
	QUIC bool
}

func (o *MTProxyOptions) setDefaults() {
	if len(o.Streams) == 0 {
		o.Streams = []int{1, 100}
	}
	if o.FrameSize <= 0 {
		o.FrameSize = 64 << 10
	}
	o.FrameSize = (o.FrameSize + 3) &^ 3
	if o.InFlight <= 0 {
		o.InFlight = 1 << 20
	}
	if o.Domain == "" {
		o.Domain = "www.example.com"
	}
}

// MTProxyReport is the mtproxy scenario's result: one side per proxy.
type MTProxyReport struct {
	Secret    string // kind and domain, never the key
	FrameSize int
	InFlight  int
	PingSize  int
	IdleConns int
	Duration  time.Duration
	// FloorRTT is a round trip of the same ping frame to a bare TCP echo
	// on loopback, no proxy: what "added" latency is measured from.
	FloorRTT50, FloorRTT99 time.Duration
	Sides                  []MTProxySide
	// Missing says what could not be measured, if anything.
	Missing string
}

// MTProxySide is one proxy's figures.
type MTProxySide struct {
	Name     string
	Upstream string
	// Procs is the proxy's GOMAXPROCS (both Go programs, default).
	Procs int
	// RestCPU is the proxy's CPU at rest, in cores.
	RestCPU float64
	// RSSBefore and RSSAfter bracket opening IdleConns idle connections;
	// IdleOpen is how many the upstream saw open at the second sample.
	RSSBefore, RSSAfter, RSSPerConn float64
	IdleOpen                        int64
	RTT50, RTT99                    time.Duration
	RTTs                            uint64
	// Setup50 and Setup99 time a new connection from its dial to its
	// first echo, Setups of them one after another.
	Setup50, Setup99 time.Duration
	Setups           uint64
	Throughput       []MTProxyThroughput
	// Dests are where mtg asked its SOCKS5 proxy to connect (the DC
	// addresses it believes in); answered locally.
	Dests map[string]int `json:",omitempty"`
	Err   string         `json:",omitempty"`
}

// MTProxyThroughput is one bulk level.
type MTProxyThroughput struct {
	Streams int
	Window  time.Duration
	// Echoed is payload bytes received back by the clients in the
	// window (relayed down); Up is what the upstream echo received from
	// the proxy in the window (relayed up). A proxy that buffers what it
	// cannot send on has Up well above Echoed.
	Echoed, Up float64
	// RSSAfter is the proxy's resident set at the end of the window.
	RSSAfter float64
	ProxyCPU time.Duration
	// ClientCPU is this process's CPU (clients and upstream echo).
	ClientCPU time.Duration
}

// MBps is the echoed payload per second, each way.
func (t MTProxyThroughput) MBps() float64 { return t.Echoed / 1e6 / t.Window.Seconds() }

// CPUPerGB is the proxy's CPU seconds per GB relayed, both directions
// (Up + Echoed).
func (t MTProxyThroughput) CPUPerGB() float64 {
	if t.Echoed+t.Up <= 0 {
		return 0
	}
	return t.ProxyCPU.Seconds() / ((t.Echoed + t.Up) / 1e9)
}

// mtproxyPing is the latency frame's payload: small, like an MTProto
// ping's encrypted message.
const mtproxyPing = 32

// mtproxySetups bounds the connections of the setup phase.
const mtproxySetups = 500

// mtproxyStepTimeout bounds one dial, handshake or round trip.
const mtproxyStepTimeout = 10 * time.Second

// proxyUnderTest is a running proxy process.
type proxyUnderTest struct {
	name, upstream string
	addr           string
	secret         []byte
	ch             *child
	counts         *echoCounts
	dests          func() map[string]int
	mesh           bool // relays over the mesh: report the lane's share
}

func (p *proxyUnderTest) pid() int { return p.ch.cmd.Process.Pid }

// runMTProxy measures `mtnode proxy` and, given opts.MTProxy.MTG, mtg.
func runMTProxy(ctx context.Context, opts *Options, log *slog.Logger) (*MTProxyReport, error) {
	mo := opts.MTProxy
	mo.setDefaults()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		return nil, errors.New("the mtproxy scenario reads /proc: Linux only")
	}
	key := make([]byte, 16)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	secret := append(append([]byte{0xee}, key...), mo.Domain...)
	rep := &MTProxyReport{Secret: "ee (FakeTLS), domain " + mo.Domain, FrameSize: mo.FrameSize, InFlight: mo.InFlight, PingSize: mtproxyPing,
		IdleConns: opts.IdleConns, Duration: opts.Duration}

	floor, err := startTCPEcho()
	if err != nil {
		return rep, err
	}
	defer floor.Close()
	ping := make([]byte, mtproxyPing)
	h, err := plainRoundTrips(ctx, floor.ln.Addr().String(), ping, min(opts.Duration, 3*time.Second), opts.MaxOps)
	if err != nil {
		return rep, fmt.Errorf("floor round trips: %w", err)
	}
	rep.FloorRTT50, rep.FloorRTT99 = h.quantile(0.5), h.quantile(0.99)

	type starter struct {
		name  string
		start func() (*proxyUnderTest, func(), error)
	}
	starters := []starter{{"mtnode proxy", func() (*proxyUnderTest, func(), error) {
		return startMtnodeProxy(ctx, opts, secret, true, log)
	}}}
	if mo.QUIC {
		starters = append(starters, starter{"mtnode proxy over QUIC", func() (*proxyUnderTest, func(), error) {
			return startMtnodeProxy(ctx, opts, secret, false, log)
		}})
	}
	if mo.MTG != "" {
		starters = append(starters, starter{"mtg", func() (*proxyUnderTest, func(), error) {
			return startMTG(ctx, mo.MTG, opts.ServerProcs, secret, log)
		}})
	} else {
		rep.Missing = "no --mtg given: mtg not measured"
	}
	for _, st := range starters {
		log.Info("mtproxy: starting", "proxy", st.name)
		p, stop, err := st.start()
		if err != nil {
			return rep, fmt.Errorf("%s: %w", st.name, err)
		}
		side, err := measureProxy(ctx, opts, &mo, p, log)
		if err != nil {
			err = fmt.Errorf("%w; its last log lines:\n%s", err, p.ch.logTail())
		}
		stop()
		rep.Sides = append(rep.Sides, side)
		if err != nil {
			return rep, fmt.Errorf("%s: %w", st.name, err)
		}
	}
	return rep, nil
}

// startMtnodeProxy runs `mtnode proxy` relaying to a mesh echo of DC 2.
func startMtnodeProxy(ctx context.Context, opts *Options, secret []byte, lane bool, log *slog.Logger) (*proxyUnderTest, func(), error) {
	echo, err := startMeshEcho(log.With("component", "mesh-echo"))
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (*proxyUnderTest, func(), error) {
		echo.Close()
		return nil, nil, err
	}
	cfgFile := filepath.Join(echo.dir, "proxy.toml")
	// One client IP opens every connection, so the per-IP cap (64 by
	// default) goes; mtg has none.
	doc := fmt.Sprintf("[cluster]\nsecrets_dir = %q\ntcp_lane = %t\n[proxy]\nsecrets = %q\nmax_connections_per_ip = 1000000\n",
		echo.dir, lane, hex.EncodeToString(secret))
	if err := os.WriteFile(cfgFile, []byte(doc), 0o600); err != nil {
		return fail(err)
	}
	addr, err := freeAddr("tcp")
	if err != nil {
		return fail(err)
	}
	httpAddr, err := freeAddr("tcp")
	if err != nil {
		return fail(err)
	}
	meshAddr, err := freeAddr("udp")
	if err != nil {
		return fail(err)
	}
	ch, err := spawnChild(opts.NodeBinary, opts.ServerProcs, nil, []string{"proxy", "--config", cfgFile,
		"--client-addr", addr, "--http-addr", httpAddr, "--mesh-addr", meshAddr, "--join", echo.join(),
		"--log-format", "json", "--log-level", "warn"})
	if err != nil {
		return fail(err)
	}
	stop := func() {
		if err := ch.Close(); err != nil {
			log.Warn("mtnode proxy stop", "err", err)
		}
		echo.Close()
	}
	// Ready when it knows a DC.
	hc := &http.Client{Timeout: 2 * time.Second}
	err = pollUntil(ctx, 60*time.Second, func() error {
		select {
		case <-ch.exited:
			return errStop{fmt.Errorf("exited: %v; log:\n%s", ch.waitErr, ch.logTail())}
		default:
		}
		resp, err := hc.Get("http://" + httpAddr + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz %d", resp.StatusCode)
		}
		return nil
	})
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("mtnode proxy not ready: %w", err)
	}
	name := "mtnode proxy"
	if !lane {
		name += " over QUIC"
	}
	return &proxyUnderTest{name: name, upstream: "mesh stream to an echo member of DC 2", mesh: true,
		addr: addr, secret: secret, ch: ch, counts: &echo.echoCounts}, stop, nil
}

// startMTG runs mtg with its DC connections sent through a local SOCKS5
// server that is itself the (echo) DC: nothing leaves the machine.
func startMTG(ctx context.Context, bin string, procs int, secret []byte, log *slog.Logger) (*proxyUnderTest, func(), error) {
	echo, err := startSocksEcho(log.With("component", "socks-echo"))
	if err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp("", "mtnode-bench-mtg-")
	if err != nil {
		echo.Close()
		return nil, nil, err
	}
	fail := func(err error) (*proxyUnderTest, func(), error) {
		echo.Close()
		os.RemoveAll(dir)
		return nil, nil, err
	}
	addr, err := freeAddr("tcp")
	if err != nil {
		return fail(err)
	}
	// Fronting goes to a closed local port (and the IP is given, so the
	// front domain is never resolved); DNS points at loopback; no
	// blocklist downloads, no config updates, no stats.
	closed, err := freeAddr("tcp")
	if err != nil {
		return fail(err)
	}
	_, closedPort, _ := net.SplitHostPort(closed)
	doc := fmt.Sprintf(`secret = %q
bind-to = %q
concurrency = 16384
prefer-ip = "only-ipv4"
auto-update = false
tolerate-time-skewness = "5s"
allow-fallback-on-unknown-dc = false

[domain-fronting]
ip = "127.0.0.1"
port = %s

[network]
dns = "udp://127.0.0.1:53"
proxies = ["socks5://%s"]

[network.timeout]
tcp = "5s"
http = "5s"
idle = "5m"
handshake = "10s"

[defense.anti-replay]
enabled = true

[defense.blocklist]
enabled = false

[defense.allowlist]
enabled = false

[stats.prometheus]
enabled = false

[stats.statsd]
enabled = false
`, hex.EncodeToString(secret), addr, closedPort, echo.addr())
	cfgFile := filepath.Join(dir, "mtg.toml")
	if err := os.WriteFile(cfgFile, []byte(doc), 0o600); err != nil {
		return fail(err)
	}
	// mtg logs (warnings and up) to stdout: the shell hands them to
	// stderr, where the log tail is kept, and execs mtg (same pid).
	ch, err := spawnChild("/bin/sh", procs, nil, []string{"-c", `exec "$0" run "$1" >&2`, bin, cfgFile})
	if err != nil {
		return fail(err)
	}
	stop := func() {
		if err := ch.Close(); err != nil && !errors.Is(err, errKilled) {
			log.Debug("mtg stop", "err", err)
		}
		echo.Close()
		os.RemoveAll(dir)
	}
	err = pollUntil(ctx, 30*time.Second, func() error {
		select {
		case <-ch.exited:
			return errStop{fmt.Errorf("exited: %v; log:\n%s", ch.waitErr, ch.logTail())}
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("mtg not listening: %w", err)
	}
	return &proxyUnderTest{name: "mtg " + mtgVersion(bin), upstream: "TCP (via its SOCKS5 setting) to an obfuscated2 echo",
		addr: addr, secret: secret, ch: ch, counts: &echo.echoCounts, dests: echo.destinations}, stop, nil
}

// mtgVersion is mtg's module version from the binary's build info (a
// build from a scratch module has it as a dependency), else what
// `mtg --version` says.
func mtgVersion(bin string) string {
	if bi, err := buildinfo.ReadFile(bin); err == nil {
		if bi.Main.Path == mtgModule && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
		for _, d := range bi.Deps {
			if d.Path == mtgModule {
				return d.Version
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		return ""
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

const mtgModule = "github.com/9seconds/mtg/v2"

// errStop ends pollUntil at once.
type errStop struct{ error }

// pollUntil calls f every 100 ms until it returns nil, for at most d.
func pollUntil(ctx context.Context, d time.Duration, f func() error) error {
	end := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return nil
		}
		var stop errStop
		if errors.As(err, &stop) {
			return stop.error
		}
		if time.Now().After(end) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// measureProxy runs the four measurements against one proxy, in an order
// that keeps them apart: rest CPU and idle memory on the fresh process,
// then latency, then throughput.
func measureProxy(ctx context.Context, opts *Options, mo *MTProxyOptions, p *proxyUnderTest, log *slog.Logger) (side MTProxySide, err error) {
	side = MTProxySide{Name: p.name, Upstream: p.upstream}
	defer func() {
		if err != nil {
			side.Err = err.Error()
		}
		if p.dests != nil {
			side.Dests = p.dests()
		}
		if p.mesh {
			side.Upstream += fmt.Sprintf(" (%d of %d streams over the mesh's TCP lane, the rest QUIC)", p.counts.lane.Load(), p.counts.sessions.Load())
		}
	}()
	side.Procs = proxyProcs(opts.ServerProcs)
	dial := func() (*proxyConn, error) {
		dctx, cancel := context.WithTimeout(ctx, mtproxyStepTimeout)
		defer cancel()
		return dialProxy(dctx, p.addr, p.secret, echoDC)
	}
	ping := make([]byte, mtproxyPing)
	// The first relay may wait for the proxy to learn its DC.
	if err := pollUntil(ctx, 30*time.Second, func() error {
		c, err := dial()
		if err != nil {
			return err
		}
		defer c.Close()
		return c.roundTrip(ping, mtproxyStepTimeout)
	}); err != nil {
		return side, fmt.Errorf("first round trip through the proxy: %w", err)
	}

	// At rest.
	c0, err := procCPU(p.pid())
	if err != nil {
		return side, err
	}
	rest := 3 * time.Second
	if err := sleepCtx(ctx, rest); err != nil {
		return side, err
	}
	c1, err := procCPU(p.pid())
	if err != nil {
		return side, err
	}
	side.RestCPU = (c1 - c0).Seconds() / rest.Seconds()

	// Idle memory: a warm-up batch opened and closed, then N held open.
	log.Info("mtproxy: idle connections", "proxy", p.name, "conns", opts.IdleConns)
	warm, err := openIdle(ctx, dial, ping, min(16, opts.IdleConns), opts.SetupConcurrency)
	closeAll(warm)
	if err != nil {
		return side, fmt.Errorf("warm-up connections: %w", err)
	}
	if side.RSSBefore, err = settledRSS(ctx, p.pid()); err != nil {
		return side, err
	}
	idle, err := openIdle(ctx, dial, ping, opts.IdleConns, opts.SetupConcurrency)
	if err != nil {
		closeAll(idle)
		return side, fmt.Errorf("idle connections: %w", err)
	}
	side.RSSAfter, err = settledRSS(ctx, p.pid())
	side.IdleOpen = p.counts.open.Load()
	closeAll(idle)
	if err != nil {
		return side, err
	}
	side.RSSPerConn = (side.RSSAfter - side.RSSBefore) / float64(opts.IdleConns)

	// Latency: one connection, closed loop of small frames.
	log.Info("mtproxy: round trips", "proxy", p.name)
	c, err := dial()
	if err != nil {
		return side, err
	}
	h := &hist{}
	end := time.Now().Add(opts.Duration)
	for i := 0; i < opts.MaxOps && time.Now().Before(end) && ctx.Err() == nil; i++ {
		t0 := time.Now()
		if err := c.roundTrip(ping, mtproxyStepTimeout); err != nil {
			c.Close()
			return side, fmt.Errorf("round trip: %w", err)
		}
		h.record(time.Since(t0))
	}
	c.Close()
	side.RTT50, side.RTT99, side.RTTs = h.quantile(0.5), h.quantile(0.99), h.n

	// Setup: new connections one after another, each timed from the dial
	// to its first echo (the client's FakeTLS handshake, the proxy's way
	// to the upstream, one round trip).
	log.Info("mtproxy: connection setup", "proxy", p.name)
	sh := &hist{}
	end = time.Now().Add(min(opts.Duration, 5*time.Second))
	for i := 0; i < min(opts.MaxOps, mtproxySetups) && time.Now().Before(end) && ctx.Err() == nil; i++ {
		t0 := time.Now()
		c, err := dial()
		if err != nil {
			return side, fmt.Errorf("setup %d: %w", i, err)
		}
		err = c.roundTrip(ping, mtproxyStepTimeout)
		c.Close()
		if err != nil {
			return side, fmt.Errorf("setup %d: first round trip: %w", i, err)
		}
		sh.record(time.Since(t0))
	}
	side.Setup50, side.Setup99, side.Setups = sh.quantile(0.5), sh.quantile(0.99), sh.n

	// Throughput.
	for _, n := range mo.Streams {
		log.Info("mtproxy: bulk", "proxy", p.name, "streams", n)
		t, err := bulk(ctx, opts, mo, p, dial, n)
		side.Throughput = append(side.Throughput, t)
		if err != nil {
			return side, fmt.Errorf("bulk, %d streams: %w", n, err)
		}
	}
	return side, nil
}

// openIdle opens n connections through the proxy, each with one round
// trip so that its upstream leg exists, conc at a time.
func openIdle(ctx context.Context, dial func() (*proxyConn, error), ping []byte, n, conc int) ([]*proxyConn, error) {
	conns := make([]*proxyConn, n)
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		mu    sync.Mutex
		first error
	)
	for range max(1, min(conc, n)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				c, err := dial()
				if err == nil {
					if err = c.roundTrip(ping, mtproxyStepTimeout); err != nil {
						c.Close()
					}
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("connection %d: %w", i, err)
					}
					mu.Unlock()
					next.Store(int64(n)) // stop the others
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return conns, first
}

func closeAll(cs []*proxyConn) {
	for _, c := range cs {
		if c != nil {
			c.Close()
		}
	}
}

// bulk runs n streams, each writing frames as fast as the proxy takes them
// and reading their echoes, for opts.Duration.
func bulk(ctx context.Context, opts *Options, mo *MTProxyOptions, p *proxyUnderTest, dial func() (*proxyConn, error), n int) (MTProxyThroughput, error) {
	t := MTProxyThroughput{Streams: n}
	conns, err := openIdle(ctx, dial, make([]byte, mtproxyPing), n, opts.SetupConcurrency)
	defer closeAll(conns)
	if err != nil {
		return t, err
	}
	frame := make([]byte, mo.FrameSize)
	_, _ = rand.Read(frame)
	var (
		echoed   atomic.Int64
		counting atomic.Bool
		frames   atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		first    error
	)
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
	}
	// A short warm-up fills the pipes before the window opens.
	warm := min(opts.Duration/5, time.Second)
	start := time.Now()
	stopAt := start.Add(warm + opts.Duration)
	maxFrames := int64(opts.MaxOps)
	window := max(1, mo.InFlight/mo.FrameSize)
	done := make(chan struct{})
	for _, c := range conns {
		_ = c.raw.SetDeadline(stopAt.Add(mtproxyStepTimeout))
		credit := make(chan struct{}, window) // a token per frame in flight
		wg.Add(2)
		go func() { // writer
			defer wg.Done()
			for time.Now().Before(stopAt) && ctx.Err() == nil && frames.Add(1) <= maxFrames {
				select {
				case credit <- struct{}{}:
				case <-done:
					return
				}
				if err := c.writeFrame(frame); err != nil {
					if time.Now().Before(stopAt) {
						fail(fmt.Errorf("write: %w", err))
					}
					return
				}
			}
		}()
		go func() { // reader
			defer wg.Done()
			buf := make([]byte, mo.FrameSize+maxPadding)
			for {
				b, err := c.readFrame(buf, mo.FrameSize)
				if err != nil {
					if time.Now().Before(stopAt) && ctx.Err() == nil {
						fail(fmt.Errorf("read: %w", err))
					}
					return
				}
				if counting.Load() {
					echoed.Add(int64(min(len(b), mo.FrameSize))) // padding is not payload
				}
				select {
				case <-credit:
				default:
				}
				if !time.Now().Before(stopAt) {
					return
				}
			}
		}()
	}
	if err := sleepCtx(ctx, warm); err != nil {
		close(done)
		closeAll(conns)
		wg.Wait()
		return t, err
	}
	pc0, perr := procCPU(p.pid())
	sc0, _ := selfCPU()
	up0 := p.counts.bytes.Load()
	counting.Store(true)
	w0 := time.Now()
	_ = sleepCtx(ctx, time.Until(stopAt))
	counting.Store(false)
	t.Window = time.Since(w0)
	t.Up = float64(p.counts.bytes.Load() - up0)
	t.RSSAfter, _ = procRSS(p.pid())
	pc1, perr2 := procCPU(p.pid())
	sc1, _ := selfCPU()
	t.Echoed = float64(echoed.Load())
	if perr == nil && perr2 == nil {
		t.ProxyCPU = pc1 - pc0
	}
	t.ClientCPU = sc1 - sc0
	// Writers may be blocked on a full pipe or waiting for credit:
	// closing ends them.
	close(done)
	closeAll(conns)
	wg.Wait()
	if first != nil {
		return t, first
	}
	if perr != nil {
		return t, perr
	}
	return t, perr2
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// clockTick is USER_HZ, the unit of /proc/PID/stat's CPU times: 100 on
// every Linux architecture Go supports.
const clockTick = 100

// procCPU is process pid's user+system CPU time so far.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("proc stat: %w", err)
	}
	// The command name (field 2) may hold spaces; fields count from
	// after its closing parenthesis.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("proc stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("proc stat: short")
	}
	// utime and stime are fields 14 and 15; f[0] is field 3.
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("proc stat: bad CPU times")
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// procRSS is process pid's resident set in bytes (VmRSS).
func procRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("proc status: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseFloat(f[0], 64)
				if err != nil {
					return 0, err
				}
				return kb * 1024, nil
			}
		}
	}
	return 0, errors.New("proc status: no VmRSS")
}

// settledRSS waits until the RSS has not moved by more than 1% over a
// second (at most 10 s) and returns the median of the last samples.
// Neither program can be told to collect garbage from outside, so this is
// each one's resident set as its own runtime leaves it.
func settledRSS(ctx context.Context, pid int) (float64, error) {
	var samples []float64
	end := time.Now().Add(10 * time.Second)
	for {
		v, err := procRSS(pid)
		if err != nil {
			return 0, err
		}
		samples = append(samples, v)
		if k := len(samples); k >= 5 {
			last := append([]float64(nil), samples[k-5:]...)
			sort.Float64s(last)
			if last[4]-last[0] <= 0.01*last[2] || time.Now().After(end) {
				return last[2], nil
			}
		}
		if err := sleepCtx(ctx, 250*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// proxyProcs is the proxies' GOMAXPROCS: what was set, else the Go
// default, the CPUs the process may use (as this one may).
func proxyProcs(set int) int {
	if set > 0 {
		return set
	}
	return runtime.NumCPU()
}

package loadgen

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotd/td/exchange"
	"github.com/gotd/td/transport"
)

// HandshakeClient selects the client of the handshake scenario.
type HandshakeClient string

const (
	// HandshakeFast is fastKey (chatkeys.go): gotd's TL types and crypto
	// in gotd's client flow, with pq factored in microseconds, the DH
	// prime checked once per run, and a short (shortDHExpBits) secret
	// exponent. The node sees the same messages and does the same work;
	// the client costs a fraction of a key's node CPU, so the node, not
	// the client, bounds the rate.
	HandshakeFast HandshakeClient = "fast"
	// HandshakeGotd is gotd's own exchange client (the code a
	// telegram.Client runs when it has no key): factoring pq and checking
	// the DH prime cost it tenths of a CPU-second per key, so it bounds
	// the rate long before the node does.
	HandshakeGotd HandshakeClient = "gotd"
)

// shortDHExpBits is the fast client's secret DH exponent size: 256 bits,
// twice the 128-bit security level, as short-exponent DH commonly uses.
// It cuts the client's two 2048-bit modexps about eightfold.
const shortDHExpBits = 256

// HandshakeReport is the auth key creation measurement.
type HandshakeReport struct {
	// Client is the key exchange client the workers ran.
	Client HandshakeClient
	// Workers ran key exchanges concurrently, each on a fresh TCP
	// connection.
	Workers int
	Elapsed time.Duration
	OK      int64
	Errors  int64
	// FirstError is the first failure, if any.
	FirstError string
	// PerSec is OK / Elapsed.
	PerSec float64
	// PerCore is PerSec divided by the node's GOMAXPROCS (0 if unknown).
	PerCore float64
	// P50, P99 and Max are the client-observed latencies of one whole
	// exchange, dial included.
	P50, P99, Max time.Duration
	// ServerCPU is the node's CPU time (user+system, from
	// process_cpu_seconds_total) over the window; 0 if unknown.
	// ServerCPUNet is the same less the idle node's own use
	// (Report.ServerIdleCPU) over the window.
	ServerCPU, ServerCPUNet time.Duration
	// ServerCPUPerOp is ServerCPUNet / OK: what one key costs the node,
	// and ServerCPUPerOpRaw is ServerCPU / OK. At the low key rates gotd
	// clients can offer, the node's idle use is a large part of the window,
	// and it is not simply additive (a busy runtime absorbs some of the
	// idle wake-ups), so the truth lies between the two.
	ServerCPUPerOp, ServerCPUPerOpRaw time.Duration
	// PerServerCPUSecond is OK / ServerCPUNet (and the Raw one OK /
	// ServerCPU): keys per core-second actually spent by the node,
	// independent of how busy the client kept it.
	PerServerCPUSecond, PerServerCPUSecondRaw float64
	// ClientCPU is the load generator's own CPU time over the window.
	ClientCPU time.Duration
	// ServerCores and ClientCores are ServerCPU and ClientCPU over
	// Elapsed: cores kept busy. ServerBusyShare is ServerCores over the
	// node's GOMAXPROCS (1 is a saturated node; 0 if unknown).
	ServerCores, ClientCores, ServerBusyShare float64
	// ServerOK, ServerBusy and ServerFailed are the node's
	// mtnode_handshakes_total deltas, as a cross-check.
	ServerOK, ServerBusy, ServerFailed float64
	// FloorRatio is PerCore / CryptoReport.HandshakesPerCoreFloor, and
	// CPUFloorRatio and CPUFloorRatioRaw are PerServerCPUSecond and
	// PerServerCPUSecondRaw over the same floor; 0 without the crypto
	// scenario.
	FloorRatio, CPUFloorRatio, CPUFloorRatioRaw float64
}

func (h *HandshakeReport) derive(r *Report) {
	if r.ServerProcs > 0 {
		h.PerCore = h.PerSec / float64(r.ServerProcs)
		h.ServerBusyShare = h.ServerCores / float64(r.ServerProcs)
	}
	if r.Crypto != nil && r.Crypto.HandshakesPerCoreFloor > 0 {
		h.FloorRatio = h.PerCore / r.Crypto.HandshakesPerCoreFloor
		h.CPUFloorRatio = h.PerServerCPUSecond / r.Crypto.HandshakesPerCoreFloor
		h.CPUFloorRatioRaw = h.PerServerCPUSecondRaw / r.Crypto.HandshakesPerCoreFloor
	}
}

// exchangeTimeout bounds each request of one key exchange.
const exchangeTimeout = 30 * time.Second

func runHandshakes(ctx context.Context, t *target, opts *Options, pool *keyPool) (*HandshakeReport, error) {
	keys := []exchange.PublicKey{t.key}
	rep := &HandshakeReport{Client: opts.HandshakeClient, Workers: opts.HandshakeWorkers}
	var dh dhChecked
	var create func(ctx context.Context) (exchange.ClientExchangeResult, error)
	switch opts.HandshakeClient {
	case HandshakeFast:
		create = func(ctx context.Context) (exchange.ClientExchangeResult, error) {
			return fastKey(ctx, t.addr, t.dc, t.key, &dh, shortDHExpBits)
		}
		// One key before the window, so that the once-per-prime check
		// (about a tenth of a CPU-second) is not in it.
		r, err := create(ctx)
		if err != nil {
			return nil, fmt.Errorf("warm-up key exchange: %w", err)
		}
		if pool != nil {
			pool.add(r)
		}
	case HandshakeGotd:
		create = func(ctx context.Context) (exchange.ClientExchangeResult, error) {
			return newKey(ctx, t.addr, t.dc, keys)
		}
	default:
		return nil, fmt.Errorf("unknown handshake client %q (want %q or %q)", opts.HandshakeClient, HandshakeFast, HandshakeGotd)
	}
	win, err := startCPUWindow(ctx, t.metrics)
	if err != nil {
		return nil, err
	}
	cpu0, cpuOK := selfCPU()
	var (
		started atomic.Int64
		ok      atomic.Int64
		failed  atomic.Int64
		errOnce sync.Once
		mu      sync.Mutex
		all     hist
		wg      sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(opts.Duration)
	// A worker never starts an exchange after the deadline, and one that is
	// running cannot outlast it by more than a bounded grace.
	runCtx, cancel := context.WithDeadline(ctx, deadline.Add(exchangeTimeout))
	defer cancel()
	for range opts.HandshakeWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var h hist
			defer func() { mu.Lock(); all.merge(&h); mu.Unlock() }()
			for time.Now().Before(deadline) && started.Add(1) <= int64(opts.MaxOps) && runCtx.Err() == nil {
				t0 := time.Now()
				r, err := create(runCtx)
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { rep.FirstError = err.Error() })
					continue
				}
				h.record(time.Since(t0))
				ok.Add(1)
				if pool != nil {
					pool.add(r)
				}
			}
		}()
	}
	wg.Wait()
	rep.Elapsed = time.Since(start)
	if cpu1, ok := selfCPU(); ok && cpuOK {
		rep.ClientCPU = cpu1 - cpu0
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rep.OK, rep.Errors = ok.Load(), failed.Load()
	rep.PerSec = perSec(float64(rep.OK), rep.Elapsed)
	rep.P50, rep.P99, rep.Max = all.quantile(0.5), all.quantile(0.99), all.max
	if win != nil {
		after, raw, net, err := win.end(ctx, t.metrics, t.idleCPU)
		if err != nil {
			return nil, err
		}
		rep.ServerCPU, rep.ServerCPUNet = raw, net
		rep.ServerOK = counterDelta(win.before, after, mHandshakesOK)
		rep.ServerBusy = counterDelta(win.before, after, mHandshakesBy)
		rep.ServerFailed = counterDelta(win.before, after, mHandshakesNo)
	}
	if rep.Elapsed > 0 {
		rep.ServerCores = rep.ServerCPU.Seconds() / rep.Elapsed.Seconds()
		rep.ClientCores = rep.ClientCPU.Seconds() / rep.Elapsed.Seconds()
	}
	if rep.OK > 0 && rep.ServerCPUNet > 0 {
		rep.ServerCPUPerOp = rep.ServerCPUNet / time.Duration(rep.OK)
		rep.PerServerCPUSecond = float64(rep.OK) / rep.ServerCPUNet.Seconds()
	}
	if rep.OK > 0 && rep.ServerCPU > 0 {
		rep.ServerCPUPerOpRaw = rep.ServerCPU / time.Duration(rep.OK)
		rep.PerServerCPUSecondRaw = float64(rep.OK) / rep.ServerCPU.Seconds()
	}
	if rep.OK == 0 {
		return rep, fmt.Errorf("no key exchange succeeded: %s", rep.FirstError)
	}
	return rep, nil
}

// exchangeConn is the transport connection a key exchange runs on.
type exchangeConn = transport.Conn

// withExchangeConn dials addr with the intermediate transport, runs f on
// it and hangs up. Cancelling ctx closes the connection.
func withExchangeConn(ctx context.Context, addr string, f func(exchangeConn) error) error {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	tc, err := transport.Intermediate.Handshake(nc)
	if err != nil {
		return fmt.Errorf("transport: %w", err)
	}
	if err := f(tc); err != nil {
		return fmt.Errorf("key exchange: %w", err)
	}
	return nil
}

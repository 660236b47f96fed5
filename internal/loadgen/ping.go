package loadgen

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotd/td/telegram"
)

// PingReport is one closed-loop round-trip measurement: Conns clients,
// each sending a ping (see Report.PingMethod) and waiting for its answer
// before sending the next.
type PingReport struct {
	Conns int
	// Setup is how long the connections added for this level took to open
	// (key exchange and initConnection each).
	Setup   time.Duration
	Elapsed time.Duration
	Pings   int64
	Errors  int64
	// FirstError is the first failed ping, if any.
	FirstError string
	// PerSec is Pings / Elapsed: round trips per second, all conns.
	PerSec float64
	// P50, P99 and Max are round-trip latencies seen by the clients.
	P50, P99, Max time.Duration
	// WireBytesPerPing is the load generator's socket bytes read plus
	// written per round trip (transport framing included); 0 if unknown.
	WireBytesPerPing float64
	// WireBytesPerSec is WireBytesPerPing * PerSec: the bytes the node
	// decrypted plus encrypted per second.
	WireBytesPerSec float64
	// IGEShare is WireBytesPerSec over one core's AES-256-IGE bulk
	// throughput (CryptoReport.IGEBytesPerSec): the fraction of a core the
	// cipher alone would need at this rate.
	IGEShare float64
	// ServerCPU is the node's CPU time over the window, and ServerCPUNet
	// the same less the idle node's own use.
	ServerCPU, ServerCPUNet time.Duration
	// ServerCPUPerPing is ServerCPUNet / Pings.
	ServerCPUPerPing time.Duration
	// ServerAllocPerPing is bytes the node allocated per ping
	// (go_memstats_alloc_bytes_total delta / Pings).
	ServerAllocPerPing float64
	// ClientCPU is the load generator's CPU time over the window.
	ClientCPU time.Duration
	// Redials is how many connections the node accepted during the window
	// (mtnode_connections_total); anything but 0 means clients reconnected.
	Redials float64
	// CryptoShare is CryptoReport.PingCrypto / ServerCPUPerPing: the part
	// of the node's CPU per ping that the message crypto floor explains.
	CryptoShare float64
	// FloorRatio is PerSec per node core over CryptoReport.PingsPerCoreFloor.
	FloorRatio float64
}

func (p *PingReport) derive(r *Report) {
	if r.Crypto == nil {
		return
	}
	if r.Crypto.IGEBytesPerSec > 0 {
		p.IGEShare = p.WireBytesPerSec / r.Crypto.IGEBytesPerSec
	}
	if p.ServerCPUPerPing > 0 {
		p.CryptoShare = float64(r.Crypto.PingCrypto.Best) / float64(p.ServerCPUPerPing)
	}
	if r.ServerProcs > 0 && r.Crypto.PingsPerCoreFloor > 0 {
		p.FloorRatio = p.PerSec / float64(r.ServerProcs) / r.Crypto.PingsPerCoreFloor
	}
}

// pingGrace bounds how long one ping may outlast the measured window.
const pingGrace = 30 * time.Second

func runPings(ctx context.Context, rs *runState) ([]PingReport, error) {
	levels := slices.Clone(rs.opts.Conns)
	slices.Sort(levels)
	levels = slices.Compact(levels)
	var reps []PingReport
	for _, n := range levels {
		rep, err := runPingLevel(ctx, rs, n)
		if rep != nil {
			reps = append(reps, *rep)
		}
		if err != nil {
			return reps, fmt.Errorf("%d conns: %w", n, err)
		}
	}
	return reps, nil
}

// runPingLevel opens n fresh connections, measures them and closes them.
// Fresh connections per level keep each one's life short: gotd's own
// keepalive is unanswered by the node (see BENCHMARKS.md), so a connection
// older than about 75 s gets redialled by gotd.
func runPingLevel(ctx context.Context, rs *runState, n int) (rep *PingReport, err error) {
	f := newFleet(rs.t, rs.opts.Transport, rs.pool)
	defer func() {
		if cerr := f.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	rs.log.Info("opening connections", "conns", n)
	t0 := time.Now()
	if err := f.grow(ctx, n, rs.opts.SetupConcurrency, rs.opts.SetupTimeout); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	setup := time.Since(t0)
	if err := rs.resolvePing(ctx, f.clients[0]); err != nil {
		return nil, err
	}
	rs.log.Info("pinging", "conns", n, "duration", rs.opts.Duration, "method", rs.rep.PingMethod)
	rep, err = pingLevel(ctx, rs.t, f.clients, rs.opts, rs.pinger)
	if rep != nil {
		rep.Setup = setup
	}
	if err != nil {
		return rep, err
	}
	return rep, f.lostErr()
}

func pingLevel(ctx context.Context, t *target, clients []*telegram.Client, opts *Options, ping pinger) (*PingReport, error) {
	rep := &PingReport{Conns: len(clients)}
	win, err := startCPUWindow(ctx, t.metrics)
	if err != nil {
		return nil, err
	}
	cpu0, cpuOK := selfCPU()
	r0, w0, ioOK := selfIO()
	perConn := max(opts.MaxOps/len(clients), 1)
	var (
		pings, failed atomic.Int64
		errOnce       sync.Once
		mu            sync.Mutex
		all           hist
		wg            sync.WaitGroup
		startGate     = make(chan struct{})
	)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var deadline time.Time
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-startGate
			var h hist
			defer func() { mu.Lock(); all.merge(&h); mu.Unlock() }()
			pctx, cancel := context.WithDeadline(runCtx, deadline.Add(pingGrace))
			defer cancel()
			for i := 0; i < perConn && time.Now().Before(deadline); i++ {
				t0 := time.Now()
				if err := ping(pctx, c); err != nil {
					failed.Add(1)
					errOnce.Do(func() { rep.FirstError = err.Error() })
					if pctx.Err() != nil {
						return
					}
					continue
				}
				h.record(time.Since(t0))
				pings.Add(1)
			}
		}()
	}
	start := time.Now()
	deadline = start.Add(opts.Duration)
	close(startGate)
	wg.Wait()
	rep.Elapsed = time.Since(start)
	r1, w1, _ := selfIO()
	if cpu1, ok := selfCPU(); ok && cpuOK {
		rep.ClientCPU = cpu1 - cpu0
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rep.Pings, rep.Errors = pings.Load(), failed.Load()
	if rep.Pings == 0 {
		return rep, fmt.Errorf("%d conns: no ping succeeded: %s", len(clients), rep.FirstError)
	}
	rep.PerSec = perSec(float64(rep.Pings), rep.Elapsed)
	rep.P50, rep.P99, rep.Max = all.quantile(0.5), all.quantile(0.99), all.max
	if ioOK {
		rep.WireBytesPerPing = float64((r1-r0)+(w1-w0)) / float64(rep.Pings)
		rep.WireBytesPerSec = rep.WireBytesPerPing * rep.PerSec
	}
	if win != nil {
		after, raw, net, err := win.end(ctx, t.metrics, t.idleCPU)
		if err != nil {
			return nil, err
		}
		rep.ServerCPU, rep.ServerCPUNet = raw, net
		rep.ServerCPUPerPing = net / time.Duration(rep.Pings)
		if d, ok := delta(win.before, after, mAllocTotal); ok {
			rep.ServerAllocPerPing = d / float64(rep.Pings)
		}
		rep.Redials = connsTotal(after) - connsTotal(win.before)
	}
	return rep, nil
}

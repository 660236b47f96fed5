package loadgen

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Markdown writes the report as Markdown tables.
func (r *Report) Markdown(w io.Writer) error {
	p := &mdWriter{w: w}
	p.f("Run %s, %s/%s, %s, %d CPUs; load generator GOMAXPROCS %d",
		r.Start.Format(time.RFC3339), r.GOOS, r.GOARCH, r.GoVersion, r.NumCPU, r.ClientProcs)
	if r.Target != "" {
		procs := "unknown"
		if r.ServerProcs > 0 {
			procs = fmt.Sprint(r.ServerProcs)
		}
		p.f("; node: %s, GOMAXPROCS %s, idle CPU %.1f%% of a core", r.Target, procs, 100*r.ServerIdleCPU)
	}
	if r.Target != "" && len(r.Nodes) > 0 {
		sizes := make([]string, len(r.Nodes))
		for i, n := range r.Nodes {
			sizes[i] = fmt.Sprint(n)
		}
		p.f("; nodes per DC: %s", strings.Join(sizes, ", "))
		if len(r.Nodes) > 1 {
			p.f(" (chat on each; GOMAXPROCS and idle CPU above are the first DC's, summed over its nodes)")
		} else if r.Nodes[0] > 1 {
			p.f(" (GOMAXPROCS and idle CPU summed over the nodes)")
		}
	}
	p.f("; transport %s, %s per phase.\n\n", r.Transport, r.Duration)

	if r.LoadAvgStart != "" {
		p.f("Load average (1, 5, 15 min) at start: %s; at end: %s.\n\n", r.LoadAvgStart, r.LoadAvgEnd)
	}
	if c := r.Crypto; c != nil {
		p.f("### Crypto floor (one goroutine of the load generator; best batch, and mean)\n\n")
		p.f("| primitive | best | mean | ops | floor |\n|---|---:|---:|---:|---:|\n")
		p.f("| RSA-2048 private decrypt (CRT, math/big) | %s | %s | %d | %.0f/s |\n", us(c.RSADecrypt.Best), us(c.RSADecrypt.Mean), c.RSADecrypt.Ops, perSec(1, c.RSADecrypt.Best))
		p.f("| 2048-bit modexp mod the DH prime | %s | %s | %d | %.0f/s |\n", us(c.ModExp2048.Best), us(c.ModExp2048.Mean), c.ModExp2048.Ops, perSec(1, c.ModExp2048.Best))
		p.f("| handshake = 1 RSA + 2 modexp | %s | | | **%.1f handshakes/s/core** |\n", us(c.HandshakeFloor), c.HandshakesPerCoreFloor)
		p.f("| AES-256-IGE, 64 KiB buffer | %s | %s | %d | **%.0f MB/s** |\n", us(c.IGE64K.Best), us(c.IGE64K.Mean), c.IGE64K.Ops, c.IGEBytesPerSec/1e6)
		p.f("| ping message crypto: decrypt ping + encrypt pong (gotd crypto.Cipher, %.0f B) | %s | %s | %d | **%.0f pings/s/core** |\n\n",
			c.PingCryptoBytes, us(c.PingCrypto.Best), us(c.PingCrypto.Mean), c.PingCrypto.Ops, c.PingsPerCoreFloor)
		p.f("Client side, for scale: gotd's crypto.DecomposePQ on a pq like the node's takes %s best, %s mean (%d runs).\n\n",
			ms(c.ClientPQ.Best), ms(c.ClientPQ.Mean), c.ClientPQ.Ops)
	}
	if h := r.Handshake; h != nil {
		what := "gotd exchange clients"
		if h.Client == HandshakeFast {
			what = "fast exchange clients (pq by Pollard rho, DH prime checked once, 256-bit b)"
		}
		p.f("### Auth key creation (%d concurrent %s, fresh TCP connection each)\n\n", h.Workers, what)
		p.f("| keys | errors | keys/s | keys/s per node core | p50 | p99 | max | cores busy: node, client | node CPU/key: raw, net of idle | keys per node CPU-second: raw, net |\n")
		p.f("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		p.f("| %d | %d | %.2f | %.2f | %s | %s | %s | %s, %s | %s, %s | %.1f, %.1f |\n\n",
			h.OK, h.Errors, h.PerSec, h.PerCore, ms(h.P50), ms(h.P99), ms(h.Max),
			cores(h.ServerCPU, h.Elapsed), cores(h.ClientCPU, h.Elapsed),
			us(h.ServerCPUPerOpRaw), us(h.ServerCPUPerOp), h.PerServerCPUSecondRaw, h.PerServerCPUSecond)
		if h.FloorRatio > 0 {
			p.f("Achieved / floor: %.3f per node core (keys/s ÷ GOMAXPROCS); %.2f to %.2f per node CPU-second (raw to net).",
				h.FloorRatio, h.CPUFloorRatioRaw, h.CPUFloorRatio)
		}
		if h.ServerBusyShare > 0 {
			p.f(" Node busy: %.0f%% of its GOMAXPROCS.", 100*h.ServerBusyShare)
		}
		if h.OK > 0 && h.ClientCPU > 0 {
			p.f(" Client CPU/key: %s.", us(h.ClientCPU/time.Duration(h.OK)))
		}
		p.f(" Node counters: %.0f ok, %.0f busy (-429), %.0f failed.\n", h.ServerOK, h.ServerBusy, h.ServerFailed)
		if h.FirstError != "" {
			p.f("First error: `%s`\n", h.FirstError)
		}
		p.f("\n")
	}
	if len(r.Ping) > 0 {
		what := "mtproto `ping` (telegram.Client.Ping)"
		if r.PingMethod == PingRPC {
			what = "`help.getNearestDc` RPC"
		}
		p.f("### Encrypted round trips: %s, closed loop, one gotd telegram.Client per connection\n\n", what)
		if r.PingNote != "" {
			p.f("Note: %s.\n\n", r.PingNote)
		}
		p.f("| conns | RTT/s | p50 | p99 | max | errors | redials | cores busy: node, client | node CPU/RTT (net) | RTT per node CPU-second | node alloc/RTT | wire B/RTT | IGE share of a core | crypto share of node CPU | achieved/floor per core | setup |\n")
		p.f("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, x := range r.Ping {
			p.f("| %d | %.0f | %s | %s | %s | %d | %.0f | %s, %s | %s | %.0f | %.0f B | %.0f | %s | %s | %s | %.1fs |\n",
				x.Conns, x.PerSec, ms(x.P50), ms(x.P99), ms(x.Max), x.Errors, x.Redials,
				cores(x.ServerCPU, x.Elapsed), cores(x.ClientCPU, x.Elapsed),
				us(x.ServerCPUPerPing), perSec(1, x.ServerCPUPerPing), x.ServerAllocPerPing, x.WireBytesPerPing,
				pct(x.IGEShare), pct(x.CryptoShare), ratio(x.FloorRatio), x.Setup.Seconds())
		}
		for _, x := range r.Ping {
			if x.FirstError != "" {
				p.f("\n%d conns, first error: `%s`", x.Conns, x.FirstError)
			}
		}
		p.f("\n")
	}
	if len(r.Chat) > 0 {
		r.chatMarkdown(p)
	}
	if i := r.Idle; i != nil {
		p.f("### Idle authorized connections (%d, opened in %.1fs)\n\n", i.Conns, i.Setup.Seconds())
		p.f("| | RSS | heap in use | heap alloc | stacks | goroutines | conns |\n|---|---:|---:|---:|---:|---:|---:|\n")
		row := func(name string, m MemSample) {
			gc := ""
			if !m.AfterGC {
				gc = " (no GC seen)"
			}
			p.f("| %s%s | %s | %s | %s | %s | %.0f | %.0f |\n", name, gc, mb(m.RSS), mb(m.HeapInuse), mb(m.HeapAlloc),
				mb(m.StackInuse), m.Goroutines, m.ConnsActive)
		}
		row("before", i.Before)
		row("after", i.After)
		p.f("| **per connection** | **%s** | **%s** | %s | **%s** | %.2f | 1 |\n\n",
			kb(i.RSSPerConn), kb(i.HeapInusePerConn), kb(i.HeapAllocPerConn), kb(i.StackPerConn), i.GoroutinesPerConn)
		p.f("Both samples were taken right after a node GC, forced by %d clients doing round trips (%d in all). "+
			"Connections share auth keys, %d sessions per key.\n", i.NudgeConns, i.NudgePings, sessionsPerKey)
	}
	if r.Failover != nil {
		r.failoverMarkdown(p)
	}
	if r.Federation != nil {
		r.federationMarkdown(p)
	}
	if r.MTProxy != nil {
		r.mtproxyMarkdown(p)
	}
	return p.err
}

type mdWriter struct {
	w   io.Writer
	err error
}

func (p *mdWriter) f(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

func us(d time.Duration) string {
	if d <= 0 {
		return "–"
	}
	if d < 100*time.Microsecond {
		return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond))
	}
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

func ms(d time.Duration) string {
	if d <= 0 {
		return "–"
	}
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func pct(f float64) string {
	if f <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f%%", 100*f)
}

func ratio(f float64) string {
	if f <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", f)
}

// cores is CPU time per wall time, as a number of busy cores.
func cores(cpu, wall time.Duration) string {
	if cpu <= 0 || wall <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", cpu.Seconds()/wall.Seconds())
}

func mb(b float64) string { return fmt.Sprintf("%.1f MB", b/1e6) }

func kb(b float64) string {
	s := fmt.Sprintf("%.1f KB", b/1e3)
	return strings.Replace(s, "-0.0", "0.0", 1)
}

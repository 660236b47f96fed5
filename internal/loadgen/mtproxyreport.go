package loadgen

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// mtproxyMarkdown writes the mtproxy scenario: one column per proxy, a
// row per figure, and a ratio column for each proxy but the last (mtg,
// when measured) over the last.
func (r *Report) mtproxyMarkdown(p *mdWriter) {
	m := r.MTProxy
	p.f("### MTProxy relay: %s\n\n", sideNames(m.Sides))
	p.f("Secret %s; client: gotd's FakeTLS + obfuscated2, padded intermediate frames (bulk %d KiB, ping %d B), DC %d; "+
		"at most %d KiB in flight per stream; each proxy relays to an echo on loopback; %s per phase; %d idle connections. "+
		"Floor: the ping frame to a bare TCP echo, no proxy, p50 %s, p99 %s.\n\n",
		m.Secret, m.FrameSize>>10, m.PingSize, echoDC, m.InFlight>>10, m.Duration, m.IdleConns, us(m.FloorRTT50), us(m.FloorRTT99))
	if m.Missing != "" {
		p.f("Not measured: %s.\n\n", m.Missing)
	}
	if len(m.Sides) == 0 {
		return
	}
	p.f("| | %s |", strings.Join(sideNamesList(m.Sides), " | "))
	ref := len(m.Sides) - 1 // the ratios' denominator
	for i := range ref {
		p.f(" %s / %s |", m.Sides[i].Name, m.Sides[ref].Name)
	}
	p.f("\n|---|")
	for range m.Sides {
		p.f("---:|")
	}
	for range ref {
		p.f("---:|")
	}
	p.f("\n")
	row := func(name string, vals []float64, format func(float64) string) {
		p.f("| %s |", name)
		for _, v := range vals {
			p.f(" %s |", format(v))
		}
		for i := range ref {
			if vals[ref] != 0 && vals[i] != 0 {
				p.f(" %.2f |", vals[i]/vals[ref])
			} else {
				p.f(" – |")
			}
		}
		p.f("\n")
	}
	get := func(f func(s *MTProxySide) float64) []float64 {
		v := make([]float64, len(m.Sides))
		for i := range m.Sides {
			v[i] = f(&m.Sides[i])
		}
		return v
	}
	mbps := func(v float64) string { return fmt.Sprintf("%.1f MB/s", v) }
	secs := func(v float64) string {
		if v <= 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f s", v)
	}
	usf := func(v float64) string { return us(durationOf(v)) }
	levels := map[int]bool{}
	for _, s := range m.Sides {
		for _, t := range s.Throughput {
			levels[t.Streams] = true
		}
	}
	var ls []int
	for n := range levels {
		ls = append(ls, n)
	}
	sort.Ints(ls)
	level := func(s *MTProxySide, n int) *MTProxyThroughput {
		for i := range s.Throughput {
			if s.Throughput[i].Streams == n {
				return &s.Throughput[i]
			}
		}
		return nil
	}
	for _, n := range ls {
		row(fmt.Sprintf("throughput, %d stream(s), each way (higher is better)", n), get(func(s *MTProxySide) float64 {
			if t := level(s, n); t != nil && t.Window > 0 {
				return t.MBps()
			}
			return 0
		}), mbps)
	}
	row("round trip p50 through the proxy", get(func(s *MTProxySide) float64 { return float64(s.RTT50) }), usf)
	row("**added latency per round trip** (p50 minus floor p50; lower is better)", get(func(s *MTProxySide) float64 {
		if s.RTT50 <= 0 {
			return 0
		}
		return float64(s.RTT50 - m.FloorRTT50)
	}), usf)
	row("round trip p99 through the proxy", get(func(s *MTProxySide) float64 { return float64(s.RTT99) }), usf)
	row("new connection to its first echo, p50 (one after another; lower is better)", get(func(s *MTProxySide) float64 { return float64(s.Setup50) }), usf)
	row("new connection to its first echo, p99", get(func(s *MTProxySide) float64 { return float64(s.Setup99) }), usf)
	row("**memory per idle proxied connection** (RSS; lower is better)", get(func(s *MTProxySide) float64 { return s.RSSPerConn }), kb)
	row("RSS before / after the idle connections", get(func(s *MTProxySide) float64 { return s.RSSAfter }), func(v float64) string {
		for _, s := range m.Sides {
			if s.RSSAfter == v {
				return mb(s.RSSBefore) + " / " + mb(s.RSSAfter)
			}
		}
		return mb(v)
	})
	for _, n := range ls {
		row(fmt.Sprintf("**proxy CPU per GB relayed**, %d stream(s) (lower is better)", n), get(func(s *MTProxySide) float64 {
			if t := level(s, n); t != nil {
				return t.CPUPerGB()
			}
			return 0
		}), secs)
		row(fmt.Sprintf("relayed up (client to upstream), %d stream(s)", n), get(func(s *MTProxySide) float64 {
			if t := level(s, n); t != nil && t.Window > 0 {
				return t.Up / 1e6 / t.Window.Seconds()
			}
			return 0
		}), mbps)
		row(fmt.Sprintf("proxy RSS at the end, %d stream(s)", n), get(func(s *MTProxySide) float64 {
			if t := level(s, n); t != nil {
				return t.RSSAfter
			}
			return 0
		}), mb)
		row(fmt.Sprintf("proxy cores busy, %d stream(s)", n), get(func(s *MTProxySide) float64 {
			if t := level(s, n); t != nil && t.Window > 0 {
				return t.ProxyCPU.Seconds() / t.Window.Seconds()
			}
			return 0
		}), func(v float64) string { return fmt.Sprintf("%.2f", v) })
		row(fmt.Sprintf("bench process cores busy (clients + echo), %d stream(s)", n), get(func(s *MTProxySide) float64 {
			if t := level(s, n); t != nil && t.Window > 0 {
				return t.ClientCPU.Seconds() / t.Window.Seconds()
			}
			return 0
		}), func(v float64) string { return fmt.Sprintf("%.2f", v) })
	}
	row("proxy CPU at rest (cores)", get(func(s *MTProxySide) float64 { return s.RestCPU }), func(v float64) string { return fmt.Sprintf("%.3f", v) })
	p.f("\n")
	for _, s := range m.Sides {
		p.f("- %s: GOMAXPROCS %d; upstream: %s; %d idle connections open at the upstream when sampled", s.Name, s.Procs, s.Upstream, s.IdleOpen)
		if len(s.Dests) > 0 {
			var ds []string
			for d, n := range s.Dests {
				ds = append(ds, fmt.Sprintf("%s ×%d", d, n))
			}
			sort.Strings(ds)
			p.f("; DC addresses it dialled (answered by the local SOCKS5 echo): %s", strings.Join(ds, ", "))
		}
		if s.Err != "" {
			p.f("; **failed**: %s", s.Err)
		}
		p.f(".\n")
	}
	p.f("\nCPU per GB counts both directions: bytes the upstream received from the proxy plus bytes the clients received back. " +
		"Client, upstream echo and proxy share this machine's cores.\n\n")
}

func durationOf(ns float64) time.Duration { return time.Duration(ns) }

func sideNames(s []MTProxySide) string { return strings.Join(sideNamesList(s), " vs ") }

func sideNamesList(s []MTProxySide) []string {
	out := make([]string, len(s))
	for i := range s {
		out[i] = s[i].Name
	}
	return out
}

package cluster

import (
	"container/heap"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Limits of the fault rule text form and of the delay queue.
const (
	// MaxFaultRulesText is the longest text ParseFaultRules reads.
	MaxFaultRulesText = 4 << 10
	// MaxFaultRules is the most rules ParseFaultRules returns.
	MaxFaultRules = 256
	// MaxFaultDelay is the longest delay ParseFaultRules accepts.
	MaxFaultDelay = time.Minute
	// FaultQueueLimit is how many delayed datagrams a wrapped conn holds;
	// more are dropped, as a full link would drop them. At 1,400 bytes a
	// datagram that is ~11 MiB, ~230 MB/s for 50 ms.
	FaultQueueLimit = 8192
)

// FaultRule is one rule of a Faults set. It matches datagrams by their
// remote address: the destination of an outgoing datagram, the source of
// an incoming one.
type FaultRule struct {
	// Peer is the remote address range. The zero Prefix matches every
	// address; a single host is a full-length prefix (127.0.0.2/32).
	Peer netip.Prefix
	// Port is the remote UDP port; 0 matches any port.
	Port uint16
	// Drop cuts the link: matching datagrams are discarded in both
	// directions, including delayed ones still queued. It wins over Delay.
	Drop bool
	// Delay holds matching outgoing datagrams this long before sending
	// them. Incoming datagrams are not delayed, so the same rule (naming the
	// other side) on both ends adds Delay each way.
	Delay time.Duration
}

// matches reports whether the rule covers the remote address ap; known is
// false when the address was not an IP address and port.
func (r FaultRule) matches(ap netip.AddrPort, known bool) bool {
	if r.Peer != (netip.Prefix{}) && (!known || !r.Peer.Contains(ap.Addr())) {
		return false
	}
	return r.Port == 0 || (known && r.Port == ap.Port())
}

// String formats the rule in the text form ParseFaultRules reads, e.g.
// "delay=50ms 127.0.0.0/8" or "drop 127.0.0.5:7100".
func (r FaultRule) String() string {
	action := "pass"
	switch {
	case r.Drop:
		action = "drop"
	case r.Delay > 0:
		action = "delay=" + r.Delay.String()
	}
	host := "*"
	if r.Peer != (netip.Prefix{}) {
		if r.Peer.IsValid() && r.Peer.Bits() == r.Peer.Addr().BitLen() {
			host = r.Peer.Addr().String()
		} else {
			host = r.Peer.Masked().String()
		}
	}
	if r.Port == 0 {
		return action + " " + host
	}
	if r.Peer.Addr().Is6() {
		host = "[" + host + "]"
	}
	return action + " " + host + ":" + strconv.Itoa(int(r.Port))
}

// FormatFaultRules formats rules as one text ParseFaultRules reads back.
func FormatFaultRules(rules []FaultRule) string {
	s := make([]string, len(rules))
	for i, r := range rules {
		s[i] = r.String()
	}
	return strings.Join(s, "; ")
}

// ParseFaultRules reads rules from text, for an environment variable or
// an HTTP endpoint. Rules are separated by ';' or newlines; empty rules are
// skipped. A rule is an action and a target separated by spaces:
//
//	action = "drop" | "delay=" DURATION | "pass"
//	target = HOST | HOST ":" PORT | "[" HOST6 "]" ":" PORT
//	HOST   = "*" | IP | IP "/" BITS
//
// DURATION is Go's (time.ParseDuration), above 0 and at most
// MaxFaultDelay; "*" is every address; an IPv6 host with a port is
// bracketed. "pass" does nothing, which, since the first matching rule
// wins, exempts its target from later rules. Example:
//
//	drop 127.0.0.5:7100; delay=50ms 127.0.0.0/8
//
// The text may be at most MaxFaultRulesText bytes and hold at most
// MaxFaultRules rules. FaultRule.String writes this form.
func ParseFaultRules(s string) ([]FaultRule, error) {
	if len(s) > MaxFaultRulesText {
		return nil, fmt.Errorf("fault rules: %d bytes, at most %d", len(s), MaxFaultRulesText)
	}
	var rules []FaultRule
	for _, text := range strings.FieldsFunc(s, func(c rune) bool { return c == ';' || c == '\n' }) {
		words := strings.Fields(text)
		if len(words) == 0 {
			continue
		}
		if len(rules) == MaxFaultRules {
			return nil, fmt.Errorf("fault rules: more than %d", MaxFaultRules)
		}
		r, err := parseFaultRule(words)
		if err != nil {
			return nil, fmt.Errorf("fault rule %d: %w", len(rules)+1, err)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

func parseFaultRule(words []string) (FaultRule, error) {
	var r FaultRule
	if len(words) != 2 {
		return r, errors.New("want an action and a target")
	}
	switch action := words[0]; {
	case action == "drop":
		r.Drop = true
	case action == "pass":
	case strings.HasPrefix(action, "delay="):
		d, err := time.ParseDuration(action[len("delay="):])
		if err != nil {
			return r, fmt.Errorf("delay: %w", err)
		}
		if d <= 0 || d > MaxFaultDelay {
			return r, fmt.Errorf("delay %v not in (0, %v]", d, MaxFaultDelay)
		}
		r.Delay = d
	default:
		return r, fmt.Errorf("unknown action %q", action)
	}
	var err error
	r.Peer, r.Port, err = parseFaultTarget(words[1])
	return r, err
}

// parseFaultTarget reads HOST, HOST:PORT or [HOST6]:PORT.
func parseFaultTarget(s string) (netip.Prefix, uint16, error) {
	host, port := s, ""
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.Index(s, "]")
		if end < 0 || !strings.HasPrefix(s[end+1:], ":") {
			return netip.Prefix{}, 0, fmt.Errorf("target %q: want [IPv6]:port", s)
		}
		host, port = s[1:end], s[end+2:]
	case strings.Count(s, ":") == 1: // IPv4 or "*" with a port
		host, port, _ = strings.Cut(s, ":")
	}
	p, err := parseFaultHost(host)
	if err != nil {
		return netip.Prefix{}, 0, fmt.Errorf("target %q: %w", s, err)
	}
	if strings.HasPrefix(s, "[") && !p.Addr().Is6() {
		return netip.Prefix{}, 0, fmt.Errorf("target %q: brackets are for IPv6", s)
	}
	if port == "" && host == s {
		return p, 0, nil
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return netip.Prefix{}, 0, fmt.Errorf("target %q: bad port %q", s, port)
	}
	return p, uint16(n), nil
}

func parseFaultHost(s string) (netip.Prefix, error) {
	if s == "*" {
		return netip.Prefix{}, nil
	}
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return p, err
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return p, err
		}
		if a.Zone() != "" {
			return p, errors.New("zones are not supported")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		// Remote addresses are unmapped before matching, so this would
		// never match; ask for the IPv4 form.
		return netip.Prefix{}, errors.New("write IPv4-mapped addresses as IPv4")
	}
	return p.Masked(), nil
}

// Faults is a set of fault rules shared by wrapped packet conns
// (WrapPacketConn) and changeable at run time: a test or an operator cuts
// and heals links, or adds WAN delay, while the mesh runs. The first rule
// matching a datagram's remote address decides. Safe for concurrent use;
// the zero value has no rules.
type Faults struct {
	rules atomic.Pointer[[]FaultRule]
}

// NewFaults returns a Faults with no rules.
func NewFaults() *Faults { return &Faults{} }

// Set replaces all rules at once; nil heals everything.
func (f *Faults) Set(rules []FaultRule) {
	c := append([]FaultRule(nil), rules...)
	f.rules.Store(&c)
}

// Rules returns a copy of the current rules.
func (f *Faults) Rules() []FaultRule {
	p := f.rules.Load()
	if p == nil {
		return nil
	}
	return append([]FaultRule(nil), *p...)
}

// lookup returns the first rule matching addr, if any.
func (f *Faults) lookup(addr net.Addr) (FaultRule, bool) {
	p := f.rules.Load()
	if p == nil || len(*p) == 0 {
		return FaultRule{}, false
	}
	ap, known := addrPort(addr)
	for _, r := range *p {
		if r.matches(ap, known) {
			return r, true
		}
	}
	return FaultRule{}, false
}

// addrPort converts a datagram's remote address for matching, with
// IPv4-mapped addresses unmapped.
func addrPort(addr net.Addr) (netip.AddrPort, bool) {
	var ap netip.AddrPort
	if ua, ok := addr.(*net.UDPAddr); ok {
		ap = ua.AddrPort()
	} else if addr != nil {
		ap, _ = netip.ParseAddrPort(addr.String())
	}
	if !ap.IsValid() {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()), true
}

// WrapPacketConn returns pc with f's rules applied: the conn to hand to
// MeshConfig.PacketConn (or a quic.Transport) in tests and benchmarks of
// partitions and WAN delay, where the kernel offers no netem. Delayed
// datagrams are copied into a queue of at most FaultQueueLimit, drained in
// order by one goroutine; a destination's datagrams are never reordered,
// even when its rule changes. The returned conn owns pc: Close stops the
// queue, discards what it holds and closes pc.
//
// For quic-go the result is a plain net.PacketConn, so it reads and writes
// one datagram per call (no batching, GSO or ECN, which would bypass the
// rules). When pc is a *net.UDPConn it keeps SetReadBuffer,
// SetWriteBuffer and SyscallConn, so quic-go sizes the socket buffers and
// sets the DF bit exactly as for the bare socket.
func WrapPacketConn(pc net.PacketConn, f *Faults) net.PacketConn {
	return wrapPacketConn(pc, f, FaultQueueLimit)
}

// sysConn is what quic-go asks of a socket beyond net.PacketConn before
// its optimized path (which we do not offer): buffer sizes and socket
// options.
type sysConn interface {
	SyscallConn() (syscall.RawConn, error)
	SetReadBuffer(bytes int) error
	SetWriteBuffer(bytes int) error
}

func wrapPacketConn(pc net.PacketConn, f *Faults, limit int) net.PacketConn {
	c := &faultConn{
		PacketConn: pc,
		faults:     f,
		limit:      limit,
		queued:     make(map[netip.AddrPort]queuedTo),
		wake:       make(chan struct{}, 1),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	go c.run()
	if sc, ok := pc.(sysConn); ok {
		return &faultSysConn{faultConn: c, sysConn: sc}
	}
	return c
}

// faultSysConn is a faultConn over a socket that has sysConn's methods.
type faultSysConn struct {
	*faultConn
	sysConn
}

// faultConn applies Faults to a net.PacketConn. It embeds the conn for
// LocalAddr and the deadlines; ReadFrom, WriteTo and Close are its own.
type faultConn struct {
	net.PacketConn
	faults *Faults
	limit  int

	mu     sync.Mutex
	closed bool
	q      delayQueue
	seq    uint64
	queued map[netip.AddrPort]queuedTo // destinations with datagrams in q or being sent

	wake chan struct{} // a datagram was queued
	stop chan struct{} // closed by Close
	done chan struct{} // closed when run returns

	closeOnce sync.Once
	closeErr  error
}

// queuedTo tracks a destination's datagrams not yet sent, so later ones
// go after them.
type queuedTo struct {
	n    int
	last time.Time // due time of the last one
}

type delayed struct {
	due  time.Time
	seq  uint64
	key  netip.AddrPort
	addr net.Addr
	data []byte
}

// delayQueue is a heap by due time, then by order of writing.
type delayQueue []*delayed

func (q delayQueue) Len() int { return len(q) }
func (q delayQueue) Less(i, j int) bool {
	if !q[i].due.Equal(q[j].due) {
		return q[i].due.Before(q[j].due)
	}
	return q[i].seq < q[j].seq
}
func (q delayQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *delayQueue) Push(x any)   { *q = append(*q, x.(*delayed)) }
func (q *delayQueue) Pop() any {
	old := *q
	d := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return d
}

// ReadFrom reads the next datagram whose source no Drop rule matches;
// dropped ones are discarded silently.
func (c *faultConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(b)
		if err != nil {
			return n, addr, err
		}
		if r, ok := c.faults.lookup(addr); !ok || !r.Drop {
			return n, addr, nil
		}
	}
}

// WriteTo sends b to addr now, drops it, or queues a copy to send after
// the matching rule's delay. A dropped or queued datagram counts as
// written, as it would on a real link.
func (c *faultConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	r, _ := c.faults.lookup(addr)
	if r.Drop {
		return len(b), nil
	}
	key, _ := addrPort(addr)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	prev, waiting := c.queued[key]
	if r.Delay <= 0 && !waiting {
		c.mu.Unlock()
		return c.PacketConn.WriteTo(b, addr)
	}
	if len(c.q) >= c.limit {
		c.mu.Unlock()
		return len(b), nil
	}
	due := time.Now().Add(max(r.Delay, 0))
	if due.Before(prev.last) {
		due = prev.last // never overtake what is queued to addr
	}
	c.seq++
	heap.Push(&c.q, &delayed{due: due, seq: c.seq, key: key, addr: addr, data: append([]byte(nil), b...)})
	c.queued[key] = queuedTo{n: prev.n + 1, last: due}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return len(b), nil
}

// run sends queued datagrams when they are due, until Close.
func (c *faultConn) run() {
	defer close(c.done)
	timer := time.NewTimer(0)
	timer.Stop()
	var batch []*delayed
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return
		}
		now := time.Now()
		batch = batch[:0]
		for len(c.q) > 0 && !c.q[0].due.After(now) {
			batch = append(batch, heap.Pop(&c.q).(*delayed))
		}
		wait := time.Duration(-1)
		if len(batch) == 0 && len(c.q) > 0 {
			wait = c.q[0].due.Sub(now)
		}
		c.mu.Unlock()

		if len(batch) > 0 {
			// Sent outside the lock; the destinations stay in c.queued
			// until sent, so WriteTo queues behind them meanwhile.
			for _, d := range batch {
				if r, _ := c.faults.lookup(d.addr); !r.Drop {
					c.PacketConn.WriteTo(d.data, d.addr) // a lost datagram, like any other
				}
			}
			c.mu.Lock()
			for i, d := range batch {
				if q := c.queued[d.key]; q.n > 1 {
					c.queued[d.key] = queuedTo{n: q.n - 1, last: q.last}
				} else {
					delete(c.queued, d.key)
				}
				batch[i] = nil
			}
			c.mu.Unlock()
			continue
		}
		if wait >= 0 {
			timer.Reset(wait)
		}
		select {
		case <-c.stop:
			timer.Stop()
			return
		case <-c.wake:
			timer.Stop()
		case <-timer.C:
		}
	}
}

// Close stops the delay queue, discards what it holds and closes the
// wrapped conn. It is safe to call more than once.
func (c *faultConn) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		close(c.stop)
		<-c.done
		c.mu.Lock()
		c.q = nil
		clear(c.queued)
		c.mu.Unlock()
		c.closeErr = c.PacketConn.Close()
	})
	return c.closeErr
}

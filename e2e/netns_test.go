package e2e

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// netLab is a small network the test builds itself from network
// namespaces: one namespace per node, each joined by a veth pair to a
// router namespace, which a last veth pair joins to the test's own
// namespace (so clients in the test reach every node). Addresses are
// 10.<net>.<i>.0/24 inside namespaces the lab made; the test's namespace
// gets one route to them, removed at the end.
//
//	test ns  10.N.0.1 ── 10.N.0.2  router ns  10.N.i.1 ── 10.N.i.2  node i ns
//
// Cutting node i off installs blackhole routes between its subnet and the
// other nodes' inside their namespaces; the test's clients still reach it.
type netLab struct {
	t      *testing.T
	prefix string // names of namespaces and links
	net    int
	nodes  int
}

// newNetLab builds the lab for n nodes, or skips the test when it cannot
// (not root, no ip command, no namespaces).
func newNetLab(t *testing.T, n int) *netLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip command (iproute2)")
	}
	var b [2]byte
	rand.Read(b[:])
	l := &netLab{t: t, prefix: fmt.Sprintf("mt%02x%02x", b[0], b[1]), net: 100 + int(b[1])%100, nodes: n}
	if out, err := exec.Command("ip", "route", "show", fmt.Sprintf("10.%d.0.0/16", l.net)).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Skipf("10.%d.0.0/16 is in use here (%s%v)", l.net, out, err)
	}
	t.Cleanup(l.teardown)
	r := l.ns("r")
	if err := l.try("ip", "netns", "add", r); err != nil {
		t.Skipf("cannot make network namespaces: %v", err)
	}
	host, hostPeer := l.prefix+"h", l.prefix+"hr"
	l.must("ip", "link", "add", host, "type", "veth", "peer", "name", hostPeer)
	l.must("ip", "link", "set", hostPeer, "netns", r)
	l.must("ip", "addr", "add", l.ip(0, 1)+"/24", "dev", host)
	l.must("ip", "link", "set", host, "up")
	l.in(r, "ip", "addr", "add", l.ip(0, 2)+"/24", "dev", hostPeer)
	l.in(r, "ip", "link", "set", hostPeer, "up")
	l.in(r, "ip", "link", "set", "lo", "up")
	l.in(r, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	for i := 1; i <= n; i++ {
		ns, a, b := l.ns(fmt.Sprint(i)), fmt.Sprintf("%sa%d", l.prefix, i), fmt.Sprintf("%sb%d", l.prefix, i)
		l.must("ip", "netns", "add", ns)
		l.must("ip", "link", "add", a, "type", "veth", "peer", "name", b)
		l.must("ip", "link", "set", a, "netns", r)
		l.must("ip", "link", "set", b, "netns", ns)
		l.in(r, "ip", "addr", "add", l.ip(i, 1)+"/24", "dev", a)
		l.in(r, "ip", "link", "set", a, "up")
		l.in(ns, "ip", "addr", "add", l.ip(i, 2)+"/24", "dev", b)
		l.in(ns, "ip", "link", "set", b, "up")
		l.in(ns, "ip", "link", "set", "lo", "up")
		l.in(ns, "ip", "route", "add", "default", "via", l.ip(i, 1))
	}
	l.must("ip", "route", "add", fmt.Sprintf("10.%d.0.0/16", l.net), "via", l.ip(0, 2))
	return l
}

func (l *netLab) ns(name string) string { return l.prefix + name }

// ip is 10.net.subnet.host.
func (l *netLab) ip(subnet, host int) string { return fmt.Sprintf("10.%d.%d.%d", l.net, subnet, host) }

// nodeIP is node i's (0-based) address.
func (l *netLab) nodeIP(i int) string { return l.ip(i+1, 2) }

// wrap is the command prefix that runs a program in node i's namespace.
func (l *netLab) wrap(i int) []string {
	return []string{"ip", "netns", "exec", l.ns(fmt.Sprint(i + 1))}
}

func (l *netLab) try(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (l *netLab) must(args ...string) {
	l.t.Helper()
	if err := l.try(args...); err != nil {
		l.t.Fatal(err)
	}
}

func (l *netLab) in(ns string, args ...string) {
	l.t.Helper()
	l.must(append([]string{"ip", "netns", "exec", ns}, args...)...)
}

// cut isolates node i (0-based) from every other node, both ways.
func (l *netLab) cut(i int) { l.routes(i, "add") }

// heal undoes cut.
func (l *netLab) heal(i int) { l.routes(i, "del") }

func (l *netLab) routes(i int, op string) {
	l.t.Helper()
	for j := range l.nodes {
		if j == i {
			continue
		}
		l.in(l.ns(fmt.Sprint(i+1)), "ip", "route", op, "blackhole", fmt.Sprintf("10.%d.%d.0/24", l.net, j+1))
		l.in(l.ns(fmt.Sprint(j+1)), "ip", "route", op, "blackhole", fmt.Sprintf("10.%d.%d.0/24", l.net, i+1))
	}
}

// teardown removes everything the lab made; deleting a namespace deletes
// the links in it.
func (l *netLab) teardown() {
	l.try("ip", "route", "del", fmt.Sprintf("10.%d.0.0/16", l.net))
	for i := 1; i <= l.nodes; i++ {
		l.try("ip", "netns", "del", l.ns(fmt.Sprint(i)))
	}
	l.try("ip", "netns", "del", l.ns("r"))
	l.try("ip", "link", "del", l.prefix+"h")
}

package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
)

// The check needs no sockets: it compares addresses, so fixed ports are
// fine and nothing listens on them.
const (
	selfPort  = 48443
	otherPort = 48444
)

func hostPort(host string, port int) string {
	return netip.AddrPortFrom(netip.MustParseAddr(host), uint16(port)).String()
}

func TestCheckNotSelf(t *testing.T) {
	t.Parallel()
	specific := []string{hostPort("127.0.0.1", selfPort)}
	wildcards := [][]string{
		{fmt.Sprintf(":%d", selfPort)},
		{hostPort("0.0.0.0", selfPort)},
		{hostPort("::", selfPort)},
	}
	local, err := interfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var ifaceAddr string // a non-loopback address of this host, if any
	for _, a := range local {
		if !a.IsLoopback() {
			ifaceAddr = hostPort(a.String(), selfPort)
			break
		}
	}
	// foreign is a documentation address this host does not have (test
	// machines sometimes do have one of them).
	var foreign string
	for _, a := range []string{"192.0.2.1", "198.51.100.1", "203.0.113.1", "2001:db8::1"} {
		if !slices.Contains(local, netip.MustParseAddr(a)) {
			foreign = hostPort(a, selfPort)
			break
		}
	}
	if foreign == "" {
		t.Fatal("this host has every documentation address")
	}

	type selfCase struct {
		front    string
		listen   []string
		wantSelf bool
	}
	cases := []selfCase{
		{hostPort("127.0.0.1", selfPort), specific, true},
		{fmt.Sprintf("localhost:%d", selfPort), specific, true},
		{hostPort("0.0.0.0", selfPort), specific, true}, // dialled as loopback
		{hostPort("::ffff:127.0.0.1", selfPort), specific, true},
		{hostPort("127.0.0.1", otherPort), specific, false},
		{hostPort("127.0.0.2", selfPort), specific, false}, // kernel would not deliver it to us
		{foreign, specific, false},
		// Several listeners: any one matching is enough.
		{hostPort("127.0.0.1", otherPort), append([]string{hostPort("127.0.0.1", selfPort)}, hostPort("127.0.0.1", otherPort)), true},
	}
	for _, w := range wildcards {
		cases = append(cases,
			selfCase{hostPort("127.0.0.1", selfPort), w, true},
			selfCase{hostPort("127.0.0.2", selfPort), w, true},
			selfCase{hostPort("::1", selfPort), w, true},
			selfCase{hostPort("127.0.0.1", otherPort), w, false},
			selfCase{foreign, w, false},
		)
		if ifaceAddr != "" {
			cases = append(cases, selfCase{ifaceAddr, w, true})
		}
	}
	for _, c := range cases {
		err := CheckNotSelf(c.front, c.listen)
		if c.wantSelf && !errors.Is(err, ErrFrontIsSelf) {
			t.Errorf("front %s, listeners %v: err %v, want ErrFrontIsSelf", c.front, c.listen, err)
		}
		if !c.wantSelf && err != nil {
			t.Errorf("front %s, listeners %v: err %v, want nil", c.front, c.listen, err)
		}
		if err != nil {
			t.Logf("front %s, listeners %v: %v", c.front, c.listen, err)
		}
	}
}

func TestCheckNotSelfBadInput(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		front  string
		listen []string
	}{
		{"no-port", []string{"127.0.0.1:443"}},
		{"127.0.0.1:443", []string{"no-port"}},
		{"127.0.0.1:443", []string{"127.0.0.1:0"}}, // unbound port: cannot compare
	} {
		err := CheckNotSelf(c.front, c.listen)
		if err == nil || errors.Is(err, ErrFrontIsSelf) {
			t.Errorf("front %s, listeners %v: err %v, want an input error", c.front, c.listen, err)
		}
	}
}

package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestAddrIsFreeAndBelowEphemeral(t *testing.T) {
	seen := map[string]bool{}
	for _, network := range []string{"tcp", "udp", "tcp", "udp"} {
		addr, err := Addr(network)
		if err != nil {
			t.Fatal(err)
		}
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
		_, p, _ := net.SplitHostPort(addr)
		if port, _ := strconv.Atoi(p); port < low || port >= high {
			t.Fatalf("port %d outside [%d, %d)", port, low, high)
		}
		if network == "tcp" {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				t.Fatalf("%s not free: %v", addr, err)
			}
			l.Close()
		}
	}
	if _, err := Addr("sctp"); err == nil {
		t.Fatal("unknown network accepted")
	}
}

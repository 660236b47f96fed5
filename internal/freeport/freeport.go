// Package freeport hands out loopback addresses for child processes that
// must be told their ports before they start (the nodes of a test or bench
// cluster, which must know each other's addresses, and keep them across
// restarts).
//
// Ports come from below Linux's ephemeral range (32768-60999 by default),
// not from the kernel's port 0: an ephemeral port that was free when it
// was picked can be taken by any outgoing connection before the child
// binds it, and parallel tests open thousands. Ports are handed out in
// turn from a random start, each checked bindable first, so two processes
// using the package rarely meet and never get a port in use at the time.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
)

const (
	low  = 20000
	high = 32768 // exclusive: the default ephemeral range starts here
)

var (
	mu   sync.Mutex
	next = low + rand.IntN(high-low)
)

// Addr returns "127.0.0.1:port" with a port that is free on network ("tcp"
// or "udp") right now; for "udp", free on TCP as well (mesh addresses).
func Addr(network string) (string, error) {
	mu.Lock()
	defer mu.Unlock()
	for range high - low {
		next++
		if next >= high {
			next = low
		}
		addr := fmt.Sprintf("127.0.0.1:%d", next)
		switch network {
		case "udp":
			// For a mesh address: the mesh listens on the TCP port of
			// the same number too (its lane), so both must be free.
			c, err := net.ListenPacket("udp", addr)
			if err != nil {
				continue
			}
			c.Close()
			l, err := net.Listen("tcp", addr)
			if err != nil {
				continue
			}
			l.Close()
		case "tcp":
			l, err := net.Listen("tcp", addr)
			if err != nil {
				continue
			}
			l.Close()
		default:
			return "", fmt.Errorf("freeport: network %q", network)
		}
		return addr, nil
	}
	return "", errors.New("freeport: no free port")
}

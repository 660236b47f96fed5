package node

import (
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/gotd/td/bin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mtnode/mtnode/config"
	"github.com/mtnode/mtnode/protocol/transport"
)

// limitConn is an accepted connection as admit sees it: its address, and
// what it was told.
type limitConn struct {
	ip     string
	errors []int32
	closed bool
}

func (c *limitConn) ReadFrame(*bin.Buffer) error      { return nil }
func (c *limitConn) WriteFrame([]byte) error          { return nil }
func (c *limitConn) WriteError(code int32) error      { c.errors = append(c.errors, code); return nil }
func (c *limitConn) Name() string                     { return "test" }
func (c *limitConn) SetReadDeadline(time.Time) error  { return nil }
func (c *limitConn) SetWriteDeadline(time.Time) error { return nil }
func (c *limitConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.ParseIP(c.ip), Port: 1} }
func (c *limitConn) Close() error                     { c.closed = true; return nil }

var _ transport.Conn = (*limitConn)(nil)

// TestGatePerIPLimit: proxied clients of one IP beyond
// proxy.max_connections_per_ip are told -429 and closed; a release makes
// room; other IPs and direct (secretless) clients are not limited.
func TestGatePerIPLimit(t *testing.T) {
	cfg := config.Default()
	cfg.Proxy.Secrets = "dd000102030405060708090a0b0c0d0e0f"
	cfg.Proxy.MaxConnectionsPerIP = 2
	g, err := newMTProxyGate(&cfg, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	proxied := transport.Metadata{Kind: "padded-secret", SecretIndex: 0}
	var releases []func()
	for i := range 2 {
		rel, ok := g.admit(&limitConn{ip: "192.0.2.1"}, proxied)
		if !ok {
			t.Fatalf("proxied client %d of 2 refused", i+1)
		}
		releases = append(releases, rel)
	}
	over := &limitConn{ip: "192.0.2.1"}
	if _, ok := g.admit(over, proxied); ok || !over.closed || len(over.errors) != 1 || over.errors[0] != -429 {
		t.Fatalf("third proxied client: admitted %v, closed %v, told %v; want -429 and closed", ok, over.closed, over.errors)
	}
	if _, ok := g.admit(&limitConn{ip: "192.0.2.2"}, proxied); !ok {
		t.Fatal("a client of another IP was refused")
	}
	for range 10 {
		if _, ok := g.admit(&limitConn{ip: "192.0.2.1"}, transport.Metadata{Kind: "obfuscated2", SecretIndex: -1}); !ok {
			t.Fatal("a direct client was limited per IP")
		}
	}
	releases[0]()
	if _, ok := g.admit(&limitConn{ip: "192.0.2.1"}, proxied); !ok {
		t.Fatal("no room after a proxied client left")
	}
}

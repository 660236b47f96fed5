package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/mtproxy"
	"github.com/gotd/td/mtproxy/obfuscator"
	"github.com/gotd/td/proto/codec"
	gtransport "github.com/gotd/td/transport"

	"github.com/mtnode/mtnode/cluster"
	"github.com/mtnode/mtnode/config"
)

// TestProxyOverConnectionLimitGets429: a `mtnode proxy` at
// protocol.max_connections tells the next client -429 in that client's
// own transport (here gotd's obfuscated2 with a dd secret), as a node does.
func TestProxyOverConnectionLimitGets429(t *testing.T) {
	dir := t.TempDir()
	if _, err := cluster.Keygen(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 16)
	rand.Read(secret)
	cfg := config.Default()
	cfg.Cluster.SecretsDir = dir
	cfg.Cluster.MeshAddr = "127.0.0.1:0"
	cfg.ClientAddr = "127.0.0.1:0"
	cfg.HTTPAddr = ""
	cfg.Protocol.MaxConnections = 1
	cfg.Proxy.Secrets = "dd" + hex.EncodeToString(secret)
	p, err := NewProxy(&cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	addr := p.ClientAddr().String()

	// The one slot: a connection that says nothing yet.
	hold, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	time.Sleep(100 * time.Millisecond) // accepted before the next one

	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	oc := obfuscator.Obfuscated2(rand.Reader, nc)
	if err := oc.Handshake(codec.PaddedIntermediateClientStart, 2, mtproxy.Secret{Secret: secret, Type: mtproxy.Secured}); err != nil {
		t.Fatal(err)
	}
	c, err := gtransport.NewProtocol(func() gtransport.Codec { return codec.NoHeader{Codec: codec.PaddedIntermediate{}} }).Handshake(oc)
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	var b bin.Buffer
	err = c.Recv(rctx, &b)
	var pe *codec.ProtocolErr
	if !errors.As(err, &pe) || pe.Code != 429 {
		t.Fatalf("client over the limit read %v, want transport error -429", err)
	}
}

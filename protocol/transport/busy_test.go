package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/mtproxy/obfuscator"
	"github.com/gotd/td/proto/codec"
	gtransport "github.com/gotd/td/transport"
)

// TestBusyAnswersInTheClientsTransport: a connection over a server's limit
// is told -429 in whatever transport its client speaks (gotd's clients:
// plain intermediate, obfuscated2 with a dd secret, FakeTLS), then closed;
// a prober's bytes get no answer.
func TestBusyAnswersInTheClientsTransport(t *testing.T) {
	secret := bytes.Repeat([]byte{0x5d}, 16)
	opt := tlsOptions()
	opt.Secrets = [][]byte{secret}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go Busy(nc, opt, -429, 5*time.Second)
		}
	}()
	dial := func(t *testing.T) net.Conn {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		return nc
	}
	expect429 := func(t *testing.T, c gtransport.Conn) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var b bin.Buffer
		err := c.Recv(ctx, &b)
		var pe *codec.ProtocolErr
		if !errors.As(err, &pe) || pe.Code != 429 {
			t.Fatalf("client read %v, want transport error -429", err)
		}
	}
	t.Run("intermediate", func(t *testing.T) {
		expect429(t, dialGotd(t, dial(t), "intermediate", nil))
	})
	t.Run("dd secret", func(t *testing.T) {
		expect429(t, dialGotd(t, dial(t), "obfuscated2/padded_intermediate", secret))
	})
	t.Run("faketls", func(t *testing.T) {
		cdc, tag, _ := gotdCodec("obfuscated2/padded_intermediate")
		oc := obfuscator.FakeTLS(rand.Reader, dial(t))
		if err := oc.Handshake(tag, 2, gotdSecret(tlsKey, tlsDomain)); err != nil {
			t.Fatalf("gotd FakeTLS handshake: %v", err)
		}
		c, err := gtransport.NewProtocol(func() gtransport.Codec { return cdc }).Handshake(oc)
		if err != nil {
			t.Fatal(err)
		}
		expect429(t, c)
	})
	t.Run("probe", func(t *testing.T) {
		nc := dial(t)
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		nc.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		var got bytes.Buffer
		if _, err := got.ReadFrom(nc); err != nil || got.Len() != 0 {
			t.Fatalf("probe got %q, %v; want a bare close", got.Bytes(), err)
		}
	})
}

package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gotd/td/bin"
	"github.com/gotd/td/mtproxy"
	"github.com/gotd/td/mtproxy/obfuscator"
	"github.com/gotd/td/proto/codec"
	"github.com/gotd/td/telegram/dcs"
	gtransport "github.com/gotd/td/transport"
)

// dialGotd connects a gotd client speaking transport name over nc.
func dialGotd(t *testing.T, nc net.Conn, name string, secret []byte) gtransport.Conn {
	t.Helper()
	cdc, tag, obfs := gotdCodec(name)
	var conn net.Conn = nc
	if obfs {
		oc := obfuscator.Obfuscated2(rand.Reader, nc)
		if err := oc.Handshake(tag, 2, mtproxy.Secret{Secret: secret, Type: mtproxy.Simple}); err != nil {
			t.Fatal(err)
		}
		conn = oc
	}
	c, err := gtransport.NewProtocol(func() gtransport.Codec { return cdc }).Handshake(conn)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type acceptResult struct {
	conn Conn
	err  error
}

// listen starts a loopback listener whose connections go through Accept.
func listen(t *testing.T, opt Options) (addr string, accepted <-chan acceptResult) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan acceptResult, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			c, err := Accept(nc, opt)
			if err != nil {
				_ = nc.Close()
			}
			ch <- acceptResult{c, err}
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return ln.Addr().String(), ch
}

func recvAccepted(t *testing.T, ch <-chan acceptResult) acceptResult {
	t.Helper()
	select {
	case r := <-ch:
		if r.conn != nil {
			t.Cleanup(func() { _ = r.conn.Close() })
		}
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
		return acceptResult{}
	}
}

// roundTripSizes crosses the abridged one-byte length limit (508/512), the
// read buffer (4 KiB) and the chunked read growth (64 KiB).
var roundTripSizes = []int{8, 16, 504, 508, 512, 1024, 4096, 70000, 300000, 16}

// exchange sends every size from the gotd client, reads it on the server,
// echoes it back and checks the gotd client receives it intact.
func exchange(t *testing.T, ctx context.Context, client gtransport.Conn, accepted func() Conn) Conn {
	t.Helper()
	var server Conn
	var in bin.Buffer // reused across frames, as callers will
	for i, size := range roundTripSizes {
		want := testPayload(size)
		if err := client.Send(ctx, &bin.Buffer{Buf: append([]byte(nil), want...)}); err != nil {
			t.Fatalf("client send %d: %v", size, err)
		}
		if i == 0 {
			server = accepted()
		}
		if err := server.ReadFrame(&in); err != nil {
			t.Fatalf("server read %d: %v", size, err)
		}
		if !bytes.Equal(in.Buf, want) {
			t.Fatalf("server got %d bytes, want %d (payload differs)", len(in.Buf), size)
		}
		if err := server.WriteFrame(want); err != nil {
			t.Fatalf("server write %d: %v", size, err)
		}
		var out bin.Buffer
		if err := client.Recv(ctx, &out); err != nil {
			t.Fatalf("client recv %d: %v", size, err)
		}
		if !bytes.Equal(out.Buf, want) {
			t.Fatalf("client got %d bytes, want %d (payload differs)", len(out.Buf), size)
		}
	}
	// Transport errors reach gotd as its ProtocolErr with the positive code.
	if err := server.WriteError(-404); err != nil {
		t.Fatal(err)
	}
	var out bin.Buffer
	var perr *codec.ProtocolErr
	if err := client.Recv(ctx, &out); !errors.As(err, &perr) || perr.Code != 404 {
		t.Fatalf("client recv error frame: %v, want protocol error 404", err)
	}
	return server
}

func TestRoundTripGotdClient(t *testing.T) {
	for _, name := range transportNames {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			addr, ch := listen(t, Options{})
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			client := dialGotd(t, nc, name, nil)
			defer func() { _ = client.Close() }()

			server := exchange(t, ctx, client, func() Conn {
				r := recvAccepted(t, ch)
				if r.err != nil {
					t.Fatalf("accept: %v", r.err)
				}
				return r.conn
			})
			if got := server.Name(); got != name {
				t.Errorf("Name() = %q, want %q", got, name)
			}
			md, ok := MetadataOf(server)
			if obfs := strings.HasPrefix(name, "obfuscated2/"); ok != obfs {
				t.Errorf("MetadataOf ok = %v, want %v", ok, obfs)
			} else if ok && (md.DC != 2 || md.SecretIndex != -1) {
				t.Errorf("metadata = %+v, want DC 2 without secret", md)
			}
			if server.RemoteAddr().String() != nc.LocalAddr().String() {
				t.Errorf("RemoteAddr = %v, want %v", server.RemoteAddr(), nc.LocalAddr())
			}
		})
	}
}

// TestPaddedManyFrames repeats small padded frames toward gotd: with random
// 0..3 byte padding every padding value occurs, and gotd (which strips only
// len%4 bytes) must parse each one. Padding of a whole word would corrupt it.
func TestPaddedManyFrames(t *testing.T) {
	for _, name := range []string{"padded_intermediate", "obfuscated2/padded_intermediate"} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			addr, ch := listen(t, Options{})
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			client := dialGotd(t, nc, name, nil)
			defer func() { _ = client.Close() }()
			if err := client.Send(ctx, &bin.Buffer{Buf: testPayload(8)}); err != nil {
				t.Fatal(err)
			}
			r := recvAccepted(t, ch)
			if r.err != nil {
				t.Fatal(r.err)
			}
			var in bin.Buffer
			if err := r.conn.ReadFrame(&in); err != nil {
				t.Fatal(err)
			}
			for i := range 64 {
				want := testPayload(8 + 4*(i%5))
				if err := r.conn.WriteFrame(want); err != nil {
					t.Fatal(err)
				}
				var out bin.Buffer
				if err := client.Recv(ctx, &out); err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if !bytes.Equal(out.Buf, want) {
					t.Fatalf("frame %d: got %x, want %x", i, out.Buf, want)
				}
			}
		})
	}
}

func TestSecrets(t *testing.T) {
	secretA := bytes.Repeat([]byte{0xa1}, 16)
	secretB := bytes.Repeat([]byte{0xb2}, 16)
	tests := []struct {
		name      string
		client    []byte
		server    [][]byte
		wantIndex int // -2: rejected
	}{
		{"second of two", secretA, [][]byte{secretB, secretA}, 1},
		{"first of two", secretB, [][]byte{secretB, secretA}, 0},
		{"wrong secret", secretA, [][]byte{secretB}, -2},
		{"client without secret", nil, [][]byte{secretA}, -1}, // refused only with RequireSecret (TestSecretlessNextToSecrets)
		{"server without secret", secretA, nil, -2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, name := range transportNames[4:] {
				stream := clientStream(t, name, tt.client, testPayload(16))
				nc, _ := newFakeConn(stream)
				c, err := Accept(nc, Options{Secrets: tt.server})
				if tt.wantIndex == -2 {
					if !errors.Is(err, ErrUnknownTransport) {
						t.Fatalf("%s: Accept error = %v, want ErrUnknownTransport", name, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				md, _ := MetadataOf(c)
				if md.SecretIndex != tt.wantIndex || md.DC != 2 {
					t.Fatalf("%s: metadata %+v, want secret %d DC 2", name, md, tt.wantIndex)
				}
				var b bin.Buffer
				if err := c.ReadFrame(&b); err != nil || !bytes.Equal(b.Buf, testPayload(16)) {
					t.Fatalf("%s: ReadFrame = %x, %v", name, b.Buf, err)
				}
			}
		})
	}
}

// TestSecretsOverTCP checks server-to-client encryption with a secret, which
// the byte-stream test above cannot see.
func TestSecretsOverTCP(t *testing.T) {
	secret := bytes.Repeat([]byte{0x5c}, 16)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr, ch := listen(t, Options{Secrets: [][]byte{bytes.Repeat([]byte{1}, 16), secret}, RequireObfuscation: true})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	client := dialGotd(t, nc, "obfuscated2/padded_intermediate", secret)
	defer func() { _ = client.Close() }()
	exchange(t, ctx, client, func() Conn {
		r := recvAccepted(t, ch)
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.conn
	})
}

// echoServe is a WebSocket serve function: Accept, then echo frames.
func echoServe(t *testing.T, names chan<- string, finished *atomic.Int32) func(net.Conn) {
	return func(nc net.Conn) {
		defer finished.Add(1)
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		c, err := Accept(nc, Options{})
		if err != nil {
			t.Errorf("websocket accept: %v", err)
			return
		}
		defer func() { _ = c.Close() }()
		md, _ := MetadataOf(c)
		names <- c.Name() + "/dc" + string(rune('0'+md.DC))
		var b bin.Buffer
		for {
			if err := c.ReadFrame(&b); err != nil {
				return
			}
			if err := c.WriteFrame(b.Buf); err != nil {
				return
			}
		}
	}
}

func TestWebSocketGotdClient(t *testing.T) {
	names := make(chan string, 1)
	var finished atomic.Int32
	mux := http.NewServeMux()
	mux.Handle("/apiws", WebSocketHandler(echoServe(t, names, &finished), slog.New(slog.DiscardHandler)))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resolver := dcs.Websocket(dcs.WebsocketOptions{DialOptions: &websocket.DialOptions{
		Subprotocols: []string{"binary"},
		// A web client served from another origin must be let in.
		HTTPHeader: http.Header{"Origin": []string{"https://web.example.org"}},
	}})
	client, err := resolver.Primary(ctx, 2, dcs.List{Domains: map[int]string{
		2: "ws" + strings.TrimPrefix(srv.URL, "http") + "/apiws",
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Close() }()

	for _, size := range roundTripSizes {
		want := testPayload(size)
		if err := client.Send(ctx, &bin.Buffer{Buf: append([]byte(nil), want...)}); err != nil {
			t.Fatal(err)
		}
		var out bin.Buffer
		if err := client.Recv(ctx, &out); err != nil {
			t.Fatalf("recv %d: %v", size, err)
		}
		if !bytes.Equal(out.Buf, want) {
			t.Fatalf("echo of %d bytes differs", size)
		}
	}
	select {
	case got := <-names:
		if got != "obfuscated2/intermediate/dc2" {
			t.Errorf("server saw %q", got)
		}
	case <-ctx.Done():
		t.Fatal("server never accepted")
	}
	// Closing the client ends the server's read loop and the handler.
	_ = client.Close()
	waitFor(t, 5*time.Second, func() bool { return finished.Load() == 1 })
}

func TestWebSocketRejectsPlainHTTP(t *testing.T) {
	called := make(chan struct{}, 1)
	srv := httptest.NewServer(WebSocketHandler(func(net.Conn) { called <- struct{}{} }, nil))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/apiws")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode < 400 {
		t.Fatalf("status %d, want an error", resp.StatusCode)
	}
	select {
	case <-called:
		t.Fatal("serve called for a non-WebSocket request")
	default:
	}
}

// TestConcurrentReadWrite runs one reader and one writer on the same Conn
// at once, as a session does; the race detector checks they share nothing.
func TestConcurrentReadWrite(t *testing.T) {
	const frames = 200
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr, ch := listen(t, Options{})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	client := dialGotd(t, nc, "obfuscated2/padded_intermediate", nil)
	defer func() { _ = client.Close() }()
	if err := client.Send(ctx, &bin.Buffer{Buf: testPayload(8)}); err != nil {
		t.Fatal(err)
	}
	r := recvAccepted(t, ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	server := r.conn

	errs := make(chan error, 4)
	go func() { // server writer
		for i := range frames {
			if err := server.WriteFrame(testPayload(8 + 4*(i%50))); err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}()
	go func() { // server reader (first frame included)
		var b bin.Buffer
		for i := range frames + 1 {
			if err := server.ReadFrame(&b); err != nil {
				errs <- err
				return
			}
			if i > 0 && !bytes.Equal(b.Buf, testPayload(12+4*(i%30))) {
				errs <- errors.New("server read wrong payload")
				return
			}
		}
		errs <- nil
	}()
	go func() { // client writer
		for i := 1; i <= frames; i++ {
			if err := client.Send(ctx, &bin.Buffer{Buf: testPayload(12 + 4*(i%30))}); err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}()
	go func() { // client reader
		for i := range frames {
			var b bin.Buffer
			if err := client.Recv(ctx, &b); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(b.Buf, testPayload(8+4*(i%50))) {
				errs <- errors.New("client read wrong payload")
				return
			}
		}
		errs <- nil
	}()
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

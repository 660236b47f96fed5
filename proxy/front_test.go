package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func newTestFront(t testing.TB, cfg FrontConfig) *Front {
	t.Helper()
	f, err := NewFront(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestSpliceTLS is the reason fronting exists: a TLS client that reaches the
// node's port gets the real site's page and certificate, although the node
// read the start of its ClientHello before deciding to splice.
func TestSpliceTLS(t *testing.T) {
	t.Parallel()
	srv := newTLSFront(t)
	f := newTestFront(t, FrontConfig{Addr: srv.Listener.Addr().String(), IdleTimeout: 5 * time.Second})
	// 5 bytes is the ClientHello's record header; 64 is what obfuscated2
	// detection consumes. Both must arrive at the front unchanged.
	for i, n := range []int{5, 64} {
		l := newSpliceListener(t, f, n)
		before := f.Stats()

		raw, err := net.Dial("tcp", l.addr())
		if err != nil {
			t.Fatal(err)
		}
		cc := &countingConn{Conn: raw}
		roots := x509.NewCertPool()
		roots.AddCert(srv.Certificate())
		tc := tls.Client(cc, &tls.Config{ServerName: "example.com", RootCAs: roots})
		_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			t.Fatalf("handshake through splice (%d bytes pre-read): %v", n, err)
		}
		if got := tc.ConnectionState().PeerCertificates[0]; !got.Equal(srv.Certificate()) {
			t.Fatal("certificate is not the front's")
		}
		if _, err := io.WriteString(tc, "GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(body) != frontPage {
			t.Fatalf("body %q, err %v", body, err)
		}
		// Read to the end of the TCP stream, past close_notify, so the
		// client has counted every byte the splice delivered; close
		// without sending anything more.
		if _, err := io.Copy(io.Discard, cc); err != nil {
			t.Fatal(err)
		}
		_ = raw.Close()
		if err := l.result(t); err != nil {
			t.Fatalf("splice ended with %v", err)
		}

		st := f.Stats()
		if st.Spliced != uint64(i+1) || st.Active != 0 || st.Limited != 0 {
			t.Fatalf("stats %+v", st)
		}
		// Bytes spliced exactly: the front got everything the client
		// wrote (the pre-read bytes included) and the client everything
		// the front wrote.
		toFront, toClient := st.BytesToFront-before.BytesToFront, st.BytesToClient-before.BytesToClient
		if toFront != uint64(cc.written.Load()) || toClient != uint64(cc.read.Load()) {
			t.Fatalf("spliced %d to front, %d to client; client wrote %d, read %d",
				toFront, toClient, cc.written.Load(), cc.read.Load())
		}
	}
}

// TestSpliceHalfClose checks that the end of the client's stream reaches
// the front as a half-close while the answer still flows back, and that the
// pre-read bytes come first.
func TestSpliceHalfClose(t *testing.T) {
	t.Parallel()
	front := newTCPFront(t, echoAtEOF)
	f := newTestFront(t, FrontConfig{Addr: front.addr(), IdleTimeout: 5 * time.Second})
	l := newSpliceListener(t, f, 5)

	c, err := net.Dial("tcp", l.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "hello, front"); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "got:hello, front" {
		t.Fatalf("got %q", got)
	}
	if err := l.result(t); err != nil {
		t.Fatalf("splice ended with %v", err)
	}
	if st := f.Stats(); st.BytesToFront != 12 || st.BytesToClient != 16 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSpliceNoHalfClose: a client connection that cannot half-close (here
// a pipe) is closed when the front finishes, and the splice ends cleanly.
func TestSpliceNoHalfClose(t *testing.T) {
	t.Parallel()
	front := newTCPFront(t, func(c net.Conn) { _, _ = io.WriteString(c, "bye") })
	f := newTestFront(t, FrontConfig{Addr: front.addr(), IdleTimeout: 5 * time.Second})
	client, conn := pipeFrom("192.0.2.1")
	run := goSplice(t, context.Background(), f, conn, nil)
	_ = client.SetDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "bye" {
		t.Fatalf("got %q, %v", got, err)
	}
	if err := run.wait(t); err != nil {
		t.Fatalf("splice ended with %v", err)
	}
}

func TestSpliceIdleTimeout(t *testing.T) {
	t.Parallel()
	front := newTCPFront(t, sink)
	f := newTestFront(t, FrontConfig{Addr: front.addr(), IdleTimeout: 100 * time.Millisecond})
	client, conn := pipeFrom("192.0.2.1")
	start := time.Now()
	run := goSplice(t, context.Background(), f, conn, []byte("x"))
	if err := run.wait(t); !errors.Is(err, ErrFrontIdle) {
		t.Fatalf("err %v, want ErrFrontIdle", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("idle after %v, before the timeout", d)
	}
	assertClosed(t, client)
}

// TestSpliceActiveNotIdle: traffic in one direction keeps the splice alive
// past several idle timeouts.
func TestSpliceActiveNotIdle(t *testing.T) {
	t.Parallel()
	front := newTCPFront(t, sink)
	f := newTestFront(t, FrontConfig{Addr: front.addr(), IdleTimeout: 150 * time.Millisecond})
	client, conn := pipeFrom("192.0.2.1")
	run := goSplice(t, context.Background(), f, conn, nil)
	_ = client.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for range 12 { // 600 ms of traffic, four idle timeouts
		if _, err := client.Write([]byte("tick")); err != nil {
			t.Fatalf("splice ended while active: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = client.Close()
	if err := run.wait(t); err != nil {
		t.Fatalf("splice ended with %v", err)
	}
}

func TestSpliceContextCancel(t *testing.T) {
	t.Parallel()
	front := newTCPFront(t, sink)
	f := newTestFront(t, FrontConfig{Addr: front.addr(), IdleTimeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	client, conn := pipeFrom("192.0.2.1")
	run := goSplice(t, ctx, f, conn, nil)
	waitFor(t, 5*time.Second, "splice to start", func() bool { return f.Stats().Spliced == 1 })
	cancel()
	if err := run.wait(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	assertClosed(t, client)
}

func TestSpliceDialFails(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	f := newTestFront(t, FrontConfig{Addr: addr})
	client, conn := pipeFrom("192.0.2.1")
	if err := f.Splice(context.Background(), conn, []byte("x")); err == nil {
		t.Fatal("splice to a closed port succeeded")
	}
	assertClosed(t, client)
	if st := f.Stats(); st.DialFailed != 1 || st.Spliced != 0 || st.Active != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSpliceConcurrencyLimit(t *testing.T) {
	t.Parallel()
	front := newTCPFront(t, sink)
	f := newTestFront(t, FrontConfig{Addr: front.addr(), MaxConcurrent: 1, IdleTimeout: time.Minute})

	held, conn := pipeFrom("192.0.2.1")
	run := goSplice(t, context.Background(), f, conn, nil)
	waitFor(t, 5*time.Second, "first splice", func() bool { return f.Stats().Spliced == 1 })

	// Another source, with tokens to spare, is refused for want of a slot.
	client, conn2 := pipeFrom("192.0.2.2")
	if err := f.Splice(context.Background(), conn2, []byte("x")); !errors.Is(err, ErrFrontLimited) {
		t.Fatalf("err %v, want ErrFrontLimited", err)
	}
	assertClosed(t, client)
	if n := front.accepted.Load(); n != 1 {
		t.Fatalf("front accepted %d connections, want 1", n)
	}

	_ = held.Close()
	if err := run.wait(t); err != nil {
		t.Fatalf("first splice ended with %v", err)
	}
	// The slot is free again.
	client3, conn3 := pipeFrom("192.0.2.2")
	run3 := goSplice(t, context.Background(), f, conn3, nil)
	waitFor(t, 5*time.Second, "third splice", func() bool { return f.Stats().Spliced == 2 })
	_ = client3.Close()
	if err := run3.wait(t); err != nil {
		t.Fatal(err)
	}
	if st := f.Stats(); st.Limited != 1 || st.Active != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSplicePerIPLimit(t *testing.T) {
	t.Parallel()
	front := newTCPFront(t, sink)
	f := newTestFront(t, FrontConfig{Addr: front.addr(), PerIPRate: 1e-6, PerIPBurst: 2, IdleTimeout: time.Minute})

	for i := range 2 {
		client, conn := pipeFrom("192.0.2.1")
		run := goSplice(t, context.Background(), f, conn, nil)
		waitFor(t, 5*time.Second, "splice", func() bool { return f.Stats().Spliced == uint64(i+1) })
		_ = client.Close()
		if err := run.wait(t); err != nil {
			t.Fatal(err)
		}
	}
	client, conn := pipeFrom("192.0.2.1")
	if err := f.Splice(context.Background(), conn, nil); !errors.Is(err, ErrFrontLimited) {
		t.Fatalf("third splice from one source: err %v, want ErrFrontLimited", err)
	}
	assertClosed(t, client)

	// Another source is not affected.
	other, conn := pipeFrom("192.0.2.2")
	run := goSplice(t, context.Background(), f, conn, nil)
	waitFor(t, 5*time.Second, "other source's splice", func() bool { return f.Stats().Spliced == 3 })
	_ = other.Close()
	if err := run.wait(t); err != nil {
		t.Fatal(err)
	}
	if n := front.accepted.Load(); n != 3 {
		t.Fatalf("front accepted %d connections, want 3", n)
	}
}

// TestRejectedSplicesLeakNothing floods a Front with 10,000 connections over
// its limits from 8 goroutines at once: first from a source out of tokens
// while a slot is free, then from 5,000 fresh sources while all slots are
// taken. None may reach the front, each must be
// closed, and no goroutine may outlive the flood. Not parallel, so the
// goroutine census sees only this test.
func TestRejectedSplicesLeakNothing(t *testing.T) {
	const total, workers = 10000, 8
	front := newTCPFront(t, sink)
	f := newTestFront(t, FrontConfig{Addr: front.addr(), MaxConcurrent: 2, PerIPRate: 1e-9, PerIPBurst: 1, IdleTimeout: time.Minute})

	// One splice from 192.0.2.1 spends its only token and one slot.
	held1, conn := pipeFrom("192.0.2.1")
	goSplice(t, context.Background(), f, conn, nil)
	waitFor(t, 5*time.Second, "first held splice", func() bool { return f.Stats().Spliced == 1 })

	flood := func(source func(i int) string) {
		t.Helper()
		ignore := goleak.IgnoreCurrent()
		deadline := time.Now().Add(30 * time.Second)
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < total/2; i += workers {
					if time.Now().After(deadline) {
						errs <- errors.New("flood took too long")
						return
					}
					client, conn := pipeFrom(source(i))
					if err := f.Splice(context.Background(), conn, []byte("probe")); !errors.Is(err, ErrFrontLimited) {
						errs <- fmt.Errorf("splice %d: %v, want ErrFrontLimited", i, err)
						return
					}
					if _, err := client.Write([]byte{0}); !errors.Is(err, io.ErrClosedPipe) {
						errs <- fmt.Errorf("splice %d: client not closed: %v", i, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		goleak.VerifyNone(t, ignore)
	}

	// Rate: a slot is free, but 192.0.2.1 has no token left.
	flood(func(int) string { return "192.0.2.1" })

	// Slots: a second held splice fills the last slot; now every source,
	// however fresh, is refused.
	held2, conn := pipeFrom("192.0.2.2")
	goSplice(t, context.Background(), f, conn, nil)
	waitFor(t, 5*time.Second, "second held splice", func() bool { return f.Stats().Spliced == 2 })
	flood(func(i int) string { return fmt.Sprintf("198.51.%d.%d", i/250, i%250+1) })

	st := f.Stats()
	if st.Limited != total || st.Active != 2 || st.Spliced != 2 {
		t.Fatalf("stats %+v", st)
	}
	if n := front.accepted.Load(); n != 2 {
		t.Fatalf("front accepted %d connections, want only the 2 held", n)
	}
	_ = held1.Close()
	_ = held2.Close()
	waitFor(t, 5*time.Second, "held splices to end", func() bool { return f.Stats().Active == 0 })
}

func TestNewFrontValidates(t *testing.T) {
	t.Parallel()
	for _, cfg := range []FrontConfig{
		{},
		{Addr: "example.com"},
		{Addr: ":443"},
		{Addr: "example.com:0"},
		{Addr: "example.com:https"},
		{Addr: "example.com:443", MaxConcurrent: -1},
		{Addr: "example.com:443", PerIPRate: -1},
		{Addr: "example.com:443", PerIPBurst: -1},
		{Addr: "example.com:443", IdleTimeout: -time.Second},
	} {
		if _, err := NewFront(cfg); !errors.Is(err, ErrFrontConfig) {
			t.Errorf("NewFront(%+v): err %v, want ErrFrontConfig", cfg, err)
		}
	}
	if _, err := NewFront(FrontConfig{Addr: "example.com:443"}); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}

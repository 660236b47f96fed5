package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// frontPage is what the stand-in front site serves.
const frontPage = "<html>the real site</html>"

// newTLSFront starts an httptest TLS server standing in for the real site.
func newTLSFront(t testing.TB) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, frontPage)
	}))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// tcpFront is a plain TCP front whose per-connection behaviour is given by
// serve. It counts the connections it accepted, which is how tests prove
// that a refused splice dialled nothing.
type tcpFront struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
}

func newTCPFront(t testing.TB, serve func(net.Conn)) *tcpFront {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &tcpFront{ln: ln}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.accepted.Add(1)
			f.mu.Lock()
			f.conns = append(f.conns, c)
			f.mu.Unlock()
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer c.Close()
				serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			_ = c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *tcpFront) addr() string { return f.ln.Addr().String() }

// sink reads until EOF and then closes: a front that never answers but
// ends when the client does.
func sink(c net.Conn) { _, _ = io.Copy(io.Discard, c) }

// echoAtEOF reads the whole request, then answers "got:" and the request.
func echoAtEOF(c net.Conn) {
	b, err := io.ReadAll(c)
	if err != nil {
		return
	}
	_, _ = c.Write(append([]byte("got:"), b...))
}

// spliceListener is the node's client listener in miniature: it accepts,
// reads the first n bytes (as a transport deciding what the client speaks
// would) and splices the connection with them.
type spliceListener struct {
	ln      net.Listener
	results chan error
}

func newSpliceListener(t testing.TB, f *Front, n int) *spliceListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &spliceListener{ln: ln, results: make(chan error, 64)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, n)
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(c, buf); err != nil {
					_ = c.Close()
					l.results <- err
					return
				}
				_ = c.SetReadDeadline(time.Time{})
				l.results <- f.Splice(ctx, c, buf)
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = ln.Close()
		wg.Wait()
	})
	return l
}

func (l *spliceListener) addr() string { return l.ln.Addr().String() }

// result waits for the next finished splice.
func (l *spliceListener) result(t testing.TB) error {
	t.Helper()
	select {
	case err := <-l.results:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("splice did not end")
		return nil
	}
}

// countingConn counts the bytes a client really sent and received.
type countingConn struct {
	net.Conn
	written, read atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// addrConn gives one end of a net.Pipe a chosen remote address, so limits
// keyed by source can be tested without thousands of sockets.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// pipeFrom returns the test's end and the Splice end of a pipe whose remote
// address is ip.
func pipeFrom(ip string) (client, server net.Conn) {
	c, s := net.Pipe()
	return c, addrConn{Conn: s, remote: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}}
}

// assertClosed checks that the Splice end of a pipe was closed: a write
// from the test's end fails at once instead of blocking.
func assertClosed(t testing.TB, client net.Conn) {
	t.Helper()
	_ = client.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Write([]byte{0}); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("client not closed: write returned %v", err)
	}
}

// spliceRun is a Splice running in its own goroutine.
type spliceRun struct {
	done chan struct{}
	err  error
}

// goSplice runs Splice in a goroutine that the test waits for at cleanup.
func goSplice(t testing.TB, ctx context.Context, f *Front, c net.Conn, read []byte) *spliceRun {
	t.Helper()
	r := &spliceRun{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = f.Splice(ctx, c, read)
	}()
	t.Cleanup(func() {
		_ = c.Close()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("splice did not end at cleanup")
		}
	})
	return r
}

// wait returns the splice's result once it has ended.
func (r *spliceRun) wait(t testing.TB) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(10 * time.Second):
		t.Fatal("splice did not end")
		return nil
	}
}

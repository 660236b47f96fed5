package transport

import (
	"bytes"
	"io"
	mrand "math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/mtproxy"
	"github.com/gotd/td/mtproxy/obfuscated2"
	"github.com/gotd/td/proto/codec"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeConn is a net.Conn over an in-memory reader and writer, for wire-level
// tests and fuzzing where a socket would only add noise.
type fakeConn struct {
	r io.Reader
	w io.Writer

	mu     sync.Mutex
	closed int
}

func newFakeConn(in []byte) (*fakeConn, *bytes.Buffer) {
	out := new(bytes.Buffer)
	return &fakeConn{r: bytes.NewReader(in), w: out}, out
}

func (f *fakeConn) Read(p []byte) (int, error)  { return f.r.Read(p) }
func (f *fakeConn) Write(p []byte) (int, error) { return f.w.Write(p) }
func (f *fakeConn) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed++
	return nil
}
func (f *fakeConn) LocalAddr() net.Addr              { return fakeAddr{} }
func (f *fakeConn) RemoteAddr() net.Addr             { return fakeAddr{} }
func (f *fakeConn) SetDeadline(time.Time) error      { return nil }
func (f *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (f *fakeConn) SetWriteDeadline(time.Time) error { return nil }

type fakeAddr struct{}

func (fakeAddr) Network() string { return "fake" }
func (fakeAddr) String() string  { return "fake:0" }

// transportNames lists every transport by the name Conn.Name reports.
var transportNames = []string{
	"abridged",
	"intermediate",
	"padded_intermediate",
	"full",
	"obfuscated2/abridged",
	"obfuscated2/intermediate",
	"obfuscated2/padded_intermediate",
}

// gotdCodec returns gotd's client codec for a transport name, with its tag
// written by WriteHeader for plain transports and suppressed inside
// obfuscated2 (where the tag travels in the header).
func gotdCodec(name string) (cdc codec.Codec, tag [4]byte, obfuscated bool) {
	inner := name
	if len(name) > len("obfuscated2/") && name[:len("obfuscated2/")] == "obfuscated2/" {
		inner, obfuscated = name[len("obfuscated2/"):], true
	}
	var tagged codec.TaggedCodec
	switch inner {
	case "abridged":
		tagged = codec.Abridged{}
	case "intermediate":
		tagged = codec.Intermediate{}
	case "padded_intermediate":
		tagged = codec.PaddedIntermediate{}
	case "full":
		return &codec.Full{}, tag, false
	default:
		panic("unknown transport " + name)
	}
	if obfuscated {
		return codec.NoHeader{Codec: tagged}, tagged.ObfuscatedTag(), true
	}
	return tagged, tagged.ObfuscatedTag(), false
}

// clientEncoder produces the bytes a gotd client sends for a transport,
// keeping codec and cipher state across calls so long streams can be made in
// batches.
type clientEncoder struct {
	out bytes.Buffer
	w   io.Writer
	cdc codec.Codec
}

// newClientEncoder writes the transport's opening bytes (tag or obfuscated2
// header) with randomness from seed, so seeds and benchmarks are repeatable.
func newClientEncoder(tb testing.TB, name string, secret []byte, seed uint64) *clientEncoder {
	tb.Helper()
	cdc, tag, obfs := gotdCodec(name)
	e := &clientEncoder{cdc: cdc}
	e.w = &e.out
	if obfs {
		var s [32]byte
		s[0] = byte(seed)
		s[1] = byte(seed >> 8)
		o := obfuscated2.NewObfuscated2(mrand.NewChaCha8(s), &e.out)
		if err := o.Handshake(tag, 2, mtproxy.Secret{Secret: secret, Type: mtproxy.Simple}); err != nil {
			tb.Fatal(err)
		}
		e.w = o
	} else if err := cdc.WriteHeader(&e.out); err != nil {
		tb.Fatal(err)
	}
	return e
}

// frame appends one frame carrying payload.
func (e *clientEncoder) frame(tb testing.TB, payload []byte) {
	tb.Helper()
	b := &bin.Buffer{Buf: append([]byte(nil), payload...)}
	if err := e.cdc.Write(e.w, b); err != nil {
		tb.Fatal(err)
	}
}

// clientStream is the whole byte stream of a gotd client sending payloads.
func clientStream(tb testing.TB, name string, secret []byte, payloads ...[]byte) []byte {
	tb.Helper()
	e := newClientEncoder(tb, name, secret, 1)
	for _, p := range payloads {
		e.frame(tb, p)
	}
	return e.out.Bytes()
}

// testPayload returns n deterministic bytes that differ per n.
func testPayload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + n)
	}
	return p
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

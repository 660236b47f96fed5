package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	mrand "math/rand/v2"
	"runtime"
	"testing"

	"github.com/gotd/td/bin"
)

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// fullFrame builds a full-transport frame by hand (so tests can break it).
func fullFrame(seq uint32, payload []byte) []byte {
	f := cat(le32(uint32(len(payload)+12)), le32(seq), payload)
	return binary.LittleEndian.AppendUint32(f, crc32.ChecksumIEEE(f))
}

func TestAcceptRecognises(t *testing.T) {
	p8 := testPayload(8)
	tests := []struct {
		name    string
		in      []byte
		opt     Options
		want    string // Name on success
		wantErr error
	}{
		{name: "abridged", in: cat([]byte{0xef, 2}, p8), want: "abridged"},
		{name: "intermediate", in: cat(le32(tagIntermediate), le32(8), p8), want: "intermediate"},
		{name: "padded", in: cat(le32(tagPadded), le32(8), p8), want: "padded_intermediate"},
		{name: "full", in: fullFrame(0, p8), want: "full"},
		{name: "obfuscated2", in: clientStream(t, "obfuscated2/abridged", nil, p8), want: "obfuscated2/abridged"},
		// Rejected as soon as the first word is seen: the stream ends right
		// after it, so reading on would report EOF instead.
		{name: "http get", in: []byte("GET /"), wantErr: ErrUnknownTransport},
		{name: "http post", in: []byte("POST"), wantErr: ErrUnknownTransport},
		{name: "http head", in: []byte("HEAD"), wantErr: ErrUnknownTransport},
		{name: "tls", in: []byte{0x16, 0x03, 0x01, 0x02}, wantErr: ErrUnknownTransport},
		{name: "obfuscation required", in: cat([]byte{0xef, 2}, p8), opt: Options{RequireObfuscation: true}, wantErr: ErrUnknownTransport},
		{name: "full with obfuscation required", in: fullFrame(0, p8), opt: Options{RequireObfuscation: true}, wantErr: ErrUnknownTransport},
		{name: "short obfuscated2 header", in: bytes.Repeat([]byte{1}, 63), wantErr: io.ErrUnexpectedEOF},
		{name: "empty", in: nil, wantErr: io.EOF},
		{name: "bad secret size", in: p8, opt: Options{Secrets: [][]byte{make([]byte, 15)}}, wantErr: ErrBadOptions},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, _ := newFakeConn(tt.in)
			c, err := Accept(nc, tt.opt)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Accept error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Name() != tt.want {
				t.Fatalf("Name() = %q, want %q", c.Name(), tt.want)
			}
			var b bin.Buffer
			if err := c.ReadFrame(&b); err != nil || !bytes.Equal(b.Buf, p8) {
				t.Fatalf("ReadFrame = %x, %v; want %x", b.Buf, err, p8)
			}
		})
	}
}

// TestGarbageHeaders feeds random 64-byte headers that pass the spec's
// client-side filters: none may decrypt to a known protocol tag.
func TestGarbageHeaders(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(1, 2))
	for i := 0; i < 500; i++ {
		hdr := make([]byte, 64)
		for j := range hdr {
			hdr[j] = byte(rng.Uint32())
		}
		if hdr[0] == 0xef || hdr[4]|hdr[5]|hdr[6]|hdr[7] == 0 || reservedPrefix(hdr) {
			continue
		}
		switch binary.LittleEndian.Uint32(hdr) {
		case tagIntermediate, tagPadded:
			continue
		}
		nc, _ := newFakeConn(hdr)
		if _, err := Accept(nc, Options{}); !errors.Is(err, ErrUnknownTransport) {
			t.Fatalf("header %x: err = %v, want ErrUnknownTransport", hdr, err)
		}
	}
}

// allocDuring reports bytes allocated while f runs.
func allocDuring(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestReadFrameErrors(t *testing.T) {
	const gib = 1 << 30
	p8 := testPayload(8)
	tests := []struct {
		name    string
		in      []byte
		frames  int // good frames before the bad one
		wantErr error
	}{
		{"abridged zero", []byte{0xef, 0}, 0, ErrBadFrame},
		{"abridged quick-ack zero", []byte{0xef, 0x80}, 0, ErrBadFrame},
		{"abridged 1GiB", []byte{0xef, 0x7f, 0, 0, 0x10}, 0, ErrFrameTooLarge},
		{"abridged truncated", cat([]byte{0xef, 3}, p8), 0, io.ErrUnexpectedEOF},
		{"intermediate zero", cat(le32(tagIntermediate), le32(0)), 0, ErrBadFrame},
		{"intermediate 1GiB", cat(le32(tagIntermediate), le32(gib)), 0, ErrFrameTooLarge},
		{"intermediate 1GiB quick-ack", cat(le32(tagIntermediate), le32(gib|1<<31)), 0, ErrFrameTooLarge},
		{"intermediate misaligned", cat(le32(tagIntermediate), le32(7), p8), 0, ErrBadFrame},
		{"padded zero", cat(le32(tagPadded), le32(0)), 0, ErrBadFrame},
		{"padded only padding", cat(le32(tagPadded), le32(3), p8), 0, ErrBadFrame},
		{"padded 1GiB", cat(le32(tagPadded), le32(gib)), 0, ErrFrameTooLarge},
		{"full zero", make([]byte, 8), 0, ErrBadFrame},
		{"full 1GiB", cat(le32(gib), le32(0)), 0, ErrFrameTooLarge},
		{"full max uint32", cat(le32(0xffffffff), le32(0)), 0, ErrFrameTooLarge},
		{"full misaligned", cat(le32(23), le32(0), make([]byte, 15)), 0, ErrBadFrame},
		{"full bad crc", func() []byte { f := fullFrame(0, p8); f[9] ^= 1; return f }(), 0, ErrBadChecksum},
		{"full repeated seqno", cat(fullFrame(0, p8), fullFrame(0, p8)), 1, ErrBadSeqNo},
		{"full skipped seqno", cat(fullFrame(0, p8), fullFrame(1, p8), fullFrame(3, p8)), 2, ErrBadSeqNo},
		{"obfuscated2 1GiB", obfuscatedRaw(t, "obfuscated2/intermediate", le32(gib)), 0, ErrFrameTooLarge},
		{"obfuscated2 abridged zero", obfuscatedRaw(t, "obfuscated2/abridged", []byte{0}), 0, ErrBadFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, _ := newFakeConn(tt.in)
			c, err := Accept(nc, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var b bin.Buffer
			for i := 0; i < tt.frames; i++ {
				if err := c.ReadFrame(&b); err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
			}
			n := allocDuring(func() { err = c.ReadFrame(&b) })
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ReadFrame error = %v, want %v", err, tt.wantErr)
			}
			if n > 256<<10 {
				t.Fatalf("allocated %d bytes on a rejected frame", n)
			}
		})
	}
}

// obfuscatedRaw returns a gotd obfuscated2 header for transport name followed
// by raw (encrypted in the client's stream), for frames gotd would not write.
func obfuscatedRaw(t *testing.T, name string, raw []byte) []byte {
	t.Helper()
	e := newClientEncoder(t, name, nil, 7)
	if _, err := e.w.Write(raw); err != nil {
		t.Fatal(err)
	}
	return e.out.Bytes()
}

// TestStalledLargeFrame: a length within the limit but data that never
// comes must not make ReadFrame commit the whole claimed buffer.
func TestStalledLargeFrame(t *testing.T) {
	in := cat(le32(tagIntermediate), le32(DefaultMaxFrameSize-4096), make([]byte, 100))
	nc, _ := newFakeConn(in)
	c, err := Accept(nc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var b bin.Buffer
	n := allocDuring(func() { err = c.ReadFrame(&b) })
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want unexpected EOF", err)
	}
	if n > 2*readChunk+16<<10 {
		t.Fatalf("allocated %d bytes for 100 bytes received", n)
	}
}

func TestQuickAckStripped(t *testing.T) {
	p := testPayload(8)
	big := testPayload(4 * 200)
	tests := []struct {
		name string
		in   []byte
		want []byte
	}{
		{"abridged", cat([]byte{0xef, 0x80 | 2}, p), p},
		{"abridged extended", cat([]byte{0xef, 0xff, 200, 0, 0}, big), big},
		{"intermediate", cat(le32(tagIntermediate), le32(8|1<<31), p), p},
		{"padded", cat(le32(tagPadded), le32(10|1<<31), p, []byte{9, 9}), p},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, _ := newFakeConn(tt.in)
			c, err := Accept(nc, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var b bin.Buffer
			if err := c.ReadFrame(&b); err != nil || !bytes.Equal(b.Buf, tt.want) {
				t.Fatalf("ReadFrame = %d bytes, %v", len(b.Buf), err)
			}
		})
	}
}

// TestPaddedIncomingLongPadding: clients may pad by up to 15 bytes; the
// whole words of padding stay (callers ignore them), the odd bytes go.
func TestPaddedIncomingLongPadding(t *testing.T) {
	p := testPayload(8)
	in := cat(le32(tagPadded), le32(8+13), p, bytes.Repeat([]byte{0xaa}, 13))
	nc, _ := newFakeConn(in)
	c, err := Accept(nc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var b bin.Buffer
	if err := c.ReadFrame(&b); err != nil {
		t.Fatal(err)
	}
	if len(b.Buf) != 20 || !bytes.Equal(b.Buf[:8], p) {
		t.Fatalf("got %x", b.Buf)
	}
	// More than 15 bytes of padding over the payload limit is too large.
	in = cat(le32(tagPadded), le32(uint32(DefaultMaxFrameSize+16)))
	nc, _ = newFakeConn(in)
	if c, err = Accept(nc, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := c.ReadFrame(&b); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v, want ErrFrameTooLarge", err)
	}
}

// TestPaddedWireFormat pins the outgoing padding to 0..3 random bytes with a
// controlled random source: first byte & 3 picks the length.
func TestPaddedWireFormat(t *testing.T) {
	p := testPayload(8)
	for pad := range 4 {
		rnd := bytes.NewReader(bytes.Repeat([]byte{byte(0xf0 | pad), 0x11, 0x22, 0x33}, 8))
		nc, out := newFakeConn(cat(le32(tagPadded)))
		c, err := Accept(nc, Options{Rand: rnd})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.WriteFrame(p); err != nil {
			t.Fatal(err)
		}
		want := cat(le32(uint32(8+pad)), p, []byte{0x11, 0x22, 0x33}[:pad])
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("pad %d: wire %x, want %x", pad, out.Bytes(), want)
		}
	}
}

func TestWireFormatOutgoing(t *testing.T) {
	p := testPayload(8)
	big := testPayload(4 * 127)
	tests := []struct {
		tag  []byte
		pay  []byte
		want []byte
	}{
		{[]byte{0xef}, p, cat([]byte{2}, p)},
		{[]byte{0xef}, big, cat([]byte{0x7f, 127, 0, 0}, big)},
		{le32(tagIntermediate), p, cat(le32(8), p)},
		{fullFrame(0, p), p, cat(fullFrame(0, p), fullFrame(1, p))},
	}
	for _, tt := range tests {
		nc, out := newFakeConn(tt.tag)
		c, err := Accept(nc, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for range bytes.Count(tt.want, tt.pay) {
			if err := c.WriteFrame(tt.pay); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(out.Bytes(), tt.want) {
			t.Fatalf("%s: wire %x, want %x", c.Name(), out.Bytes(), tt.want)
		}
	}
}

func TestWriteFrameValidation(t *testing.T) {
	nc, out := newFakeConn([]byte{0xef})
	c, err := Accept(nc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 3, 5} {
		if err := c.WriteFrame(make([]byte, n)); !errors.Is(err, ErrBadFrame) {
			t.Errorf("WriteFrame(%d bytes) = %v, want ErrBadFrame", n, err)
		}
	}
	if err := c.WriteFrame(make([]byte, maxOutgoingPayload+4)); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("WriteFrame(too large) = %v, want ErrFrameTooLarge", err)
	}
	if out.Len() != 0 {
		t.Errorf("rejected frames wrote %d bytes", out.Len())
	}
	if err := c.WriteError(-429); err != nil {
		t.Fatal(err)
	}
	if want := []byte{1, 0x53, 0xfe, 0xff, 0xff}; !bytes.Equal(out.Bytes(), want) {
		t.Errorf("error frame %x, want %x", out.Bytes(), want)
	}
}

func TestCloseIdempotent(t *testing.T) {
	nc, _ := newFakeConn([]byte{0xef})
	c, err := Accept(nc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if nc.closed != 1 {
		t.Fatalf("underlying Close called %d times, want 1", nc.closed)
	}
}

func TestReadFrameAllocFree(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, name := range transportNames {
		t.Run(name, func(t *testing.T) {
			payload := testPayload(256)
			e := newClientEncoder(t, name, nil, 3)
			for range 200 {
				e.frame(t, payload)
			}
			nc, _ := newFakeConn(e.out.Bytes())
			c, err := Accept(nc, Options{Rand: bytes.NewReader(make([]byte, 1<<16))})
			if err != nil {
				t.Fatal(err)
			}
			var b bin.Buffer
			if err := c.ReadFrame(&b); err != nil {
				t.Fatal(err)
			}
			nc.w = io.Discard
			if err := c.WriteFrame(payload); err != nil {
				t.Fatal(err)
			}
			allocs := testing.AllocsPerRun(100, func() {
				if err := c.ReadFrame(&b); err != nil {
					t.Fatal(err)
				}
				if err := c.WriteFrame(b.Buf[:256]); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Fatalf("%v allocations per frame, want 0", allocs)
			}
		})
	}
}

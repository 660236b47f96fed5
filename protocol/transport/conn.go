package transport

import (
	"bufio"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/gotd/td/bin"
)

// Conn is one accepted client connection framed by an MTProto transport.
//
// ReadFrame and WriteFrame may run concurrently with each other (one reader
// goroutine, one writer goroutine), but each must be serialised by the caller.
// After any read or write error other than a deadline the stream position is
// unknown (and for obfuscated2 the cipher state is out of step), so the
// connection must be closed.
type Conn interface {
	// ReadFrame reads the next frame's payload into b (b.Buf is reset and
	// reused). It enforces Options.MaxFrameSize before allocating: an
	// oversized or malformed length returns an error wrapping
	// ErrFrameTooLarge / ErrBadFrame. A quick-ack request bit in the length
	// is stripped; this server does not send quick acks yet.
	ReadFrame(b *bin.Buffer) error
	// WriteFrame writes one payload (len must be a positive multiple of 4)
	// as a frame. Safe for one writer at a time (callers serialise).
	WriteFrame(payload []byte) error
	// WriteError sends a transport-level error: the 4-byte little-endian
	// int32 code as it goes on the wire (negative, e.g. -404, -429) as a
	// frame. Clients treat any 4-byte frame as such an error.
	WriteError(code int32) error
	// Name reports the transport for metrics: "abridged", "intermediate",
	// "padded_intermediate", "full", "obfuscated2/<inner>" or
	// "faketls/<inner>".
	Name() string
	// SetReadDeadline sets the deadline of the underlying connection's reads.
	SetReadDeadline(t time.Time) error
	// SetWriteDeadline sets the deadline of the underlying connection's writes.
	SetWriteDeadline(t time.Time) error
	// RemoteAddr reports the client's address for logging and rate limits.
	RemoteAddr() net.Addr
	// Close closes the underlying connection. It is idempotent: only the
	// first call closes, later ones return nil.
	Close() error
}

// codecKind selects the frame format.
type codecKind uint8

const (
	kindAbridged codecKind = iota + 1
	kindIntermediate
	kindPadded
	kindFull
)

// String returns the metric name of the codec.
func (k codecKind) String() string {
	switch k {
	case kindAbridged:
		return "abridged"
	case kindIntermediate:
		return "intermediate"
	case kindPadded:
		return "padded_intermediate"
	case kindFull:
		return "full"
	default:
		return "unknown"
	}
}

const (
	// readChunk is how much buffer ReadFrame commits ahead of the data that
	// has actually arrived. A client that announces a 1 MiB frame and then
	// stalls pins at most this much plus what it sent, not the full claim.
	readChunk = 64 << 10
	// maxKeptWriteBuffer is the largest write buffer kept between frames;
	// one big response should not pin its buffer for the connection's life.
	maxKeptWriteBuffer = 256 << 10
	// fullOverhead is length + seqno + crc of the full transport.
	fullOverhead = 12
	// maxPadding is the most padding a padded intermediate client may add.
	maxPadding = 15
)

// conn implements Conn for every codec; the codec is a switch rather than an
// interface so that the hot path has no dynamic dispatch or per-codec
// allocation.
type conn struct {
	nc       net.Conn
	r        io.Reader // bufio, or a ctrReader over it for obfuscated2
	kind     codecKind
	name     string
	maxFrame int

	// Obfuscated2 state; dec is nil for plain transports.
	dec  *ctrReader
	enc  cipher.Stream
	meta Metadata
	// tls frames writes into ApplicationData records (FakeTLS); reads are
	// unframed by a tlsReader under dec.
	tls bool

	// Read side, owned by the ReadFrame caller.
	rhdr [8]byte
	rseq uint32

	// Write side, owned by the WriteFrame caller.
	wseq   uint32
	wbuf   []byte
	rnd    io.Reader
	rndBuf [32]byte
	rndPos int

	closeOnce sync.Once
	closeErr  error
}

var _ Conn = (*conn)(nil)

func newConn(nc net.Conn, br *bufio.Reader, k codecKind, opt Options) *conn {
	return &conn{
		nc:       nc,
		r:        br,
		kind:     k,
		name:     k.String(),
		maxFrame: opt.maxFrame(),
		rnd:      opt.randReader(),
		rndPos:   len(conn{}.rndBuf),
	}
}

// obfuscate switches c to the obfuscated2 stream described by o.
func (c *conn) obfuscate(o obfs) {
	c.dec = &ctrReader{r: c.r, s: o.dec}
	c.r = c.dec
	c.enc = o.enc
	c.meta = o.meta
	c.kind = o.kind
	c.name = "obfuscated2/" + o.kind.String()
}

// fakeTLS switches c to the obfuscated2 stream o carried in the TLS records
// that tr unwraps.
func (c *conn) fakeTLS(tr *tlsReader, o obfs) {
	c.r = tr
	c.obfuscate(o)
	c.tls = true
	c.name = "faketls/" + o.kind.String()
}

// Name implements Conn.
func (c *conn) Name() string { return c.name }

// SetReadDeadline implements Conn.
func (c *conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// SetWriteDeadline implements Conn.
func (c *conn) SetWriteDeadline(t time.Time) error { return c.nc.SetWriteDeadline(t) }

// RemoteAddr implements Conn.
func (c *conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Close implements Conn.
func (c *conn) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.nc.Close() })
	return c.closeErr
}

// ReadFrame implements Conn.
func (c *conn) ReadFrame(b *bin.Buffer) error {
	var err error
	switch c.kind {
	case kindAbridged:
		err = c.readAbridged(b)
	case kindIntermediate, kindPadded:
		err = c.readIntermediate(b)
	case kindFull:
		err = c.readFull(b)
	}
	if err != nil {
		return fmt.Errorf("read %s frame: %w", c.name, err)
	}
	return nil
}

func (c *conn) readAbridged(b *bin.Buffer) error {
	h := c.rhdr[:4]
	if _, err := io.ReadFull(c.r, h[:1]); err != nil {
		return fmt.Errorf("length: %w", err)
	}
	// High bit: quick-ack request. Stripped; quick acks are not sent yet.
	words := int(h[0] & 0x7f)
	if words == 0x7f {
		if _, err := io.ReadFull(c.r, h[:3]); err != nil {
			return fmt.Errorf("extended length: %w", err)
		}
		h[3] = 0
		words = int(binary.LittleEndian.Uint32(h))
	}
	if words == 0 {
		return fmt.Errorf("%w: zero length", ErrBadFrame)
	}
	if words > c.maxFrame/4 {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, words*4, c.maxFrame)
	}
	return readPayload(c.r, b, words*4)
}

func (c *conn) readIntermediate(b *bin.Buffer) error {
	h := c.rhdr[:4]
	if _, err := io.ReadFull(c.r, h); err != nil {
		return fmt.Errorf("length: %w", err)
	}
	// High bit: quick-ack request. Stripped; quick acks are not sent yet.
	n := uint64(binary.LittleEndian.Uint32(h) &^ (1 << 31))
	limit := uint64(c.maxFrame)
	if c.kind == kindPadded {
		limit += maxPadding
	}
	switch {
	case n == 0:
		return fmt.Errorf("%w: zero length", ErrBadFrame)
	case n > limit:
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, limit)
	case c.kind == kindIntermediate && n%4 != 0:
		return fmt.Errorf("%w: length %d is not a multiple of 4", ErrBadFrame, n)
	case c.kind == kindPadded && n < 4:
		return fmt.Errorf("%w: length %d holds no payload", ErrBadFrame, n)
	}
	if err := readPayload(c.r, b, int(n)); err != nil {
		return err
	}
	// Padded intermediate: the payload is a multiple of 4 and
	// self-delimiting, so drop the 0..3 odd bytes; callers tolerate any
	// whole words of padding that remain.
	b.Buf = b.Buf[:n-n%4]
	return nil
}

func (c *conn) readFull(b *bin.Buffer) error {
	h := c.rhdr[:8]
	if _, err := io.ReadFull(c.r, h); err != nil {
		return fmt.Errorf("header: %w", err)
	}
	n := uint64(binary.LittleEndian.Uint32(h[0:4]))
	switch {
	case n < fullOverhead+4:
		return fmt.Errorf("%w: length %d holds no payload", ErrBadFrame, n)
	case n-fullOverhead > uint64(c.maxFrame):
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n-fullOverhead, c.maxFrame)
	case n%4 != 0:
		return fmt.Errorf("%w: length %d is not a multiple of 4", ErrBadFrame, n)
	}
	if seq := binary.LittleEndian.Uint32(h[4:8]); seq != c.rseq {
		return fmt.Errorf("%w: got %d, want %d", ErrBadSeqNo, seq, c.rseq)
	}
	size := int(n) - fullOverhead
	if err := readPayload(c.r, b, size+4); err != nil {
		return err
	}
	sum := crc32.Update(crc32.ChecksumIEEE(h), crc32.IEEETable, b.Buf[:size])
	if sum != binary.LittleEndian.Uint32(b.Buf[size:]) {
		return ErrBadChecksum
	}
	b.Buf = b.Buf[:size]
	c.rseq++
	return nil
}

// readPayload reads exactly n bytes into b.Buf, reusing its capacity. A
// buffer larger than what is already available grows in readChunk steps as
// data arrives, so a peer's length claim alone cannot make us allocate.
func readPayload(r io.Reader, b *bin.Buffer, n int) error {
	if n <= readChunk || cap(b.Buf) >= n {
		b.ResetN(n)
		if _, err := io.ReadFull(r, b.Buf); err != nil {
			return fmt.Errorf("payload: %w", err)
		}
		return nil
	}
	buf := b.Buf[:0]
	for len(buf) < n {
		step := min(n-len(buf), readChunk)
		buf = slices.Grow(buf, step)
		start := len(buf)
		buf = buf[:start+step]
		if _, err := io.ReadFull(r, buf[start:]); err != nil {
			b.Buf = buf[:0]
			return fmt.Errorf("payload: %w", err)
		}
	}
	b.Buf = buf
	return nil
}

// WriteFrame implements Conn. The frame is assembled in one buffer (and
// encrypted there for obfuscated2, framed into TLS records there for
// FakeTLS) so it leaves in a single write: one system call on TCP, one
// message on WebSocket.
func (c *conn) WriteFrame(payload []byte) error {
	n := len(payload)
	if n == 0 || n%4 != 0 {
		return fmt.Errorf("write %s frame: %w: payload length %d is not a positive multiple of 4", c.name, ErrBadFrame, n)
	}
	if n > maxOutgoingPayload {
		return fmt.Errorf("write %s frame: %w: %d bytes, limit %d", c.name, ErrFrameTooLarge, n, maxOutgoingPayload)
	}
	buf := c.wbuf[:0]
	if c.tls {
		buf = append(buf, make([]byte, tlsHeaderSize)...) // first record header
	}
	start := len(buf)
	switch c.kind {
	case kindAbridged:
		if words := n / 4; words < 0x7f {
			buf = append(buf, byte(words))
		} else {
			buf = append(buf, 0x7f, byte(words), byte(words>>8), byte(words>>16))
		}
		buf = append(buf, payload...)
	case kindIntermediate:
		buf = binary.LittleEndian.AppendUint32(buf, uint32(n))
		buf = append(buf, payload...)
	case kindPadded:
		// Toward clients padding is 0..3 bytes, never the 0..15 clients
		// may send: gotd strips only len%4 bytes, so a whole extra word of
		// padding would corrupt its next message.
		r, err := c.randBytes(4)
		if err != nil {
			return fmt.Errorf("write %s frame: padding: %w", c.name, err)
		}
		pad := int(r[0] & 3)
		buf = binary.LittleEndian.AppendUint32(buf, uint32(n+pad))
		buf = append(buf, payload...)
		buf = append(buf, r[1:1+pad]...)
	case kindFull:
		buf = binary.LittleEndian.AppendUint32(buf, uint32(n+fullOverhead))
		buf = binary.LittleEndian.AppendUint32(buf, c.wseq)
		buf = append(buf, payload...)
		buf = binary.LittleEndian.AppendUint32(buf, crc32.ChecksumIEEE(buf[start:]))
		c.wseq++
	}
	if c.enc != nil {
		c.enc.XORKeyStream(buf[start:], buf[start:])
	}
	if c.tls {
		buf = frameRecords(buf)
	}
	_, err := c.nc.Write(buf)
	if cap(buf) <= maxKeptWriteBuffer {
		c.wbuf = buf[:0]
	} else {
		c.wbuf = nil
	}
	if err != nil {
		return fmt.Errorf("write %s frame: %w", c.name, err)
	}
	return nil
}

// WriteError implements Conn.
func (c *conn) WriteError(code int32) error {
	var p [4]byte
	binary.LittleEndian.PutUint32(p[:], uint32(code))
	return c.WriteFrame(p[:])
}

// randBytes returns n random bytes from a small refilled cache, so padding
// costs one read of the random source per several frames.
func (c *conn) randBytes(n int) ([]byte, error) {
	if c.rndPos+n > len(c.rndBuf) {
		if _, err := io.ReadFull(c.rnd, c.rndBuf[:]); err != nil {
			return nil, err
		}
		c.rndPos = 0
	}
	r := c.rndBuf[c.rndPos : c.rndPos+n]
	c.rndPos += n
	return r, nil
}

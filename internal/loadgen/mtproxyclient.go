package loadgen

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/gotd/td/mtproxy"
	"github.com/gotd/td/mtproxy/obfuscator"
)

// The mtproxy scenario's client: gotd's FakeTLS + obfuscated2 code (what a
// gotd app given an ee proxy link runs) carrying padded intermediate
// frames that the upstream echoes. Neither proxy looks inside the frames,
// so they need not be MTProto.

// paddedTag is the obfuscated2 header's protocol tag of the padded
// intermediate transport: frames are a 4-byte little-endian length and
// the payload, optionally followed by up to 15 bytes of padding (none
// here). It is what apps speak inside ee secrets, and the only tag mtg
// accepts there.
var paddedTag = [4]byte{0xdd, 0xdd, 0xdd, 0xdd}

// maxTLSPayload is the largest TLS record a client sends (RFC 8446's
// 2^14): writes are split so that neither proxy sees oversized records.
const maxTLSPayload = 16384

// ptConn is a net.Conn whose reads are buffered and whose writes are
// buffered once the handshake is over (gotd's FakeTLS writes a record's
// header and body separately: three syscalls a record unbuffered).
type ptConn struct {
	net.Conn
	r        *bufio.Reader
	w        *bufio.Writer
	buffered bool
}

func (c *ptConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *ptConn) Write(p []byte) (int, error) {
	if c.buffered {
		return c.w.Write(p)
	}
	return c.Conn.Write(p)
}

// proxyConn is one client connection through an MTProxy with an ee secret.
type proxyConn struct {
	raw *ptConn
	obf *obfuscator.Conn
	hdr [4]byte
	out []byte // the first record of a frame: length and payload start
}

// dialProxy connects to an MTProxy at addr with the ee secret, asking for
// DC dc, and completes the FakeTLS and obfuscated2 handshakes.
func dialProxy(ctx context.Context, addr string, secret []byte, dc int) (*proxyConn, error) {
	s, err := mtproxy.ParseSecret(secret)
	if err != nil {
		return nil, fmt.Errorf("parse secret: %w", err)
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial proxy: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	raw := &ptConn{Conn: nc, r: bufio.NewReaderSize(nc, 64<<10), w: bufio.NewWriterSize(nc, 64<<10)}
	obf := obfuscator.FakeTLS(rand.Reader, raw)
	if err := obf.Handshake(paddedTag, dc, s); err != nil {
		nc.Close()
		return nil, fmt.Errorf("proxy handshake: %w", err)
	}
	raw.buffered = true
	_ = nc.SetDeadline(time.Time{})
	return &proxyConn{raw: raw, obf: obf}, nil
}

// writeFrame sends payload as one intermediate frame, in TLS records of
// at most maxTLSPayload, and flushes.
func (c *proxyConn) writeFrame(payload []byte) error {
	binary.LittleEndian.PutUint32(c.hdr[:], uint32(len(payload)))
	first := maxTLSPayload - len(c.hdr)
	if first > len(payload) {
		first = len(payload)
	}
	// The length goes in the first record with the payload's start.
	c.out = append(append(c.out[:0], c.hdr[:]...), payload[:first]...)
	if _, err := c.obf.Write(c.out); err != nil {
		return err
	}
	for rest := payload[first:]; len(rest) > 0; {
		n := min(len(rest), maxTLSPayload)
		if _, err := c.obf.Write(rest[:n]); err != nil {
			return err
		}
		rest = rest[n:]
	}
	return c.raw.w.Flush()
}

// maxPadding is the padding a padded intermediate frame may carry; a
// proxy may pad what it sends (mtnode does), so echoes can be longer.
const maxPadding = 15

// readFrame reads one frame into buf (grown as needed) and returns it,
// padding included.
func (c *proxyConn) readFrame(buf []byte, max int) ([]byte, error) {
	max += maxPadding
	var hdr [4]byte
	if _, err := io.ReadFull(c.obf, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.LittleEndian.Uint32(hdr[:]))
	if n <= 0 || n > max {
		return nil, fmt.Errorf("echoed frame of %d bytes (max %d)", n, max)
	}
	if cap(buf) < n {
		buf = make([]byte, n, max)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(c.obf, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// roundTrip sends p and waits for its echo, within d.
func (c *proxyConn) roundTrip(p []byte, d time.Duration) error {
	_ = c.raw.SetDeadline(time.Now().Add(d))
	defer c.raw.SetDeadline(time.Time{})
	if err := c.writeFrame(p); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	got, err := c.readFrame(nil, len(p))
	if err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if len(got) < len(p) || string(got[:len(p)]) != string(p) {
		return errors.New("echo differs from what was sent")
	}
	return nil
}

func (c *proxyConn) Close() error { return c.raw.Close() }

// plainRoundTrips measures the floor: the same frames to a bare TCP echo
// on loopback, no proxy and no obfuscation, for d or n round trips.
func plainRoundTrips(ctx context.Context, addr string, payload []byte, d time.Duration, n int) (*hist, error) {
	var dl net.Dialer
	nc, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	frame := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)))
	frame = append(frame, payload...)
	got := make([]byte, len(frame))
	h := &hist{}
	end := time.Now().Add(d)
	_ = nc.SetDeadline(end.Add(5 * time.Second))
	for i := 0; i < n && time.Now().Before(end) && ctx.Err() == nil; i++ {
		t0 := time.Now()
		if _, err := nc.Write(frame); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(nc, got); err != nil {
			return nil, err
		}
		h.record(time.Since(t0))
	}
	return h, nil
}

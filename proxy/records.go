package proxy

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// TLS record content types (RFC 8446, section 5.1).
const (
	recordChangeCipherSpec = 20
	recordAlert            = 21
	recordHandshake        = 22
	recordApplicationData  = 23
)

const (
	recordHeaderLen = 5

	// maxRecordPayload is the largest record length a TLS 1.3 peer may
	// send: 2^14 bytes of plaintext plus 256 of expansion (RFC 8446, 5.2).
	maxRecordPayload = 1<<14 + 256

	// learnTimeout bounds LearnRecordSizes when ctx has no deadline.
	learnTimeout = 10 * time.Second

	// maxLearnBytes bounds what LearnRecordSizes reads from the front. A
	// first flight is a few KiB; long certificate chains stay well below.
	maxLearnBytes = 256 << 10

	// maxLearnRecords bounds the records LearnRecordSizes remembers.
	maxLearnRecords = 64
)

// ErrBadRecord means the front sent bytes that are not a TLS record stream,
// or more than LearnRecordSizes is willing to read.
var ErrBadRecord = errors.New("bad tls record stream")

// LearnRecordSizes connects to the front at frontAddr as a TLS 1.3 client
// offering ALPN h2 and http/1.1 (as browsers and FakeTLS clients do; the
// server's EncryptedExtensions depend on it), completes the handshake, and
// returns the payload lengths, in order, of the ApplicationData records the
// server sent before the handshake completed. In TLS 1.3 those are the
// encrypted rest of the server's first flight after ServerHello and
// ChangeCipherSpec (EncryptedExtensions, Certificate, CertificateVerify,
// Finished, however the server groups them into records), which is what a
// FakeTLS answer imitates. A server that sends 0.5-RTT data right after its
// Finished may add a record to the list. A front that does not speak TLS
// 1.3 is an error: FakeTLS imitates 1.3 only.
//
// serverName is sent as SNI; empty means frontAddr's host unless that is an
// IP literal. The whole measurement is bounded by ctx, by 10 seconds when
// ctx has no deadline, and by 256 KiB read.
func LearnRecordSizes(ctx context.Context, frontAddr, serverName string) ([]int, error) {
	host, _, err := net.SplitHostPort(frontAddr)
	if err != nil {
		return nil, fmt.Errorf("front address %q: %w", frontAddr, err)
	}
	if serverName == "" {
		if _, err := netip.ParseAddr(host); err != nil {
			serverName = host
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, learnTimeout)
		defer cancel()
	}

	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", frontAddr)
	if err != nil {
		return nil, fmt.Errorf("dial front: %w", err)
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		if err := raw.SetDeadline(dl); err != nil {
			return nil, fmt.Errorf("set deadline: %w", err)
		}
	}

	rc := &recordConn{Conn: raw, limit: maxLearnBytes}
	tc := tls.Client(rc, &tls.Config{
		ServerName: serverName,
		// Only sizes are measured and nothing is sent over this
		// connection, so the certificate is not verified: a front with a
		// private or expired certificate is still worth imitating, and
		// verification would not change a single byte of what we measure.
		InsecureSkipVerify: true, //nolint:gosec // measurement only, see above
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{"h2", "http/1.1"},
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("tls handshake with front: %w", err)
	}
	sizes := rc.scan.sizes(recordApplicationData)
	if len(sizes) == 0 {
		return nil, fmt.Errorf("%w: front sent no encrypted handshake records", ErrBadRecord)
	}
	return sizes, nil
}

// recordConn is a net.Conn that follows the TLS records in what it reads,
// and fails once more than limit bytes have been read.
type recordConn struct {
	net.Conn
	limit int
	read  int
	scan  recordScanner
}

func (c *recordConn) Read(p []byte) (int, error) {
	if c.read >= c.limit {
		return 0, fmt.Errorf("%w: more than %d bytes", ErrBadRecord, c.limit)
	}
	if len(p) > c.limit-c.read {
		p = p[:c.limit-c.read]
	}
	n, err := c.Conn.Read(p)
	c.read += n
	if ferr := c.scan.feed(p[:n]); ferr != nil {
		return n, ferr
	}
	return n, err
}

// tlsRecord is one record header seen on the wire.
type tlsRecord struct {
	typ    uint8
	length int
}

// recordScanner splits a byte stream, fed in arbitrary pieces, into TLS
// record headers. It keeps at most maxLearnRecords of them and stops at the
// first header that is not a plausible TLS 1.x record.
type recordScanner struct {
	hdr       [recordHeaderLen]byte
	nhdr      int // bytes of hdr filled
	remaining int // payload bytes of the current record still to skip
	records   []tlsRecord
	err       error
}

// feed consumes p. After an error every later call returns the same error.
func (s *recordScanner) feed(p []byte) error {
	for len(p) > 0 && s.err == nil {
		if s.remaining > 0 {
			k := min(len(p), s.remaining)
			s.remaining -= k
			p = p[k:]
			continue
		}
		k := copy(s.hdr[s.nhdr:], p)
		s.nhdr += k
		p = p[k:]
		if s.nhdr < recordHeaderLen {
			break
		}
		s.nhdr = 0
		typ, major := s.hdr[0], s.hdr[1]
		length := int(binary.BigEndian.Uint16(s.hdr[3:]))
		switch {
		case typ < recordChangeCipherSpec || typ > recordApplicationData:
			s.err = fmt.Errorf("%w: record type %d", ErrBadRecord, typ)
		case major != 3:
			s.err = fmt.Errorf("%w: record version %#02x%02x", ErrBadRecord, major, s.hdr[2])
		case length > maxRecordPayload:
			s.err = fmt.Errorf("%w: record length %d", ErrBadRecord, length)
		case len(s.records) >= maxLearnRecords:
			s.err = fmt.Errorf("%w: more than %d records", ErrBadRecord, maxLearnRecords)
		default:
			s.records = append(s.records, tlsRecord{typ: typ, length: length})
			s.remaining = length
		}
	}
	return s.err
}

// sizes returns the payload lengths of the records of type typ, in order.
func (s *recordScanner) sizes(typ uint8) []int {
	var out []int
	for _, r := range s.records {
		if r.typ == typ {
			out = append(out, r.length)
		}
	}
	return out
}

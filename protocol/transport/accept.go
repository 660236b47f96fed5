package transport

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// DefaultMaxFrameSize is the largest client payload accepted when
// Options.MaxFrameSize is zero: 1 MiB, twice the largest file part clients
// upload (512 KiB), plus 4 KiB for the MTProto envelope and the request
// wrapping the part.
const DefaultMaxFrameSize = 1<<20 + 4096

// maxOutgoingPayload is the largest payload WriteFrame sends. Clients (gotd,
// tdlib) refuse frames whose length field exceeds 16 MiB, and the length field
// of the full and padded transports also counts framing bytes, so stay below.
const maxOutgoingPayload = 1<<24 - 16

// readBufferSize is the per-connection read buffer. It must hold the whole
// 64-byte obfuscated2 header so Accept can peek at it; 4 KiB lets a small
// frame's length and payload arrive in one read system call.
const readBufferSize = 4096

// Protocol tags as they appear on the wire (little-endian uint32 of the
// first four bytes, or of bytes 56..60 of a decrypted obfuscated2 header).
const (
	tagAbridged     = 0xefefefef
	tagIntermediate = 0xeeeeeeee
	tagPadded       = 0xdddddddd
	abridgedByte    = 0xef
)

// Options configure Accept. The zero value is valid: plain obfuscated2,
// DefaultMaxFrameSize and crypto/rand.
type Options struct {
	// MaxFrameSize bounds the payload of every frame read from the client.
	// Zero means DefaultMaxFrameSize. Lengths above it fail with
	// ErrFrameTooLarge before anything is allocated.
	MaxFrameSize int

	// Secrets are MTProxy secrets, 16 bytes each (without the 0xdd / 0xee
	// prefix used in proxy links). Each adds a candidate key for the
	// obfuscated2 header next to the secretless one (see RequireSecret);
	// every candidate is tried with the same amount of work so timing does
	// not reveal which one matched.
	Secrets [][]byte

	// RequireSecret drops the secretless candidate: an obfuscated2 header
	// must decrypt under one of Secrets (with no Secrets, none can). A
	// public MTProxy port sets it; a node's own client port leaves it off
	// so that clients dialling the DC directly keep working.
	RequireSecret bool

	// RequireObfuscation rejects the unobfuscated transports (abridged,
	// intermediate, padded intermediate, full). An MTProxy port sets it so
	// that its traffic never shows a fixed pattern.
	RequireObfuscation bool

	// FakeTLS are the "ee" secrets. When non-empty, a connection opening
	// with a TLS handshake record must carry a ClientHello that validates
	// under one of them (MAC, SNI, TimeWindow, Replays); the server answers
	// as a TLS 1.3 server would and the obfuscated2 stream, keyed with the
	// matched Key, follows in ApplicationData records.
	FakeTLS []FakeTLSSecret

	// Replays remembers accepted ClientHellos, and the headers of
	// obfuscated2 connections that matched one of Secrets (a replay of
	// either is refused with reason "replay"); required with FakeTLS and
	// shared by every Accept of a listener (or of all listeners sharing
	// the secrets). Secretless obfuscated2 is not checked: replaying it
	// reveals nothing the port does not show anyone.
	Replays *ReplayCache

	// TLSRecordSizes is the payload size of the ApplicationData record sent
	// after ServerHello and ChangeCipherSpec, standing for the encrypted
	// certificate chain; the caller measures it on the front site. At most
	// one entry: tdlib and gotd read exactly one such record and take
	// anything after it for the MTProto stream. Nil means a size in
	// 2500..3619 fixed per secret (DESIGN.md).
	TLSRecordSizes []int

	// Now is the clock for the FakeTLS time window and the replay cache.
	// Nil means time.Now.
	Now func() time.Time

	// Rand supplies the random padding of padded intermediate frames and
	// the random parts of a FakeTLS answer. Nil means crypto/rand.Reader.
	// Tests inject a deterministic reader.
	Rand io.Reader
}

// maxFrame returns the effective read bound.
func (o Options) maxFrame() int {
	if o.MaxFrameSize <= 0 {
		return DefaultMaxFrameSize
	}
	return o.MaxFrameSize
}

// validate reports configuration errors early, at the first Accept, rather
// than as mysteriously rejected clients.
func (o Options) validate() error {
	for i, s := range o.Secrets {
		if len(s) != secretSize {
			return fmt.Errorf("%w: secret %d has %d bytes, want %d", ErrBadOptions, i, len(s), secretSize)
		}
	}
	for i, s := range o.FakeTLS {
		if s.Domain == "" || len(s.Domain) > 255 {
			return fmt.Errorf("%w: FakeTLS secret %d has a domain of %d bytes", ErrBadOptions, i, len(s.Domain))
		}
	}
	if len(o.FakeTLS) > 0 && o.Replays == nil {
		return fmt.Errorf("%w: FakeTLS without a ReplayCache", ErrBadOptions)
	}
	if len(o.TLSRecordSizes) > 1 {
		return fmt.Errorf("%w: %d TLS record sizes, clients read one record", ErrBadOptions, len(o.TLSRecordSizes))
	}
	for _, n := range o.TLSRecordSizes {
		if n < 1 || n > maxTLSRecord {
			return fmt.Errorf("%w: TLS record size %d, want 1..%d", ErrBadOptions, n, maxTLSRecord)
		}
	}
	return nil
}

// now reads the configured clock.
func (o Options) now() time.Time {
	if o.Now == nil {
		return time.Now()
	}
	return o.Now()
}

// Accept reads the first bytes of c, recognises the transport and returns the
// framed Conn. It reads no further than the transport header (nothing at all
// for the full transport), so the first frame is left for ReadFrame. For
// FakeTLS it also writes the server's handshake answer.
//
// The caller sets a read deadline on c first: a client that sends too few
// bytes would otherwise hold the goroutine forever. Accept does not close c
// on error. A *RejectedError carries every byte read, for the caller to
// hand the connection to a front site; on other errors the caller closes c
// without replying (see ErrUnknownTransport).
func Accept(c net.Conn, opt Options) (Conn, error) {
	if err := opt.validate(); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(c, readBufferSize)
	plain := func(k codecKind, discard int) (Conn, error) {
		if opt.RequireObfuscation {
			return nil, rejected(br, nil, reasonPlain, fmt.Errorf("plain %s transport while obfuscation is required", k))
		}
		if _, err := br.Discard(discard); err != nil {
			return nil, fmt.Errorf("skip transport tag: %w", err)
		}
		return newConn(c, br, k, opt), nil
	}

	p, err := peek(br, 1)
	if err != nil {
		return nil, readFailed(br, nil, "read transport tag", err)
	}
	if p[0] == abridgedByte {
		return plain(kindAbridged, 1)
	}

	p, err = peek(br, 4)
	if err != nil {
		return nil, readFailed(br, nil, "read transport tag", err)
	}
	switch first := binary.LittleEndian.Uint32(p); {
	case first == tagIntermediate:
		return plain(kindIntermediate, 4)
	case first == tagPadded:
		return plain(kindPadded, 4)
	case isTLSRecord(p) && len(opt.FakeTLS) > 0:
		return acceptFakeTLS(c, br, opt)
	case reservedPrefix(p):
		reason := reasonHTTP
		if p[0] == recordHandshake {
			reason = reasonTLS // FakeTLS is off, or an odd version (3.0, 3.2, 3.4)
			if len(opt.FakeTLS) > 0 {
				reason = reasonMalformed
			}
		}
		return nil, rejected(br, nil, reason, fmt.Errorf("first bytes %q", p))
	}

	p, err = peek(br, 8)
	if err != nil {
		return nil, readFailed(br, nil, "read transport header", err)
	}
	if binary.LittleEndian.Uint32(p[4:8]) == 0 {
		// Full transport: length then sequence number 0. An obfuscated2
		// header never has zero there (clients regenerate such headers).
		return plain(kindFull, 0)
	}

	p, err = peek(br, obfsHeaderSize)
	if err != nil {
		return nil, readFailed(br, nil, "read obfuscated2 header", err)
	}
	var hdr [obfsHeaderSize]byte
	copy(hdr[:], p)
	o, err := parseObfuscated2(&hdr, opt.Secrets, !opt.RequireSecret)
	if err != nil {
		return nil, rejected(br, nil, reasonNoSecret, err)
	}
	if o.meta.SecretIndex >= 0 && opt.Replays != nil {
		// The header's first 16 random bytes (after the 8 that only
		// avoid other protocols' prefixes) key the cache: a client draws
		// them afresh for every connection.
		var key [16]byte
		copy(key[:], hdr[8:24])
		if opt.Replays.seen(key, opt.now()) {
			return nil, rejected(br, nil, reasonReplay, errors.New("obfuscated2 header seen before"))
		}
	}
	if _, err := br.Discard(obfsHeaderSize); err != nil {
		return nil, fmt.Errorf("skip obfuscated2 header: %w", err)
	}
	conn := newConn(c, br, o.kind, opt)
	conn.obfuscate(o)
	return conn, nil
}

// peek is bufio.Reader.Peek that reports a stream ending inside the header
// as io.ErrUnexpectedEOF, keeping a bare io.EOF for a client that sent
// nothing at all.
func peek(br *bufio.Reader, n int) ([]byte, error) {
	p, err := br.Peek(n)
	if errors.Is(err, io.EOF) && len(p) > 0 {
		err = io.ErrUnexpectedEOF
	}
	return p, err
}

// reservedPrefix reports first words that clients must never start an
// obfuscated2 header with because they belong to other protocols: HTTP
// methods and a TLS handshake record. Rejecting them here answers a prober
// at once instead of waiting for 64 bytes that never come.
func reservedPrefix(p []byte) bool {
	switch string(p[:4]) {
	case "HEAD", "POST", "GET ", "OPTI", "PUT ", "DELE", "PATC", "CONN", "PRI ":
		return true
	}
	// TLS record: handshake (0x16), version 3.x, when FakeTLS is off.
	return p[0] == recordHandshake && p[1] == 0x03
}

// randReader returns the configured randomness source.
func (o Options) randReader() io.Reader {
	if o.Rand == nil {
		return rand.Reader
	}
	return o.Rand
}

// Busy answers a connection that will not be served (the server is at its
// connection limit) with a transport error code, as a Telegram DC answers
// -429, in whatever transport the client speaks, then closes it. The
// transport header is read and answered within d; a connection that is
// not recognised in time is closed without an answer. The caller bounds
// how many Busy answers run at once: they cost a goroutine each for up
// to d.
func Busy(c net.Conn, opt Options, code int32, d time.Duration) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(d))
	tc, err := Accept(c, opt)
	if err != nil {
		return
	}
	_ = tc.WriteError(code)
}

package transport

import (
	"bufio"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"
)

// FakeTLS (MTProxy "ee" secrets): the client opens with a TLS 1.3
// ClientHello whose random field is a MAC under the secret, the server
// answers with a ServerHello whose random is a MAC over the client's random
// and the whole answer, and the obfuscated2 stream then travels inside
// ApplicationData records. See DESIGN.md for the wire layout and the
// reasoning behind the limits below.

// TimeWindow is how far the timestamp a FakeTLS client hides in its
// ClientHello random may lie from the server's clock, either way.
//
// Two minutes: tdlib corrects the timestamp by the server time difference
// it learned over MTProto, so its error is seconds; gotd and first
// connections use the device clock, which an unsynchronised phone can have
// off by tens of seconds. mtg accepts a few seconds by default, the official
// MTProxy 10 minutes in the past and 3 s in the future. The window does not
// bound replays (the timestamp bytes are malleable, see ReplayCache); it
// bounds how stale an unmodified captured hello may be and sets the
// ReplayCache TTL floor (twice the window).
const TimeWindow = 2 * time.Minute

const (
	// tlsHeaderSize is a TLS record header: type, version, length.
	tlsHeaderSize = 5
	// maxTLSPayload is the largest plaintext record (RFC 8446 §5.1); our
	// ApplicationData records carry at most this much.
	maxTLSPayload = 1 << 14
	// maxTLSRecord bounds every record a client sends (ClientHello
	// included) and every fake record we send: the TLSCiphertext limit,
	// 2^14 + 256 (RFC 8446 §5.2). tdlib sends records of at most 2878
	// bytes; gotd sends one record per write and so exceeds this with
	// frames over 16 KiB.
	maxTLSRecord = maxTLSPayload + 256
	// maxClientDataRecord bounds an ApplicationData record a client sends
	// after the handshake. gotd writes each MTProto frame as one record,
	// so the TLS limit would cut its frames over 16 KiB; like the official
	// MTProxy and mtg, we take records up to 64 KiB (the length field's
	// range), which the reader streams through without buffering whole.
	maxClientDataRecord = 1<<16 - 1

	recordChangeCipherSpec = 0x14
	recordHandshake        = 0x16
	recordApplicationData  = 0x17

	// clientRandomOffset is where the 32-byte random sits in a ClientHello
	// record: record header (5), handshake type (1) and length (3), legacy
	// version (2). The ServerHello random sits at the same offset.
	clientRandomOffset = 11
	randomSize         = 32
	// minClientHello is the shortest record that reaches the session id
	// length byte; parseClientHello checks the rest field by field.
	minClientHello = clientRandomOffset + randomSize + 1

	// defaultRecordBase and defaultRecordSpan: without TLSRecordSizes the
	// fake ApplicationData record is 2500..3619 bytes, the range the
	// official MTProxy uses when it cannot measure its front, a typical
	// size for an encrypted certificate chain.
	defaultRecordBase = 2500
	defaultRecordSpan = 1120

	// defaultReplayEntries is the ReplayCache bound when NewReplayCache is
	// given none.
	defaultReplayEntries = 1 << 16
)

// FakeTLSSecret is one FakeTLS ("ee") MTProxy secret: the 16-byte key and
// the domain clients put in the ClientHello's server_name, which is also
// the site a refused connection should be handed to.
type FakeTLSSecret struct {
	// Key is the secret proper, the 16 bytes after "ee" in a proxy link.
	Key [16]byte
	// Domain is the cloak host, the bytes after the key in a proxy link.
	// A ClientHello validates only if its SNI equals it exactly.
	Domain string
}

// Rejection reasons reported in RejectedError.Reason.
const (
	reasonMalformed = "malformed" // a TLS record or ClientHello that does not parse
	reasonBadHMAC   = "bad-hmac"  // ClientHello random matches no FakeTLS key
	reasonSNI       = "sni"       // key matched, server_name is not its domain
	reasonTime      = "time"      // key matched, timestamp outside TimeWindow
	reasonReplay    = "replay"    // valid hello whose random was seen before
	reasonNoSecret  = "no-secret" // obfuscated2 header matches no candidate
	reasonHTTP      = "http"      // HTTP method as the first word
	reasonTLS       = "tls"       // TLS record while FakeTLS is not configured
	reasonPlain     = "plain"     // plain transport while obfuscation is required
	reasonTimeout   = "timeout"   // read deadline before the transport was known
)

// RejectedError is returned by Accept for a connection it refuses that need
// not be a broken MTProto client: a prober, a browser, a replayed or
// forged ClientHello. Read is everything Accept took from the connection,
// in order, so the caller can replay it to the front site (the FakeTLS
// domain) byte for byte and splice the two connections; a censor then sees
// the front's own answer. It matches ErrUnknownTransport with errors.Is, and
// for Reason "timeout" also the deadline error.
//
// Failures after a valid FakeTLS handshake (the client proved it holds a
// secret, and it has seen our answer) are plain errors, not RejectedError:
// there is nothing left to front.
type RejectedError struct {
	// Reason names the check that failed, for metrics: "malformed",
	// "bad-hmac", "sni", "time", "replay" (FakeTLS ClientHello);
	// "no-secret" (obfuscated2 header matching no candidate); "http", "tls"
	// (a prefix of another protocol; "tls" only when FakeTLS is off);
	// "plain" (unobfuscated transport under RequireObfuscation); "timeout"
	// (the read deadline passed before the transport was recognised).
	Reason string
	// Read holds every byte read from the net.Conn, including what the
	// read buffer took beyond the bytes inspected. Owned by the caller.
	Read []byte

	cause error
}

// Error implements error.
func (e *RejectedError) Error() string {
	return fmt.Sprintf("%v: %s: %v (%d bytes read)", ErrUnknownTransport, e.Reason, e.cause, len(e.Read))
}

// Unwrap makes errors.Is match ErrUnknownTransport and the cause.
func (e *RejectedError) Unwrap() []error {
	return []error{ErrUnknownTransport, e.cause}
}

// rejected builds a RejectedError with everything read so far: consumed is
// what Accept has already taken out of br (a ClientHello), followed by all
// br still buffers.
func rejected(br *bufio.Reader, consumed []byte, reason string, cause error) *RejectedError {
	buffered, _ := br.Peek(br.Buffered())
	read := make([]byte, 0, len(consumed)+len(buffered))
	read = append(append(read, consumed...), buffered...)
	return &RejectedError{Reason: reason, Read: read, cause: cause}
}

// readFailed turns a read error before the transport is known into the
// error Accept returns: a deadline becomes a RejectedError (a real server
// would keep waiting, so the front should decide), anything else, EOF
// included, stays an I/O error since the peer sends nothing more.
func readFailed(br *bufio.Reader, consumed []byte, step string, err error) error {
	err = fmt.Errorf("%s: %w", step, err)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return rejected(br, consumed, reasonTimeout, err)
	}
	return err
}

// isTLSRecord reports a TLS handshake record header in the first word:
// 0x16, version 3.1 (what ClientHellos use) or 3.3. A random obfuscated2
// header starts so with probability 2^-23.
func isTLSRecord(p []byte) bool {
	return p[0] == recordHandshake && p[1] == 0x03 && (p[2] == 0x01 || p[2] == 0x03)
}

// acceptFakeTLS runs the server side of a FakeTLS handshake on a connection
// whose first bytes are a TLS handshake record, then reads the obfuscated2
// header inside the ApplicationData stream.
func acceptFakeTLS(c net.Conn, br *bufio.Reader, opt Options) (Conn, error) {
	p, err := peek(br, tlsHeaderSize)
	if err != nil {
		return nil, readFailed(br, nil, "read TLS record header", err)
	}
	n := int(binary.BigEndian.Uint16(p[3:5]))
	if n+tlsHeaderSize < minClientHello || n > maxTLSRecord {
		return nil, rejected(br, nil, reasonMalformed, fmt.Errorf("ClientHello record of %d bytes", n))
	}
	hello := make([]byte, tlsHeaderSize+n)
	if got, err := io.ReadFull(br, hello); err != nil {
		return nil, readFailed(br, hello[:got], "read ClientHello", err)
	}

	now := opt.now()
	h, reason, err := verifyClientHello(hello, opt.FakeTLS, now)
	if err != nil {
		return nil, rejected(br, hello, reason, err)
	}
	var key [16]byte
	copy(key[:], h.random[:])
	if opt.Replays.seen(key, now) {
		return nil, rejected(br, hello, reasonReplay, errors.New("ClientHello random seen before"))
	}

	secret := opt.FakeTLS[h.index]
	answer, err := serverHello(secret, h, opt.TLSRecordSizes, opt.randReader())
	if err != nil {
		return nil, fmt.Errorf("build ServerHello: %w", err)
	}
	if _, err := c.Write(answer); err != nil {
		return nil, fmt.Errorf("write ServerHello: %w", err)
	}

	tr := &tlsReader{r: br}
	var hdr [obfsHeaderSize]byte
	if _, err := io.ReadFull(tr, hdr[:]); err != nil {
		return nil, fmt.Errorf("read obfuscated2 header in FakeTLS: %w", err)
	}
	o, err := parseObfuscated2(&hdr, [][]byte{secret.Key[:]}, false)
	if err != nil {
		return nil, fmt.Errorf("obfuscated2 header in FakeTLS: %w", err)
	}
	o.meta.SecretIndex = h.index
	o.meta.Kind = "faketls"
	conn := newConn(c, br, o.kind, opt)
	conn.fakeTLS(tr, o)
	return conn, nil
}

// clientHello is what a validated ClientHello contributes to the answer.
type clientHello struct {
	index     int // in Options.FakeTLS
	random    [randomSize]byte
	sessionID []byte // aliases the record
}

// verifyClientHello checks a whole ClientHello record against every secret
// with the same work each (an HMAC over the record), picks the first whose
// MAC and domain match in constant time, and checks its timestamp. On
// failure it returns the RejectedError reason. The record is restored
// before returning, so it can be handed back unchanged.
func verifyClientHello(rec []byte, secrets []FakeTLSSecret, now time.Time) (clientHello, string, error) {
	sessionID, sni, err := parseClientHello(rec)
	if err != nil {
		return clientHello{}, reasonMalformed, err
	}
	var h clientHello
	h.sessionID = sessionID
	random := rec[clientRandomOffset : clientRandomOffset+randomSize]
	copy(h.random[:], random)
	clear(random)
	defer copy(random, h.random[:])

	var (
		found, macOK int
		chosen       int
		stamp        uint32
		mac          [sha256.Size]byte
	)
	for i, s := range secrets {
		m := hmac.New(sha256.New, s.Key[:])
		m.Write(rec)
		m.Sum(mac[:0])
		valid := subtle.ConstantTimeCompare(mac[:randomSize-4], h.random[:randomSize-4])
		named := subtle.ConstantTimeCompare([]byte(s.Domain), sni)
		take := valid & named &^ found
		ts := binary.LittleEndian.Uint32(mac[randomSize-4:]) ^ binary.LittleEndian.Uint32(h.random[randomSize-4:])
		chosen = subtle.ConstantTimeSelect(take, i, chosen)
		stamp = uint32(subtle.ConstantTimeSelect(take, int(ts), int(stamp)))
		found |= take
		macOK |= valid
	}
	switch {
	case found == 0 && macOK == 0:
		return clientHello{}, reasonBadHMAC, errors.New("ClientHello random matches no FakeTLS secret")
	case found == 0:
		return clientHello{}, reasonSNI, fmt.Errorf("ClientHello server_name %q is not the secret's domain", sni)
	}
	window := int64(TimeWindow / time.Second)
	if d := int64(stamp) - now.Unix(); d < -window || d > window {
		return clientHello{}, reasonTime, fmt.Errorf("ClientHello timestamp %d s off the clock", d)
	}
	h.index = chosen
	return h, "", nil
}

// reader is a bounds-checked cursor over a handshake message; every read
// past the end sets bad and returns zero values, so parsers check once.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) bytes(n int) []byte {
	if r.bad || n < 0 || n > len(r.b) {
		r.bad = true
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) u8() int {
	p := r.bytes(1)
	if p == nil {
		return 0
	}
	return int(p[0])
}

func (r *reader) u16() int {
	p := r.bytes(2)
	if p == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(p))
}

func (r *reader) u24() int {
	p := r.bytes(3)
	if p == nil {
		return 0
	}
	return int(p[0])<<16 | int(p[1])<<8 | int(p[2])
}

// parseClientHello checks that rec is one TLS handshake record holding
// exactly one ClientHello and returns its session id and the host_name of
// its server_name extension (nil when absent). Every length is checked
// against what encloses it; nothing is allocated.
func parseClientHello(rec []byte) (sessionID, sni []byte, err error) {
	if len(rec) < minClientHello || !isTLSRecord(rec) {
		return nil, nil, errors.New("not a TLS handshake record")
	}
	if n := int(binary.BigEndian.Uint16(rec[3:5])); n != len(rec)-tlsHeaderSize || n > maxTLSRecord {
		return nil, nil, fmt.Errorf("record length %d, have %d bytes", n, len(rec)-tlsHeaderSize)
	}
	r := reader{b: rec[tlsHeaderSize:]}
	if t := r.u8(); t != 1 {
		return nil, nil, fmt.Errorf("handshake type %d, want ClientHello", t)
	}
	if n := r.u24(); n != len(r.b) {
		return nil, nil, fmt.Errorf("ClientHello length %d, record holds %d", n, len(r.b))
	}
	r.bytes(2 + randomSize) // legacy_version, random
	sessionID = r.bytes(r.u8())
	if len(sessionID) > 32 {
		return nil, nil, fmt.Errorf("session id of %d bytes", len(sessionID))
	}
	if suites := r.bytes(r.u16()); !r.bad && (len(suites) < 2 || len(suites)%2 != 0) {
		return nil, nil, fmt.Errorf("cipher suites of %d bytes", len(suites))
	}
	if methods := r.bytes(r.u8()); !r.bad && len(methods) == 0 {
		return nil, nil, errors.New("no compression methods")
	}
	if r.bad {
		return nil, nil, errors.New("ClientHello truncated")
	}
	if len(r.b) == 0 {
		return sessionID, nil, nil // no extensions, so no server_name
	}
	exts := reader{b: r.bytes(r.u16())}
	if r.bad || len(r.b) != 0 {
		return nil, nil, errors.New("extensions length does not match the ClientHello")
	}
	for len(exts.b) > 0 {
		typ := exts.u16()
		data := exts.bytes(exts.u16())
		if exts.bad {
			return nil, nil, errors.New("extension truncated")
		}
		if typ != 0 {
			continue
		}
		if sni != nil {
			return nil, nil, errors.New("two server_name extensions")
		}
		if sni, err = parseServerName(data); err != nil {
			return nil, nil, err
		}
	}
	return sessionID, sni, nil
}

// parseServerName returns the host_name of a server_name extension
// (RFC 6066 §3): a list of (type, name) entries, at most one host_name.
func parseServerName(data []byte) ([]byte, error) {
	r := reader{b: data}
	list := reader{b: r.bytes(r.u16())}
	if r.bad || len(r.b) != 0 {
		return nil, errors.New("server_name list length does not match the extension")
	}
	var host []byte
	for len(list.b) > 0 {
		typ := list.u8()
		name := list.bytes(list.u16())
		switch {
		case list.bad:
			return nil, errors.New("server_name entry truncated")
		case typ != 0:
			continue
		case host != nil:
			return nil, errors.New("two host names in server_name")
		case len(name) == 0:
			return nil, errors.New("empty host name in server_name")
		}
		host = name
	}
	if host == nil {
		return nil, errors.New("server_name without a host name")
	}
	return host, nil
}

// serverHello builds the whole answer to a validated ClientHello: a TLS 1.3
// ServerHello record (legacy version 3.3, the client's session id echoed,
// TLS_AES_128_GCM_SHA256, key_share with a real x25519 public key and
// supported_versions 3.4, in the official MTProxy's order), the
// ChangeCipherSpec record, and one ApplicationData record of random bytes
// standing for the encrypted certificate chain. The server random is
// HMAC-SHA256(key, client random ‖ answer with the random zeroed), which
// is what tdlib and gotd verify.
func serverHello(s FakeTLSSecret, h clientHello, sizes []int, rnd io.Reader) ([]byte, error) {
	var seed [33]byte // x25519 private key, then the size jitter
	if _, err := io.ReadFull(rnd, seed[:]); err != nil {
		return nil, fmt.Errorf("random: %w", err)
	}
	priv, err := ecdh.X25519().NewPrivateKey(seed[:32])
	if err != nil {
		return nil, fmt.Errorf("key share: %w", err)
	}
	size := defaultRecordSize(s, seed[32])
	if len(sizes) > 0 {
		size = sizes[0]
	}

	sid := h.sessionID
	const extLen = 4 + 2 + 2 + 32 + 4 + 2 // key_share (x25519), supported_versions
	body := 2 + randomSize + 1 + len(sid) + 2 + 1 + 2 + extLen
	b := make([]byte, 0, tlsHeaderSize+4+body+6+tlsHeaderSize+size)
	b = append(b, recordHandshake, 0x03, 0x03)
	b = binary.BigEndian.AppendUint16(b, uint16(4+body))
	b = append(b, 2, byte(body>>16), byte(body>>8), byte(body)) // ServerHello
	b = append(b, 0x03, 0x03)
	b = append(b, make([]byte, randomSize)...) // filled in last
	b = append(b, byte(len(sid)))
	b = append(b, sid...)
	b = append(b, 0x13, 0x01, 0x00) // TLS_AES_128_GCM_SHA256, no compression
	b = binary.BigEndian.AppendUint16(b, extLen)
	b = append(b, 0x00, 0x33, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20) // key_share: x25519, 32 bytes
	b = append(b, priv.PublicKey().Bytes()...)
	b = append(b, 0x00, 0x2b, 0x00, 0x02, 0x03, 0x04) // supported_versions: TLS 1.3
	b = append(b, recordChangeCipherSpec, 0x03, 0x03, 0x00, 0x01, 0x01)
	b = append(b, recordApplicationData, 0x03, 0x03)
	b = binary.BigEndian.AppendUint16(b, uint16(size))
	start := len(b)
	b = b[:start+size]
	if _, err := io.ReadFull(rnd, b[start:]); err != nil {
		return nil, fmt.Errorf("random: %w", err)
	}

	m := hmac.New(sha256.New, s.Key[:])
	m.Write(h.random[:])
	m.Write(b)
	m.Sum(b[clientRandomOffset:clientRandomOffset]) // appends in place over the zeros
	return b, nil
}

// defaultRecordSize is the fake certificate record's size without
// TLSRecordSizes: fixed per secret within the official MTProxy's default
// range, plus one byte of jitter either way as the official MTProxy adds.
// A real site answers with nearly the same size every time, so a size
// drawn afresh per connection would itself stand out.
func defaultRecordSize(s FakeTLSSecret, jitter byte) int {
	h := sha256.New()
	h.Write(s.Key[:])
	h.Write([]byte(s.Domain))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return defaultRecordBase + int(binary.BigEndian.Uint16(sum[:2]))%defaultRecordSpan + int(jitter%3) - 1
}

// tlsReader yields the payload of the ApplicationData records a FakeTLS
// client sends after its handshake. One ChangeCipherSpec record (tdlib and
// gotd send it first) is skipped; any other record type, a version other
// than 3.3, or a record over maxTLSRecord (maxClientDataRecord for
// ApplicationData) fails with ErrBadFrame.
type tlsReader struct {
	r    *bufio.Reader
	left int // payload bytes left in the current record
	ccs  bool
	data bool
	hdr  [tlsHeaderSize]byte
}

// Read implements io.Reader. It never reads past the current record, so
// a record header is always read whole before its payload.
func (t *tlsReader) Read(p []byte) (int, error) {
	for t.left == 0 {
		if err := t.next(); err != nil {
			return 0, err
		}
	}
	if len(p) > t.left {
		p = p[:t.left]
	}
	n, err := t.r.Read(p)
	t.left -= n
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF // a record ended early
	}
	return n, err
}

// next reads the next record header and positions t on its payload.
func (t *tlsReader) next() error {
	if _, err := io.ReadFull(t.r, t.hdr[:]); err != nil {
		if err == io.EOF {
			return io.EOF // between records: the stream ended cleanly
		}
		return fmt.Errorf("TLS record header: %w", err)
	}
	typ, n := t.hdr[0], int(binary.BigEndian.Uint16(t.hdr[3:5]))
	if t.hdr[1] != 0x03 || t.hdr[2] != 0x03 {
		return fmt.Errorf("%w: TLS record version %#02x%02x", ErrBadFrame, t.hdr[1], t.hdr[2])
	}
	if n > maxTLSRecord && (typ != recordApplicationData || n > maxClientDataRecord) {
		return fmt.Errorf("%w: TLS record of %d bytes, limit %d", ErrFrameTooLarge, n, maxTLSRecord)
	}
	switch {
	case typ == recordApplicationData:
		t.data = true
		t.left = n
		return nil
	case typ == recordChangeCipherSpec && !t.ccs && !t.data && n == 1:
		t.ccs = true
		b, err := t.r.ReadByte()
		if err != nil {
			return fmt.Errorf("ChangeCipherSpec: %w", err)
		}
		if b != 1 {
			return fmt.Errorf("%w: ChangeCipherSpec %#02x", ErrBadFrame, b)
		}
		return nil
	default:
		return fmt.Errorf("%w: TLS record type %#02x of %d bytes", ErrBadFrame, typ, n)
	}
}

// frameRecords turns buf, tlsHeaderSize reserved bytes followed by data,
// into ApplicationData records of at most maxTLSPayload bytes each, in
// place: one record is just its header filled in; for more, the chunks are
// moved apart back to front to make room for their headers.
func frameRecords(buf []byte) []byte {
	n := len(buf) - tlsHeaderSize
	k := (n + maxTLSPayload - 1) / maxTLSPayload
	total := n + k*tlsHeaderSize
	buf = slices.Grow(buf, total-len(buf))[:total]
	for i := k - 1; i > 0; i-- {
		start := i * maxTLSPayload
		size := min(maxTLSPayload, n-start)
		src, dst := tlsHeaderSize+start, (i+1)*tlsHeaderSize+start
		copy(buf[dst:dst+size], buf[src:src+size])
	}
	for i := range k {
		h := buf[i*(tlsHeaderSize+maxTLSPayload):]
		h[0], h[1], h[2] = recordApplicationData, 0x03, 0x03
		binary.BigEndian.PutUint16(h[3:5], uint16(min(maxTLSPayload, n-i*maxTLSPayload)))
	}
	return buf
}

// ReplayCache remembers the randoms of accepted FakeTLS ClientHellos so a
// captured hello cannot be replayed to make the server reveal itself. Only
// hellos that passed every other check are recorded, so filling it takes a
// secret. It is safe for concurrent use; every operation is O(1)
// (amortised: expired entries are dropped oldest first as new ones come).
//
// The key is the random's first 16 bytes, not the whole random: its last
// four bytes are the timestamp XORed with MAC bytes nobody checks, so an
// attacker can re-date a captured hello to any time. TimeWindow therefore
// does not stop a replay; only this cache does, for as long as it still
// holds the original. Size it for long retention (DESIGN.md): entries =
// peak accepted FakeTLS handshakes per second × ttl.
type ReplayCache struct {
	max int
	ttl int64 // nanoseconds

	mu    sync.Mutex
	byKey map[[16]byte]int64 // key → insertion time (Unix ns)
	ring  []replayEntry      // insertion order, oldest at head
	head  int
	n     int
}

type replayEntry struct {
	key [16]byte
	at  int64
}

// NewReplayCache returns a cache of at most max entries (oldest evicted
// first when full; max <= 0 means 65536), each kept for ttl. A ttl below
// 2·TimeWindow is raised to it: a hello dated at the window's far edge
// stays acceptable for twice the window after it was first seen, and a
// shorter memory would let its replay through.
func NewReplayCache(max int, ttl time.Duration) *ReplayCache {
	if max <= 0 {
		max = defaultReplayEntries
	}
	if ttl < 2*TimeWindow {
		ttl = 2 * TimeWindow
	}
	return &ReplayCache{max: max, ttl: int64(ttl), byKey: make(map[[16]byte]int64)}
}

// Len reports how many randoms the cache holds, counting expired ones not
// yet dropped (they go when the next hello is recorded).
func (rc *ReplayCache) Len() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.byKey)
}

// seen reports whether key was recorded less than ttl before now, and
// records it otherwise, as one atomic step.
func (rc *ReplayCache) seen(key [16]byte, now time.Time) bool {
	t := now.UnixNano()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for rc.n > 0 && t-rc.ring[rc.head].at >= rc.ttl {
		rc.pop()
	}
	if at, ok := rc.byKey[key]; ok && t-at < rc.ttl {
		return true
	}
	if rc.n == rc.max {
		rc.pop()
	}
	if rc.n == len(rc.ring) {
		rc.grow()
	}
	rc.ring[(rc.head+rc.n)%len(rc.ring)] = replayEntry{key: key, at: t}
	rc.n++
	rc.byKey[key] = t
	return false
}

// pop drops the oldest entry; the map entry goes only if no later
// insertion of the same key (after expiry) replaced it.
func (rc *ReplayCache) pop() {
	e := rc.ring[rc.head]
	if rc.byKey[e.key] == e.at {
		delete(rc.byKey, e.key)
	}
	rc.head = (rc.head + 1) % len(rc.ring)
	rc.n--
}

// grow doubles the ring up to max, so an idle cache stays small.
func (rc *ReplayCache) grow() {
	ring := make([]replayEntry, min(max(2*len(rc.ring), 64), rc.max))
	for i := range rc.n {
		ring[i] = rc.ring[(rc.head+i)%len(rc.ring)]
	}
	rc.ring, rc.head = ring, 0
}

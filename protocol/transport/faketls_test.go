package transport

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/mtproxy"
	"github.com/gotd/td/mtproxy/faketls"
	"github.com/gotd/td/mtproxy/obfuscated2"
	"github.com/gotd/td/mtproxy/obfuscator"
	gtransport "github.com/gotd/td/transport"
)

var (
	tlsKey      = [16]byte{0xee, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	tlsOtherKey = [16]byte{0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77}
	tlsDomain   = "front.example.com"
)

// tlsOptions serves two FakeTLS secrets, the test one second, so that a
// match has to get past a candidate that fails.
func tlsOptions() Options {
	return Options{
		FakeTLS: []FakeTLSSecret{
			{Key: tlsOtherKey, Domain: "other.example.org"},
			{Key: tlsKey, Domain: tlsDomain},
		},
		Replays: NewReplayCache(1024, 0),
	}
}

// gotdSecret is the FakeTLS secret as gotd's client takes it.
func gotdSecret(key [16]byte, domain string) mtproxy.Secret {
	return mtproxy.Secret{Secret: key[:], CloakHost: domain, Type: mtproxy.TLS}
}

// helloCapture is what a gotd FakeTLS client talks to when there is no
// server: writes are kept, reads end the handshake after the ClientHello.
type helloCapture struct{ bytes.Buffer }

func (*helloCapture) Read([]byte) (int, error) { return 0, io.EOF }

// gotdStream returns the bytes gotd's own FakeTLS client sends (its
// ClientHello, then ChangeCipherSpec and ApplicationData records carrying
// the obfuscated2 header and one frame per payload of transport name, an
// "obfuscated2/<inner>" name) and the length of the ClientHello. With no
// name, only the ClientHello. The hello is dated now by gotd's clock.
func gotdStream(tb testing.TB, key [16]byte, domain, name string, seed uint64, payloads ...[]byte) ([]byte, int) {
	tb.Helper()
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	rnd := mrand.NewChaCha8(s)
	w := new(helloCapture)
	secret := gotdSecret(key, domain)
	ft := faketls.NewFakeTLS(rnd, w)
	if err := ft.Handshake([4]byte{}, 2, secret); err == nil || w.Len() == 0 {
		tb.Fatalf("gotd ClientHello: %v, %d bytes", err, w.Len())
	}
	helloLen := w.Len()
	if name == "" {
		return w.Bytes(), helloLen
	}
	cdc, tag, _ := gotdCodec(name)
	o := obfuscated2.NewObfuscated2(rnd, ft)
	if err := o.Handshake(tag, 2, secret); err != nil {
		tb.Fatal(err)
	}
	for _, p := range payloads {
		if err := cdc.Write(o, &bin.Buffer{Buf: append([]byte(nil), p...)}); err != nil {
			tb.Fatal(err)
		}
	}
	return w.Bytes(), helloLen
}

// helloSpec describes a ClientHello built by buildHello, a client written
// from the spec for cases gotd's client cannot produce.
type helloSpec struct {
	key       [16]byte
	domain    string // server_name; empty: no extension
	sessionID []byte
	at        time.Time
	pad       int  // bytes of padding extension (0: none)
	minor     byte // record version 3.minor; 0 means 1
}

// buildHello builds a ClientHello record as tdlib does: random is
// HMAC-SHA256(key, record with random zeroed), its last 4 bytes XORed with
// the little-endian Unix time.
func buildHello(s helloSpec) []byte {
	ch := []byte{0x03, 0x03}
	ch = append(ch, make([]byte, 32)...)
	ch = append(ch, byte(len(s.sessionID)))
	ch = append(ch, s.sessionID...)
	ch = append(ch, 0x00, 0x06, 0x0a, 0x0a, 0x13, 0x01, 0x13, 0x02) // GREASE, AES-128-GCM, AES-256-GCM
	ch = append(ch, 0x01, 0x00)
	var ext []byte
	if s.domain != "" {
		n := len(s.domain)
		ext = append(ext, 0x00, 0x00, byte((n+5)>>8), byte(n+5), byte((n+3)>>8), byte(n+3), 0x00, byte(n>>8), byte(n))
		ext = append(ext, s.domain...)
	}
	ext = append(ext, 0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04)
	if s.pad > 0 {
		ext = append(ext, 0x00, 0x15, byte(s.pad>>8), byte(s.pad))
		ext = append(ext, make([]byte, s.pad)...)
	}
	ch = binary.BigEndian.AppendUint16(ch, uint16(len(ext)))
	ch = append(ch, ext...)
	minor := s.minor
	if minor == 0 {
		minor = 1
	}
	rec := []byte{0x16, 0x03, minor, byte((len(ch) + 4) >> 8), byte(len(ch) + 4), 0x01, byte(len(ch) >> 16), byte(len(ch) >> 8), byte(len(ch))}
	rec = append(rec, ch...)
	m := hmac.New(sha256.New, s.key[:])
	m.Write(rec)
	random := rec[clientRandomOffset : clientRandomOffset+32]
	copy(random, m.Sum(nil))
	ts := binary.LittleEndian.Uint32(random[28:]) ^ uint32(s.at.Unix())
	binary.LittleEndian.PutUint32(random[28:], ts)
	return rec
}

// tlsRecord frames payload as one TLS record with version 3.3.
func tlsRecord(typ byte, payload []byte) []byte {
	r := []byte{typ, 0x03, 0x03, byte(len(payload) >> 8), byte(len(payload))}
	return append(r, payload...)
}

// checkServerHello verifies an answer the way tdlib and gotd do (one
// handshake record, ChangeCipherSpec, one ApplicationData record, server
// random = HMAC(key, client random ‖ answer with it zeroed)) and checks the
// fields we promise. It returns the ApplicationData payload size.
func checkServerHello(t testing.TB, answer []byte, key [16]byte, clientRandom []byte, sessionID []byte) int {
	t.Helper()
	if len(answer) < 5 || answer[0] != 0x16 || answer[1] != 3 || answer[2] != 3 {
		t.Fatalf("answer starts %x", answer[:min(5, len(answer))])
	}
	n := int(binary.BigEndian.Uint16(answer[3:5]))
	hs := answer[5 : 5+n]
	sid := len(sessionID)
	if hs[0] != 2 || hs[4] != 3 || hs[5] != 3 || hs[38] != byte(sid) || !bytes.Equal(hs[39:39+sid], sessionID) {
		t.Fatalf("ServerHello %x does not echo session id %x", hs, sessionID)
	}
	rest := hs[39+sid:]
	wantRest := []byte{0x13, 0x01, 0x00, 0x00, 0x2e, 0x00, 0x33, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20}
	if !bytes.Equal(rest[:len(wantRest)], wantRest) || !bytes.Equal(rest[len(wantRest)+32:], []byte{0x00, 0x2b, 0x00, 0x02, 0x03, 0x04}) {
		t.Fatalf("ServerHello tail %x", rest)
	}
	tail := answer[5+n:]
	if !bytes.Equal(tail[:9], []byte{0x14, 0x03, 0x03, 0x00, 0x01, 0x01, 0x17, 0x03, 0x03}) {
		t.Fatalf("after ServerHello: %x", tail[:9])
	}
	size := int(binary.BigEndian.Uint16(tail[9:11]))
	if len(tail) != 11+size {
		t.Fatalf("answer has %d bytes after the ApplicationData record", len(tail)-11-size)
	}
	zeroed := append([]byte(nil), answer...)
	clear(zeroed[11:43])
	m := hmac.New(sha256.New, key[:])
	m.Write(clientRandom)
	m.Write(zeroed)
	if !bytes.Equal(m.Sum(nil), answer[11:43]) {
		t.Fatal("server random is not the HMAC of the answer")
	}
	return size
}

// fakeTLSSizes are the frame sizes of the gotd round trip: client frames
// stay within one TLS record (gotd writes a frame as one record), server
// frames cross the 16 KiB record size several times.
var fakeTLSSizes = []struct{ up, down int }{
	{8, 8}, {16, 508}, {512, 512}, {4096, 16380}, {16000, 16384}, {12, 16388}, {8, 70000}, {4, 300000}, {16, 16},
}

// TestFakeTLSGotdClient runs gotd's own FakeTLS client against Accept over
// TCP: its handshake verifies our answer, then frames of every inner codec
// round-trip in both directions.
func TestFakeTLSGotdClient(t *testing.T) {
	for _, name := range transportNames[4:] {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			opt := tlsOptions()
			opt.RequireSecret = true
			opt.RequireObfuscation = true
			addr, ch := listen(t, opt)
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			cdc, tag, _ := gotdCodec(name)
			oc := obfuscator.FakeTLS(rand.Reader, nc)
			if err := oc.Handshake(tag, 2, gotdSecret(tlsKey, tlsDomain)); err != nil {
				t.Fatalf("gotd FakeTLS handshake: %v", err)
			}
			client, err := gtransport.NewProtocol(func() gtransport.Codec { return cdc }).Handshake(oc)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = client.Close() }()

			var server Conn
			var in bin.Buffer
			for i, sz := range fakeTLSSizes {
				up := testPayload(sz.up)
				if err := client.Send(ctx, &bin.Buffer{Buf: append([]byte(nil), up...)}); err != nil {
					t.Fatalf("client send %d: %v", sz.up, err)
				}
				if i == 0 {
					r := recvAccepted(t, ch)
					if r.err != nil {
						t.Fatalf("accept: %v", r.err)
					}
					server = r.conn
				}
				if err := server.ReadFrame(&in); err != nil || !bytes.Equal(in.Buf, up) {
					t.Fatalf("server read %d: %d bytes, %v", sz.up, len(in.Buf), err)
				}
				down := testPayload(sz.down)
				if err := server.WriteFrame(down); err != nil {
					t.Fatal(err)
				}
				var out bin.Buffer
				if err := client.Recv(ctx, &out); err != nil || !bytes.Equal(out.Buf, down) {
					t.Fatalf("client recv %d: %d bytes, %v", sz.down, len(out.Buf), err)
				}
			}
			inner := name[len("obfuscated2/"):]
			if got := server.Name(); got != "faketls/"+inner {
				t.Errorf("Name() = %q", got)
			}
			md, ok := MetadataOf(server)
			if !ok || md != (Metadata{DC: 2, SecretIndex: 1, Kind: "faketls"}) {
				t.Errorf("MetadataOf = %+v, %v", md, ok)
			}
		})
	}
}

// acceptStream runs Accept on a byte stream and returns what it wrote.
func acceptStream(in []byte, opt Options) (Conn, []byte, error) {
	nc, out := newFakeConn(in)
	c, err := Accept(nc, opt)
	return c, out.Bytes(), err
}

func TestFakeTLSByteStream(t *testing.T) {
	payloads := [][]byte{testPayload(8), testPayload(600)}
	stream, helloLen := gotdStream(t, tlsKey, tlsDomain, "obfuscated2/padded_intermediate", 7, payloads...)
	c, answer, err := acceptStream(stream, tlsOptions())
	if err != nil {
		t.Fatal(err)
	}
	hello := stream[:helloLen]
	sid := hello[44 : 44+int(hello[43])]
	if size := checkServerHello(t, answer, tlsKey, hello[11:43], sid); size < defaultRecordBase-1 || size > defaultRecordBase+defaultRecordSpan {
		t.Errorf("default record size %d", size)
	}
	var b bin.Buffer
	for _, p := range payloads {
		if err := c.ReadFrame(&b); err != nil || !bytes.Equal(b.Buf, p) {
			t.Fatalf("ReadFrame = %d bytes, %v", len(b.Buf), err)
		}
	}
	if md, _ := MetadataOf(c); md.Kind != "faketls" || md.SecretIndex != 1 {
		t.Fatalf("metadata %+v", md)
	}
}

// TestFakeTLSRejected checks every way a ClientHello fails: Accept returns
// a RejectedError with the reason and exactly the bytes the client sent,
// and writes nothing back.
func TestFakeTLSRejected(t *testing.T) {
	now := time.Now()
	good, n := gotdStream(t, tlsKey, tlsDomain, "", 1)
	if n != len(good) {
		t.Fatal("hello only expected")
	}
	spec := func(mod func(*helloSpec)) []byte {
		s := helloSpec{key: tlsKey, domain: tlsDomain, sessionID: bytes.Repeat([]byte{9}, 32), at: now}
		mod(&s)
		return buildHello(s)
	}
	mutate := func(b []byte, f func([]byte) []byte) []byte { return f(append([]byte(nil), b...)) }
	unknownKey := [16]byte{0x99, 0x98, 0x97}
	wrongKey, _ := gotdStream(t, unknownKey, tlsDomain, "", 2)
	otherKey, _ := gotdStream(t, tlsOtherKey, tlsDomain, "", 6)
	wrongSNI, _ := gotdStream(t, tlsKey, "other.example.org", "", 3)

	tests := []struct {
		name   string
		in     []byte
		now    time.Time // zero: now
		reason string
	}{
		{"wrong key", wrongKey, time.Time{}, reasonBadHMAC},
		{"wrong sni", wrongSNI, time.Time{}, reasonSNI},
		{"other secret's key, this domain", otherKey, time.Time{}, reasonSNI},
		{"no sni", spec(func(s *helloSpec) { s.domain = "" }), time.Time{}, reasonSNI},
		{"sni of the other secret", spec(func(s *helloSpec) { s.domain = "other.example.org" }), time.Time{}, reasonSNI},
		{"stale", good, now.Add(TimeWindow + 2*time.Second), reasonTime},
		{"future", spec(func(s *helloSpec) { s.at = now.Add(TimeWindow + 2*time.Second) }), time.Time{}, reasonTime},
		{"flipped bit", mutate(good, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), time.Time{}, reasonBadHMAC},
		{"trailing bytes", cat(wrongKey, []byte("more bytes the prober sent")), time.Time{}, reasonBadHMAC},
		{"big hello", spec(func(s *helloSpec) { s.key = unknownKey; s.pad = 9000 }), time.Time{}, reasonBadHMAC},
		{"not client hello", mutate(good, func(b []byte) []byte { b[5] = 2; return b }), time.Time{}, reasonMalformed},
		{"handshake length", mutate(good, func(b []byte) []byte { b[8]++; return b }), time.Time{}, reasonMalformed},
		{"session id 33", spec(func(s *helloSpec) { s.sessionID = make([]byte, 33) }), time.Time{}, reasonMalformed},
		{"oversize record", cat([]byte{0x16, 0x03, 0x01, 0x41, 0x01}, make([]byte, 100)), time.Time{}, reasonMalformed},
		{"tiny record", cat([]byte{0x16, 0x03, 0x01, 0x00, 0x04}, []byte{1, 0, 0, 0}), time.Time{}, reasonMalformed},
		{"tls 1.1 record", mutate(good, func(b []byte) []byte { b[2] = 2; return b }), time.Time{}, reasonMalformed},
		{"http", []byte("GET / HTTP/1.1\r\nHost: front.example.com\r\n\r\n"), time.Time{}, reasonHTTP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opt := tlsOptions()
			if !tt.now.IsZero() {
				opt.Now = func() time.Time { return tt.now }
			}
			for _, slow := range []bool{false, true} {
				nc, out := newFakeConn(tt.in)
				if slow {
					nc.r = iotest.OneByteReader(bytes.NewReader(tt.in))
				}
				_, err := Accept(nc, opt)
				checkRejected(t, err, tt.reason, tt.in, slow)
				if out.Len() != 0 {
					t.Fatalf("wrote %d bytes to a rejected client", out.Len())
				}
			}
		})
	}
}

// checkRejected asserts a RejectedError with reason whose Read is the
// whole of sent (or, when the bytes came one read at a time, a prefix of
// it that holds at least the inspected bytes).
func checkRejected(t *testing.T, err error, reason string, sent []byte, prefixOnly bool) {
	t.Helper()
	var re *RejectedError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want RejectedError", err)
	}
	if !errors.Is(err, ErrUnknownTransport) {
		t.Fatalf("%v does not match ErrUnknownTransport", err)
	}
	if re.Reason != reason {
		t.Fatalf("reason %q (%v), want %q", re.Reason, err, reason)
	}
	if prefixOnly {
		if !bytes.HasPrefix(sent, re.Read) || len(re.Read) == 0 {
			t.Fatalf("Read %d bytes, not a prefix of the %d sent", len(re.Read), len(sent))
		}
		return
	}
	if !bytes.Equal(re.Read, sent) {
		t.Fatalf("Read %d bytes, sent %d (or differing)", len(re.Read), len(sent))
	}
}

func TestFakeTLSReplay(t *testing.T) {
	opt := tlsOptions()
	stream, helloLen := gotdStream(t, tlsKey, tlsDomain, "obfuscated2/intermediate", 5, testPayload(8))
	if _, _, err := acceptStream(stream, opt); err != nil {
		t.Fatal(err)
	}
	if _, _, err := acceptStream(stream, opt); err == nil {
		t.Fatal("replayed stream accepted")
	} else {
		checkRejected(t, err, reasonReplay, stream, false)
	}
	// The timestamp bytes are malleable: re-dating the hello keeps its MAC
	// valid, so only the cache, keyed on the rest of the random, stops it.
	redated := append([]byte(nil), stream...)
	binary.LittleEndian.PutUint32(redated[39:43], binary.LittleEndian.Uint32(redated[39:43])^1)
	_, _, err := acceptStream(redated, opt)
	checkRejected(t, err, reasonReplay, redated, false)
	// Another cache, another listener: accepted.
	opt.Replays = NewReplayCache(1024, 0)
	if _, _, err := acceptStream(stream[:helloLen], opt); errors.Is(err, ErrUnknownTransport) {
		t.Fatalf("fresh cache: %v", err)
	}
}

// TestObfuscated2SecretReplay: a header that matched a secret is refused
// the second time (reason replay, every byte handed back for the front);
// secretless headers are not remembered.
func TestObfuscated2SecretReplay(t *testing.T) {
	secret := bytes.Repeat([]byte{0x5a}, 16)
	seed := uint64(100)
	stream := func(inner string, secret []byte) []byte { // a fresh header each
		seed++
		e := newClientEncoder(t, "obfuscated2/"+inner, secret, seed)
		e.frame(t, testPayload(16))
		return e.out.Bytes()
	}
	opt := Options{Secrets: [][]byte{secret}, Replays: NewReplayCache(1024, 0)}
	for _, inner := range []string{"intermediate", "padded_intermediate"} {
		s := stream(inner, secret)
		if _, _, err := acceptStream(s, opt); err != nil {
			t.Fatalf("%s: first: %v", inner, err)
		}
		_, _, err := acceptStream(s, opt)
		checkRejected(t, err, reasonReplay, s, false)
	}
	// A fresh header with the same secret is served.
	if _, _, err := acceptStream(stream("intermediate", secret), opt); err != nil {
		t.Fatalf("fresh header: %v", err)
	}
	// Secretless: served however often it comes.
	plain := stream("abridged", nil)
	for range 2 {
		if _, _, err := acceptStream(plain, opt); err != nil {
			t.Fatalf("secretless header replayed: %v", err)
		}
	}
	// Without a cache (no replay protection asked for), replays pass.
	s := stream("intermediate", secret)
	opt.Replays = nil
	for range 2 {
		if _, _, err := acceptStream(s, opt); err != nil {
			t.Fatalf("no cache: %v", err)
		}
	}
}

// TestFakeTLSHelloVariants accepts hellos gotd does not send: record
// version 3.3, short or empty session ids, a hello larger than the read
// buffer, timestamps at the window's edges.
func TestFakeTLSHelloVariants(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tests := []helloSpec{
		{sessionID: make([]byte, 32), at: now},
		{sessionID: nil, at: now, minor: 3},
		{sessionID: []byte{1, 2, 3}, at: now.Add(-TimeWindow)},
		{sessionID: make([]byte, 32), at: now.Add(TimeWindow), pad: 12000},
	}
	for i, s := range tests {
		s.key, s.domain = tlsKey, tlsDomain
		hello := buildHello(s)
		inner := clientStream(t, "obfuscated2/abridged", tlsKey[:], testPayload(8))
		in := cat(hello, tlsRecord(0x14, []byte{1}), tlsRecord(0x17, inner))
		opt := tlsOptions()
		opt.Now = func() time.Time { return now }
		opt.TLSRecordSizes = []int{1234 + i}
		c, answer, err := acceptStream(in, opt)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if size := checkServerHello(t, answer, tlsKey, hello[11:43], s.sessionID); size != 1234+i {
			t.Fatalf("%d: record of %d bytes, want %d", i, size, 1234+i)
		}
		var b bin.Buffer
		if err := c.ReadFrame(&b); err != nil || !bytes.Equal(b.Buf, testPayload(8)) {
			t.Fatalf("%d: ReadFrame %x, %v", i, b.Buf, err)
		}
	}
}

// TestFakeTLSDefaultRecordSize: without TLSRecordSizes the fake record
// keeps one size per secret, give or take a byte, as a real site would.
func TestFakeTLSDefaultRecordSize(t *testing.T) {
	sizes := map[int]bool{}
	for i := range 20 {
		hello := buildHello(helloSpec{key: tlsKey, domain: tlsDomain, at: time.Now(), sessionID: []byte{byte(i)}})
		_, answer, err := acceptStream(hello, tlsOptions())
		if err == nil || errors.Is(err, ErrUnknownTransport) {
			t.Fatalf("want an EOF after the handshake, got %v", err)
		}
		sizes[checkServerHello(t, answer, tlsKey, hello[11:43], []byte{byte(i)})] = true
	}
	lo, hi := 1<<16, 0
	for s := range sizes {
		lo, hi = min(lo, s), max(hi, s)
	}
	if hi-lo > 2 || lo < defaultRecordBase-1 || hi > defaultRecordBase+defaultRecordSpan {
		t.Fatalf("default record sizes %v", sizes)
	}
}

// TestFakeTLSRecords checks the client's record stream after the
// handshake: ChangeCipherSpec once and first, ApplicationData of any
// split, nothing else. These clients proved the secret, so the errors are
// not RejectedError.
func TestFakeTLSRecords(t *testing.T) {
	now := time.Now()
	inner := clientStream(t, "obfuscated2/intermediate", tlsKey[:], testPayload(8), testPayload(12))
	// gotd writes each frame as one record: a 20 KB frame is one record
	// over the TLS limit, which clients of the official MTProxy and mtg
	// send too.
	big := clientStream(t, "obfuscated2/intermediate", tlsKey[:], testPayload(20000))
	ccs := tlsRecord(0x14, []byte{1})
	tests := []struct {
		name    string
		records []byte
		frames  int
		wantErr error
	}{
		{"one record", cat(ccs, tlsRecord(0x17, inner)), 2, nil},
		{"no ccs", tlsRecord(0x17, inner), 2, nil},
		{"byte per record", cat(ccs, byteRecords(inner)), 2, nil},
		{"empty records", cat(ccs, tlsRecord(0x17, nil), tlsRecord(0x17, inner)), 2, nil},
		{"second ccs", cat(ccs, ccs, tlsRecord(0x17, inner)), -1, ErrBadFrame},
		{"ccs after data", cat(tlsRecord(0x17, inner[:70]), ccs, tlsRecord(0x17, inner[70:])), 0, ErrBadFrame},
		{"alert", cat(ccs, tlsRecord(0x17, inner[:80]), tlsRecord(0x15, []byte{2, 40})), 1, ErrBadFrame},
		{"handshake", cat(ccs, tlsRecord(0x16, inner)), -1, ErrBadFrame},
		{"version", cat(ccs, []byte{0x17, 0x03, 0x01, 0, byte(len(inner))}, inner), -1, ErrBadFrame},
		{"record over the TLS limit", cat(ccs, tlsRecord(0x17, big)), 1, nil},
		{"oversize handshake", cat(ccs, tlsRecord(0x17, inner[:64]), []byte{0x16, 0x03, 0x03, 0x41, 0x01}), 0, ErrFrameTooLarge},
		{"ends inside record", cat(ccs, tlsRecord(0x17, inner)[:60]), -1, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hello := buildHello(helloSpec{key: tlsKey, domain: tlsDomain, at: now})
			c, _, err := acceptStream(cat(hello, tt.records), tlsOptions())
			var re *RejectedError
			if errors.As(err, &re) {
				t.Fatalf("RejectedError after the handshake: %v", err)
			}
			if tt.frames < 0 {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Accept err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var b bin.Buffer
			for i := range tt.frames {
				if err := c.ReadFrame(&b); err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
			}
			if err := c.ReadFrame(&b); tt.wantErr == nil && !errors.Is(err, io.EOF) || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("last ReadFrame = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func byteRecords(p []byte) []byte {
	var out []byte
	for i := range p {
		out = append(out, tlsRecord(0x17, p[i:i+1])...)
	}
	return out
}

// TestFrameRecords checks the in-place framing of writes around the record
// size.
func TestFrameRecords(t *testing.T) {
	for _, n := range []int{1, 100, maxTLSPayload - 1, maxTLSPayload, maxTLSPayload + 1, 2 * maxTLSPayload, 3*maxTLSPayload + 7} {
		data := testPayload(n)
		buf := frameRecords(cat(make([]byte, tlsHeaderSize), data))
		var got []byte
		for len(buf) > 0 {
			size := int(binary.BigEndian.Uint16(buf[3:5]))
			if buf[0] != 0x17 || buf[1] != 3 || buf[2] != 3 || size == 0 || size > maxTLSPayload {
				t.Fatalf("%d: record header %x", n, buf[:5])
			}
			if len(buf[5:]) > size && size != maxTLSPayload {
				t.Fatalf("%d: short record %d before the last", n, size)
			}
			got = append(got, buf[5:5+size]...)
			buf = buf[5+size:]
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%d: payload differs", n)
		}
	}
}

// TestSecretlessNextToSecrets: Secrets add candidates; the secretless one
// stays unless RequireSecret. Kind tells them apart.
func TestSecretlessNextToSecrets(t *testing.T) {
	secret := bytes.Repeat([]byte{0x3c}, 16)
	tests := []struct {
		name    string
		client  []byte
		inner   string
		require bool
		kind    string // "": rejected
		index   int
	}{
		{"secretless", nil, "abridged", false, "obfuscated2", -1},
		{"secretless required", nil, "abridged", true, "", 0},
		{"secret", secret, "intermediate", false, "secret", 1},
		{"dd", secret, "padded_intermediate", true, "padded-secret", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream := clientStream(t, "obfuscated2/"+tt.inner, tt.client, testPayload(16))
			opt := Options{Secrets: [][]byte{bytes.Repeat([]byte{1}, 16), secret}, RequireSecret: tt.require}
			c, _, err := acceptStream(stream, opt)
			if tt.kind == "" {
				checkRejected(t, err, reasonNoSecret, stream, false)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			md, ok := MetadataOf(c)
			if !ok || md != (Metadata{DC: 2, SecretIndex: tt.index, Kind: tt.kind}) {
				t.Fatalf("metadata %+v, %v", md, ok)
			}
		})
	}
	c, _, err := acceptStream(cat([]byte{0xef, 2}, testPayload(8)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if md, ok := MetadataOf(c); ok || md != (Metadata{SecretIndex: -1, Kind: "plain"}) {
		t.Fatalf("plain metadata %+v, %v", md, ok)
	}
	// A port with FakeTLS only: every obfuscated2 header is refused.
	stream := clientStream(t, "obfuscated2/padded_intermediate", secret, testPayload(8))
	opt := tlsOptions()
	opt.RequireSecret = true
	_, _, err = acceptStream(stream, opt)
	checkRejected(t, err, reasonNoSecret, stream, false)
}

// TestRejectedOtherTransports: refusals outside FakeTLS hand back their
// bytes too.
func TestRejectedOtherTransports(t *testing.T) {
	garbage := bytes.Repeat([]byte{0x61}, 100)
	tests := []struct {
		name   string
		in     []byte
		opt    Options
		reason string
	}{
		{"garbage header", garbage, Options{}, reasonNoSecret},
		{"garbage with secret", garbage, Options{Secrets: [][]byte{fuzzSecret}}, reasonNoSecret},
		{"tls without faketls", cat([]byte{0x16, 0x03, 0x01, 0x02, 0x00}, make([]byte, 512)), Options{}, reasonTLS},
		{"tls 1.2 record with faketls", cat([]byte{0x16, 0x03, 0x02, 0x02, 0x00}, make([]byte, 512)), tlsOptions(), reasonMalformed},
		{"abridged while obfuscation required", cat([]byte{0xef, 2}, testPayload(8)), Options{RequireObfuscation: true}, reasonPlain},
		{"full while obfuscation required", fullFrame(0, testPayload(8)), Options{RequireObfuscation: true}, reasonPlain},
		{"post", []byte("POST /api HTTP/1.1\r\n\r\n"), Options{}, reasonHTTP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, out, err := acceptStream(tt.in, tt.opt)
			checkRejected(t, err, tt.reason, tt.in, false)
			if len(out) != 0 {
				t.Fatal("wrote to a rejected client")
			}
		})
	}
}

// TestRejectedTimeout: a client that stalls before the transport is known
// is handed back with what it sent, and the deadline error still matches.
func TestRejectedTimeout(t *testing.T) {
	for _, sent := range [][]byte{nil, {0x16, 0x03, 0x01}, {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00}, bytes.Repeat([]byte{7}, 20)} {
		t.Run(fmt.Sprint(len(sent)), func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			defer server.Close()
			go func() { _, _ = client.Write(sent) }()
			_ = server.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			_, err := Accept(server, tlsOptions())
			var re *RejectedError
			if !errors.As(err, &re) || re.Reason != reasonTimeout || !bytes.Equal(re.Read, sent) {
				t.Fatalf("err = %v, want timeout rejection with %x", err, sent)
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("%v does not match os.ErrDeadlineExceeded", err)
			}
		})
	}
	// EOF is the peer leaving, not a probe to front.
	_, _, err := acceptStream([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}, tlsOptions())
	var re *RejectedError
	if errors.As(err, &re) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated hello: %v", err)
	}
}

func TestFakeTLSOptions(t *testing.T) {
	base := tlsOptions()
	tests := map[string]func(*Options){
		"no replay cache":  func(o *Options) { o.Replays = nil },
		"empty domain":     func(o *Options) { o.FakeTLS[0].Domain = "" },
		"two record sizes": func(o *Options) { o.TLSRecordSizes = []int{100, 200} },
		"zero record size": func(o *Options) { o.TLSRecordSizes = []int{0} },
		"huge record size": func(o *Options) { o.TLSRecordSizes = []int{maxTLSRecord + 1} },
	}
	for name, mod := range tests {
		t.Run(name, func(t *testing.T) {
			opt := base
			opt.FakeTLS = append([]FakeTLSSecret(nil), base.FakeTLS...)
			mod(&opt)
			if _, _, err := acceptStream([]byte{0xef}, opt); !errors.Is(err, ErrBadOptions) {
				t.Fatalf("err = %v, want ErrBadOptions", err)
			}
		})
	}
}

func TestReplayCache(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	k := func(i byte) [16]byte { return [16]byte{i} }

	t.Run("bound", func(t *testing.T) {
		rc := NewReplayCache(3, time.Hour)
		for i := range byte(4) {
			if rc.seen(k(i), t0) {
				t.Fatalf("%d seen before", i)
			}
		}
		if rc.Len() != 3 {
			t.Fatalf("Len = %d, want 3", rc.Len())
		}
		if !rc.seen(k(3), t0) || !rc.seen(k(1), t0) {
			t.Fatal("recent keys forgotten")
		}
		if rc.seen(k(0), t0) {
			t.Fatal("oldest key not evicted")
		}
	})
	t.Run("expiry", func(t *testing.T) {
		rc := NewReplayCache(100, 10*time.Minute)
		rc.seen(k(1), t0)
		rc.seen(k(2), t0.Add(5*time.Minute))
		if !rc.seen(k(1), t0.Add(10*time.Minute-time.Nanosecond)) {
			t.Fatal("forgotten before ttl")
		}
		if rc.seen(k(1), t0.Add(10*time.Minute)) {
			t.Fatal("remembered after ttl")
		}
		// k(1) was re-recorded; k(2) expires on its own schedule.
		if rc.Len() != 2 {
			t.Fatalf("Len = %d, want 2", rc.Len())
		}
		rc.seen(k(3), t0.Add(16*time.Minute))
		if rc.Len() != 2 || rc.seen(k(2), t0.Add(16*time.Minute)) {
			t.Fatalf("k(2) not expired, Len %d", rc.Len())
		}
	})
	t.Run("ttl floor", func(t *testing.T) {
		rc := NewReplayCache(10, time.Second)
		rc.seen(k(1), t0)
		if !rc.seen(k(1), t0.Add(2*TimeWindow-time.Second)) {
			t.Fatal("ttl below twice the window")
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		rc := NewReplayCache(1<<12, time.Hour)
		var firsts [256]int32
		var mu sync.Mutex
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 256 {
					key := k(byte((i + g*31) % 256))
					if !rc.seen(key, t0) {
						mu.Lock()
						firsts[key[0]]++
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		for i, n := range firsts {
			if n != 1 {
				t.Fatalf("key %d first-seen %d times", i, n)
			}
		}
	})
	t.Run("grows and wraps", func(t *testing.T) {
		rc := NewReplayCache(100, time.Minute*4)
		for i := range 1000 {
			key := [16]byte{byte(i), byte(i >> 8)}
			if rc.seen(key, t0.Add(time.Duration(i)*time.Second)) {
				t.Fatalf("%d seen before", i)
			}
			if rc.Len() > 100 {
				t.Fatalf("Len %d over bound", rc.Len())
			}
		}
		// 4 minutes at one per second: the last 100 are all held.
		if rc.Len() != 100 || !rc.seen([16]byte{byte(999 % 256), byte(999 >> 8)}, t0.Add(1000*time.Second)) {
			t.Fatalf("Len %d", rc.Len())
		}
	})
}

func TestFakeTLSReadFrameAllocFree(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	payload := testPayload(256)
	e := newClientEncoder(t, "obfuscated2/intermediate", tlsKey[:], 3)
	for range 200 {
		e.frame(t, payload)
	}
	// Records of uneven size, so that frames straddle them.
	var records []byte
	inner := e.out.Bytes()
	for len(inner) > 0 {
		n := min(len(inner), 1000)
		records = append(records, tlsRecord(0x17, inner[:n])...)
		inner = inner[n:]
	}
	hello := buildHello(helloSpec{key: tlsKey, domain: tlsDomain, at: time.Now()})
	nc, _ := newFakeConn(cat(hello, records))
	c, err := Accept(nc, tlsOptions())
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
}

// FuzzClientHello parses and validates arbitrary records (nothing may
// panic, the record must come back unchanged, an accepted hello must really
// carry the MAC and SNI) and builds hellos from the fuzzer's fields with the
// spec client, which must validate exactly when their time is inside the
// window, with an answer that verifies.
func FuzzClientHello(f *testing.F) {
	now := time.Now()
	secrets := tlsOptions().FakeTLS
	for i, key := range [][16]byte{tlsKey, tlsOtherKey} {
		hello, _ := gotdStream(f, key, tlsDomain, "", uint64(i))
		f.Add(hello, []byte{}, uint16(0), int32(0), uint8(0))
		broken := append([]byte(nil), hello...)
		broken[len(broken)/2] ^= 0x10
		f.Add(broken, []byte{1, 2, 3}, uint16(300), int32(-120), uint8(1))
	}
	f.Add(buildHello(helloSpec{key: tlsKey, domain: tlsDomain, at: now, sessionID: make([]byte, 32)}), make([]byte, 32), uint16(0), int32(121), uint8(2))
	f.Add(buildHello(helloSpec{key: tlsKey, at: now}), []byte{}, uint16(5000), int32(-121), uint8(3))
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x30, 0x01, 0x00, 0x00, 0x2c}, []byte{}, uint16(1), int32(1), uint8(0))
	f.Fuzz(func(t *testing.T, rec, sid []byte, pad uint16, delta int32, which uint8) {
		orig := append([]byte(nil), rec...)
		h, reason, err := verifyClientHello(rec, secrets, now)
		if !bytes.Equal(rec, orig) {
			t.Fatal("record modified")
		}
		if (err == nil) != (reason == "") {
			t.Fatalf("reason %q with error %v", reason, err)
		}
		if err == nil {
			_, sni, perr := parseClientHello(rec)
			s := secrets[h.index]
			zeroed := append([]byte(nil), rec...)
			clear(zeroed[11:43])
			m := hmac.New(sha256.New, s.Key[:])
			m.Write(zeroed)
			if perr != nil || string(sni) != s.Domain || !bytes.Equal(m.Sum(nil)[:28], rec[11:39]) {
				t.Fatalf("accepted a hello that does not validate: %v", perr)
			}
		}

		spec := helloSpec{key: tlsKey, domain: tlsDomain, sessionID: sid, pad: int(pad % 16000), at: now.Add(time.Duration(delta) * time.Second)}
		if which%2 == 1 {
			spec.key, spec.domain = tlsOtherKey, secrets[0].Domain
		}
		if len(sid) > 32 {
			return
		}
		hello := buildHello(spec)
		h, reason, err = verifyClientHello(hello, secrets, now)
		inWindow := delta >= -120 && delta <= 120
		if len(hello)-5 > maxTLSRecord {
			if reason != reasonMalformed {
				t.Fatalf("oversize hello: %q %v", reason, err)
			}
			return
		}
		if inWindow != (err == nil) || (!inWindow && reason != reasonTime) {
			t.Fatalf("delta %d: reason %q, err %v", delta, reason, err)
		}
		if err != nil {
			return
		}
		if want := 1 - int(which%2); h.index != want {
			t.Fatalf("matched secret %d, want %d", h.index, want)
		}
		answer, err := serverHello(secrets[h.index], h, nil, mrand.NewChaCha8([32]byte{which}))
		if err != nil {
			t.Fatal(err)
		}
		checkServerHello(t, answer, secrets[h.index].Key, hello[11:43], sid)
	})
}

package transport

import (
	"bufio"
	"bytes"
	"errors"
	"testing"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/mtproxy"
	"github.com/gotd/td/mtproxy/obfuscated2"
	"github.com/gotd/td/proto/codec"
)

// fuzzMaxFrame keeps fuzzed lengths meaningful: far below the default so
// that the bound is actually hit by random inputs.
const fuzzMaxFrame = 4096

var fuzzSecret = bytes.Repeat([]byte{0x42}, 16)

// checkFrame asserts the invariants of every frame ReadFrame returns.
func checkFrame(t *testing.T, b *bin.Buffer, maxFrame int) {
	t.Helper()
	if n := len(b.Buf); n == 0 || n%4 != 0 || n > maxFrame+maxPadding {
		t.Fatalf("frame of %d bytes (limit %d)", n, maxFrame)
	}
	if c := cap(b.Buf); c > 2*(maxFrame+16) {
		t.Fatalf("buffer capacity %d for limit %d", c, maxFrame)
	}
}

// readAll reads frames until an error; the error must be one of ours or an
// I/O error wrapped by us, and reading must stop (no infinite loop).
func readAll(t *testing.T, c Conn, maxFrame int) {
	t.Helper()
	var b bin.Buffer
	for i := 0; i < 1000; i++ {
		if err := c.ReadFrame(&b); err != nil {
			return
		}
		checkFrame(t, &b, maxFrame)
	}
}

func addStreamSeeds(f *testing.F) {
	payloads := [][]byte{testPayload(8), testPayload(4), testPayload(600), testPayload(20)}
	for _, name := range transportNames {
		f.Add(clientStream(f, name, nil, payloads...), false)
		if len(name) > 12 && name[:12] == "obfuscated2/" {
			f.Add(clientStream(f, name, fuzzSecret, payloads...), true)
		}
	}
	f.Add([]byte("GET /apiws HTTP/1.1\r\nHost: x\r\n\r\n"), false)
	f.Add([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01}, false)
	f.Add([]byte{0xef, 0x7f, 0xff, 0xff, 0xff}, false)
	f.Add(cat(le32(tagIntermediate), le32(1<<30)), false)
	f.Add(cat(le32(tagPadded), le32(3), []byte{1, 2, 3}), false)
	f.Add(make([]byte, 16), false)
	f.Add(fullFrame(0, testPayload(8)), false)
}

// FuzzAccept feeds arbitrary streams through Accept and ReadFrame: nothing
// may panic, loop, or allocate beyond the frame limit.
func FuzzAccept(f *testing.F) {
	addStreamSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, withSecret bool) {
		opt := Options{MaxFrameSize: fuzzMaxFrame}
		if withSecret {
			opt.Secrets = [][]byte{fuzzSecret}
		}
		nc, _ := newFakeConn(data)
		c, err := Accept(nc, opt)
		if err != nil {
			return
		}
		readAll(t, c, fuzzMaxFrame)
	})
}

// FuzzReadFrame fuzzes each plain codec directly, past the tag detection, so
// the fuzzer spends its time on frame parsing.
func FuzzReadFrame(f *testing.F) {
	p := testPayload(8)
	f.Add(uint8(kindAbridged), cat([]byte{2}, p, []byte{0x7f, 2, 0, 0}, p))
	f.Add(uint8(kindIntermediate), cat(le32(8), p, le32(8|1<<31), p))
	f.Add(uint8(kindPadded), cat(le32(11), p, []byte{1, 2, 3}, le32(8), p))
	f.Add(uint8(kindFull), cat(fullFrame(0, p), fullFrame(1, p)))
	f.Add(uint8(kindFull), cat(le32(0xffffffff), le32(0)))
	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		k := codecKind(1 + kind%4)
		nc, _ := newFakeConn(data)
		c := newConn(nc, bufio.NewReaderSize(nc, readBufferSize), k, Options{MaxFrameSize: fuzzMaxFrame})
		readAll(t, c, fuzzMaxFrame)
	})
}

// FuzzWriteFrame checks that gotd's client codecs read back every frame we
// write, for any payload.
func FuzzWriteFrame(f *testing.F) {
	f.Add(uint8(kindAbridged), testPayload(508), uint8(0))
	f.Add(uint8(kindAbridged), testPayload(512), uint8(1))
	f.Add(uint8(kindIntermediate), testPayload(8), uint8(2))
	f.Add(uint8(kindPadded), testPayload(4), uint8(3))
	f.Add(uint8(kindFull), testPayload(12), uint8(255))
	f.Fuzz(func(t *testing.T, kind uint8, payload []byte, rnd uint8) {
		payload = payload[:len(payload)-len(payload)%4]
		if len(payload) == 0 {
			return
		}
		k := codecKind(1 + kind%4)
		nc, out := newFakeConn(nil)
		rand := bytes.NewReader(bytes.Repeat([]byte{rnd, rnd ^ 0x5a}, 64))
		c := newConn(nc, bufio.NewReader(nc), k, Options{Rand: rand})
		// Two frames, so the full transport's sequence number is exercised.
		for range 2 {
			if err := c.WriteFrame(payload); err != nil {
				t.Fatal(err)
			}
		}
		var cdc codec.Codec
		switch k {
		case kindAbridged:
			cdc = codec.Abridged{}
		case kindIntermediate:
			cdc = codec.Intermediate{}
		case kindPadded:
			cdc = codec.PaddedIntermediate{}
		case kindFull:
			cdc = &codec.Full{}
		}
		for range 2 {
			var b bin.Buffer
			err := cdc.Read(out, &b)
			var perr *codec.ProtocolErr
			if len(payload) == 4 && errors.As(err, &perr) {
				continue // gotd reads any 4-byte frame as a transport error
			}
			if err != nil {
				t.Fatalf("gotd %T read: %v", cdc, err)
			}
			if !bytes.Equal(b.Buf, payload) {
				t.Fatalf("gotd %T read %x, want %x", cdc, b.Buf, payload)
			}
		}
		if out.Len() != 0 {
			t.Fatalf("%d trailing bytes", out.Len())
		}
	})
}

// FuzzObfuscated2Header parses arbitrary headers (must not panic) and, using
// the input as gotd's randomness, checks that every header gotd generates is
// accepted with the declared codec and DC and that both cipher directions
// agree with gotd's.
func FuzzObfuscated2Header(f *testing.F) {
	for i, name := range transportNames[4:] {
		f.Add(clientStream(f, name, nil)[:64], uint8(i), int16(2), false)
		f.Add(clientStream(f, name, fuzzSecret)[:64], uint8(i), int16(-4), true)
	}
	f.Add(bytes.Repeat([]byte{0x61}, 64), uint8(0), int16(1), false)
	f.Fuzz(func(t *testing.T, raw []byte, tagSel uint8, dc int16, withSecret bool) {
		var secrets [][]byte
		var secret []byte
		if withSecret {
			secret = fuzzSecret
			secrets = [][]byte{bytes.Repeat([]byte{1}, 16), fuzzSecret}
		}
		if len(raw) >= obfsHeaderSize {
			var hdr [obfsHeaderSize]byte
			copy(hdr[:], raw)
			if o, err := parseObfuscated2(&hdr, secrets); err == nil && o.kind == 0 {
				t.Fatal("accepted header without a codec")
			} else if err != nil && !errors.Is(err, ErrUnknownTransport) {
				t.Fatalf("unexpected error %v", err)
			}
		}

		tags := [][4]byte{codec.Abridged{}.ObfuscatedTag(), codec.Intermediate{}.ObfuscatedTag(), codec.PaddedIntermediate{}.ObfuscatedTag()}
		kinds := []codecKind{kindAbridged, kindIntermediate, kindPadded}
		sel := int(tagSel) % 3
		var wire bytes.Buffer
		client := obfuscated2.NewObfuscated2(bytes.NewReader(raw), &wire)
		if err := client.Handshake(tags[sel], int(dc), mtproxy.Secret{Secret: secret, Type: mtproxy.Simple}); err != nil {
			return // raw ran out before gotd found an acceptable header
		}
		var hdr [obfsHeaderSize]byte
		copy(hdr[:], wire.Next(obfsHeaderSize))
		o, err := parseObfuscated2(&hdr, secrets)
		if err != nil {
			t.Fatalf("gotd header rejected: %v", err)
		}
		wantIndex := -1
		if withSecret {
			wantIndex = 1
		}
		if o.kind != kinds[sel] || o.meta.DC != dc || o.meta.SecretIndex != wantIndex {
			t.Fatalf("parsed %v %+v, want %v DC %d secret %d", o.kind, o.meta, kinds[sel], dc, wantIndex)
		}
		msg := []byte("client to server and back again!")
		if _, err := client.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := wire.Next(len(msg))
		o.dec.XORKeyStream(got, got)
		if !bytes.Equal(got, msg) {
			t.Fatal("client to server stream differs")
		}
		enc := append([]byte(nil), msg...)
		o.enc.XORKeyStream(enc, enc)
		wire.Write(enc)
		back := make([]byte, len(msg))
		if _, err := client.Read(back); err != nil || !bytes.Equal(back, msg) {
			t.Fatalf("server to client stream differs: %v", err)
		}
	})
}

package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func FuzzReadFrame(f *testing.F) {
	var ok bytes.Buffer
	WriteFrame(&ok, []byte("hello"))
	f.Add(ok.Bytes(), 16)
	f.Add([]byte{0, 0, 0, 0}, 0)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1}, 1<<20)
	f.Add([]byte{0, 0, 0, 5, 'a'}, 16)
	f.Add([]byte{0, 0}, 16)
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		max &= 1<<16 - 1
		p, err := ReadFrame(bytes.NewReader(in), make([]byte, 0, 8), max)
		if err != nil {
			if p != nil {
				t.Fatal("payload returned with an error")
			}
			return
		}
		if len(p) > max {
			t.Fatalf("frame of %d bytes above max %d", len(p), max)
		}
		if want := binary.BigEndian.Uint32(in); int(want) != len(p) || !bytes.Equal(p, in[4:4+len(p)]) {
			t.Fatal("payload differs from input")
		}
		var out bytes.Buffer
		WriteFrame(&out, p)
		if !bytes.Equal(out.Bytes(), in[:4+len(p)]) {
			t.Fatal("frame does not round-trip")
		}
	})
}

func FuzzStreamHeader(f *testing.F) {
	hdr := func(kind byte, rest ...byte) []byte {
		return append(append([]byte{kind}, make([]byte, streamHeaderLen-1)...), rest...)
	}
	f.Add(hdr(1, 7))
	f.Add(hdr(1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01))
	f.Add(hdr(1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01))
	f.Add(hdr(0))
	f.Add(hdr(5, 1))
	f.Add(append(hdr(2)[:streamHeaderLen-1], 1))
	f.Add([]byte{1, 7})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < streamHeaderLen {
			if _, err := parseStreamHeader(in); err == nil {
				t.Fatal("short header accepted")
			}
			return
		}
		k, err := parseStreamHeader(in[:streamHeaderLen])
		if err != nil {
			if !bytes.Equal(in[1:streamHeaderLen], make([]byte, streamHeaderLen-1)) {
				return // reserved bytes set
			}
			if !errors.Is(err, ErrUnknownKind) || (in[0] >= 1 && in[0] <= byte(maxKind)) {
				t.Fatalf("parseStreamHeader kind %d: %v", in[0], err)
			}
			return
		}
		if byte(k) != in[0] {
			t.Fatal("kind changed")
		}
		if k != KindRaft {
			return
		}
		r := bytes.NewReader(in[streamHeaderLen:])
		g, err := readRaftHeader(r)
		if err != nil {
			return
		}
		used := len(in) - streamHeaderLen - r.Len()
		if used > maxRaftHeader {
			t.Fatalf("header read %d bytes", used)
		}
		if got := appendRaftHeader(nil, g); len(got) > used {
			t.Fatalf("group %d re-encodes longer than read", g)
		}
	})
}

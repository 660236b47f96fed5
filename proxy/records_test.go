package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

func TestLearnRecordSizes(t *testing.T) {
	t.Parallel()
	srv := newTLSFront(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sizes, err := LearnRecordSizes(ctx, srv.Listener.Addr().String(), "example.com")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("encrypted handshake record sizes: %v", sizes)
	if len(sizes) == 0 {
		t.Fatal("no sizes")
	}
	total := 0
	for _, n := range sizes {
		// Smallest: one byte of content type plus a 16-byte AEAD tag.
		if n < 17 || n > maxRecordPayload {
			t.Fatalf("implausible record size %d in %v", n, sizes)
		}
		total += n
	}
	// The certificate travels in these records, so they hold at least it.
	if der := len(srv.Certificate().Raw); total < der {
		t.Fatalf("records carry %d bytes, less than the %d-byte certificate", total, der)
	}
	// The measurement is stable: the same server gives the same sizes.
	again, err := LearnRecordSizes(ctx, srv.Listener.Addr().String(), "example.com")
	if err != nil || !slices.Equal(again, sizes) {
		t.Fatalf("second measurement %v (%v), first %v", again, err, sizes)
	}
}

func TestLearnRecordSizesNotTLS(t *testing.T) {
	t.Parallel()
	front := newTCPFront(t, func(c net.Conn) {
		_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := LearnRecordSizes(ctx, front.addr(), "example.com"); err == nil {
		t.Fatal("learned sizes from a plain HTTP server")
	}
}

func TestLearnRecordSizesTimeout(t *testing.T) {
	t.Parallel()
	front := newTCPFront(t, sink) // accepts, never answers
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := LearnRecordSizes(ctx, front.addr(), "example.com"); err == nil {
		t.Fatal("learned sizes from a silent server")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v despite a 200ms deadline", d)
	}
}

// record builds one TLS record with a payload of n bytes.
func record(typ uint8, n int) []byte {
	b := []byte{typ, 3, 3, 0, 0}
	binary.BigEndian.PutUint16(b[3:], uint16(n))
	return append(b, bytes.Repeat([]byte{0xab}, n)...)
}

// flight is a TLS 1.3 server flight as it appears on the wire.
func flight() []byte {
	var b []byte
	b = append(b, record(recordHandshake, 122)...)
	b = append(b, record(recordChangeCipherSpec, 1)...)
	for _, n := range []int{36, 2400, 281, 53} {
		b = append(b, record(recordApplicationData, n)...)
	}
	return b
}

func TestRecordScanner(t *testing.T) {
	t.Parallel()
	want := []int{36, 2400, 281, 53}
	in := flight()
	// Whole, byte by byte, and in odd pieces: the same records.
	for _, step := range []int{len(in), 1, 3, 7, 4096} {
		var s recordScanner
		for p := in; len(p) > 0; {
			k := min(step, len(p))
			if err := s.feed(p[:k]); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			p = p[k:]
		}
		if got := s.sizes(recordApplicationData); !slices.Equal(got, want) {
			t.Fatalf("step %d: sizes %v, want %v", step, got, want)
		}
	}
	for _, bad := range [][]byte{
		[]byte("GET / HTTP/1.1\r\n"),
		{recordHandshake, 2, 0, 0, 1},             // SSL 2 version
		{recordApplicationData, 3, 3, 0x50, 0x00}, // over 2^14+256
		{recordHandshake + 2, 3, 3, 0, 1},         // unknown type
	} {
		var s recordScanner
		if err := s.feed(bad); !errors.Is(err, ErrBadRecord) {
			t.Errorf("% x: err %v, want ErrBadRecord", bad, err)
		}
	}
}

// TestRecordConnBounded: a peer streaming valid records forever is cut off
// after the byte limit.
func TestRecordConnBounded(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		defer b.Close()
		rec := record(recordApplicationData, 1000)
		for range 1000 { // 1 MB, four times the limit
			if _, err := b.Write(rec); err != nil {
				return
			}
		}
	}()
	c := &recordConn{Conn: a, limit: maxLearnBytes}
	_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if !errors.Is(err, ErrBadRecord) {
		t.Fatalf("err %v after %d bytes, want ErrBadRecord", err, n)
	}
	if n > maxLearnBytes {
		t.Fatalf("read %d bytes, limit %d", n, maxLearnBytes)
	}
}

// FuzzRecordScanner: any input, cut anywhere, gives the same records as the
// input in one piece, and never a record longer than TLS allows.
func FuzzRecordScanner(f *testing.F) {
	f.Add(flight(), uint8(3))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), uint8(1))
	f.Add(record(recordAlert, 2), uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		var whole, parts recordScanner
		errWhole := whole.feed(in)
		var errParts error
		k := int(step) + 1
		for p := in; len(p) > 0 && errParts == nil; {
			n := min(k, len(p))
			errParts = parts.feed(p[:n])
			p = p[n:]
		}
		if (errWhole == nil) != (errParts == nil) {
			t.Fatalf("whole: %v, in pieces: %v", errWhole, errParts)
		}
		if !slices.Equal(whole.records, parts.records) {
			t.Fatalf("whole: %v, in pieces: %v", whole.records, parts.records)
		}
		if len(whole.records) > maxLearnRecords {
			t.Fatalf("%d records kept", len(whole.records))
		}
		for _, r := range whole.records {
			if r.length > maxRecordPayload {
				t.Fatalf("record of %d bytes accepted", r.length)
			}
		}
	})
}

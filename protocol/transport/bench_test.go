package transport

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"github.com/gotd/td/bin"
)

// refillReader serves a stream produced in batches by refill, so that
// stateful client encoders (full seqno, obfuscated2 cipher) can feed an
// arbitrarily long benchmark.
type refillReader struct {
	buf    bytes.Reader
	refill func() []byte
}

func (r *refillReader) Read(p []byte) (int, error) {
	if r.buf.Len() == 0 {
		r.buf.Reset(r.refill())
	}
	return r.buf.Read(p)
}

var benchSizes = []int{256, 16 << 10}

func BenchmarkReadFrame(b *testing.B) {
	for _, name := range transportNames {
		for _, size := range benchSizes {
			b.Run(fmt.Sprintf("%s/%d", name, size), func(b *testing.B) {
				payload := testPayload(size)
				e := newClientEncoder(b, name, nil, 5)
				first := true
				r := &refillReader{refill: func() []byte {
					if !first {
						b.StopTimer()
						defer b.StartTimer()
					}
					first = false
					// Keep the header on the first batch; later ones are
					// frames only.
					data := append([]byte(nil), e.out.Bytes()...)
					e.out.Reset()
					for range 512 {
						e.frame(b, payload)
					}
					data = append(data, e.out.Bytes()...)
					e.out.Reset()
					return data
				}}
				nc := &fakeConn{r: r, w: io.Discard}
				c, err := Accept(nc, Options{})
				if err != nil {
					b.Fatal(err)
				}
				var buf bin.Buffer
				b.ReportAllocs()
				b.SetBytes(int64(size))
				b.ResetTimer()
				for b.Loop() {
					if err := c.ReadFrame(&buf); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkWriteFrame(b *testing.B) {
	for _, name := range transportNames {
		for _, size := range benchSizes {
			b.Run(fmt.Sprintf("%s/%d", name, size), func(b *testing.B) {
				payload := testPayload(size)
				nc := &fakeConn{r: bytes.NewReader(clientStream(b, name, nil, testPayload(8))), w: io.Discard}
				c, err := Accept(nc, Options{})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.SetBytes(int64(size))
				for b.Loop() {
					if err := c.WriteFrame(payload); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

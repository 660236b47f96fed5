package cluster

import (
	"context"
	"io"
	"testing"
)

func benchPair(b *testing.B) (*Mesh, *Mesh) {
	ca := testCA(b)
	x := startMesh(b, ca, "x", nodeCert(b, ca, "x"))
	y := startMesh(b, ca, "y", nodeCert(b, ca, "y"))
	return x, y
}

// BenchmarkOpenEcho1KiB: open a stream on the live connection, send 1 KiB,
// read it back, close.
func BenchmarkOpenEcho1KiB(b *testing.B) {
	x, y := benchPair(b)
	y.Handle(KindRPC, func(ctx context.Context, peer NodeID, s *Stream) {
		buf := make([]byte, 1024)
		if _, err := io.ReadFull(s, buf); err == nil {
			s.Write(buf)
		}
	})
	ctx := context.Background()
	msg := make([]byte, 1024)
	got := make([]byte, 1024)
	b.ReportAllocs()
	b.SetBytes(1024)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, err := x.Open(ctx, y.ID(), y.Addr().String(), KindRPC)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(s, got); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}

// BenchmarkBulkOneStream: one stream, 64 KiB writes, MB/s as reported.
func BenchmarkBulkOneStream(b *testing.B) {
	x, y := benchPair(b)
	y.Handle(KindPush, func(ctx context.Context, peer NodeID, s *Stream) {
		n, _ := io.Copy(io.Discard, s)
		var p [8]byte
		p[0] = byte(n)
		s.Write(p[:])
	})
	s, err := x.Open(context.Background(), y.ID(), y.Addr().String(), KindPush)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	chunk := make([]byte, 64<<10)
	b.ReportAllocs()
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	s.CloseWrite()
	if _, err := io.ReadFull(s, make([]byte, 8)); err != nil {
		b.Fatal(err)
	}
}

package messaging

import (
	"context"
	"testing"
)

// BenchmarkSendMessage applies sendMessage commands between two users on
// real Badger with synchronous writes: the node's per-message cost below
// the API, fsync included.
func BenchmarkSendMessage(b *testing.B) {
	a, c := UserID(1, 1), UserID(1, 2)
	f := newFixture(b, a, c)
	text := "a message of a typical length, about sixty characters long"
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		from, to := a, c
		if i%2 == 1 {
			from, to = c, a
		}
		if _, err := f.m.Apply(context.Background(), SendMessage{
			From: from, Auth: authOf(from), To: UserPeer(to), RandomID: int64(i + 1), Text: text,
		}, Env{Now: 1_700_000_000 + int64(i)}); err != nil {
			b.Fatal(err)
		}
	}
}

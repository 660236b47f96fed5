package keyx

import (
	"math/big"
	mrand "math/rand/v2"
	"testing"

	"github.com/gotd/td/crypto"
)

// BenchmarkHandshake is a whole exchange with gotd's client in-process,
// client work (pq factoring, its modexps) included.
func BenchmarkHandshake(b *testing.B) {
	cfg := testConfig(b)
	b.ReportAllocs()
	for b.Loop() {
		out := runGotdExchange(b, cfg, 2, 0, nil)
		if out.serverErr != nil || out.clientErr != nil {
			b.Fatal(out.serverErr, out.clientErr)
		}
	}
}

// BenchmarkServerHandshake is the server's share only: a recorded exchange
// replayed against a server whose randomness is re-seeded each round, so
// the same client messages stay valid. Compare with 1x RSADecrypt + 2x
// ModExp2048 (g_a and the auth key).
func BenchmarkServerHandshake(b *testing.B) {
	key := loadKey(b)
	msgs := recordExchange(b, key)
	rng := mrand.NewChaCha8([32]byte{100, 0, 0, 1})
	cfg := &Config{Key: key, DC: 2, Rand: rng}
	b.ReportAllocs()
	for b.Loop() {
		rng.Seed([32]byte{100, 0, 0, 1})
		h := New(cfg)
		for i, m := range msgs {
			_, done, err := h.Step(m)
			if err != nil || (i == 2) != (done != nil) {
				b.Fatal(i, err)
			}
		}
	}
}

// BenchmarkRSADecrypt is one private-key operation as the server does it
// (CRT, blinded, with the fault check).
func BenchmarkRSADecrypt(b *testing.B) {
	key := loadKey(b)
	rk := newRSAKey(key)
	r := seededRand(1)
	enc, err := crypto.RSAPad(make([]byte, 100), &key.PublicKey, r)
	if err != nil {
		b.Fatal(err)
	}
	var out [rsaSize]byte
	b.ReportAllocs()
	for b.Loop() {
		if !rk.decrypt(r, enc, &out) {
			b.Fatal("decrypt")
		}
	}
}

// BenchmarkRSADecryptGotd is gotd's DecodeRSAPad (full exponent, no CRT),
// for comparison with BenchmarkRSADecrypt.
func BenchmarkRSADecryptGotd(b *testing.B) {
	key := loadKey(b)
	enc, err := crypto.RSAPad(make([]byte, 100), &key.PublicKey, seededRand(1))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := crypto.DecodeRSAPad(enc, key); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkModExp2048 is one 2048-bit modexp with a 2048-bit exponent mod
// the DH prime: the raw floor for g_a and for the auth key.
func BenchmarkModExp2048(b *testing.B) {
	g := newDHGroup()
	a, ga, err := g.generateA(seededRand(2))
	if err != nil {
		b.Fatal(err)
	}
	out := new(big.Int)
	b.ReportAllocs()
	for b.Loop() {
		out.Exp(ga, a, g.p)
	}
}

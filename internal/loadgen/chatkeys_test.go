package loadgen

import (
	"math/big"
	"math/rand/v2"
	"testing"
)

// TestFactorPQ checks the fast factoring on products of two random 31–32
// bit primes, as key exchanges send them.
func TestFactorPQ(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	prime := func() uint64 {
		for {
			v := big.NewInt(int64(rng.Uint32() | 1<<30))
			if v.ProbablyPrime(20) {
				return v.Uint64()
			}
		}
	}
	for range 200 {
		a, b := prime(), prime()
		if a > b {
			a, b = b, a
		}
		p, q, err := factorPQ(a * b)
		if err != nil || p != a || q != b {
			t.Fatalf("factor %d*%d: %d, %d, %v", a, b, p, q, err)
		}
	}
	if _, _, err := factorPQ(1); err == nil {
		t.Error("factored 1")
	}
}

func BenchmarkFactorPQ(b *testing.B) {
	pq := uint64(1229739323) * 1402015859
	for b.Loop() {
		if _, _, err := factorPQ(pq); err != nil {
			b.Fatal(err)
		}
	}
}

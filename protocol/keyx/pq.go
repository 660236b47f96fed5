package keyx

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
)

// pqPrimeBits is the size of each factor of pq. Two 31-bit primes give
// 2^60 <= pq < 2^62, inside the spec's pq < 2^63 and about the size
// Telegram uses, so the client's proof of work costs what clients expect.
const pqPrimeBits = 31

// maxPrimeDraws bounds the search for one prime. Near 2^31 about one odd
// number in 11 is prime, so 1000 draws fail only with a broken random
// source.
const maxPrimeDraws = 1000

// randomPrime returns a uniformly drawn prime in [2^30, 2^31).
// big.Int.ProbablyPrime is exact (Baillie-PSW) below 2^64, so each test is
// a deterministic answer, and a draw costs microseconds: generating fresh
// factors per resPQ is cheaper than keeping a table of primes.
func randomPrime(random io.Reader) (uint64, error) {
	var buf [4]byte
	for range maxPrimeDraws {
		if _, err := io.ReadFull(random, buf[:]); err != nil {
			return 0, fmt.Errorf("read prime candidate: %w", err)
		}
		v := uint64(binary.BigEndian.Uint32(buf[:]))
		v &= 1<<pqPrimeBits - 1     // below 2^31
		v |= 1<<(pqPrimeBits-1) | 1 // at least 2^30, odd
		if new(big.Int).SetUint64(v).ProbablyPrime(0) {
			return v, nil
		}
	}
	return 0, fmt.Errorf("no prime in %d draws", maxPrimeDraws)
}

// generatePQ returns distinct primes p < q and their product.
func generatePQ(random io.Reader) (p, q uint64, err error) {
	for range maxPrimeDraws {
		if p, err = randomPrime(random); err != nil {
			return 0, 0, err
		}
		if q, err = randomPrime(random); err != nil {
			return 0, 0, err
		}
		if p == q {
			continue
		}
		if p > q {
			p, q = q, p
		}
		return p, q, nil
	}
	return 0, 0, fmt.Errorf("p == q %d times", maxPrimeDraws)
}

// uintBytes is the big-endian encoding without leading zeros that TL
// "string" fields p, q and pq use.
func uintBytes(v uint64) []byte {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], v)
	i := 0
	for i < len(buf)-1 && buf[i] == 0 {
		i++
	}
	return append([]byte(nil), buf[i:]...)
}

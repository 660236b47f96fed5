package loadgen

import (
	"context"
	"crypto/aes"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"math/big"
	"time"

	"github.com/gotd/ige"
	"github.com/gotd/td/bin"
	"github.com/gotd/td/crypto"
	"github.com/gotd/td/exchange"
	"github.com/gotd/td/mt"
)

// Cost is the time one operation took, measured in batches: Best is the
// fastest batch's mean, the floor on a machine shared with other work;
// Mean is over all of them.
type Cost struct {
	Best, Mean time.Duration
	// Ops is how many operations were timed.
	Ops int
}

// CryptoReport is the raw cost, on one core of the load generator's
// machine, of the cryptography the server cannot avoid. It is the floor the
// achieved figures are compared with; floors use Cost.Best.
type CryptoReport struct {
	// RSADecrypt is one RSA-2048 private-key operation with CRT (two
	// 1024-bit big.Int.Exp and the recombination), the core of what the
	// server does for req_DH_params. The server adds blinding and a
	// re-encryption check on top (see protocol/keyx/rsa.go).
	RSADecrypt Cost
	// ModExp2048 is one big.Int.Exp of a group element to a 2048-bit
	// exponent modulo Telegram's 2048-bit DH prime: g^a and g_b^a each.
	ModExp2048 Cost
	// HandshakeFloor is RSADecrypt + 2*ModExp2048 (best), the server's
	// share of one auth key creation with everything but the big-number
	// math free.
	HandshakeFloor time.Duration
	// HandshakesPerCoreFloor is 1/HandshakeFloor.
	HandshakesPerCoreFloor float64
	// IGE64K is AES-256-IGE (github.com/gotd/ige) of one 64 KiB buffer,
	// alternately encrypting and decrypting; IGEBytesPerSec is its best
	// throughput on one core.
	IGE64K         Cost
	IGEBytesPerSec float64
	// PingCrypto is the server's message crypto for one ping round trip at
	// MTProto message sizes with gotd's crypto.Cipher, as the server uses
	// it: decrypt and check one client message carrying ping, encrypt one
	// carrying pong (key derivation, AES key schedule, IGE, SHA-256).
	PingCrypto Cost
	// PingCryptoBytes is the mean ciphertext bytes of that pair (gotd pads
	// each message with 12..255 random bytes).
	PingCryptoBytes float64
	// PingsPerCoreFloor is 1/PingCrypto.Best.
	PingsPerCoreFloor float64
	// ClientPQ is not the node's cost but the client's: gotd's
	// crypto.DecomposePQ on a pq shaped like the node's (the product of two
	// random 31-bit primes). It bounds how fast gotd clients can create
	// keys, and so what the handshake scenario can offer the node.
	ClientPQ Cost
}

// timeOp runs op in batches of batch ops until budget has passed or max
// ops have run (at least one batch), and returns the cost per op.
func timeOp(ctx context.Context, budget time.Duration, max, batch int, op func() error) (Cost, error) {
	start := time.Now()
	deadline := start.Add(budget)
	var c Cost
	for c.Ops == 0 || (c.Ops+batch <= max && time.Now().Before(deadline)) {
		if err := ctx.Err(); err != nil {
			return Cost{}, err
		}
		t0 := time.Now()
		for range batch {
			if err := op(); err != nil {
				return Cost{}, err
			}
		}
		per := time.Since(t0) / time.Duration(batch)
		if c.Best == 0 || per < c.Best {
			c.Best = per
		}
		c.Ops += batch
	}
	c.Mean = time.Since(start) / time.Duration(c.Ops)
	return c, nil
}

// maxCryptoOps bounds every floor loop in count as well as in time;
// maxPQOps the much slower pq factoring.
const (
	maxCryptoOps = 1 << 20
	maxPQOps     = 64
)

// randomPQ is the product of two random 31-bit primes, as the node makes
// for resPQ (protocol/keyx/pq.go).
func randomPQ() (*big.Int, error) {
	p, err := rand.Prime(rand.Reader, 31)
	if err != nil {
		return nil, err
	}
	q, err := rand.Prime(rand.Reader, 31)
	if err != nil {
		return nil, err
	}
	return p.Mul(p, q), nil
}

func runCrypto(ctx context.Context, budget time.Duration) (*CryptoReport, error) {
	r := &CryptoReport{}

	// RSA: a fresh key of the size the node uses; its cost depends on the
	// size only.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate RSA key: %w", err)
	}
	p, q := key.Primes[0], key.Primes[1]
	one := big.NewInt(1)
	dp := new(big.Int).Mod(key.D, new(big.Int).Sub(p, one))
	dq := new(big.Int).Mod(key.D, new(big.Int).Sub(q, one))
	qinv := new(big.Int).ModInverse(q, p)
	c, err := rand.Int(rand.Reader, key.N)
	if err != nil {
		return nil, fmt.Errorf("rsa input: %w", err)
	}
	m1, m2, m := new(big.Int), new(big.Int), new(big.Int)
	crt := func() error {
		m1.Exp(c, dp, p)
		m2.Exp(c, dq, q)
		m1.Sub(m1, m2).Mul(m1, qinv).Mod(m1, p)
		m.Mul(m1, q).Add(m, m2)
		return nil
	}
	_ = crt()
	if new(big.Int).Exp(m, big.NewInt(int64(key.E)), key.N).Cmp(c) != 0 {
		return nil, fmt.Errorf("rsa floor: CRT result does not re-encrypt")
	}
	if r.RSADecrypt, err = timeOp(ctx, budget, maxCryptoOps, 8, crt); err != nil {
		return nil, err
	}

	// DH: the same prime and generator the node uses (Telegram's).
	dhPrime, err := exchange.TestServerRNG{}.DhPrime()
	if err != nil {
		return nil, fmt.Errorf("dh prime: %w", err)
	}
	a, err := rand.Int(rand.Reader, new(big.Int).Lsh(one, 2048))
	if err != nil {
		return nil, fmt.Errorf("dh exponent: %w", err)
	}
	ga := new(big.Int).Exp(big.NewInt(3), a, dhPrime)
	out := new(big.Int)
	if r.ModExp2048, err = timeOp(ctx, budget, maxCryptoOps, 4, func() error {
		out.Exp(ga, a, dhPrime)
		return nil
	}); err != nil {
		return nil, err
	}
	r.HandshakeFloor = r.RSADecrypt.Best + 2*r.ModExp2048.Best
	r.HandshakesPerCoreFloor = float64(time.Second) / float64(r.HandshakeFloor)

	// AES-256-IGE in bulk.
	var aesKey [32]byte
	var iv [32]byte
	_, _ = rand.Read(aesKey[:])
	blk, err := aes.NewCipher(aesKey[:])
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	const bulk = 64 << 10
	src, dst := make([]byte, bulk), make([]byte, bulk)
	i := 0
	r.IGE64K, err = timeOp(ctx, budget, maxCryptoOps, 16, func() error {
		_, _ = rand.Read(iv[:1]) // vary the IV cheaply; IGE cost does not depend on it
		if i%2 == 0 {
			ige.EncryptBlocks(blk, iv[:], dst, src)
		} else {
			ige.DecryptBlocks(blk, iv[:], dst, src)
		}
		i++
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.IGEBytesPerSec = bulk / r.IGE64K.Best.Seconds()

	// Message crypto of one ping round trip, server side.
	if err := pingCryptoFloor(ctx, budget, r); err != nil {
		return nil, err
	}

	// The client's proof of work, for scale.
	if r.ClientPQ, err = timeOp(ctx, budget, maxPQOps, 1, func() error {
		pq, err := randomPQ()
		if err != nil {
			return err
		}
		_, _, err = crypto.DecomposePQ(pq, rand.Reader)
		return err
	}); err != nil {
		return nil, fmt.Errorf("decompose pq: %w", err)
	}
	return r, nil
}

func pingCryptoFloor(ctx context.Context, budget time.Duration, r *CryptoReport) error {
	var k crypto.Key
	if _, err := rand.Read(k[:]); err != nil {
		return err
	}
	authKey := k.WithID()
	client := crypto.NewClientCipher(rand.Reader)
	server := crypto.NewServerCipher(rand.Reader)
	// The client's messages are built outside the timed loop; a pool keeps
	// their random padding varied, as gotd's is.
	pings := make([]crypto.EncryptedMessage, 256)
	for i := range pings {
		b := new(bin.Buffer)
		if err := client.Encrypt(authKey, crypto.EncryptedMessageData{
			Salt: 1, SessionID: 2, MessageID: int64(i+1) << 2, SeqNo: 1,
			Message: &mt.PingRequest{PingID: int64(i)},
		}, b); err != nil {
			return fmt.Errorf("encrypt ping: %w", err)
		}
		if err := pings[i].Decode(b); err != nil {
			return fmt.Errorf("decode ping: %w", err)
		}
	}
	out := new(bin.Buffer)
	var totalBytes, n int
	per, err := timeOp(ctx, budget, maxCryptoOps, 256, func() error {
		em := &pings[n%len(pings)]
		if _, err := server.Decrypt(authKey, em); err != nil {
			return fmt.Errorf("decrypt ping: %w", err)
		}
		if err := server.Encrypt(authKey, crypto.EncryptedMessageData{
			Salt: 1, SessionID: 2, MessageID: int64(n+1)<<2 | 1, SeqNo: 1,
			Message: &mt.Pong{MsgID: int64(n+1) << 2, PingID: int64(n)},
		}, out); err != nil {
			return fmt.Errorf("encrypt pong: %w", err)
		}
		totalBytes += len(em.EncryptedData) + out.Len() - 24 // minus auth_key_id and msg_key
		n++
		return nil
	})
	if err != nil {
		return err
	}
	r.PingCrypto = per
	r.PingCryptoBytes = float64(totalBytes) / float64(n)
	r.PingsPerCoreFloor = float64(time.Second) / float64(r.PingCrypto.Best)
	return nil
}

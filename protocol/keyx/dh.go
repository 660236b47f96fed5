package keyx

import (
	"crypto/aes"
	"crypto/sha1" // #nosec G505 -- MTProto key exchange is defined with SHA1.
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"

	"github.com/gotd/ige"
	"github.com/gotd/td/bin"
	"github.com/gotd/td/crypto"
)

// dhPrimeHex is the 2048-bit safe prime Telegram publishes and its servers
// send in server_DH_inner_data (also in the docs' worked example). Clients
// check p with a primality test the first time they see it and cache the
// result; using the well-known prime means they usually skip that work, and
// it is known to be a safe prime for which g=3 generates the subgroup of
// order (p-1)/2 (p mod 3 == 2).
const dhPrimeHex = "C71CAEB9C6B1C9048E6C522F70F13F73980D40238E3E21C14934D037563D930F" +
	"48198A0AA7C14058229493D22530F4DBFA336F6E0AC925139543AED44CCE7C37" +
	"20FD51F69458705AC68CD4FE6B6B13ABDC9746512969328454F18FAF8C595F64" +
	"2477FE96BB2A941D5BCD1D4AC8CC49880708FA9B378E3C4F3A9060BEE67CF9A4" +
	"A4A695811051907E162753B56B0F6B410DBA74D8A84B2A14B3144E0EF1284754" +
	"FD17ED950D5965B4B9DD46582DB1178D169C6BC465B0D6FF9CA3928FEF5B9AE4" +
	"E418FC15E83EBEA0F87FA9FF5EED70050DED2849F47BF959D956850CE929851F" +
	"0D8115F635B105EE2E4E15D04B2454BF6F4FADF034B10403119CD8E3B92FCC5B"

// dhG is the generator sent with dhPrime.
const dhG = 3

// dhGroup is the DH group with the bounds the spec asks both sides to
// check, computed once per Config.
type dhGroup struct {
	p, g       *big.Int
	pBytes     []byte
	pMinusOne  *big.Int
	safeMin    *big.Int // 2^(2048-64)
	safeMax    *big.Int // p - 2^(2048-64)
	one        *big.Int
	exponentSz int
}

func newDHGroup() *dhGroup {
	raw, err := hex.DecodeString(dhPrimeHex)
	if err != nil {
		panic("keyx: bad dhPrimeHex") // constant; covered by tests
	}
	p := new(big.Int).SetBytes(raw)
	one := big.NewInt(1)
	safeMin := new(big.Int).Lsh(one, crypto.RSAKeyBits-64)
	return &dhGroup{
		p:          p,
		g:          big.NewInt(dhG),
		pBytes:     raw,
		pMinusOne:  new(big.Int).Sub(p, one),
		safeMin:    safeMin,
		safeMax:    new(big.Int).Sub(p, safeMin),
		one:        one,
		exponentSz: crypto.RSAKeyBits / 8,
	}
}

// inRange is the check the spec requires of g_a and g_b:
// 1 < x < p-1 and 2^(2048-64) < x < p - 2^(2048-64).
func (d *dhGroup) inRange(x *big.Int) bool {
	return crypto.InRange(x, d.one, d.pMinusOne) && crypto.InRange(x, d.safeMin, d.safeMax)
}

// maxGAAttempts bounds regeneration of a when g_a falls outside the safe
// range; the chance of that is about 2^-63 per attempt, so hitting the bound
// means the random source is broken.
const maxGAAttempts = 16

// generateA draws a (2048 random bits) and returns a and g_a = g^a mod p.
func (d *dhGroup) generateA(random io.Reader) (a, ga *big.Int, err error) {
	buf := make([]byte, d.exponentSz)
	for range maxGAAttempts {
		if _, err := io.ReadFull(random, buf); err != nil {
			return nil, nil, fmt.Errorf("read a: %w", err)
		}
		a = new(big.Int).SetBytes(buf)
		ga = new(big.Int).Exp(d.g, a, d.p)
		if d.inRange(ga) {
			return a, ga, nil
		}
	}
	return nil, nil, fmt.Errorf("g_a out of range %d times", maxGAAttempts)
}

// nonceHash computes new_nonce_hash1/2/3: the low 128 bits of
// SHA1(new_nonce + [n] + auth_key_aux_hash).
func nonceHash(newNonce bin.Int256, n byte, key crypto.Key) (r bin.Int128) {
	aux := key.AuxHash()
	buf := make([]byte, 0, len(newNonce)+1+len(aux))
	buf = append(buf, newNonce[:]...)
	buf = append(buf, n)
	buf = append(buf, aux[:]...)
	sum := sha1.Sum(buf) // #nosec G401
	copy(r[:], sum[4:20])
	return r
}

// maxClientDHEncrypted bounds set_client_DH_params.encrypted_data:
// SHA1 (20) + client_DH_inner_data with a 256-byte g_b (304) + padding < 16.
const maxClientDHEncrypted = 512

// decryptAnswer undoes the tmp_aes_key/iv AES-IGE encryption of
// client_DH_inner_data and checks data_with_hash = SHA1(data) + data +
// (0-15 random bytes). decode must decode exactly one TL object from its
// argument and return how many bytes it used; the hash is checked over
// exactly those bytes, so no length guessing is needed. maxLen bounds the
// ciphertext before any work is done.
func decryptAnswer(encrypted, key, iv []byte, maxLen int, decode func([]byte) (int, error)) error {
	if len(encrypted) == 0 || len(encrypted)%aes.BlockSize != 0 || len(encrypted) > maxLen {
		return fmt.Errorf("encrypted_data length %d: %w", len(encrypted), ErrMalformed)
	}
	c, err := aes.NewCipher(key)
	if err != nil {
		return fmt.Errorf("aes: %w: %w", ErrInternal, err)
	}
	plain := make([]byte, len(encrypted))
	ivCopy := append([]byte(nil), iv...)
	ige.DecryptBlocks(c, ivCopy, plain, encrypted)
	if len(plain) <= sha1.Size {
		return fmt.Errorf("data_with_hash too short: %w", ErrDecrypt)
	}
	hash, data := plain[:sha1.Size], plain[sha1.Size:]
	used, err := decode(data)
	if err != nil {
		// Garbage after a wrong key and bad TL look alike; the hash
		// decides, and there is no hash to check without a length.
		return fmt.Errorf("decode client_DH_inner_data: %w", ErrDecrypt)
	}
	if pad := len(data) - used; pad < 0 || pad >= aes.BlockSize {
		return fmt.Errorf("padding %d: %w", len(data)-used, ErrDecrypt)
	}
	sum := sha1.Sum(data[:used]) // #nosec G401
	if subtle.ConstantTimeCompare(sum[:], hash) != 1 {
		return fmt.Errorf("data_with_hash: %w", ErrDecrypt)
	}
	return nil
}

package keyx

import (
	"crypto/aes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" // #nosec G505 -- MTProto's legacy RSA variant is defined with SHA1.
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"math/big"

	"github.com/gotd/ige"
	"github.com/gotd/td/bin"
	"github.com/gotd/td/mt"
)

// rsaSize is the byte length of a 2048-bit RSA block.
const rsaSize = 256

// rsaKey is a private key prepared for raw ("textbook") decryption.
//
// MTProto uses RSA without PKCS#1 padding, which crypto/rsa does not expose,
// and gotd's crypto.DecodeRSAPad / crypto.RSADecryptHashed each do their own
// full-exponent modexp: trying both layouts would cost two private-key
// operations per req_DH_params. We decrypt once, with CRT (about 3x faster
// than the full exponent) and blinding (big.Int.Exp is not constant time, so
// the exponent must never see attacker-chosen input directly), and then try
// both layouts on the one plaintext.
type rsaKey struct {
	n, e, d    *big.Int
	p, q       *big.Int
	dp, dq     *big.Int
	qinv       *big.Int
	crt        bool
	byteLength int
}

func newRSAKey(k *rsa.PrivateKey) *rsaKey {
	r := &rsaKey{
		n:          new(big.Int).Set(k.N),
		e:          big.NewInt(int64(k.E)),
		d:          new(big.Int).Set(k.D),
		byteLength: (k.N.BitLen() + 7) / 8,
	}
	if len(k.Primes) == 2 {
		one := big.NewInt(1)
		p, q := new(big.Int).Set(k.Primes[0]), new(big.Int).Set(k.Primes[1])
		qinv := new(big.Int).ModInverse(q, p)
		if qinv != nil {
			r.p, r.q, r.qinv = p, q, qinv
			r.dp = new(big.Int).Mod(r.d, new(big.Int).Sub(p, one))
			r.dq = new(big.Int).Mod(r.d, new(big.Int).Sub(q, one))
			r.crt = true
		}
	}
	return r
}

// decrypt computes c^d mod n into a 256-byte big-endian block. It returns
// false if c is not a valid ciphertext (empty, longer than the modulus, or
// not below it) or randomness for blinding fails.
func (k *rsaKey) decrypt(random io.Reader, data []byte, out *[rsaSize]byte) bool {
	if len(data) == 0 || len(data) > rsaSize || k.byteLength != rsaSize {
		return false
	}
	c := new(big.Int).SetBytes(data)
	if c.Sign() == 0 || c.Cmp(k.n) >= 0 {
		return false
	}
	// Blind: c' = c * r^e, so the secret exponent only ever sees a value
	// the peer cannot choose; m = m' * r^-1.
	var (
		r    *big.Int
		rinv *big.Int
		err  error
	)
	for range 8 {
		r, err = rand.Int(random, k.n)
		if err != nil {
			return false
		}
		if r.Cmp(big.NewInt(1)) <= 0 {
			continue
		}
		rinv = new(big.Int).ModInverse(r, k.n)
		if rinv != nil {
			break
		}
	}
	if rinv == nil {
		return false
	}
	cb := new(big.Int).Exp(r, k.e, k.n)
	cb.Mul(cb, c).Mod(cb, k.n)

	var m *big.Int
	if k.crt {
		m1 := new(big.Int).Exp(cb, k.dp, k.p)
		m2 := new(big.Int).Exp(cb, k.dq, k.q)
		h := m1.Sub(m1, m2)
		h.Mul(h, k.qinv).Mod(h, k.p)
		m = h.Mul(h, k.q).Add(h, m2)
		// A CRT fault would leak a factor of n; re-encrypting is cheap
		// (e is small) and catches it.
		if check := new(big.Int).Exp(m, k.e, k.n); check.Cmp(cb) != 0 {
			return false
		}
	} else {
		m = new(big.Int).Exp(cb, k.d, k.n)
	}
	m.Mul(m, rinv).Mod(m, k.n)
	m.FillBytes(out[:])
	return true
}

const (
	rsaPadTempKeySize  = 32
	rsaPadDataSize     = 192 // data_with_padding
	rsaPadMaxDataSize  = 144 // TL data inside data_with_padding
	rsaHashedBlockSize = 255 // data_with_hash of the legacy variant
)

// decodeRSAPad undoes RSA_PAD (steps 1-7 of "Presenting proof of work") on a
// decrypted block and returns data_with_padding (192 bytes), or nil if the
// SHA256 check fails.
func decodeRSAPad(block *[rsaSize]byte) []byte {
	tempKeyXor := block[:rsaPadTempKeySize]
	aesEncrypted := block[rsaPadTempKeySize:]

	var tempKey [rsaPadTempKeySize]byte
	h := sha256.Sum256(aesEncrypted)
	subtle.XORBytes(tempKey[:], tempKeyXor, h[:])

	c, err := aes.NewCipher(tempKey[:])
	if err != nil {
		return nil
	}
	dataWithHash := make([]byte, len(aesEncrypted))
	var zeroIV [32]byte
	ige.DecryptBlocks(c, zeroIV[:], dataWithHash, aesEncrypted)

	dataWithPadding := dataWithHash[:rsaPadDataSize]
	for i, j := 0, len(dataWithPadding)-1; i < j; i, j = i+1, j-1 {
		dataWithPadding[i], dataWithPadding[j] = dataWithPadding[j], dataWithPadding[i]
	}
	sum := sha256.New()
	_, _ = sum.Write(tempKey[:])
	_, _ = sum.Write(dataWithPadding)
	if subtle.ConstantTimeCompare(sum.Sum(nil), dataWithHash[rsaPadDataSize:]) != 1 {
		return nil
	}
	return dataWithPadding
}

// pqInner is the union of the four p_q_inner_data constructors.
type pqInner struct {
	pq, p, q    []byte
	nonce       bin.Int128
	serverNonce bin.Int128
	newNonce    bin.Int256
	dc          int
	hasDC       bool
	temp        bool
	expiresIn   int
}

// decodePQInner decodes one p_q_inner_data* from the start of data and
// returns it with the number of bytes it occupied. legacy allows the two
// constructors without dc, which only the SHA1 RSA variant may carry.
func decodePQInner(data []byte, legacy bool) (pqInner, int, error) {
	b := &bin.Buffer{Buf: data}
	id, err := b.PeekID()
	if err != nil {
		return pqInner{}, 0, fmt.Errorf("p_q_inner_data type: %w: %w", ErrMalformed, err)
	}
	if id == pqInnerDataTempTypeID {
		if !legacy {
			return pqInner{}, 0, fmt.Errorf("p_q_inner_data_temp under RSA_PAD: %w", ErrMalformed)
		}
		var v pqInnerDataTemp
		if err := v.Decode(b); err != nil {
			return pqInner{}, 0, fmt.Errorf("decode p_q_inner_data_temp: %w: %w", ErrMalformed, err)
		}
		return pqInner{
			pq: v.Pq, p: v.P, q: v.Q,
			nonce: v.Nonce, serverNonce: v.ServerNonce, newNonce: v.NewNonce,
			temp: true, expiresIn: v.ExpiresIn,
		}, len(data) - b.Len(), nil
	}
	v, err := mt.DecodePQInnerData(b)
	if err != nil {
		return pqInner{}, 0, fmt.Errorf("decode p_q_inner_data: %w: %w", ErrMalformed, err)
	}
	used := len(data) - b.Len()
	in := pqInner{
		pq:          v.GetPq(),
		p:           v.GetP(),
		q:           v.GetQ(),
		nonce:       v.GetNonce(),
		serverNonce: v.GetServerNonce(),
		newNonce:    v.GetNewNonce(),
	}
	switch v := v.(type) {
	case *mt.PQInnerDataDC:
		in.dc, in.hasDC = v.DC, true
	case *mt.PQInnerDataTempDC:
		in.dc, in.hasDC, in.temp, in.expiresIn = v.DC, true, true, v.ExpiresIn
	case *mt.PQInnerData:
		if !legacy {
			return pqInner{}, 0, fmt.Errorf("p_q_inner_data under RSA_PAD: %w", ErrMalformed)
		}
	default:
		return pqInner{}, 0, fmt.Errorf("p_q_inner_data type %T: %w", v, ErrMalformed)
	}
	return in, used, nil
}

// pqInnerDataTempTypeID is p_q_inner_data_temp#3c6a84d4, which gotd's mt
// package does not generate but older clients (and Telegram-iOS) send under
// the legacy RSA variant.
const pqInnerDataTempTypeID = 0x3c6a84d4

// pqInnerDataTemp is p_q_inner_data_temp#3c6a84d4 pq:string p:string
// q:string nonce:int128 server_nonce:int128 new_nonce:int256 expires_in:int.
type pqInnerDataTemp struct {
	Pq, P, Q    []byte
	Nonce       bin.Int128
	ServerNonce bin.Int128
	NewNonce    bin.Int256
	ExpiresIn   int
}

// Encode implements bin.Encoder (used by tests acting as old clients).
func (v *pqInnerDataTemp) Encode(b *bin.Buffer) error {
	b.PutID(pqInnerDataTempTypeID)
	b.PutBytes(v.Pq)
	b.PutBytes(v.P)
	b.PutBytes(v.Q)
	b.PutInt128(v.Nonce)
	b.PutInt128(v.ServerNonce)
	b.PutInt256(v.NewNonce)
	b.PutInt(v.ExpiresIn)
	return nil
}

// Decode implements bin.Decoder.
func (v *pqInnerDataTemp) Decode(b *bin.Buffer) (err error) {
	if err := b.ConsumeID(pqInnerDataTempTypeID); err != nil {
		return err
	}
	if v.Pq, err = b.Bytes(); err != nil {
		return err
	}
	if v.P, err = b.Bytes(); err != nil {
		return err
	}
	if v.Q, err = b.Bytes(); err != nil {
		return err
	}
	if v.Nonce, err = b.Int128(); err != nil {
		return err
	}
	if v.ServerNonce, err = b.Int128(); err != nil {
		return err
	}
	if v.NewNonce, err = b.Int256(); err != nil {
		return err
	}
	v.ExpiresIn, err = b.Int()
	return err
}

// decodeEncryptedData decrypts req_DH_params.encrypted_data once and
// accepts either RSA_PAD (current clients) or the legacy
// SHA1(data)+data+random layout.
func (k *rsaKey) decodeEncryptedData(random io.Reader, encrypted []byte) (pqInner, error) {
	var block [rsaSize]byte
	if !k.decrypt(random, encrypted, &block) {
		return pqInner{}, fmt.Errorf("rsa: %w", ErrDecrypt)
	}
	if data := decodeRSAPad(&block); data != nil {
		in, used, err := decodePQInner(data, false)
		if err != nil {
			return pqInner{}, fmt.Errorf("rsa_pad: %w", err)
		}
		if used > rsaPadMaxDataSize {
			return pqInner{}, fmt.Errorf("rsa_pad: data longer than %d: %w", rsaPadMaxDataSize, ErrMalformed)
		}
		return in, nil
	}
	// Legacy: the block is 255 bytes, so the top byte must be zero.
	if block[0] != 0 {
		return pqInner{}, fmt.Errorf("rsa: %w", ErrDecrypt)
	}
	dataWithHash := block[1:]
	hash, data := dataWithHash[:sha1.Size], dataWithHash[sha1.Size:]
	in, used, err := decodePQInner(data, true)
	if err != nil {
		// Without a valid hash we cannot tell garbage from bad TL.
		return pqInner{}, fmt.Errorf("rsa legacy: %w", ErrDecrypt)
	}
	sum := sha1.Sum(data[:used]) // #nosec G401
	if subtle.ConstantTimeCompare(sum[:], hash) != 1 {
		return pqInner{}, fmt.Errorf("rsa legacy hash: %w", ErrDecrypt)
	}
	return in, nil
}

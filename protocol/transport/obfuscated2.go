package transport

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"io"
)

const (
	// obfsHeaderSize is the size of the obfuscated2 client header.
	obfsHeaderSize = 64
	// secretSize is the size of an MTProxy secret.
	secretSize = 16
)

// Metadata is what an obfuscated client declared and which key it used.
type Metadata struct {
	// DC is the data centre id from header bytes 60..62 (negative for media
	// DCs, per the spec). MTProxy uses it to route; a DC uses it to detect
	// clients that dialled the wrong one.
	DC int16
	// SecretIndex is the index of the secret that matched: in
	// Options.Secrets for obfuscated2 (Kind "secret", "padded-secret"), in
	// Options.FakeTLS for Kind "faketls"; -1 without a secret.
	SecretIndex int
	// Kind counts connections by how they reached us: "plain" (no
	// obfuscation), "obfuscated2" (no secret), "secret" (an MTProxy secret,
	// abridged or intermediate inside), "padded-secret" (a secret with
	// padded intermediate inside, what "dd" secrets make clients send) and
	// "faketls" ("ee" secrets).
	Kind string
}

// MetadataOf returns the metadata of c, and false if c is not obfuscated
// (Kind "plain", DC 0, SecretIndex -1) or not a Conn of this package (zero
// Metadata).
func MetadataOf(c Conn) (Metadata, bool) {
	cc, ok := c.(*conn)
	if !ok {
		return Metadata{}, false
	}
	if cc.dec == nil {
		return Metadata{SecretIndex: -1, Kind: "plain"}, false
	}
	return cc.meta, true
}

// obfs is the outcome of parsing an obfuscated2 header: ciphers positioned
// for the stream that follows the header, and the inner codec.
type obfs struct {
	dec, enc cipher.Stream
	kind     codecKind
	meta     Metadata
}

// parseObfuscated2 derives the server's ciphers from a client header.
//
// The client picks 48 random bytes (header 8..56) as key and IV of its
// sending direction and the same bytes reversed for the other, so the server
// decrypts with header[8:40]/header[40:56] and encrypts with the reversed
// ones. With an MTProxy secret each key becomes sha256(key || secret). The
// client encrypts the whole header with its sending stream and transmits
// bytes 56..64 encrypted, so the server's decrypting stream must consume all
// 64 header bytes, while its encrypting stream starts fresh.
//
// The candidates are the secrets, then (if secretless) no secret. Every
// candidate is fully evaluated and the match is selected with
// constant-time operations, so timing does not reveal which secret (or
// whether an early one) matched; the secrets come first so that one wins
// the 2^-32 chance of a header valid under two keys.
func parseObfuscated2(hdr *[obfsHeaderSize]byte, secrets [][]byte, secretless bool) (obfs, error) {
	candidates := secrets
	if secretless {
		candidates = append(secrets[:len(secrets):len(secrets)], nil)
	}
	if len(candidates) == 0 {
		return obfs{}, fmt.Errorf("%w: obfuscated2 header while a secret is required and none is configured", ErrUnknownTransport)
	}

	var rev [48]byte
	for i := range rev {
		rev[i] = hdr[55-i]
	}

	decs := make([]cipher.Stream, len(candidates))
	var (
		found   int // 1 once a candidate matched
		chosen  int // index of the first matching candidate
		tagWord uint32
		dcWord  uint16
	)
	for i, secret := range candidates {
		dec, err := newCTR(hdr[8:40], hdr[40:56], secret)
		if err != nil {
			return obfs{}, fmt.Errorf("obfuscated2 decrypt key: %w", err)
		}
		var plain [obfsHeaderSize]byte
		dec.XORKeyStream(plain[:], hdr[:])
		decs[i] = dec

		tag := binary.LittleEndian.Uint32(plain[56:60])
		valid := ctEq32(tag, tagAbridged) | ctEq32(tag, tagIntermediate) | ctEq32(tag, tagPadded)
		take := valid &^ found
		chosen = subtle.ConstantTimeSelect(take, i, chosen)
		tagWord = uint32(subtle.ConstantTimeSelect(take, int(tag), int(tagWord)))
		dcWord = uint16(subtle.ConstantTimeSelect(take, int(binary.LittleEndian.Uint16(plain[60:62])), int(dcWord)))
		found |= valid
	}
	if found == 0 {
		return obfs{}, fmt.Errorf("%w: obfuscated2 header matches no protocol tag", ErrUnknownTransport)
	}

	enc, err := newCTR(rev[:32], rev[32:48], candidates[chosen])
	if err != nil {
		return obfs{}, fmt.Errorf("obfuscated2 encrypt key: %w", err)
	}
	o := obfs{
		dec:  decs[chosen],
		enc:  enc,
		meta: Metadata{DC: int16(dcWord), SecretIndex: -1, Kind: "obfuscated2"},
	}
	switch tagWord {
	case tagAbridged:
		o.kind = kindAbridged
	case tagIntermediate:
		o.kind = kindIntermediate
	default:
		o.kind = kindPadded
	}
	if chosen < len(secrets) {
		o.meta.SecretIndex = chosen
		o.meta.Kind = "secret"
		if o.kind == kindPadded {
			o.meta.Kind = "padded-secret"
		}
	}
	return o, nil
}

// ctEq32 returns 1 if x == y and 0 otherwise, in constant time.
func ctEq32(x, y uint32) int {
	return subtle.ConstantTimeEq(int32(x), int32(y))
}

// newCTR returns AES-256-CTR keyed with key, or sha256(key || secret) when a
// secret is given.
func newCTR(key, iv, secret []byte) (cipher.Stream, error) {
	k := key
	if len(secret) > 0 {
		h := sha256.New()
		h.Write(key)
		h.Write(secret)
		k = h.Sum(nil)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewCTR(block, iv), nil
}

// ctrReader decrypts a stream in place as it is read. Every byte read from r
// passes through exactly once, which keeps the CTR position in step with the
// client's.
type ctrReader struct {
	r io.Reader
	s cipher.Stream
}

// Read implements io.Reader.
func (c *ctrReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.s.XORKeyStream(p[:n], p[:n])
	}
	return n, err
}

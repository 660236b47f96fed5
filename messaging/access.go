package messaging

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
)

// AccessHashes derives the access_hash a viewer must present for an entity:
// HMAC-SHA256(secret, viewer ‖ entity)[:8]. It is per viewer (one user's
// hash is useless to another), unforgeable without the secret, and needs no
// storage. Every node of a DC shares the secret.
type AccessHashes struct {
	secret []byte
}

// NewAccessHashes uses secret (at least 16 bytes) to derive hashes.
func NewAccessHashes(secret []byte) AccessHashes {
	return AccessHashes{secret: append([]byte(nil), secret...)}
}

// For returns the access hash of entity for viewer.
func (a AccessHashes) For(viewer, entity int64) int64 {
	var msg [16]byte
	binary.LittleEndian.PutUint64(msg[:8], uint64(viewer))
	binary.LittleEndian.PutUint64(msg[8:], uint64(entity))
	m := hmac.New(sha256.New, a.secret)
	m.Write(msg[:])
	return int64(binary.LittleEndian.Uint64(m.Sum(nil)[:8]))
}

// Check reports whether hash is the viewer's access hash for entity, in
// constant time.
func (a AccessHashes) Check(viewer, entity, hash int64) bool {
	var x, y [8]byte
	binary.LittleEndian.PutUint64(x[:], uint64(a.For(viewer, entity)))
	binary.LittleEndian.PutUint64(y[:], uint64(hash))
	return hmac.Equal(x[:], y[:])
}

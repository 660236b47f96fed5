package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/gotd/td/crypto"
)

// ErrKeyNotFound is returned by a KeyStore that has no key with the id.
var ErrKeyNotFound = errors.New("auth key not found")

// AuthKey is one auth key the server knows, with what the protocol needs to
// remember about it.
type AuthKey struct {
	// Key is the 2048-bit key and its 64-bit id.
	Key crypto.AuthKey
	// Temp marks a temporary (PFS) key.
	Temp bool
	// ExpiresAt is when a temporary key stops being accepted (unix seconds).
	ExpiresAt int64
	// PermKeyID is the permanent key a temporary key is bound to, 0 if none.
	PermKeyID int64
	// CreatedAt is when the key exchange finished (unix seconds).
	CreatedAt int64
	// InitialSalt is the salt derived during key exchange; it is accepted for
	// the first salt period after CreatedAt.
	InitialSalt int64
}

// ID returns the key's 64-bit id as the wire carries it.
func (k *AuthKey) ID() int64 { return k.Key.IntID() }

// authKeyRecordLen is the size of an encoded AuthKey.
const authKeyRecordLen = 1 + 256 + 1 + 8*4

// MarshalBinary encodes the key for a KeyStore. Version byte first, so the
// layout can change without guessing.
func (k *AuthKey) MarshalBinary() ([]byte, error) {
	b := make([]byte, authKeyRecordLen)
	b[0] = 1
	copy(b[1:257], k.Key.Value[:])
	if k.Temp {
		b[257] = 1
	}
	binary.LittleEndian.PutUint64(b[258:], uint64(k.ExpiresAt))
	binary.LittleEndian.PutUint64(b[266:], uint64(k.PermKeyID))
	binary.LittleEndian.PutUint64(b[274:], uint64(k.CreatedAt))
	binary.LittleEndian.PutUint64(b[282:], uint64(k.InitialSalt))
	return b, nil
}

// UnmarshalBinary decodes a key written by MarshalBinary.
func (k *AuthKey) UnmarshalBinary(b []byte) error {
	if len(b) != authKeyRecordLen || b[0] != 1 {
		return fmt.Errorf("auth key record: bad length %d or version", len(b))
	}
	var v crypto.Key
	copy(v[:], b[1:257])
	k.Key = v.WithID()
	k.Temp = b[257] == 1
	k.ExpiresAt = int64(binary.LittleEndian.Uint64(b[258:]))
	k.PermKeyID = int64(binary.LittleEndian.Uint64(b[266:]))
	k.CreatedAt = int64(binary.LittleEndian.Uint64(b[274:]))
	k.InitialSalt = int64(binary.LittleEndian.Uint64(b[282:]))
	return nil
}

// KeyStore keeps auth keys durably. StoreKey must not return before the key
// is on disk: the server answers dh_gen_ok only after it returns, so a client
// that reconnects with its key at once always finds it.
type KeyStore interface {
	// LoadKey returns the key with the id, or ErrKeyNotFound.
	LoadKey(id int64) (*AuthKey, error)
	// StoreKey writes (or overwrites) the key durably.
	StoreKey(k *AuthKey) error
}

// keyCache keeps recently used keys in memory in front of the KeyStore.
// Entries are immutable; an update replaces the pointer.
type keyCache struct {
	store KeyStore
	max   int

	mu   sync.RWMutex
	keys map[int64]*AuthKey
}

func newKeyCache(store KeyStore, max int) *keyCache {
	return &keyCache{store: store, max: max, keys: make(map[int64]*AuthKey)}
}

func (c *keyCache) get(id int64) (*AuthKey, error) {
	c.mu.RLock()
	k, ok := c.keys[id]
	c.mu.RUnlock()
	if ok {
		return k, nil
	}
	k, err := c.store.LoadKey(id)
	if err != nil {
		return nil, err
	}
	c.remember(k)
	return k, nil
}

// exists reports whether a key with the id is known; errors count as "exists"
// so that a storage failure can never let a colliding key through.
func (c *keyCache) exists(id int64) bool {
	_, err := c.get(id)
	return !errors.Is(err, ErrKeyNotFound)
}

func (c *keyCache) put(k *AuthKey) error {
	if err := c.store.StoreKey(k); err != nil {
		return err
	}
	c.remember(k)
	return nil
}

func (c *keyCache) remember(k *AuthKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.keys) >= c.max {
		// Drop an arbitrary entry: the store still has it.
		for id := range c.keys {
			delete(c.keys, id)
			break
		}
	}
	c.keys[k.ID()] = k
}

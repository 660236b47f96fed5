package messaging

import (
	"errors"
	"fmt"

	"github.com/mtnode/mtnode/storage"
)

// State every node of a data center must share lives in the replicated
// state with the domain, so that a client is served alike by any node:
//
//	authkey/<id>     an MTProto auth key (protocol.AuthKey, binary)
//	secret/<name>    a DC-wide secret: the server RSA key, the salt and
//	                 access-hash secrets
//
// A standalone node keeps them in its own tables instead; these commands
// are what a clustered node proposes.

// MaxAuthKeyRecord bounds a stored auth key record (a 256-byte key and a
// few fields).
const MaxAuthKeyRecord = 1024

// MaxSecret bounds a secret (a PKCS#1 RSA-2048 private key is ~1.2 KB).
const MaxSecret = 8192

// StoreAuthKey records an auth key made by a key exchange on any node.
// Storing the same id again overwrites it with the same bytes (a retried
// proposal); a different key under an existing id is refused, since ids
// are SHA-1 derived and a collision would let one client read another's
// traffic.
type StoreAuthKey struct {
	ID   int64
	Data []byte
}

// Kind implements Command.
func (StoreAuthKey) Kind() string { return "node.store_auth_key" }

var errAuthKeyConflict = errors.New("auth key id already holds a different key")

func (c StoreAuthKey) apply(tx *storage.Txn, env Env) (any, error) {
	if len(c.Data) == 0 || len(c.Data) > MaxAuthKeyRecord {
		return nil, fmt.Errorf("auth key record of %d bytes", len(c.Data))
	}
	k := key("authkey", c.ID)
	old, err := tx.Get(k)
	switch {
	case err == nil:
		if string(old) != string(c.Data) {
			return nil, errAuthKeyConflict
		}
		return nil, nil
	case !errors.Is(err, storage.ErrNotFound):
		return nil, err
	}
	return nil, tx.Set(k, c.Data)
}

// AuthKey returns the stored auth key record with id.
func AuthKey(tx storage.Reader, id int64) ([]byte, bool, error) {
	return getBytes(tx, key("authkey", id))
}

// InitSecrets stores DC-wide secrets that are not set yet; set ones keep
// their value, so the first proposal wins and every node ends up with the
// same secrets however many proposed. The proposer generates them (an RSA
// key cannot come from Env's 32 random bytes).
type InitSecrets struct {
	Secrets []NamedSecret
}

// NamedSecret is one secret of InitSecrets.
type NamedSecret struct {
	Name  string
	Value []byte
}

// Kind implements Command.
func (InitSecrets) Kind() string { return "node.init_secrets" }

func (c InitSecrets) apply(tx *storage.Txn, env Env) (any, error) {
	if len(c.Secrets) > 16 {
		return nil, fmt.Errorf("%d secrets", len(c.Secrets))
	}
	for _, sec := range c.Secrets {
		name, v := sec.Name, sec.Value
		if name == "" || len(name) > 64 || len(v) == 0 || len(v) > MaxSecret {
			return nil, fmt.Errorf("secret %q of %d bytes", name, len(v))
		}
		_, found, err := getBytes(tx, key("secret", name))
		if err != nil {
			return nil, err
		}
		if !found {
			if err := tx.Set(key("secret", name), v); err != nil {
				return nil, err
			}
		}
	}
	return nil, nil
}

// Secret returns the DC-wide secret name.
func Secret(tx storage.Reader, name string) ([]byte, bool, error) {
	return getBytes(tx, key("secret", name))
}

func getBytes(tx storage.Reader, k []byte) ([]byte, bool, error) {
	v, err := tx.Get(k)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return v, true, nil
}

package messaging

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/mtnode/mtnode/storage"
)

// Key layout (all under the messaging table). Ids are big-endian so that
// key order is numeric order.
//
//	seq/user                     next user sequence number
//	user/<uid>                   User
//	phone/<phone>                uid
//	uname/<lowercase username>   uid
//	state/<uid>                  State (pts, next message id)
//	upd/<uid>/<pts>              UpdateRecord (the user's update log)
//	(further tables are added by the files that own them)

func be64(v int64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	return b[:]
}

func key(parts ...any) []byte {
	var out []byte
	for i, p := range parts {
		if i > 0 {
			out = append(out, '/')
		}
		switch v := p.(type) {
		case string:
			out = append(out, v...)
		case int64:
			out = append(out, be64(v)...)
		case int:
			out = append(out, be64(int64(v))...)
		case []byte:
			out = append(out, v...)
		default:
			panic(fmt.Sprintf("messaging: bad key part %T", p))
		}
	}
	return out
}

// getJSON loads a record; found is false if there is none.
func getJSON(tx storage.Reader, k []byte, v any) (found bool, err error) {
	b, err := tx.Get(k)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("decode %q: %w", k, err)
	}
	return true, nil
}

func putJSON(tx *storage.Txn, k []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Set(k, b)
}

func getInt(tx storage.Reader, k []byte) (int64, bool, error) {
	b, err := tx.Get(k)
	if errors.Is(err, storage.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	if len(b) != 8 {
		return 0, false, fmt.Errorf("value of %q is not an int64", k)
	}
	return int64(binary.BigEndian.Uint64(b)), true, nil
}

func putInt(tx *storage.Txn, k []byte, v int64) error { return tx.Set(k, be64(v)) }

func getJSONBytes(b []byte, v any) (bool, error) {
	if err := json.Unmarshal(b, v); err != nil {
		return false, err
	}
	return true, nil
}

func beUint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// setMark writes an empty value under k when on, else deletes k: a set
// member kept as a key.
func setMark(tx *storage.Txn, k []byte, on bool) error {
	if on {
		return tx.Set(k, nil)
	}
	return tx.Delete(k)
}

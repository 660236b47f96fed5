package storage

import (
	"errors"

	"github.com/dgraph-io/badger/v4"
)

// Txn is one read-write (or read-only) transaction over a table. Keys are
// relative to the table. It is what deterministic state machines (package
// messaging) are written against: everything they read and write in one
// command goes through one Txn, which commits atomically and durably.
type Txn struct {
	txn    *badger.Txn
	prefix []byte
}

func (t *Txn) key(k []byte) []byte {
	out := make([]byte, 0, len(t.prefix)+len(k))
	out = append(out, t.prefix...)
	return append(out, k...)
}

// Reader is the read side of a transaction: what read-only queries are
// written against, so that they run on a local Txn or on a reader that
// fetches each key from wherever it lives (a clustered node's shards).
type Reader interface {
	// Get returns a copy of the value under k, or ErrNotFound.
	Get(k []byte) ([]byte, error)
	// Iterate is Txn.Iterate.
	Iterate(prefix, start []byte, reverse bool, fn func(k, v []byte) (bool, error)) error
}

var _ Reader = (*Txn)(nil)

// Get returns a copy of the value under k, or ErrNotFound.
func (t *Txn) Get(k []byte) ([]byte, error) {
	item, err := t.txn.Get(t.key(k))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

// Set writes v under k.
func (t *Txn) Set(k, v []byte) error { return t.txn.Set(t.key(k), v) }

// Delete removes k.
func (t *Txn) Delete(k []byte) error { return t.txn.Delete(t.key(k)) }

// Iterate calls fn for keys with the prefix, starting at start (inclusive;
// nil means the first or, in reverse, the last key of the prefix), in key
// order or reverse. fn returns false to stop. Keys passed to fn are relative
// to the table and only valid during the call.
func (t *Txn) Iterate(prefix, start []byte, reverse bool, fn func(k, v []byte) (bool, error)) error {
	full := t.key(prefix)
	it := t.txn.NewIterator(badger.IteratorOptions{Prefix: full, Reverse: reverse, PrefetchValues: false})
	defer it.Close()
	seek := full
	if start != nil {
		seek = t.key(start)
	} else if reverse {
		seek = append(append([]byte{}, full...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	}
	for it.Seek(seek); it.ValidForPrefix(full); it.Next() {
		item := it.Item()
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		more, err := fn(item.Key()[len(t.prefix):], v)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// Update runs fn in a read-write transaction and commits it durably; if fn
// fails nothing is written. Badger retries are the caller's: a conflict
// returns badger.ErrConflict wrapped, which callers serialising their
// writes never see.
func (t *Table) Update(fn func(*Txn) error) error {
	return t.owner.synced(t.db.Update(func(txn *badger.Txn) error {
		return fn(&Txn{txn: txn, prefix: t.prefix})
	}))
}

// View runs fn in a read-only snapshot.
func (t *Table) View(fn func(*Txn) error) error {
	return t.db.View(func(txn *badger.Txn) error {
		return fn(&Txn{txn: txn, prefix: t.prefix})
	})
}

package storage

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// This file holds the few storage operations package replication needs on
// top of tables: sub-prefixes (a shard's range inside a table), several
// prefixes in one transaction, long-lived read snapshots for streaming a
// range, batched writes and bounded range deletes.

// ErrTxnTooBig is returned by a write when the transaction outgrew what
// Badger commits at once. Callers that batch commit what they have and go
// on in a new transaction.
var ErrTxnTooBig = badger.ErrTxnTooBig

// Sub returns the table whose keys live under t's prefix followed by p: a
// shard's range inside a table, or one part of that range.
func (t *Table) Sub(p []byte) *Table {
	return &Table{db: t.db, owner: t.owner, prefix: t.key(p)}
}

// Prefix is the table's full key prefix in the database.
func (t *Table) Prefix() []byte { return append([]byte(nil), t.prefix...) }

// Sub returns a view of the same transaction whose keys live under t's
// prefix followed by p, so one atomic commit can write several ranges.
func (t *Txn) Sub(p []byte) *Txn {
	return &Txn{txn: t.txn, prefix: t.key(p)}
}

// IterateKeys is Iterate without reading values: fn sees keys (relative to
// the table, valid only during the call) from start in key order or
// reverse, until it returns false.
func (t *Txn) IterateKeys(prefix, start []byte, reverse bool, fn func(k []byte) bool) {
	full := t.key(prefix)
	it := t.txn.NewIterator(badger.IteratorOptions{Prefix: full, Reverse: reverse, PrefetchValues: false})
	defer it.Close()
	seek := full
	if start != nil {
		seek = t.key(start)
	} else if reverse {
		seek = append(append([]byte{}, full...), bytes.Repeat([]byte{0xff}, 16)...)
	}
	for it.Seek(seek); it.ValidForPrefix(full); it.Next() {
		if !fn(it.Item().Key()[len(t.prefix):]) {
			return
		}
	}
}

// Snapshot is a read-only transaction pinned to one moment, for long reads
// (streaming a shard) while writes go on. Discard it when done; until
// then Badger keeps the versions it can see.
type Snapshot struct {
	Txn
}

// Discard releases the snapshot. Calling it twice is safe.
func (s *Snapshot) Discard() { s.txn.Discard() }

// Snapshot opens a read-only view of the table as it is now.
func (t *Table) Snapshot() *Snapshot {
	return &Snapshot{Txn{txn: t.db.NewTransaction(false), prefix: t.prefix}}
}

// Begin opens a read-write transaction the caller commits or discards
// itself (Commit, Discard), for writers that must decide after the fact
// whether to keep a transaction's writes.
func (t *Table) Begin() *WriteTxn {
	return &WriteTxn{Txn: Txn{txn: t.db.NewTransaction(true), prefix: t.prefix}, owner: t.owner}
}

// WriteTxn is a read-write transaction under the caller's control.
type WriteTxn struct {
	Txn
	owner *DB
}

// Commit writes the transaction durably; nothing of it is visible before.
func (w *WriteTxn) Commit() error { return w.owner.synced(w.txn.Commit()) }

// CommitLazy writes the transaction like Commit, but on a Lazy database
// without syncing: a crash may lose it (and every lazy write after the
// last sync), never tear it. Only for writes that are rebuilt after a
// crash. On a database that is not Lazy it is Commit.
func (w *WriteTxn) CommitLazy() error { return w.txn.Commit() }

// Discard drops the transaction's writes. Safe after Commit and twice.
func (w *WriteTxn) Discard() { w.txn.Discard() }

// KV is one key (relative to a table) and its value.
type KV struct {
	Key, Value []byte
}

// PutMany writes the pairs in order, in one durable transaction when they
// fit (the usual case: they commit atomically). When they outgrow one
// transaction they are split at Badger's limit; a crash can then leave a
// prefix of them written, never a later pair without an earlier one.
func (t *Table) PutMany(kvs []KV) error {
	for len(kvs) > 0 {
		txn := t.db.NewTransaction(true)
		n := 0
		for ; n < len(kvs); n++ {
			err := txn.Set(t.key(kvs[n].Key), kvs[n].Value)
			if errors.Is(err, badger.ErrTxnTooBig) && n > 0 {
				break
			}
			if err != nil {
				txn.Discard()
				return fmt.Errorf("put: %w", err)
			}
		}
		if err := t.owner.synced(txn.Commit()); err != nil {
			return fmt.Errorf("commit put: %w", err)
		}
		kvs = kvs[n:]
	}
	return nil
}

// DeleteRange deletes the table's keys k with start <= k < end (nil end:
// to the end of the table), committing every batch keys so no transaction
// grows unbounded. It returns how many keys it deleted. The range is not
// deleted atomically: callers that need that mark the work (see package
// replication's restore marker).
func (t *Table) DeleteRange(start, end []byte, batch int) (int, error) {
	if batch <= 0 {
		batch = 1000
	}
	total := 0
	for {
		var keys [][]byte
		err := t.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: t.prefix})
			defer it.Close()
			for it.Seek(t.key(start)); it.ValidForPrefix(t.prefix) && len(keys) < batch; it.Next() {
				k := it.Item().KeyCopy(nil)
				if end != nil && bytes.Compare(k[len(t.prefix):], end) >= 0 {
					break
				}
				keys = append(keys, k)
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("scan range: %w", err)
		}
		if len(keys) == 0 {
			return total, nil
		}
		for len(keys) > 0 {
			txn := t.db.NewTransaction(true)
			n := 0
			for ; n < len(keys); n++ {
				err := txn.Delete(keys[n])
				if errors.Is(err, badger.ErrTxnTooBig) && n > 0 {
					break
				}
				if err != nil {
					txn.Discard()
					return total, fmt.Errorf("delete range: %w", err)
				}
			}
			if err := t.owner.synced(txn.Commit()); err != nil {
				return total, fmt.Errorf("commit delete range: %w", err)
			}
			total += n
			keys = keys[n:]
		}
	}
}

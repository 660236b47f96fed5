package storage

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func TestSubTablesShareOneTransaction(t *testing.T) {
	db, err := Open(t.TempDir(), discard())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	shard := db.Table("shard").Sub([]byte("0001/"))
	err = shard.Update(func(tx *Txn) error {
		if err := tx.Sub([]byte("data/")).Set([]byte("k"), []byte("v")); err != nil {
			return err
		}
		return tx.Sub([]byte("meta/")).Set([]byte("applied"), []byte{7})
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := db.Table("shard").Get([]byte("0001/data/k")); err != nil || string(v) != "v" {
		t.Fatalf("data/k = %q, %v", v, err)
	}
	if v, err := shard.Sub([]byte("meta/")).Get([]byte("applied")); err != nil || !bytes.Equal(v, []byte{7}) {
		t.Fatalf("meta/applied = %v, %v", v, err)
	}
	// A discarded WriteTxn leaves nothing behind.
	w := shard.Begin()
	if err := w.Set([]byte("data/gone"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	w.Discard()
	if _, err := shard.Get([]byte("data/gone")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("discarded write visible: %v", err)
	}
}

func TestPutManySnapshotAndDeleteRange(t *testing.T) {
	db, err := Open(t.TempDir(), discard())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tb := db.Table("t").Sub([]byte("s1/"))
	other := db.Table("t").Sub([]byte("s2/"))
	var kvs []KV
	for i := range 2500 {
		kvs = append(kvs, KV{Key: fmt.Appendf(nil, "k%05d", i), Value: []byte("v")})
	}
	if err := tb.PutMany(kvs); err != nil {
		t.Fatal(err)
	}
	if err := other.Put([]byte("k00001"), []byte("keep")); err != nil {
		t.Fatal(err)
	}
	snap := tb.Snapshot()
	defer snap.Discard()
	n, err := tb.DeleteRange([]byte("k00100"), []byte("k02000"), 300)
	if err != nil || n != 1900 {
		t.Fatalf("deleted %d, %v", n, err)
	}
	count := func(tx *Txn) int {
		c := 0
		tx.IterateKeys(nil, nil, false, func([]byte) bool { c++; return true })
		return c
	}
	if c := count(&snap.Txn); c != 2500 {
		t.Fatalf("snapshot sees %d keys, want 2500", c)
	}
	var now int
	_ = tb.View(func(tx *Txn) error { now = count(tx); return nil })
	if now != 600 {
		t.Fatalf("after delete %d keys, want 600", now)
	}
	var last []byte
	_ = tb.View(func(tx *Txn) error {
		tx.IterateKeys(nil, nil, true, func(k []byte) bool { last = append([]byte(nil), k...); return false })
		return nil
	})
	if string(last) != "k02499" {
		t.Fatalf("last key %q", last)
	}
	if n, err := tb.DeleteRange(nil, nil, 0); err != nil || n != 600 {
		t.Fatalf("delete all: %d, %v", n, err)
	}
	if v, err := other.Get([]byte("k00001")); err != nil || string(v) != "keep" {
		t.Fatalf("neighbour range touched: %q %v", v, err)
	}
}

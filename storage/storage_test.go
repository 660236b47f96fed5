package storage

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"testing"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestSecondOpenIsRefused(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := Open(dir, discard()); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: got %v, want ErrLocked", err)
	}
}

func TestTablePersistsAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, discard())
	if err != nil {
		t.Fatal(err)
	}
	a, b := db.Table("a"), db.Table("b")
	if err := a.Put([]byte("k"), []byte("va")); err != nil {
		t.Fatal(err)
	}
	if err := b.Put([]byte("k"), []byte("vb")); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	db, err = Open(dir, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got, err := db.Table("a").Get([]byte("k"))
	if err != nil || !bytes.Equal(got, []byte("va")) {
		t.Fatalf("a/k = %q, %v", got, err)
	}
	got, err = db.Table("b").Get([]byte("k"))
	if err != nil || !bytes.Equal(got, []byte("vb")) {
		t.Fatalf("b/k = %q, %v", got, err)
	}
	if err := db.Table("b").Delete([]byte("k")); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Table("b").Get([]byte("k")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted key: %v", err)
	}
}

func TestScanStaysInTable(t *testing.T) {
	db, err := Open(t.TempDir(), discard())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.Table("a").Put([]byte("1"), []byte("x"))
	_ = db.Table("a").Put([]byte("2"), []byte("y"))
	_ = db.Table("ab").Put([]byte("3"), []byte("z"))
	var got []string
	err = db.Table("a").Scan(func(k, v []byte) error {
		got = append(got, string(k)+"="+string(v))
		return nil
	})
	if err != nil || len(got) != 2 || got[0] != "1=x" || got[1] != "2=y" {
		t.Fatalf("scan a: %v %v", got, err)
	}
}

func TestTxnIterateAndAtomicity(t *testing.T) {
	db, err := Open(t.TempDir(), discard())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tb := db.Table("m")
	err = tb.Update(func(tx *Txn) error {
		for _, k := range []string{"a/1", "a/2", "a/3", "b/1"} {
			if err := tx.Set([]byte(k), []byte("v"+k)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A failing update writes nothing.
	boom := errors.New("boom")
	if err := tb.Update(func(tx *Txn) error {
		_ = tx.Set([]byte("a/9"), []byte("x"))
		return boom
	}); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	collect := func(start []byte, reverse bool) (out []string) {
		_ = tb.View(func(tx *Txn) error {
			return tx.Iterate([]byte("a/"), start, reverse, func(k, v []byte) (bool, error) {
				out = append(out, string(k))
				return true, nil
			})
		})
		return out
	}
	if got := collect(nil, false); len(got) != 3 || got[0] != "a/1" || got[2] != "a/3" {
		t.Fatalf("forward: %v", got)
	}
	if got := collect(nil, true); len(got) != 3 || got[0] != "a/3" {
		t.Fatalf("reverse: %v", got)
	}
	if got := collect([]byte("a/2"), true); len(got) != 2 || got[0] != "a/2" {
		t.Fatalf("reverse from a/2: %v", got)
	}
	if got := collect([]byte("a/2"), false); len(got) != 2 || got[0] != "a/2" {
		t.Fatalf("forward from a/2: %v", got)
	}
}

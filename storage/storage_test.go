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

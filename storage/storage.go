// Package storage owns the node's one Badger database: opening it safely,
// the key layout, and small typed tables on top of it.
//
// Every write is on disk when it returns nil: Badger syncs each write
// (SyncWrites), or, for a database opened Lazy, the write is followed by an
// explicit sync. The one exception is WriteTxn.CommitLazy, for writes that
// can be rebuilt after a crash (a raft state machine's, which raft replays
// from its log).
package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// ErrLocked is returned by Open when another process already holds the data
// directory. Two nodes on one directory would corrupt each other's state, so
// this is always fatal.
var ErrLocked = errors.New("data directory is in use by another process")

// ErrNotFound is returned by Table.Get for a key that has no value.
var ErrNotFound = errors.New("not found")

// DB is the node's database. It is safe for concurrent use.
type DB struct {
	bdb  *badger.DB
	dir  string
	lazy bool
	sync syncer
}

// Options tune how a database is opened.
type Options struct {
	// Lazy turns Badger's per-write sync off and syncs explicitly after
	// every write instead, except WriteTxn.CommitLazy, which then costs no
	// fsync. A clustered node opens its database so: its raft state
	// machines' writes are replayed from the (synced) raft log after a
	// crash, and need not be synced themselves.
	Lazy bool
}

// Open opens (creating if needed) the Badger database under dir/badger.
// It fails with ErrLocked if another process has the directory open.
func Open(dir string, log *slog.Logger) (*DB, error) { return OpenWith(dir, log, Options{}) }

// OpenWith is Open with options.
func OpenWith(dir string, log *slog.Logger, o Options) (*DB, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	path := filepath.Join(dir, "badger")
	opts := badger.DefaultOptions(path).
		WithSyncWrites(!o.Lazy).
		WithLogger(badgerLogger{log: log.With("component", "badger")}).
		WithNumVersionsToKeep(1).
		WithMetricsEnabled(false)
	bdb, err := badger.Open(opts)
	if err != nil {
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("open %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("open badger at %s: %w", path, err)
	}
	d := &DB{bdb: bdb, dir: dir, lazy: o.Lazy}
	d.sync.cond = sync.NewCond(&d.sync.mu)
	return d, nil
}

// synced makes a write that returned err durable: on a Lazy database it
// syncs Badger's logs (which also makes every earlier lazy write durable).
// Concurrent writers share syncs (syncer): a node's raft groups append to
// their logs in the one database at once, and one msync covers them all.
func (d *DB) synced(err error) error {
	if err != nil || !d.lazy {
		return err
	}
	if err := d.sync.do(d.bdb.Sync); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return nil
}

// syncer is group commit for syncs. A caller needs a sync that starts
// after its write: if none is running it runs one; if one is running it
// waits for it to end and then for the next, which it or another waiter
// runs, shared by everyone who arrived meanwhile.
type syncer struct {
	mu       sync.Mutex
	cond     *sync.Cond
	running  bool
	started  uint64 // syncs started
	finished uint64 // the last sync that ended
	okUpTo   uint64 // the last sync that succeeded
	lastErr  error
}

func (s *syncer) do(sync func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := s.started + 1 // the first sync that starts after the write
	for s.finished < want {
		if s.running {
			s.cond.Wait()
			continue
		}
		s.running = true
		s.started++
		gen := s.started
		s.mu.Unlock()
		err := sync()
		s.mu.Lock()
		s.running = false
		s.finished = gen
		if err == nil {
			s.okUpTo = gen
		} else {
			s.lastErr = err
		}
		s.cond.Broadcast()
	}
	if s.okUpTo >= want {
		return nil // a sync that started after the write succeeded
	}
	return s.lastErr
}

// Dir is the data directory the database lives in.
func (d *DB) Dir() string { return d.dir }

// Close flushes and closes the database. Calling it twice is safe.
func (d *DB) Close() error {
	if d.bdb.IsClosed() {
		return nil
	}
	if err := d.bdb.Close(); err != nil {
		return fmt.Errorf("close badger: %w", err)
	}
	return nil
}

// Table returns the table with the given name. Tables partition the key space
// by prefix ("name/"), so names must not contain '/'.
func (d *DB) Table(name string) *Table {
	if strings.Contains(name, "/") || name == "" {
		panic("storage: bad table name " + name) // programming error, never input
	}
	return &Table{db: d.bdb, owner: d, prefix: []byte(name + "/")}
}

// Table is a prefix of the key space holding one kind of record.
type Table struct {
	db     *badger.DB
	owner  *DB
	prefix []byte
}

func (t *Table) key(k []byte) []byte {
	out := make([]byte, 0, len(t.prefix)+len(k))
	out = append(out, t.prefix...)
	return append(out, k...)
}

// Get returns a copy of the value stored under k, or ErrNotFound.
func (t *Table) Get(k []byte) ([]byte, error) {
	var out []byte
	err := t.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(t.key(k))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		out, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Put stores v under k durably (fsync before return).
func (t *Table) Put(k, v []byte) error {
	return t.owner.synced(t.db.Update(func(txn *badger.Txn) error {
		return txn.Set(t.key(k), v)
	}))
}

// Delete removes k. Deleting a missing key is not an error.
func (t *Table) Delete(k []byte) error {
	return t.owner.synced(t.db.Update(func(txn *badger.Txn) error {
		return txn.Delete(t.key(k))
	}))
}

// Scan calls fn for every key (without the table prefix) and value of the
// table, in key order, stopping at the first error.
func (t *Table) Scan(fn func(k, v []byte) error) error {
	return t.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: t.prefix, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if err := fn(item.KeyCopy(nil)[len(t.prefix):], v); err != nil {
				return err
			}
		}
		return nil
	})
}

// badgerLogger adapts Badger's printf-style logger to slog, so the node runs
// one logger. Badger's info chatter goes to debug.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any) {
	l.log.Error(strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (l badgerLogger) Warningf(f string, a ...any) {
	l.log.Warn(strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (l badgerLogger) Infof(f string, a ...any) {
	l.log.Debug(strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (l badgerLogger) Debugf(f string, a ...any) {
	l.log.Debug(strings.TrimSpace(fmt.Sprintf(f, a...)))
}

package replication

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mtnode/mtnode/storage"
)

// ErrKeyNotFound is what StableStore.Get and GetUint64 return for a key
// never set. hashicorp/raft recognises a missing stable key by the error
// text "not found" (as raft-boltdb returns it), so the text is fixed.
var ErrKeyNotFound = errors.New("not found")

// errCorrupt marks a stored record that does not decode.
var errCorrupt = errors.New("corrupt record")

// LogStore is a raft.LogStore for one shard, kept in the node's Badger
// under raft/<shard>/log/<index, 8 bytes big-endian>. Index order is key
// order, so first and last index are one seek each; they are cached and
// kept current by the writers.
type LogStore struct {
	tbl *storage.Table

	mu          sync.Mutex // serialises writes with the cached bounds
	first, last uint64
}

var _ raft.LogStore = (*LogStore)(nil)

// NewLogStore opens the raft log of one shard.
func NewLogStore(db *storage.DB, shard ShardID) (*LogStore, error) {
	s := &LogStore{tbl: db.Table(raftTable).Sub(shard.prefix()).Sub([]byte("log/"))}
	if err := s.loadBounds(); err != nil {
		return nil, err
	}
	return s, nil
}

func indexKey(i uint64) []byte { return binary.BigEndian.AppendUint64(nil, i) }

// loadBounds reads the first and last index from the keys; callers hold mu
// or own s exclusively.
func (s *LogStore) loadBounds() error {
	s.first, s.last = 0, 0
	return s.tbl.View(func(tx *storage.Txn) error {
		tx.IterateKeys(nil, nil, false, func(k []byte) bool {
			s.first = binary.BigEndian.Uint64(k)
			return false
		})
		tx.IterateKeys(nil, nil, true, func(k []byte) bool {
			s.last = binary.BigEndian.Uint64(k)
			return false
		})
		return nil
	})
}

// FirstIndex returns the first index written, 0 for an empty log.
func (s *LogStore) FirstIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first, nil
}

// LastIndex returns the last index written, 0 for an empty log.
func (s *LogStore) LastIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, nil
}

// GetLog reads the entry at index into out, or returns raft.ErrLogNotFound.
func (s *LogStore) GetLog(index uint64, out *raft.Log) error {
	v, err := s.tbl.Get(indexKey(index))
	if errors.Is(err, storage.ErrNotFound) {
		return raft.ErrLogNotFound
	}
	if err != nil {
		return fmt.Errorf("get log %d: %w", index, err)
	}
	if err := decodeLog(v, out); err != nil {
		return fmt.Errorf("decode log %d: %w", index, err)
	}
	out.Index = index
	return nil
}

// StoreLog stores one entry durably.
func (s *LogStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs stores the entries durably in one Badger transaction (one
// fsync). Only a batch beyond Badger's transaction limit is split, and then
// a crash can keep a prefix of it: raft sees that as a shorter append.
func (s *LogStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	kvs := make([]storage.KV, len(logs))
	for i, l := range logs {
		kvs[i] = storage.KV{Key: indexKey(l.Index), Value: encodeLog(l)}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.tbl.PutMany(kvs); err != nil {
		// Part may be written; re-read the bounds rather than guess.
		_ = s.loadBounds()
		return fmt.Errorf("store logs: %w", err)
	}
	lo, hi := logs[0].Index, logs[len(logs)-1].Index
	if s.first == 0 || lo < s.first {
		s.first = lo
	}
	if hi > s.last {
		s.last = hi
	}
	return nil
}

// DeleteRange deletes entries min..max inclusive, in bounded batches (raft
// deletes a prefix after a snapshot and a conflicting suffix on followers;
// either may be large).
func (s *LogStore) DeleteRange(min, max uint64) error {
	if min > max {
		return nil
	}
	var end []byte
	if max != math.MaxUint64 {
		end = indexKey(max + 1)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.tbl.DeleteRange(indexKey(min), end, 4096)
	if lerr := s.loadBounds(); err == nil && lerr != nil {
		err = lerr
	}
	if err != nil {
		return fmt.Errorf("delete logs %d..%d: %w", min, max, err)
	}
	return nil
}

// Log record: version 1, term, type, appended-at (unix ns, 0 for none),
// then data and extensions, each uvarint length-prefixed.
const logVersion = 1

func encodeLog(l *raft.Log) []byte {
	b := make([]byte, 0, 1+8+1+8+2*binary.MaxVarintLen32+len(l.Data)+len(l.Extensions))
	b = append(b, logVersion)
	b = binary.BigEndian.AppendUint64(b, l.Term)
	b = append(b, byte(l.Type))
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	b = binary.BigEndian.AppendUint64(b, uint64(at))
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	return append(b, l.Extensions...)
}

func decodeLog(b []byte, l *raft.Log) error {
	if len(b) < 18 || b[0] != logVersion {
		return errCorrupt
	}
	l.Term = binary.BigEndian.Uint64(b[1:])
	l.Type = raft.LogType(b[9])
	l.AppendedAt = time.Time{}
	if at := int64(binary.BigEndian.Uint64(b[10:])); at != 0 {
		l.AppendedAt = time.Unix(0, at)
	}
	rest := b[18:]
	var err error
	if l.Data, rest, err = lenPrefixed(rest); err != nil {
		return err
	}
	if l.Extensions, rest, err = lenPrefixed(rest); err != nil {
		return err
	}
	if len(rest) != 0 {
		return errCorrupt
	}
	return nil
}

func lenPrefixed(b []byte) (field, rest []byte, err error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return nil, nil, errCorrupt
	}
	b = b[w:]
	if n == 0 {
		return nil, b, nil
	}
	return b[:n:n], b[n:], nil
}

// StableStore is a raft.StableStore for one shard (current term, vote),
// kept in the node's Badger under raft/<shard>/stable/<key>. Every Set is
// one durable transaction.
type StableStore struct {
	tbl *storage.Table
}

var _ raft.StableStore = (*StableStore)(nil)

// NewStableStore opens the stable store of one shard.
func NewStableStore(db *storage.DB, shard ShardID) *StableStore {
	return &StableStore{tbl: db.Table(raftTable).Sub(shard.prefix()).Sub([]byte("stable/"))}
}

// Set stores val under key durably.
func (s *StableStore) Set(key, val []byte) error {
	if err := s.tbl.Put(key, val); err != nil {
		return fmt.Errorf("stable set: %w", err)
	}
	return nil
}

// Get returns the value under key, or ErrKeyNotFound.
func (s *StableStore) Get(key []byte) ([]byte, error) {
	v, err := s.tbl.Get(key)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrKeyNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("stable get: %w", err)
	}
	return v, nil
}

// SetUint64 stores val under key, 8 bytes big-endian.
func (s *StableStore) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 returns the number under key, or 0 and ErrKeyNotFound.
func (s *StableStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("stable get %q: %w", key, errCorrupt)
	}
	return binary.BigEndian.Uint64(v), nil
}

package replication

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/raft"

	"github.com/mtnode/mtnode/storage"
)

// Snapshot stream format (all integers big-endian):
//
//	magic "mtsnap\x00\x01" (8 bytes)
//	applied index (8 bytes): the last command the data includes
//	chunks: length L (4 bytes, > 0), then L bytes of records
//	    record: uvarint key length, key, uvarint value length, value
//	    (keys relative to the shard's data range, in key order)
//	terminator: length 0 (4 bytes)
//	record count (8 bytes)
//
// A chunk holds records up to the chunk size (one larger record gets a
// chunk of its own), so Restore holds one chunk in memory and writes it as
// one batch. The terminator and count catch a truncated stream; raft's
// FileSnapshotStore adds a CRC over the whole file.
var snapMagic = []byte("mtsnap\x00\x01")

type fsmSnapshot struct {
	snap    *storage.Snapshot
	applied uint64
	chunk   int
}

// Persist streams the pinned view to sink.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	hdr := append(append([]byte(nil), snapMagic...), binary.BigEndian.AppendUint64(nil, s.applied)...)
	if _, err := bw.Write(hdr); err != nil {
		return err
	}
	chunk := make([]byte, 0, s.chunk)
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		if _, err := bw.Write(binary.BigEndian.AppendUint32(nil, uint32(len(chunk)))); err != nil {
			return err
		}
		_, err := bw.Write(chunk)
		chunk = chunk[:0]
		return err
	}
	var count uint64
	err := s.snap.Sub(dataPrefix).Iterate(nil, nil, false, func(k, v []byte) (bool, error) {
		need := 2*binary.MaxVarintLen64 + len(k) + len(v)
		if len(chunk) > 0 && len(chunk)+need > s.chunk {
			if err := flush(); err != nil {
				return false, err
			}
		}
		chunk = binary.AppendUvarint(chunk, uint64(len(k)))
		chunk = append(chunk, k...)
		chunk = binary.AppendUvarint(chunk, uint64(len(v)))
		chunk = append(chunk, v...)
		count++
		return true, nil
	})
	if err != nil {
		return err
	}
	if err := flush(); err != nil {
		return err
	}
	tail := binary.BigEndian.AppendUint32(nil, 0)
	tail = binary.BigEndian.AppendUint64(tail, count)
	if _, err := bw.Write(tail); err != nil {
		return err
	}
	return bw.Flush()
}

// Release drops the pinned view.
func (s *fsmSnapshot) Release() { s.snap.Discard() }

type snapshotReader struct {
	r       *bufio.Reader
	applied uint64
}

func newSnapshotReader(r io.Reader) (*snapshotReader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	hdr := make([]byte, 16)
	if _, err := io.ReadFull(br, hdr); err != nil {
		return nil, fmt.Errorf("read snapshot header: %w", err)
	}
	if !bytes.Equal(hdr[:8], snapMagic) {
		return nil, fmt.Errorf("snapshot header: %w", errCorrupt)
	}
	return &snapshotReader{r: br, applied: binary.BigEndian.Uint64(hdr[8:])}, nil
}

// next returns the records of the next chunk, or nil at the terminator.
func (s *snapshotReader) next() ([]storage.KV, error) {
	var lb [4]byte
	if _, err := io.ReadFull(s.r, lb[:]); err != nil {
		return nil, fmt.Errorf("read chunk length: %w", unexpected(err))
	}
	n := binary.BigEndian.Uint32(lb[:])
	if n == 0 {
		return nil, nil
	}
	if n > uint32(maxChunkBytes) {
		return nil, fmt.Errorf("chunk of %d bytes: %w", n, errCorrupt)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(s.r, buf); err != nil {
		return nil, fmt.Errorf("read chunk: %w", unexpected(err))
	}
	var kvs []storage.KV
	for len(buf) > 0 {
		k, rest, err := lenPrefixed(buf)
		if err != nil {
			return nil, fmt.Errorf("chunk key: %w", err)
		}
		v, rest, err := lenPrefixed(rest)
		if err != nil {
			return nil, fmt.Errorf("chunk value: %w", err)
		}
		if v == nil {
			v = []byte{}
		}
		kvs = append(kvs, storage.KV{Key: k, Value: v})
		buf = rest
	}
	return kvs, nil
}

// finish checks the record count after the terminator.
func (s *snapshotReader) finish(records uint64) error {
	var cb [8]byte
	if _, err := io.ReadFull(s.r, cb[:]); err != nil {
		return fmt.Errorf("read record count: %w", unexpected(err))
	}
	if got := binary.BigEndian.Uint64(cb[:]); got != records {
		return fmt.Errorf("snapshot says %d records, read %d: %w", got, records, errCorrupt)
	}
	return nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

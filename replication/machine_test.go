package replication

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mtnode/mtnode/storage"
)

// kvMachine is the test state machine: set, increment and reject commands
// over a tiny KV. It records every index it applies under seen/ and counts
// an index it has already seen as a duplicate, so double applies show.
type kvMachine struct {
	calls    atomic.Int64
	dups     atomic.Int64
	restored uint64
}

var errRejectedByTest = errors.New("rejected by test machine")

func setCmd(k string, v []byte) []byte { return append([]byte("s"+k+"\x00"), v...) }
func incCmd(k string) []byte           { return []byte("i" + k + "\x00") }
func rejectCmd(k string) []byte        { return []byte("r" + k + "\x00") }

func (m *kvMachine) ApplyCommand(tx *storage.Txn, index uint64, data []byte) (any, error) {
	m.calls.Add(1)
	seen := binary.BigEndian.AppendUint64([]byte("seen/"), index)
	if _, err := tx.Get(seen); err == nil {
		m.dups.Add(1)
	}
	if err := tx.Set(seen, nil); err != nil {
		return nil, err
	}
	op, rest := data[0], string(data[1:])
	k, v, _ := strings.Cut(rest, "\x00")
	key := []byte("kv/" + k)
	switch op {
	case 's':
		return nil, tx.Set(key, []byte(v))
	case 'i':
		var n uint64
		if old, err := tx.Get(key); err == nil {
			n = binary.BigEndian.Uint64(old)
		}
		n++
		return n, tx.Set(key, binary.BigEndian.AppendUint64(nil, n))
	case 'r':
		if err := tx.Set(key, []byte("must not survive")); err != nil {
			return nil, err
		}
		return nil, errRejectedByTest
	}
	return nil, fmt.Errorf("unknown op %q", op)
}

func (m *kvMachine) Restored(index uint64) { m.restored = index }

// dumpTable renders a table's keys and values for comparison.
func dumpTable(t testing.TB, tb *storage.Table) string {
	t.Helper()
	var b strings.Builder
	if err := tb.Scan(func(k, v []byte) error {
		fmt.Fprintf(&b, "%x=%x\n", k, v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

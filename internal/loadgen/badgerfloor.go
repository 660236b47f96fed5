package loadgen

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// BadgerFloor is raw Badger commit throughput with the node's durability:
// Writers goroutines each committing, in a closed loop, one transaction
// shaped like the one messages.sendMessage commits.
type BadgerFloor struct {
	Writers int
	Elapsed time.Duration
	// Commits is transactions committed, PerSec Commits / Elapsed.
	Commits int64
	PerSec  float64
	// P50 and P99 are one commit's latency as its writer saw it.
	P50, P99 time.Duration
	// Entries and Bytes are one transaction's key-value pairs and their
	// key plus value bytes.
	Entries, Bytes int
}

// sendTxnShape is what one private messages.sendMessage writes, in one
// Badger transaction (messaging/messages.go: send, postMessage for the
// author and DeliverMessage for the recipient): per copy the user's state,
// an update-log entry, the message, its history index entry, the dialog,
// the dialog order key (plus a tombstone for the old one), and the
// random_id (author) or delivery (recipient) index. The key and value
// lengths (key lengths with the "msg/" table prefix) were read from a
// Badger after a second send of a 19-digit text between two users of
// messaging's test fixture: 1373 bytes in all. Larger user ids add a few
// digits to the JSON values.
var sendTxnShape = [][2]int{
	// author's copy
	{18, 43},  // state/<uid>: JSON State
	{25, 157}, // upd/<uid>/<pts>: JSON, TL updateNewMessage in base64
	{25, 132}, // msg/<uid>/<id>: JSON Message
	{36, 9},   // hist/<uid>/<peer>/<id>
	{26, 99},  // dlg/<uid>/<peer>: JSON Dialog
	{45, 0},   // dord/<uid>/<date>/<top>/<peer>
	{45, 0},   // the old dord key, deleted (a tombstone)
	{25, 8},   // rid/<uid>/<random_id>
	// recipient's copy
	{18, 43},
	{25, 157},
	{25, 110},
	{36, 9},
	{26, 99},
	{45, 0},
	{45, 0},
	{34, 8}, // dlv/<uid>/<from>/<from's id>
}

// runBadgerFloor opens a fresh Badger in a temp dir with the options the
// node's storage.Open uses (SyncWrites), and lets writers goroutines
// commit sendTxnShape transactions for d, at most maxOps in all.
func runBadgerFloor(ctx context.Context, writers int, d time.Duration, maxOps int) (*BadgerFloor, error) {
	dir, err := os.MkdirTemp("", "mtnode-badgerfloor-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	db, err := badger.Open(badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithLogger(nil).
		WithNumVersionsToKeep(1).
		WithMetricsEnabled(false))
	if err != nil {
		return nil, fmt.Errorf("open badger: %w", err)
	}
	rep := &BadgerFloor{Writers: writers, Entries: len(sendTxnShape)}
	for _, s := range sendTxnShape {
		rep.Bytes += s[0] + s[1]
	}
	var (
		started, done atomic.Int64
		wg            sync.WaitGroup
		mu            sync.Mutex
		all           hist
		errOnce       sync.Once
		firstErr      error
		gate          = make(chan struct{})
		deadline      time.Time
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			var h hist
			defer func() { mu.Lock(); all.merge(&h); mu.Unlock() }()
			val := make([]byte, 256)
			_, _ = crand.Read(val) // incompressible, as JSON and TL mostly are not
			for n := uint64(0); time.Now().Before(deadline) && started.Add(1) <= int64(maxOps) && ctx.Err() == nil; n++ {
				t0 := time.Now()
				err := db.Update(func(txn *badger.Txn) error {
					for i, s := range sendTxnShape {
						k := make([]byte, s[0])
						binary.BigEndian.PutUint32(k, uint32(w))
						binary.BigEndian.PutUint64(k[4:], n)
						k[12] = byte(i)
						if err := txn.Set(k, val[:s[1]]); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				h.record(time.Since(t0))
				done.Add(1)
			}
		}()
	}
	start := time.Now()
	deadline = start.Add(d)
	close(gate)
	wg.Wait()
	rep.Elapsed = time.Since(start)
	if cerr := db.Close(); cerr != nil && firstErr == nil {
		firstErr = cerr
	}
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rep.Commits = done.Load()
	rep.PerSec = perSec(float64(rep.Commits), rep.Elapsed)
	rep.P50, rep.P99 = all.quantile(0.5), all.quantile(0.99)
	return rep, nil
}

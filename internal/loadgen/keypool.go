package loadgen

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gotd/td/crypto"
	"github.com/gotd/td/exchange"
	"github.com/gotd/td/session"
)

// sessionsPerKey is how many connections (each its own session) share one
// auth key. gotd's client spends a large fraction of a second of CPU
// factoring pq for every key (crypto.DecomposePQ), so a key per connection
// would make opening a thousand connections take minutes of client CPU.
// The node allows 64 sessions per key; staying at half keeps its LRU
// eviction of sessions out of the measurements.
const sessionsPerKey = 32

// pooledKey is an auth key the node knows, and how many sessions use it.
type pooledKey struct {
	data session.Data
	used int
}

// keyPool hands out auth keys for clients, creating them with gotd's
// exchange client as needed. Keys made by the handshake scenario are
// added to it. Every key is used by at most sessionsPerKey clients over
// the whole run, so sessions never pile up on one key.
type keyPool struct {
	t       *target
	workers int

	mu   sync.Mutex
	keys []*pooledKey
	next int // first key with room
}

func newKeyPool(t *target, workers int) *keyPool {
	return &keyPool{t: t, workers: workers}
}

func (p *keyPool) add(r exchange.ClientExchangeResult) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys = append(p.keys, &pooledKey{data: session.Data{
		DC:        p.t.dc,
		Addr:      p.t.addr,
		AuthKey:   append([]byte(nil), r.AuthKey.Value[:]...),
		AuthKeyID: append([]byte(nil), r.AuthKey.ID[:]...),
		Salt:      r.ServerSalt,
	}})
}

// room is how many more sessions the pool's keys can take.
func (p *keyPool) room() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, k := range p.keys[p.next:] {
		n += sessionsPerKey - k.used
	}
	return n
}

// reserve makes room for n more sessions, creating keys concurrently.
// It is bounded by timeout and by the number of keys needed.
func (p *keyPool) reserve(ctx context.Context, n int, timeout time.Duration) error {
	need := (n - p.room() + sessionsPerKey - 1) / sessionsPerKey
	if need <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	keys := []exchange.PublicKey{p.t.key}
	jobs := make(chan struct{}, need)
	for range need {
		jobs <- struct{}{}
	}
	close(jobs)
	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
	)
	for range min(p.workers, need) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				// A failed exchange is retried by the next job only if
				// there is one; the shortfall is reported below.
				r, err := newKey(ctx, p.t.addr, p.t.dc, keys)
				if err != nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					if ctx.Err() != nil {
						return
					}
					continue
				}
				p.add(r)
			}
		}()
	}
	wg.Wait()
	if got := p.room(); got < n {
		return fmt.Errorf("create auth keys: room for %d sessions, want %d: %w", got, n, firstErr)
	}
	return nil
}

// take returns a session storage holding a pooled key for one client.
// reserve must have made room.
func (p *keyPool) take(ctx context.Context) (session.Storage, error) {
	p.mu.Lock()
	for p.next < len(p.keys) && p.keys[p.next].used >= sessionsPerKey {
		p.next++
	}
	if p.next == len(p.keys) {
		p.mu.Unlock()
		return nil, fmt.Errorf("key pool empty")
	}
	k := p.keys[p.next]
	k.used++
	data := k.data
	p.mu.Unlock()
	s := new(session.StorageMemory)
	if err := (&session.Loader{Storage: s}).Save(ctx, &data); err != nil {
		return nil, fmt.Errorf("store session: %w", err)
	}
	return s, nil
}

// newKey creates one auth key on a fresh connection, as a new client does.
func newKey(ctx context.Context, addr string, dc int, keys []exchange.PublicKey) (exchange.ClientExchangeResult, error) {
	var r exchange.ClientExchangeResult
	err := withExchangeConn(ctx, addr, func(tc exchangeConn) error {
		var err error
		r, err = exchange.NewExchanger(tc, dc).WithTimeout(exchangeTimeout).Client(keys).Run(ctx)
		return err
	})
	if err == nil && r.AuthKey.Value == (crypto.Key{}) {
		err = fmt.Errorf("key exchange returned no key")
	}
	return r, err
}

package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotd/td/telegram"

	"github.com/mtnode/mtnode/internal/mtclient"
)

// fleet is a set of connected, authorized gotd clients, each on its own
// TCP connection with its own auth key. All its goroutines are started by
// grow and end by close.
type fleet struct {
	t         *target
	transport mtclient.Transport
	pool      *keyPool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	clients []*telegram.Client

	mu   sync.Mutex
	lost int   // clients whose connection ended before close
	err  error // first such ending
}

func newFleet(t *target, tr mtclient.Transport, pool *keyPool) *fleet {
	// The clients outlive any one request context; close cancels them.
	ctx, cancel := context.WithCancel(context.Background())
	return &fleet{t: t, transport: tr, pool: pool, ctx: ctx, cancel: cancel}
}

// grow opens n more clients with keys from the pool, at most concurrency
// setting up at once, and returns when all are ready (initConnection done)
// or one fails or timeout passes. Keys the pool lacks are created first.
func (f *fleet) grow(ctx context.Context, n, concurrency int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := f.pool.reserve(ctx, n, timeout); err != nil {
		return err
	}
	ready := make(chan *telegram.Client, n)
	failed := make(chan error, n)
	sem := make(chan struct{}, concurrency)
	started := 0
	done := 0
	for done < n {
		var semC chan struct{}
		if started < n {
			semC = sem
		}
		select {
		case semC <- struct{}{}:
			store, err := f.pool.take(ctx)
			if err != nil {
				<-sem
				return err
			}
			c, err := mtclient.New(mtclient.Options{
				Addr:          f.t.addrFor(started),
				DC:            f.t.dc,
				PublicKeyFile: f.t.pubFile,
				Transport:     f.transport,
				Telegram:      telegram.Options{NoUpdates: true, SessionStorage: store},
			})
			if err != nil {
				<-sem
				return err
			}
			started++
			f.wg.Add(1)
			go f.runClient(c, sem, ready, failed)
		case c := <-ready:
			f.clients = append(f.clients, c)
			done++
		case err := <-failed:
			return fmt.Errorf("client %d of %d: %w", done+1, n, err)
		case <-ctx.Done():
			return fmt.Errorf("%d of %d clients ready: %w", done, n, ctx.Err())
		}
	}
	return nil
}

func (f *fleet) runClient(c *telegram.Client, sem chan struct{}, ready chan<- *telegram.Client, failed chan<- error) {
	defer f.wg.Done()
	var isReady atomic.Bool
	err := c.Run(f.ctx, func(ctx context.Context) error {
		isReady.Store(true)
		<-sem
		ready <- c
		<-ctx.Done()
		return nil
	})
	if !isReady.Load() {
		<-sem
		if err == nil {
			err = errors.New("client stopped before it was ready")
		}
		failed <- err
		return
	}
	if f.ctx.Err() == nil {
		f.mu.Lock()
		f.lost++
		if f.err == nil {
			f.err = err
		}
		f.mu.Unlock()
	}
}

// closeTimeout bounds waiting for gotd clients to stop.
const closeTimeout = 30 * time.Second

// close stops every client and waits for them.
func (f *fleet) close() error {
	f.cancel()
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeTimeout):
		return fmt.Errorf("clients did not stop within %s", closeTimeout)
	}
	return f.lostErr()
}

// lostErr reports clients whose connection ended on its own.
func (f *fleet) lostErr() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lost > 0 {
		return fmt.Errorf("%d clients lost their connection: %w", f.lost, f.err)
	}
	return nil
}

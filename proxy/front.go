package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults used by NewFront when the corresponding FrontConfig field is zero.
const (
	// DefaultMaxConcurrent bounds the splices running at once. Fronting
	// serves probes and the odd browser, not real traffic, so a thousand is
	// generous while keeping file descriptors and buffers (32 KiB per splice)
	// bounded.
	DefaultMaxConcurrent = 1024

	// DefaultPerIPRate is the steady rate of splices per second one source
	// may start.
	DefaultPerIPRate = 2.0

	// DefaultPerIPBurst is how many splices one source may start at once: a
	// browser opens up to six connections to a site, and reconnects.
	DefaultPerIPBurst = 16

	// DefaultIdleTimeout ends a splice that carried no byte either way for
	// this long: about what web servers allow an idle keep-alive connection.
	DefaultIdleTimeout = 2 * time.Minute
)

const (
	// frontDialTimeout bounds the connection to the front, so a front that
	// blackholes SYNs holds a slot for seconds, not minutes.
	frontDialTimeout = 5 * time.Second

	// spliceBufferSize is the copy buffer per direction: one full TLS record
	// (16 KiB of plaintext plus 256 bytes of expansion) fits in one read.
	spliceBufferSize = 16<<10 + 256
)

// Sentinel errors of the package, returned wrapped; test them with errors.Is.
var (
	// ErrFrontLimited means Splice refused a connection because the global
	// concurrency cap or the source's rate limit was reached. The client has
	// been closed and nothing was dialled.
	ErrFrontLimited = errors.New("front limit reached")

	// ErrFrontIdle means a splice ended because no byte moved in either
	// direction for FrontConfig.IdleTimeout.
	ErrFrontIdle = errors.New("front splice idle")

	// ErrFrontConfig means a FrontConfig is invalid; the message names the
	// field.
	ErrFrontConfig = errors.New("invalid front config")
)

// FrontConfig configures a Front. Zero numeric fields take the Default*
// values above; negative ones are rejected.
type FrontConfig struct {
	// Addr is host:port of the real site that probes must see. The host may
	// be a name; it is resolved at each dial, as a browser would.
	Addr string

	// MaxConcurrent caps splices running at once across all sources.
	MaxConcurrent int

	// PerIPRate is the number of splices per second a source may start in
	// the long run (token bucket refill rate). A source is one IPv4 address
	// or one IPv6 /64, the smallest block an ISP hands a customer.
	PerIPRate float64

	// PerIPBurst is the bucket size: how many splices a quiet source may
	// start at once.
	PerIPBurst int

	// IdleTimeout ends a splice after this long without traffic either way.
	IdleTimeout time.Duration

	// Logger receives debug events about splices (never their contents).
	// Nil discards.
	Logger *slog.Logger
}

// FrontStats is a snapshot of a Front's counters, for metrics. Counters only
// grow; Active is a gauge.
type FrontStats struct {
	// Spliced counts connections whose front dial succeeded.
	Spliced uint64
	// Limited counts connections refused with ErrFrontLimited.
	Limited uint64
	// DialFailed counts admitted connections whose front dial failed.
	DialFailed uint64
	// Active is the number of splices admitted and not yet finished.
	Active int64
	// BytesToFront counts bytes written to the front, including the bytes
	// handed to Splice as already read.
	BytesToFront uint64
	// BytesToClient counts bytes written back to clients.
	BytesToClient uint64
}

// Front splices connections to the real site named by FrontConfig.Addr. It
// holds no goroutine of its own, so it needs no Run or Close: every
// goroutine it starts belongs to one Splice call and ends before it returns.
// A Front is safe for concurrent use.
type Front struct {
	addr    string
	idle    time.Duration
	log     *slog.Logger
	dialer  net.Dialer
	slots   chan struct{}
	limiter *ipLimiter
	bufs    sync.Pool

	spliced, limited, dialFailed atomic.Uint64
	toFront, toClient            atomic.Uint64
	active                       atomic.Int64
}

// NewFront validates cfg and returns a Front.
func NewFront(cfg FrontConfig) (*Front, error) {
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("%w: addr %q: %v", ErrFrontConfig, cfg.Addr, err)
	}
	if host == "" {
		return nil, fmt.Errorf("%w: addr %q has no host", ErrFrontConfig, cfg.Addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return nil, fmt.Errorf("%w: addr %q: port must be 1-65535", ErrFrontConfig, cfg.Addr)
	}
	switch {
	case cfg.MaxConcurrent < 0:
		return nil, fmt.Errorf("%w: MaxConcurrent %d is negative", ErrFrontConfig, cfg.MaxConcurrent)
	case cfg.PerIPRate < 0 || math.IsNaN(cfg.PerIPRate):
		return nil, fmt.Errorf("%w: PerIPRate %v is not a non-negative number", ErrFrontConfig, cfg.PerIPRate)
	case cfg.PerIPBurst < 0:
		return nil, fmt.Errorf("%w: PerIPBurst %d is negative", ErrFrontConfig, cfg.PerIPBurst)
	case cfg.IdleTimeout < 0:
		return nil, fmt.Errorf("%w: IdleTimeout %v is negative", ErrFrontConfig, cfg.IdleTimeout)
	}
	if cfg.MaxConcurrent == 0 {
		cfg.MaxConcurrent = DefaultMaxConcurrent
	}
	if cfg.PerIPRate == 0 {
		cfg.PerIPRate = DefaultPerIPRate
	}
	if cfg.PerIPBurst == 0 {
		cfg.PerIPBurst = DefaultPerIPBurst
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Front{
		addr:    cfg.Addr,
		idle:    cfg.IdleTimeout,
		log:     log.With("component", "proxy.front"),
		dialer:  net.Dialer{Timeout: frontDialTimeout},
		slots:   make(chan struct{}, cfg.MaxConcurrent),
		limiter: newIPLimiter(cfg.PerIPRate, cfg.PerIPBurst, maxBuckets, time.Now),
	}
	f.bufs.New = func() any {
		b := make([]byte, spliceBufferSize)
		return &b
	}
	return f, nil
}

// Stats returns the current counters.
func (f *Front) Stats() FrontStats {
	return FrontStats{
		Spliced:       f.spliced.Load(),
		Limited:       f.limited.Load(),
		DialFailed:    f.dialFailed.Load(),
		Active:        f.active.Load(),
		BytesToFront:  f.toFront.Load(),
		BytesToClient: f.toClient.Load(),
	}
}

// Splice connects client to the front: it dials the front, writes read (the
// bytes the caller already consumed from client, in order) and then copies
// bytes both ways unchanged until both directions have ended, either side
// fails, IdleTimeout passes without traffic, or ctx is cancelled. The end of
// one direction is passed on as a half-close (CloseWrite) when the other
// connection supports it, and ends the whole splice when it does not.
//
// A client over the limits is closed at once and ErrFrontLimited returned,
// without dialling. In every case client is closed when Splice returns, and
// Splice does not keep read.
//
// The result is nil when both directions ended cleanly, ErrFrontIdle after
// the idle timeout, ctx.Err() after cancellation, and otherwise the first
// error that ended the splice, wrapped with its step.
func (f *Front) Splice(ctx context.Context, client net.Conn, read []byte) error {
	if err := f.admit(client.RemoteAddr()); err != nil {
		f.limited.Add(1)
		_ = client.Close()
		f.log.Debug("front splice refused", "remote", addrString(client.RemoteAddr()), "reason", err)
		return err
	}
	defer func() { <-f.slots }()
	f.active.Add(1)
	defer f.active.Add(-1)

	closeClient := sync.OnceFunc(func() { _ = client.Close() })
	defer closeClient()

	server, err := f.dialer.DialContext(ctx, "tcp", f.addr)
	if err != nil {
		f.dialFailed.Add(1)
		return fmt.Errorf("dial front: %w", err)
	}
	closeServer := sync.OnceFunc(func() { _ = server.Close() })
	defer closeServer()
	f.spliced.Add(1)

	s := &splice{
		f:           f,
		client:      client,
		server:      server,
		closeClient: closeClient,
		closeServer: closeServer,
		start:       time.Now(),
	}
	err = s.run(ctx, read)
	f.log.Debug("front splice ended",
		"remote", addrString(client.RemoteAddr()),
		"to_front", s.toFront.Load(), "to_client", s.toClient.Load(),
		"duration", time.Since(s.start), "err", err)
	return err
}

// admit takes a concurrency slot and a token from the source's bucket, or
// returns ErrFrontLimited having taken neither. The slot is tried first so a
// full node does not also spend the source's tokens.
func (f *Front) admit(remote net.Addr) error {
	select {
	case f.slots <- struct{}{}:
	default:
		return fmt.Errorf("%w: %d splices running", ErrFrontLimited, cap(f.slots))
	}
	if !f.limiter.allow(sourceKey(remote)) {
		<-f.slots
		return fmt.Errorf("%w: source rate", ErrFrontLimited)
	}
	return nil
}

// splice is the state of one admitted connection. Its two copy loops, the
// idle watchdog and the context watcher all end the splice through end,
// which records the first cause and closes both sockets.
type splice struct {
	f                        *Front
	client, server           net.Conn
	closeClient, closeServer func()
	start                    time.Time

	// last is the time of the latest traffic, as an offset from start so
	// that the monotonic clock is used and wall-clock steps cannot fake
	// idleness.
	last              atomic.Int64
	toFront, toClient atomic.Uint64

	mu       sync.Mutex
	ended    bool        // end was called; cause is final
	cause    error       // why the splice ended; nil for an orderly end
	finished bool        // run has returned; the watchdog must not re-arm
	watchdog *time.Timer // guarded by mu
}

func (s *splice) run(ctx context.Context, read []byte) error {
	s.touch()
	s.mu.Lock()
	s.watchdog = time.AfterFunc(s.f.idle, s.checkIdle)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.finished = true
		s.watchdog.Stop()
		s.mu.Unlock()
	}()
	stopCtx := context.AfterFunc(ctx, func() { s.end(ctx.Err()) })
	defer stopCtx()

	// The already-read bytes go first and alone: the client-to-front loop
	// starts only after they are written, so the front sees the client's
	// stream in its original order.
	if len(read) > 0 {
		n, err := s.server.Write(read)
		s.count(&s.toFront, &s.f.toFront, n)
		if err != nil {
			s.end(fmt.Errorf("write read bytes to front: %w", err))
			return s.result()
		}
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		s.pipe(s.server, s.client, &s.toFront, &s.f.toFront, "client to front")
	}()
	s.pipe(s.client, s.server, &s.toClient, &s.f.toClient, "front to client")
	<-done
	return s.result()
}

// pipe copies src to dst until src ends or fails. A clean end is passed on
// as a half-close of dst; an error, or a dst that cannot half-close, ends
// the whole splice.
func (s *splice) pipe(dst, src net.Conn, local, global *atomic.Uint64, name string) {
	bp := s.f.bufs.Get().(*[]byte)
	defer s.f.bufs.Put(bp)
	buf := *bp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			s.touch()
			w, werr := dst.Write(buf[:n])
			s.count(local, global, w)
			if werr != nil {
				s.end(fmt.Errorf("%s: write: %w", name, werr))
				return
			}
		}
		if rerr == nil {
			continue
		}
		if !errors.Is(rerr, io.EOF) {
			s.end(fmt.Errorf("%s: read: %w", name, rerr))
			return
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			if err := cw.CloseWrite(); err == nil {
				return
			}
		}
		// No half-close available (or it failed): the peer would otherwise
		// wait for an end it cannot see, so the whole splice ends here,
		// cleanly.
		s.end(nil)
		return
	}
}

// count adds n transferred bytes to the splice's and the Front's counters.
func (s *splice) count(local, global *atomic.Uint64, n int) {
	if n > 0 {
		local.Add(uint64(n))
		global.Add(uint64(n))
		s.touch()
	}
}

func (s *splice) touch() { s.last.Store(int64(time.Since(s.start))) }

// checkIdle runs on the watchdog timer: it ends the splice if nothing moved
// for the idle timeout, and otherwise re-arms for the remainder.
func (s *splice) checkIdle() {
	quiet := time.Since(s.start) - time.Duration(s.last.Load())
	if quiet >= s.f.idle {
		s.end(ErrFrontIdle)
		return
	}
	s.mu.Lock()
	if !s.finished {
		s.watchdog.Reset(s.f.idle - quiet)
	}
	s.mu.Unlock()
}

// end records why the splice ends, unless a reason is already recorded,
// and closes both sockets so every blocked Read and Write returns. A nil
// cause is an orderly end: the errors the closing itself provokes in the
// other loop are then not reported.
func (s *splice) end(cause error) {
	s.mu.Lock()
	if !s.ended {
		s.ended, s.cause = true, cause
	}
	s.mu.Unlock()
	s.closeClient()
	s.closeServer()
}

// result is the error Splice reports.
func (s *splice) result() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cause
}

// addrString formats an address for logs, tolerating nil.
func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

package protocol

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/crypto"

	"github.com/mtnode/mtnode/protocol/keyx"
	"github.com/mtnode/mtnode/protocol/transport"
)

// Config holds the protocol's limits and identity.
type Config struct {
	// DC is this node's data center id, checked in key exchange.
	DC int
	// MaxConnections caps open client connections; more are answered
	// -429 in their own transport and closed (at most BusyAnswers at a
	// time; beyond that they are closed at once).
	MaxConnections int
	// MaxHandshakes caps concurrent key exchanges; more get -429.
	MaxHandshakes int
	// IdleTimeout closes a connection that completes no frame for this long.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds one whole key exchange.
	HandshakeTimeout time.Duration
	// MaxFrameSize is the largest transport frame accepted from a client.
	MaxFrameSize int
}

func (c *Config) setDefaults() {
	if c.DC == 0 {
		c.DC = 1
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = 100000
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = 64
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 120 * time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 30 * time.Second
	}
	if c.MaxFrameSize <= 0 {
		c.MaxFrameSize = transport.DefaultMaxFrameSize
	}
}

// Options are everything a Server is built from.
type Options struct {
	Config Config
	// Key is the server's RSA key; clients know its public half.
	Key *rsa.PrivateKey
	// Keys stores auth keys durably.
	Keys KeyStore
	// SaltSecret derives server salts; every node of a DC must share it.
	SaltSecret []byte
	// Handler answers RPC calls.
	Handler Handler
	// Logger receives the protocol's logs; nil discards them.
	Logger *slog.Logger
	// Metrics, if nil, are created unregistered.
	Metrics *Metrics
	// Now and Rand default to the real clock and crypto/rand.
	Now  func() time.Time
	Rand io.Reader
	// OnPresence, if set, is told when a permanent key gets its first
	// session on this server (present) and loses its last (absent): who
	// PushPerm can reach here. It is called with the session table locked,
	// in order, and must not block or call back into the Server.
	OnPresence func(permKeyID int64, present bool)
	// Route, if set, sees every accepted connection before it is served
	// here, with what its obfuscated2 header declared, and may take it
	// (returning true): a node relays a client that asked for another DC
	// there. It runs on the connection's goroutine and returns when done
	// with it.
	Route func(ctx context.Context, tc transport.Conn, meta transport.Metadata) bool
	// Admit, if set, sees every accepted connection first and may refuse
	// it (ok false: it answered and closed tc); release runs when the
	// connection ends (per-IP limits, metrics by kind).
	Admit func(tc transport.Conn, meta transport.Metadata) (release func(), ok bool)
	// OnReject, if set, gets a connection the transport refused, with the
	// error, instead of it being closed, and returns when done with it (a
	// node splices probes to its front site). It must close nc.
	OnReject func(ctx context.Context, nc net.Conn, err error)
	// Transport, if set, replaces the transport options derived from
	// Config (MTProxy secrets, FakeTLS); its MaxFrameSize and Rand are
	// filled in from Config and Rand when zero. Called per connection, so
	// a reloaded set of secrets applies to new connections at once.
	Transport func() transport.Options
}

// maxSessions and maxSessionsPerKey bound the session table: one auth key
// can invent session ids at will.
const (
	maxSessions       = 1 << 18
	maxSessionsPerKey = 64
	maxCachedKeys     = 1 << 18
)

// Server is the MTProto server. Create it with NewServer, feed it listeners
// with Serve (or single connections with ServeConn), stop it with Close.
type Server struct {
	cfg        Config
	handler    Handler
	onPresence func(int64, bool)
	log        *slog.Logger
	metrics    *Metrics
	now        func() time.Time
	rand       io.Reader
	cipher     crypto.Cipher
	keys       *keyCache
	salts      salts
	ids        msgIDs
	kx         keyx.Config
	topts      transport.Options
	topt       func() transport.Options
	route      func(context.Context, transport.Conn, transport.Metadata) bool
	admit      func(transport.Conn, transport.Metadata) (func(), bool)
	onReject   func(context.Context, net.Conn, error)

	handshakes chan struct{}
	busy       chan struct{} // a slot per -429 answer being given
	connCount  atomic.Int64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wgMu   sync.Mutex // orders wg.Add against Close's wg.Wait
	closed bool

	sessMu   sync.Mutex
	sessions map[int64]map[int64]*session // auth key id → session id → session
	nSess    int
	// byPerm maps a permanent key id to the key ids (itself, and the
	// temporary keys bound to it) that have sessions, so that a push to a
	// user's authorization reaches PFS clients on their temporary keys.
	byPerm map[int64]map[int64]struct{}
}

// NewServer checks the options and builds a Server.
func NewServer(opts Options) (*Server, error) {
	if opts.Key == nil {
		return nil, errors.New("protocol: no RSA key")
	}
	if opts.Keys == nil || opts.Handler == nil {
		return nil, errors.New("protocol: key store and handler are required")
	}
	if len(opts.SaltSecret) < 16 {
		return nil, errors.New("protocol: salt secret must be at least 16 bytes")
	}
	cfg := opts.Config
	cfg.setDefaults()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:        cfg,
		handler:    opts.Handler,
		onPresence: opts.OnPresence,
		topt:       opts.Transport,
		route:      opts.Route,
		admit:      opts.Admit,
		onReject:   opts.OnReject,
		log:        opts.Logger.With("component", "protocol"),
		metrics:    opts.Metrics,
		now:        opts.Now,
		rand:       opts.Rand,
		cipher:     crypto.NewServerCipher(opts.Rand),
		keys:       newKeyCache(opts.Keys, maxCachedKeys),
		salts:      salts{secret: append([]byte(nil), opts.SaltSecret...)},
		ids:        msgIDs{now: opts.Now},
		handshakes: make(chan struct{}, cfg.MaxHandshakes),
		busy:       make(chan struct{}, BusyAnswers),
		ctx:        ctx,
		cancel:     cancel,
		sessions:   make(map[int64]map[int64]*session),
		byPerm:     make(map[int64]map[int64]struct{}),
		topts:      transport.Options{MaxFrameSize: cfg.MaxFrameSize, Rand: opts.Rand},
	}
	s.kx = keyx.Config{
		Key:  opts.Key,
		DC:   cfg.DC,
		Rand: opts.Rand,
		Now:  opts.Now,
		Exists: func(id [8]byte) bool {
			return s.keys.exists(int64(binary.LittleEndian.Uint64(id[:])))
		},
	}
	return s, nil
}

// Fingerprint is the fingerprint of the server's RSA key.
func (s *Server) Fingerprint() int64 { return s.kx.Fingerprint() }

// Serve accepts connections from ln until ctx is done or Close is called,
// then closes ln. It waits for nothing: Close waits for connections.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	stop2 := context.AfterFunc(s.ctx, func() { ln.Close() })
	defer stop2()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: back off, keep serving.
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay < time.Second {
				delay *= 2
			}
			s.log.Warn("accept failed", "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
				continue
			case <-ctx.Done():
				return nil
			}
		}
		delay = 0
		if !s.track() {
			nc.Close()
			return nil
		}
		go func() {
			defer s.wg.Done()
			s.serve(ctx, nc)
		}()
	}
}

// ServeConn serves one already-accepted connection (for example a WebSocket
// wrapped as a net.Conn) and returns when it is closed.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) {
	if !s.track() {
		nc.Close()
		return
	}
	defer s.wg.Done()
	s.serve(ctx, nc)
}

// WebSocketHandler serves MTProto over WebSocket (mount it at /apiws).
func (s *Server) WebSocketHandler() http.Handler {
	return transport.WebSocketHandler(func(nc net.Conn) { s.ServeConn(s.ctx, nc) }, s.log)
}

// Close ends every connection and waits for them. Safe to call twice.
func (s *Server) Close() error {
	s.wgMu.Lock()
	s.closed = true
	s.wgMu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

// track counts a new connection unless the server is closed.
func (s *Server) track() bool {
	s.wgMu.Lock()
	defer s.wgMu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// BusyAnswers bounds connections over a connection limit being answered
// -429 at once; each holds a goroutine for up to BusyAnswerTimeout.
const BusyAnswers = 256

// BusyAnswerTimeout bounds reading and answering the transport header of
// a connection over a connection limit.
const BusyAnswerTimeout = 5 * time.Second

func (s *Server) serve(ctx context.Context, nc net.Conn) {
	ctx, done, ok := s.open(ctx)
	if !ok {
		select {
		case s.busy <- struct{}{}:
			transport.Busy(nc, s.transportOptions(), codeFlood, BusyAnswerTimeout)
			<-s.busy
		default:
			nc.Close()
		}
		return
	}
	defer done()

	_ = nc.SetReadDeadline(s.now().Add(s.cfg.HandshakeTimeout))
	tc, err := transport.Accept(nc, s.transportOptions())
	if err != nil {
		s.log.Debug("transport not recognised", "remote", nc.RemoteAddr(), "err", err)
		if s.onReject != nil {
			_ = nc.SetReadDeadline(time.Time{})
			s.onReject(ctx, nc, err)
			return
		}
		nc.Close()
		return
	}
	meta, _ := transport.MetadataOf(tc)
	if s.admit != nil {
		release, ok := s.admit(tc, meta)
		if !ok {
			return
		}
		defer release()
	}
	if s.route != nil && s.route(ctx, tc, meta) {
		return
	}
	s.serveTransport(ctx, tc)
}

// transportOptions are the options of the next Accept.
func (s *Server) transportOptions() transport.Options {
	if s.topt == nil {
		return s.topts
	}
	o := s.topt()
	if o.MaxFrameSize == 0 {
		o.MaxFrameSize = s.topts.MaxFrameSize
	}
	if o.Rand == nil {
		o.Rand = s.topts.Rand
	}
	return o
}

func (s *Server) serveTransport(ctx context.Context, tc transport.Conn) {
	s.metrics.connsTotal.WithLabelValues(tc.Name()).Inc()
	c := newConn(s, tc)
	c.run(ctx)
}

// ServeTransport serves a connection already framed by a transport: one
// another node relayed here (Options.Route there). It counts against
// MaxConnections like any other and returns when the connection ends.
func (s *Server) ServeTransport(ctx context.Context, tc transport.Conn) {
	if !s.track() {
		tc.Close()
		return
	}
	defer s.wg.Done()
	ctx, done, ok := s.open(ctx)
	if !ok {
		_ = tc.WriteError(codeFlood)
		tc.Close()
		return
	}
	defer done()
	s.serveTransport(ctx, tc)
}

// open counts a connection against MaxConnections (ok false: over it) and
// returns its context, which ends with the server; done undoes both.
func (s *Server) open(ctx context.Context) (_ context.Context, done func(), ok bool) {
	if s.connCount.Add(1) > int64(s.cfg.MaxConnections) {
		s.connCount.Add(-1)
		s.metrics.connsRejected.Inc()
		return nil, nil, false
	}
	s.metrics.connsActive.Inc()
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	return ctx, func() {
		stop()
		cancel()
		s.metrics.connsActive.Dec()
		s.connCount.Add(-1)
	}, true
}

// acquireHandshake takes a handshake slot without waiting.
func (s *Server) acquireHandshake() bool {
	select {
	case s.handshakes <- struct{}{}:
		s.metrics.handshakeActive.Inc()
		return true
	default:
		return false
	}
}

func (s *Server) releaseHandshake() {
	<-s.handshakes
	s.metrics.handshakeActive.Dec()
}

// session returns the session (key, id), creating it if needed, and attaches
// it to c so that pushes reach c.
func (s *Server) session(key *AuthKey, id int64, c *conn) (*session, bool) {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	byID := s.sessions[key.ID()]
	if sess, ok := byID[id]; ok {
		sess.mu.Lock()
		sess.conn = c
		sess.mu.Unlock()
		return sess, false
	}
	if byID == nil {
		byID = make(map[int64]*session)
		s.sessions[key.ID()] = byID
		s.indexPermLocked(key)
	}
	if len(byID) >= maxSessionsPerKey {
		s.evictLocked(byID)
	}
	if s.nSess >= maxSessions {
		for _, m := range s.sessions {
			if len(m) > 0 {
				s.evictLocked(m)
				break
			}
		}
	}
	sess := newSession(key, id, s.now())
	sess.conn = c
	byID[id] = sess
	s.nSess++
	return sess, true
}

// evictLocked forgets the least recently used session of one key.
func (s *Server) evictLocked(byID map[int64]*session) {
	var victim *session
	for _, sess := range byID {
		sess.mu.Lock()
		used := sess.lastUsed
		sess.mu.Unlock()
		if victim == nil || used.Before(victim.lastUsed) {
			victim = sess
		}
	}
	if victim != nil {
		delete(byID, victim.id)
		s.nSess--
		if len(byID) == 0 {
			s.dropKeyLocked(victim.key)
		}
	}
}

// indexPermLocked records that key has sessions, under its permanent key.
func (s *Server) indexPermLocked(key *AuthKey) {
	perm := key.ID()
	if key.Temp {
		perm = key.PermKeyID
	}
	if perm == 0 {
		return // an unbound temporary key speaks for nobody yet
	}
	m := s.byPerm[perm]
	if m == nil {
		m = make(map[int64]struct{})
		s.byPerm[perm] = m
		if s.onPresence != nil {
			s.onPresence(perm, true)
		}
	}
	m[key.ID()] = struct{}{}
}

// dropKeyLocked forgets a key that has no sessions left.
func (s *Server) dropKeyLocked(key *AuthKey) {
	delete(s.sessions, key.ID())
	for perm, m := range s.byPerm {
		if _, ok := m[key.ID()]; ok {
			delete(m, key.ID())
			if len(m) == 0 {
				delete(s.byPerm, perm)
				if s.onPresence != nil {
					s.onPresence(perm, false)
				}
			}
		}
	}
}

// destroySession forgets a session of the key; it reports whether one existed.
func (s *Server) destroySession(keyID, id int64) bool {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	byID := s.sessions[keyID]
	if _, ok := byID[id]; !ok {
		return false
	}
	sess := byID[id]
	delete(byID, id)
	s.nSess--
	if len(byID) == 0 {
		s.dropKeyLocked(sess.key)
	}
	return true
}

// detach unhooks c from the sessions it served.
func (s *Server) detach(c *conn, keyID int64) {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	for _, sess := range s.sessions[keyID] {
		sess.mu.Lock()
		if sess.conn == c {
			sess.conn = nil
		}
		sess.mu.Unlock()
	}
}

// PushPerm pushes obj to every connected session speaking for the
// permanent key: the key itself and temporary keys bound to it. It is how
// updates reach a user's authorization. See Push.
func (s *Server) PushPerm(permKeyID int64, obj bin.Encoder) int {
	s.sessMu.Lock()
	keys := make([]int64, 0, len(s.byPerm[permKeyID]))
	for id := range s.byPerm[permKeyID] {
		keys = append(keys, id)
	}
	s.sessMu.Unlock()
	n := 0
	for _, id := range keys {
		n += s.Push(id, obj)
	}
	return n
}

// Push queues a server-initiated message (an update) for every session of
// the auth key that has a connection, except sessions whose calls all came
// wrapped in invokeWithoutUpdates. It never blocks: a connection whose
// queue is full misses the message, which clients recover from by their
// own means (updates.getDifference). It returns how many sessions got it.
func (s *Server) Push(authKeyID int64, obj bin.Encoder) int {
	var b bin.Buffer
	if err := obj.Encode(&b); err != nil {
		s.log.Error("encode push", "err", err)
		return 0
	}
	s.sessMu.Lock()
	var targets []*session
	for _, sess := range s.sessions[authKeyID] {
		targets = append(targets, sess)
	}
	s.sessMu.Unlock()
	n := 0
	for _, sess := range targets {
		sess.mu.Lock()
		c, quiet := sess.conn, sess.quiet
		sess.mu.Unlock()
		if c != nil && !quiet && c.trySend(outMsg{sess: sess, body: b.Copy(), content: true}) {
			n++
		}
	}
	return n
}

// errorf is a small helper for wrapping with the step name.
func errorf(step string, err error) error { return fmt.Errorf("%s: %w", step, err) }

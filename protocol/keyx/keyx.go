// Package keyx is the server side of MTProto 2.0 auth key creation
// (https://core.telegram.org/mtproto/auth_key): a per-connection state
// machine that is fed the body of one unencrypted client message at a time
// and answers with the body of the unencrypted reply.
//
// The package does no I/O. Framing, msg_id checks of the unencrypted
// envelope, timeouts and storing the created key belong to the caller, so the
// same code serves TCP, WebSocket and in-process tests, and every peer-driven
// decision is visible in one place (Handshake.Step).
package keyx

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/gotd/td/crypto"
)

// CodeAuthKeyNotFound is the transport error code (-404) carried by every
// Step error. The spec gives a failing key exchange no dedicated code; -404 is
// what Telegram servers send and what clients already treat as "start the key
// exchange over", so a confused or hostile peer learns nothing more specific.
const CodeAuthKeyNotFound int32 = -404

const (
	// DefaultMaxRetries is Config.MaxRetries when it is zero: the number of
	// dh_gen_retry answers (auth key id collisions) before dh_gen_fail.
	DefaultMaxRetries = 3

	// MaxTempKeyLifetime bounds expires_in of p_q_inner_data_temp(_dc), in
	// seconds. Telegram clients ask for a day or less; a year is a generous
	// upper bound that still keeps a "temporary" key from being permanent in
	// all but name, and keeps expiry arithmetic far from int32 overflow.
	MaxTempKeyLifetime = 365 * 24 * 60 * 60

	// MaxMessageSize bounds the body handed to Step. The largest legitimate
	// client message (set_client_DH_params with a 256-byte g_b) is under 400
	// bytes, so anything bigger is rejected before it is parsed.
	MaxMessageSize = 1024

	// MaxReqPQ bounds how many req_pq/req_pq_multi one Handshake answers
	// before req_DH_params. Desktop clients send one "fake" probe before the
	// real request; a few more are tolerated, an endless stream is not.
	MaxReqPQ = 4

	// testDCOffset is added to the DC id by clients in test mode.
	testDCOffset = 10000
)

// Sentinel errors. Every error returned by Step wraps exactly one of them
// inside an *Error, so callers can both pick the transport code (Error.Code)
// and classify the failure for metrics with errors.Is.
var (
	// ErrOutOfOrder means the message is valid TL but not expected in the
	// current state (e.g. set_client_DH_params before req_DH_params).
	ErrOutOfOrder = errors.New("message out of order")
	// ErrMalformed means the body is not a well-formed message of an
	// expected type, has trailing bytes, or exceeds a size bound.
	ErrMalformed = errors.New("malformed message")
	// ErrNonceMismatch means nonce or server_nonce differs from the ones
	// established earlier in this exchange.
	ErrNonceMismatch = errors.New("nonce mismatch")
	// ErrPQMismatch means pq, p or q differ from what we sent in resPQ.
	ErrPQMismatch = errors.New("pq mismatch")
	// ErrUnknownFingerprint means req_DH_params names an RSA key that is not
	// ours.
	ErrUnknownFingerprint = errors.New("unknown public key fingerprint")
	// ErrDecrypt means encrypted_data (RSA) or the AES-IGE encrypted client
	// answer did not decrypt to data with a matching hash.
	ErrDecrypt = errors.New("decryption failed")
	// ErrWrongDC means the dc in p_q_inner_data is not served by us.
	ErrWrongDC = errors.New("wrong dc")
	// ErrExpiresIn means a temporary key asked for a lifetime outside
	// 1..MaxTempKeyLifetime.
	ErrExpiresIn = errors.New("temporary key lifetime out of range")
	// ErrRetryID means retry_id is not 0 on the first attempt, or not the
	// auth_key_aux_hash of the previous attempt after dh_gen_retry.
	ErrRetryID = errors.New("bad retry_id")
	// ErrBadGB means g_b is outside the range the spec requires; the reply
	// is dh_gen_fail.
	ErrBadGB = errors.New("g_b out of range")
	// ErrRetriesExhausted means the auth key id collided more than
	// MaxRetries times; the reply is dh_gen_fail.
	ErrRetriesExhausted = errors.New("too many auth key id collisions")
	// ErrTooManyRequests means more than MaxReqPQ req_pq messages arrived.
	ErrTooManyRequests = errors.New("too many req_pq")
	// ErrFinished means Step was called after the exchange ended (key made,
	// or an earlier error). A new exchange needs a new Handshake.
	ErrFinished = errors.New("exchange finished")
	// ErrInternal means a server-side failure (the random source failed);
	// nothing the peer did.
	ErrInternal = errors.New("internal error")
)

// Error is the only error type Step returns. Code is the transport error
// code to send when Step returned no reply; Err wraps one sentinel.
type Error struct {
	// Code is a negative transport error code (always CodeAuthKeyNotFound
	// today; a field so the choice can change without touching callers).
	Code int32
	// Err wraps one of the package's sentinel errors.
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	return fmt.Sprintf("keyx: %v (code %d)", e.Err, e.Code)
}

// Unwrap lets errors.Is find the sentinel.
func (e *Error) Unwrap() error { return e.Err }

// Config is shared by all handshakes of a server. It must not be modified or
// copied after the first New(cfg); derived values (fingerprint, RSA CRT
// parameters) are computed once, lazily, and cached inside it.
type Config struct {
	// Key is the server RSA key (2048-bit). Its fingerprint is
	// crypto.RSAFingerprint(&Key.PublicKey).
	Key *rsa.PrivateKey
	// DC is our DC id. Inner data may name DC, -DC (media-only
	// connections) and ±(DC+10000) (clients in test mode). Anything else is
	// ErrWrongDC with code -404, not -444: a client that reaches the wrong
	// DC during key exchange has misconfigured addresses, and -404 makes it
	// restart cleanly instead of following a migrate it cannot act on.
	DC int
	// Rand is the randomness for nonces, pq, a and paddings. Default
	// crypto/rand.
	Rand io.Reader
	// Now is the clock for server_time in server_DH_inner_data. Default
	// time.Now.
	Now func() time.Time
	// Exists reports whether an auth key with this id already exists; if
	// so the client is told dh_gen_retry (at most MaxRetries times, then
	// dh_gen_fail). Nil means "never".
	Exists func(id [8]byte) bool
	// MaxRetries bounds dh_gen_retry answers. Zero means DefaultMaxRetries.
	MaxRetries int
	// Log receives debug events (never key material). Nil discards.
	Log *slog.Logger

	once sync.Once
	prep *prepared
}

// prepared holds values derived from Config once.
type prepared struct {
	fingerprint int64
	rsa         *rsaKey
	dh          *dhGroup
	rand        io.Reader
	now         func() time.Time
	maxRetries  int
	log         *slog.Logger
}

func (c *Config) prepare() *prepared {
	c.once.Do(func() {
		p := &prepared{
			rand:       c.Rand,
			now:        c.Now,
			maxRetries: c.MaxRetries,
			log:        c.Log,
		}
		if p.rand == nil {
			p.rand = rand.Reader
		}
		if p.now == nil {
			p.now = time.Now
		}
		if p.maxRetries <= 0 {
			p.maxRetries = DefaultMaxRetries
		}
		if p.log == nil {
			p.log = slog.New(slog.DiscardHandler)
		}
		p.log = p.log.With("component", "keyx")
		p.dh = newDHGroup()
		if c.Key != nil {
			p.fingerprint = crypto.RSAFingerprint(&c.Key.PublicKey)
			p.rsa = newRSAKey(c.Key)
		}
		c.prep = p
	})
	return c.prep
}

// Fingerprint returns our key's fingerprint (for logs and resPQ).
func (c *Config) Fingerprint() int64 {
	return c.prepare().fingerprint
}

// dcAllowed implements the DC rule documented on Config.DC.
func (c *Config) dcAllowed(dc int) bool {
	switch dc {
	case c.DC, -c.DC, c.DC + testDCOffset, -(c.DC + testDCOffset):
		return dc != 0
	}
	return false
}

// Result is a created auth key and what the caller needs to start the
// encrypted session with it.
type Result struct {
	// Key is the auth key with its id.
	Key crypto.AuthKey
	// ServerSalt is the first salt: crypto.ServerSalt(new_nonce, server_nonce).
	ServerSalt int64
	// Temp is true for p_q_inner_data_temp(_dc): a temporary key that must
	// be bound (auth.bindTempAuthKey) and forgotten after ExpiresIn.
	Temp bool
	// ExpiresIn is the temporary key lifetime in seconds,
	// 1..MaxTempKeyLifetime; zero for permanent keys.
	ExpiresIn int
	// DC is the dc the client asked for (our DC for p_q_inner_data, which
	// has no dc field).
	DC int
}

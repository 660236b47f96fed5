package keyx

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/big"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/crypto"
	"github.com/gotd/td/mt"
)

// state is where a Handshake is in the exchange.
type state uint8

const (
	// stateInit expects req_pq or req_pq_multi.
	stateInit state = iota
	// stateResPQ sent resPQ; expects req_DH_params (or another req_pq).
	stateResPQ
	// stateServerDH sent server_DH_params_ok; expects set_client_DH_params
	// (again after each dh_gen_retry).
	stateServerDH
	// stateDone is terminal: key created or exchange failed.
	stateDone
)

// Handshake is the state of one key exchange on one connection. Not safe for
// concurrent use: a connection reads its messages in order, and so must Step
// see them.
type Handshake struct {
	cfg  *Config
	prep *prepared

	state  state
	reqPQs int

	nonce       bin.Int128
	serverNonce bin.Int128
	p, q, pq    []byte

	newNonce bin.Int256
	inner    pqInner
	dc       int
	a        *big.Int
	tmpKey   []byte
	tmpIV    []byte

	retries int
	retryID int64
}

// New starts a key exchange. cfg is shared and must outlive the Handshake.
func New(cfg *Config) *Handshake {
	return &Handshake{cfg: cfg, prep: cfg.prepare()}
}

// Step consumes the TL body of one unencrypted message from the client and
// returns the TL body of the unencrypted reply. When the key is created, done
// is non-nil (the reply is then dh_gen_ok, still to be sent).
//
// An error means the exchange is over; it is always an *Error wrapping one
// sentinel. If reply is non-nil together with the error (dh_gen_fail), send
// the reply rather than the transport code: the client then knows to start
// over. Otherwise send Error.Code and close. After an error or done, Step
// only returns ErrFinished; a new exchange needs New.
func (h *Handshake) Step(body []byte) (reply []byte, done *Result, err error) {
	if h.state == stateDone {
		return nil, nil, h.fail("step", ErrFinished)
	}
	if len(body) > MaxMessageSize {
		return nil, nil, h.fail("step", fmt.Errorf("body of %d bytes: %w", len(body), ErrMalformed))
	}
	b := &bin.Buffer{Buf: body}
	id, err := b.PeekID()
	if err != nil {
		return nil, nil, h.fail("step", fmt.Errorf("type id: %w", ErrMalformed))
	}
	switch id {
	case mt.ReqPqRequestTypeID, mt.ReqPqMultiRequestTypeID:
		if h.state != stateInit && h.state != stateResPQ {
			return nil, nil, h.fail("req_pq", ErrOutOfOrder)
		}
		reply, err = h.onReqPQ(b, id)
		return reply, nil, err
	case mt.ReqDHParamsRequestTypeID:
		if h.state != stateResPQ {
			return nil, nil, h.fail("req_DH_params", ErrOutOfOrder)
		}
		reply, err = h.onReqDHParams(b)
		return reply, nil, err
	case mt.SetClientDHParamsRequestTypeID:
		if h.state != stateServerDH {
			return nil, nil, h.fail("set_client_DH_params", ErrOutOfOrder)
		}
		return h.onSetClientDHParams(b)
	default:
		// An encrypted message (auth_key_id != 0) never reaches here: the
		// caller routes by auth_key_id. Any other type is not ours.
		return nil, nil, h.fail("step", fmt.Errorf("type %#x: %w", id, ErrMalformed))
	}
}

// fail ends the exchange, drops secrets and wraps err for the caller.
func (h *Handshake) fail(step string, err error) error {
	if h.state != stateDone {
		h.prep.log.Debug("key exchange failed", "step", step, "err", err)
	}
	h.state = stateDone
	h.clearSecrets()
	return &Error{Code: CodeAuthKeyNotFound, Err: fmt.Errorf("%s: %w", step, err)}
}

func (h *Handshake) clearSecrets() {
	if h.a != nil {
		h.a.SetInt64(0)
	}
	h.a = nil
	clear(h.tmpKey)
	clear(h.tmpIV)
	h.tmpKey, h.tmpIV = nil, nil
	h.newNonce = bin.Int256{}
}

// decodeExact decodes exactly one object from b: trailing bytes are an
// error, because a well-formed client never sends them and accepting them
// would give a fuzzer's garbage somewhere to hide.
func decodeExact(b *bin.Buffer, d bin.Decoder) error {
	if err := d.Decode(b); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if b.Len() != 0 {
		return fmt.Errorf("%d trailing bytes: %w", b.Len(), ErrMalformed)
	}
	return nil
}

func encode(e bin.Encoder) ([]byte, error) {
	var b bin.Buffer
	if err := e.Encode(&b); err != nil {
		return nil, fmt.Errorf("encode: %w: %w", ErrInternal, err)
	}
	return b.Buf, nil
}

func (h *Handshake) onReqPQ(b *bin.Buffer, id uint32) ([]byte, error) {
	var nonce bin.Int128
	if id == mt.ReqPqRequestTypeID {
		var req mt.ReqPqRequest
		if err := decodeExact(b, &req); err != nil {
			return nil, h.fail("req_pq", err)
		}
		nonce = req.Nonce
	} else {
		var req mt.ReqPqMultiRequest
		if err := decodeExact(b, &req); err != nil {
			return nil, h.fail("req_pq_multi", err)
		}
		nonce = req.Nonce
	}
	h.reqPQs++
	if h.reqPQs > MaxReqPQ {
		return nil, h.fail("req_pq", ErrTooManyRequests)
	}
	if h.prep.rsa == nil {
		return nil, h.fail("req_pq", fmt.Errorf("no RSA key configured: %w", ErrInternal))
	}
	// Each resPQ is fresh: a repeated req_pq (the desktop "probe") must not
	// let the client reuse work or nonces from the previous answer.
	serverNonce, err := crypto.RandInt128(h.prep.rand)
	if err != nil {
		return nil, h.fail("req_pq", fmt.Errorf("server_nonce: %w: %w", ErrInternal, err))
	}
	p, q, err := generatePQ(h.prep.rand)
	if err != nil {
		return nil, h.fail("req_pq", fmt.Errorf("pq: %w: %w", ErrInternal, err))
	}
	h.nonce, h.serverNonce = nonce, serverNonce
	h.p, h.q, h.pq = uintBytes(p), uintBytes(q), uintBytes(p*q)
	reply, err := encode(&mt.ResPQ{
		Nonce:                       nonce,
		ServerNonce:                 serverNonce,
		Pq:                          h.pq,
		ServerPublicKeyFingerprints: []int64{h.prep.fingerprint},
	})
	if err != nil {
		return nil, h.fail("req_pq", err)
	}
	h.state = stateResPQ
	h.prep.log.Debug("sent resPQ", "legacy", id == mt.ReqPqRequestTypeID, "attempt", h.reqPQs)
	return reply, nil
}

func (h *Handshake) onReqDHParams(b *bin.Buffer) ([]byte, error) {
	const step = "req_DH_params"
	var req mt.ReqDHParamsRequest
	if err := decodeExact(b, &req); err != nil {
		return nil, h.fail(step, err)
	}
	if req.Nonce != h.nonce || req.ServerNonce != h.serverNonce {
		return nil, h.fail(step, ErrNonceMismatch)
	}
	if !bytes.Equal(req.P, h.p) || !bytes.Equal(req.Q, h.q) {
		return nil, h.fail(step, ErrPQMismatch)
	}
	if req.PublicKeyFingerprint != h.prep.fingerprint {
		return nil, h.fail(step, ErrUnknownFingerprint)
	}
	in, err := h.prep.rsa.decodeEncryptedData(h.prep.rand, req.EncryptedData)
	if err != nil {
		return nil, h.fail(step, err)
	}
	if in.nonce != h.nonce || in.serverNonce != h.serverNonce {
		return nil, h.fail(step, fmt.Errorf("inner data: %w", ErrNonceMismatch))
	}
	if !bytes.Equal(in.pq, h.pq) || !bytes.Equal(in.p, h.p) || !bytes.Equal(in.q, h.q) {
		return nil, h.fail(step, fmt.Errorf("inner data: %w", ErrPQMismatch))
	}
	dc := h.cfg.DC
	if in.hasDC {
		if !h.cfg.dcAllowed(in.dc) {
			return nil, h.fail(step, fmt.Errorf("dc %d: %w", in.dc, ErrWrongDC))
		}
		dc = in.dc
	}
	if in.temp && (in.expiresIn < 1 || in.expiresIn > MaxTempKeyLifetime) {
		return nil, h.fail(step, fmt.Errorf("expires_in %d: %w", in.expiresIn, ErrExpiresIn))
	}

	grp := h.prep.dh
	a, ga, err := grp.generateA(h.prep.rand)
	if err != nil {
		return nil, h.fail(step, fmt.Errorf("%w: %w", ErrInternal, err))
	}
	answer, err := encode(&mt.ServerDHInnerData{
		Nonce:       h.nonce,
		ServerNonce: h.serverNonce,
		G:           dhG,
		DhPrime:     grp.pBytes,
		GA:          ga.Bytes(),
		ServerTime:  int(h.prep.now().Unix()),
	})
	if err != nil {
		return nil, h.fail(step, err)
	}
	key, iv := crypto.TempAESKeys(in.newNonce.BigInt(), h.serverNonce.BigInt())
	encrypted, err := crypto.EncryptExchangeAnswer(h.prep.rand, answer, key, iv)
	if err != nil {
		return nil, h.fail(step, fmt.Errorf("encrypt answer: %w: %w", ErrInternal, err))
	}
	reply, err := encode(&mt.ServerDHParamsOk{
		Nonce:           h.nonce,
		ServerNonce:     h.serverNonce,
		EncryptedAnswer: encrypted,
	})
	if err != nil {
		return nil, h.fail(step, err)
	}
	h.newNonce, h.inner, h.dc = in.newNonce, in, dc
	h.a, h.tmpKey, h.tmpIV = a, key, iv
	h.state = stateServerDH
	h.prep.log.Debug("sent server_DH_params_ok", "temp", in.temp, "dc", dc)
	return reply, nil
}

func (h *Handshake) onSetClientDHParams(b *bin.Buffer) ([]byte, *Result, error) {
	const step = "set_client_DH_params"
	var req mt.SetClientDHParamsRequest
	if err := decodeExact(b, &req); err != nil {
		return nil, nil, h.fail(step, err)
	}
	if req.Nonce != h.nonce || req.ServerNonce != h.serverNonce {
		return nil, nil, h.fail(step, ErrNonceMismatch)
	}
	var inner mt.ClientDHInnerData
	err := decryptAnswer(req.EncryptedData, h.tmpKey, h.tmpIV, maxClientDHEncrypted, func(data []byte) (int, error) {
		ib := &bin.Buffer{Buf: data}
		if err := inner.Decode(ib); err != nil {
			return 0, err
		}
		return len(data) - ib.Len(), nil
	})
	if err != nil {
		return nil, nil, h.fail(step, err)
	}
	if inner.Nonce != h.nonce || inner.ServerNonce != h.serverNonce {
		return nil, nil, h.fail(step, fmt.Errorf("inner data: %w", ErrNonceMismatch))
	}
	if inner.RetryID != h.retryID {
		return nil, nil, h.fail(step, ErrRetryID)
	}

	grp := h.prep.dh
	gb := new(big.Int).SetBytes(inner.GB)
	var key crypto.Key
	// g_b^a mod p < p < 2^2048 always fits, left-padded to 256 bytes.
	new(big.Int).Exp(gb, h.a, grp.p).FillBytes(key[:])

	if !grp.inRange(gb) {
		reply, err := h.genFail(key)
		if err != nil {
			return nil, nil, h.fail(step, err)
		}
		return reply, nil, h.fail(step, ErrBadGB)
	}

	id := key.ID()
	if h.cfg.Exists != nil && h.cfg.Exists(id) {
		if h.retries >= h.prep.maxRetries {
			reply, err := h.genFail(key)
			if err != nil {
				return nil, nil, h.fail(step, err)
			}
			return reply, nil, h.fail(step, ErrRetriesExhausted)
		}
		h.retries++
		aux := key.AuxHash()
		h.retryID = int64(binary.LittleEndian.Uint64(aux[:]))
		reply, err := encode(&mt.DhGenRetry{
			Nonce:         h.nonce,
			ServerNonce:   h.serverNonce,
			NewNonceHash2: nonceHash(h.newNonce, 2, key),
		})
		if err != nil {
			return nil, nil, h.fail(step, err)
		}
		h.prep.log.Debug("auth key id collision, sent dh_gen_retry", "attempt", h.retries)
		return reply, nil, nil
	}

	reply, err := encode(&mt.DhGenOk{
		Nonce:         h.nonce,
		ServerNonce:   h.serverNonce,
		NewNonceHash1: nonceHash(h.newNonce, 1, key),
	})
	if err != nil {
		return nil, nil, h.fail(step, err)
	}
	res := &Result{
		Key:        key.WithID(),
		ServerSalt: crypto.ServerSalt(h.newNonce, h.serverNonce),
		Temp:       h.inner.temp,
		DC:         h.dc,
	}
	if h.inner.temp {
		res.ExpiresIn = h.inner.expiresIn
	}
	h.prep.log.Debug("auth key created",
		"auth_key_id", hex.EncodeToString(id[:]), "temp", res.Temp, "dc", res.DC)
	h.state = stateDone
	h.clearSecrets()
	return reply, res, nil
}

// genFail encodes dh_gen_fail. new_nonce_hash3 uses the aux hash of the key
// that the failed attempt would have produced, as the client computes it.
func (h *Handshake) genFail(key crypto.Key) ([]byte, error) {
	return encode(&mt.DhGenFail{
		Nonce:         h.nonce,
		ServerNonce:   h.serverNonce,
		NewNonceHash3: nonceHash(h.newNonce, 3, key),
	})
}

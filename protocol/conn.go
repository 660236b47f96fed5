package protocol

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/crypto"
	"github.com/gotd/td/mt"
	"github.com/gotd/td/proto"
	"github.com/gotd/td/tg"
	"github.com/gotd/td/tgerr"

	"github.com/mtnode/mtnode/protocol/keyx"
	"github.com/mtnode/mtnode/protocol/transport"
)

// Per-connection bounds.
const (
	outQueue            = 64               // outgoing messages waiting for the writer (72 B each, allocated per connection)
	maxInflight         = 32               // RPCs of one connection running at once
	maxHandshakesOnConn = 4                // key exchanges one connection may run (perm + temp, with retries)
	maxContainerLen     = 1024             // messages in one container
	maxVectorLen        = 8192             // ids in msgs_ack, msgs_state_req, msg_resend_req
	writeTimeout        = 30 * time.Second // a client that does not read is dropped
	ackDelay            = 100 * time.Millisecond
	afterMsgWait        = 10 * time.Second // invokeAfterMsg waits this long for its predecessor
	minPadding          = 12               // MTProto 2.0 padding is 12..1024 bytes
)

// Transport error codes sent before closing.
const (
	codeAuthKeyNotFound = -404
	codeFlood           = -429
)

// protoError ends a connection, sending code first if it is not 0.
type protoError struct {
	code int32
	err  error
}

func (e *protoError) Error() string { return fmt.Sprintf("transport error %d: %v", e.code, e.err) }
func (e *protoError) Unwrap() error { return e.err }

func fail(code int32, err error) error { return &protoError{code: code, err: err} }

// outMsg is one message for the writer.
type outMsg struct {
	raw      []byte   // an unencrypted frame payload, sent as is
	sess     *session // else: encrypt body for this session
	body     []byte
	content  bool
	response bool
	reqID    int64 // client msg_id this rpc_result answers, 0 if none
}

// conn is one client connection.
type conn struct {
	srv *Server
	tc  transport.Conn
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	out    chan outMsg
	poke   chan struct{}

	// Read-loop state, touched by the read goroutine only.
	hs        *keyx.Handshake
	hsDeadine time.Time
	hsCount   int
	keyID     int64

	inflight chan struct{}
	rpcs     sync.WaitGroup

	ackMu sync.Mutex
	acks  map[*session][]int64

	discMu sync.Mutex
	disc   *time.Timer
}

func newConn(s *Server, tc transport.Conn) *conn {
	return &conn{
		srv:      s,
		tc:       tc,
		log:      s.log.With("remote", tc.RemoteAddr().String(), "transport", tc.Name()),
		out:      make(chan outMsg, outQueue),
		poke:     make(chan struct{}, 1),
		inflight: make(chan struct{}, maxInflight),
		acks:     make(map[*session][]int64),
	}
}

// run owns the connection's goroutines: the reader (this one), the writer
// and the RPC workers. It returns when all of them are done.
func (c *conn) run(ctx context.Context) {
	c.ctx, c.cancel = context.WithCancel(ctx)
	// Server shutdown closes the socket so the reader wakes up; errors found
	// by the reader cancel only c.ctx, leaving the socket open for the
	// transport error code.
	stop := context.AfterFunc(ctx, func() { c.tc.Close() })
	defer stop()
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		if err := c.writeLoop(); err != nil {
			c.log.Debug("write failed", "err", err)
			c.cancel()
			c.tc.Close() // unblock the reader
		}
	}()

	err := c.readLoop()
	c.cancel()
	c.rpcs.Wait()
	<-writerDone
	var pe *protoError
	if errors.As(err, &pe) && pe.code != 0 {
		c.srv.metrics.transportErrors.WithLabelValues(fmt.Sprint(pe.code)).Inc()
		_ = c.tc.SetWriteDeadline(time.Now().Add(time.Second))
		_ = c.tc.WriteError(pe.code)
	}
	if err != nil {
		c.log.Debug("connection closed", "err", err)
	}
	c.tc.Close()
	if c.hs != nil {
		c.srv.releaseHandshake()
		c.hs = nil
	}
	c.discMu.Lock()
	if c.disc != nil {
		c.disc.Stop()
	}
	c.discMu.Unlock()
	if c.keyID != 0 {
		c.srv.detach(c, c.keyID)
	}
}

func (c *conn) readLoop() error {
	var buf bin.Buffer
	for {
		deadline := c.srv.now().Add(c.srv.cfg.IdleTimeout)
		if c.hs != nil && c.hsDeadine.Before(deadline) {
			deadline = c.hsDeadine
		}
		_ = c.tc.SetReadDeadline(deadline)
		if err := c.tc.ReadFrame(&buf); err != nil {
			if c.ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, transport.ErrFrameTooLarge) || errors.Is(err, transport.ErrBadFrame) {
				return fail(codeAuthKeyNotFound, err)
			}
			return err
		}
		if len(buf.Buf) < 8 {
			return fail(codeAuthKeyNotFound, errors.New("frame shorter than auth_key_id"))
		}
		var err error
		if binary.LittleEndian.Uint64(buf.Buf) == 0 {
			err = c.handleUnencrypted(buf.Buf)
		} else {
			err = c.handleEncrypted(buf.Buf)
		}
		if err != nil {
			return err
		}
	}
}

// handleUnencrypted runs one step of key exchange.
func (c *conn) handleUnencrypted(frame []byte) error {
	var m proto.UnencryptedMessage
	if err := m.Decode(&bin.Buffer{Buf: frame}); err != nil {
		return fail(codeAuthKeyNotFound, errorf("decode unencrypted message", err))
	}
	if c.hs == nil {
		if c.hsCount >= maxHandshakesOnConn {
			return fail(codeAuthKeyNotFound, errors.New("too many key exchanges on one connection"))
		}
		if !c.srv.acquireHandshake() {
			c.srv.metrics.handshakes.WithLabelValues("busy").Inc()
			return fail(codeFlood, errors.New("handshake limit reached"))
		}
		c.hs = keyx.New(&c.srv.kx)
		c.hsDeadine = c.srv.now().Add(c.srv.cfg.HandshakeTimeout)
		c.hsCount++
	}
	reply, done, err := c.hs.Step(m.MessageData)
	if err != nil {
		c.srv.releaseHandshake()
		c.hs = nil
		c.srv.metrics.handshakes.WithLabelValues("failed").Inc()
		if reply != nil {
			// dh_gen_fail: the spec's answer, not a transport error. The
			// client may start over on this connection.
			return c.sendPlain(reply)
		}
		code := int32(codeAuthKeyNotFound)
		var ke *keyx.Error
		if errors.As(err, &ke) && ke.Code != 0 {
			code = int32(ke.Code)
		}
		return fail(code, errorf("key exchange", err))
	}
	if done != nil {
		now := c.srv.now()
		key := &AuthKey{
			Key:         done.Key,
			Temp:        done.Temp,
			CreatedAt:   now.Unix(),
			InitialSalt: done.ServerSalt,
		}
		if done.Temp {
			key.ExpiresAt = now.Unix() + int64(done.ExpiresIn)
		}
		// The key is durable before dh_gen_ok leaves: a client may use it on
		// another connection the moment it reads the answer.
		if err := c.srv.keys.put(key); err != nil {
			c.srv.releaseHandshake()
			c.hs = nil
			c.srv.metrics.handshakes.WithLabelValues("failed").Inc()
			c.log.Error("store auth key", "err", err)
			return errorf("store auth key", err)
		}
		c.srv.releaseHandshake()
		c.hs = nil
		c.srv.metrics.handshakes.WithLabelValues("ok").Inc()
		c.log.Debug("auth key created", "temp", done.Temp)
	}
	return c.sendPlain(reply)
}

// sendPlain queues an unencrypted message (key exchange answers).
func (c *conn) sendPlain(body []byte) error {
	var b bin.Buffer
	msg := proto.UnencryptedMessage{MessageID: c.srv.ids.next(true), MessageData: body}
	if err := msg.Encode(&b); err != nil {
		return errorf("encode unencrypted message", err)
	}
	return c.send(outMsg{raw: b.Buf})
}

// handleEncrypted decrypts one message and processes it.
func (c *conn) handleEncrypted(frame []byte) error {
	keyID := int64(binary.LittleEndian.Uint64(frame))
	key, err := c.srv.keys.get(keyID)
	if err != nil {
		if !errors.Is(err, ErrKeyNotFound) {
			c.log.Error("load auth key", "err", err)
		}
		return fail(codeAuthKeyNotFound, errors.New("unknown auth key"))
	}
	now := c.srv.now()
	if key.Temp && now.Unix() >= key.ExpiresAt {
		return fail(codeAuthKeyNotFound, errors.New("temporary auth key expired"))
	}
	var em crypto.EncryptedMessage
	if err := em.DecodeWithoutCopy(&bin.Buffer{Buf: frame}); err != nil {
		return fail(codeAuthKeyNotFound, errorf("decode encrypted message", err))
	}
	data, err := c.srv.cipher.Decrypt(key.Key, &em)
	if err != nil {
		return fail(codeAuthKeyNotFound, errorf("decrypt", err))
	}
	n := int(data.MessageDataLen)
	if n > len(data.MessageDataWithPadding) || len(data.MessageDataWithPadding)-n < minPadding {
		return fail(codeAuthKeyNotFound, errors.New("bad message length or padding"))
	}
	if c.keyID == 0 {
		c.keyID = keyID
	} else if c.keyID != keyID {
		// One connection, one key: it keeps session bookkeeping simple and
		// no real client mixes keys on a connection.
		return fail(codeAuthKeyNotFound, errors.New("auth key changed on connection"))
	}
	sess, _ := c.srv.session(key, data.SessionID, c)
	if !c.srv.salts.valid(key, data.Salt, now) {
		c.srv.metrics.badMsgs.WithLabelValues("48").Inc()
		return c.sendObj(sess, &mt.BadServerSalt{
			BadMsgID:      data.MessageID,
			BadMsgSeqno:   int(data.SeqNo),
			ErrorCode:     badMsgServerSalt,
			NewServerSalt: c.srv.salts.current(key, now),
		}, false, false)
	}
	return c.process(sess, data.MessageID, data.SeqNo, data.MessageDataWithPadding[:n], false)
}

// notContentRelated lists the messages that need no acknowledgement and so
// carry even seqnos.
func notContentRelated(id uint32) bool {
	switch id {
	case mt.MsgsAckTypeID, proto.MessageContainerTypeID, mt.HTTPWaitRequestTypeID:
		return true
	}
	return false
}

// serviceQuery lists the MTProto service messages a client may send with
// an even or an odd seqno.
func serviceQuery(id uint32) bool {
	switch id {
	case mt.PingRequestTypeID, mt.PingDelayDisconnectRequestTypeID, mt.GetFutureSaltsRequestTypeID,
		mt.MsgsStateReqTypeID, mt.MsgResendReqTypeID, mt.DestroySessionRequestTypeID,
		mt.RPCDropAnswerRequestTypeID:
		return true
	}
	return false
}

func (c *conn) badMsg(sess *session, msgID int64, seqno int32, code int) error {
	c.srv.metrics.badMsgs.WithLabelValues(fmt.Sprint(code)).Inc()
	return c.sendObj(sess, &mt.BadMsgNotification{BadMsgID: msgID, BadMsgSeqno: int(seqno), ErrorCode: code}, false, false)
}

// process handles one message (the top level or an element of a container).
func (c *conn) process(sess *session, msgID int64, seqno int32, body []byte, inContainer bool) error {
	now := c.srv.now()
	if code := checkMsgTime(msgID, now); code != 0 {
		return c.badMsg(sess, msgID, seqno, code)
	}
	b := &bin.Buffer{Buf: body}
	typeID, err := b.PeekID()
	if err != nil {
		return fail(codeAuthKeyNotFound, errors.New("empty message"))
	}
	if typeID == proto.GZIPTypeID {
		var g proto.GZIP
		if err := g.Decode(b); err != nil {
			return fail(codeAuthKeyNotFound, errorf("gzip_packed", err))
		}
		b = &bin.Buffer{Buf: g.Data}
		if typeID, err = b.PeekID(); err != nil {
			return fail(codeAuthKeyNotFound, errors.New("empty gzip_packed"))
		}
	}
	content := !notContentRelated(typeID)
	// MTProto service queries (ping, get_future_salts, ...) are sent with
	// either parity: gotd sends them as not content-related (even), and
	// Telegram answers them. Parity is enforced for API calls, acks and
	// containers.
	if serviceQuery(typeID) {
		content = seqno%2 == 1
	}
	if content && seqno%2 == 0 {
		return c.badMsg(sess, msgID, seqno, badMsgSeqNoOdd)
	}
	if !content && seqno%2 == 1 {
		return c.badMsg(sess, msgID, seqno, badMsgSeqNoEven)
	}
	switch sess.admit(msgID, now) {
	case admitDuplicate:
		// The client resent a message we have: resend its answer if we
		// have one, otherwise it is still running or needs none.
		if r, ok := sess.result(msgID); ok {
			return c.send(outMsg{sess: sess, body: r, content: true, response: true, reqID: msgID})
		}
		return nil
	case admitTooOld:
		return c.badMsg(sess, msgID, seqno, badMsgTooOld)
	}
	if err := c.announce(sess, msgID); err != nil {
		return err
	}

	switch typeID {
	case proto.MessageContainerTypeID:
		defer sess.finish(msgID, nil)
		if inContainer {
			return c.badMsg(sess, msgID, seqno, badMsgInvalidContainer)
		}
		msgs, err := decodeContainer(b)
		if err != nil {
			return c.badMsg(sess, msgID, seqno, badMsgInvalidContainer)
		}
		for _, m := range msgs {
			if err := c.process(sess, m.ID, int32(m.SeqNo), m.Body, true); err != nil {
				return err
			}
		}
		return nil
	case mt.MsgsAckTypeID:
		defer sess.finish(msgID, nil)
		var ack mt.MsgsAck
		if err := ack.Decode(b); err != nil || len(ack.MsgIDs) > maxVectorLen {
			return fail(codeAuthKeyNotFound, errors.New("bad msgs_ack"))
		}
		sess.ack(ack.MsgIDs)
		return nil
	case mt.PingRequestTypeID:
		defer sess.finish(msgID, nil)
		var p mt.PingRequest
		if err := p.Decode(b); err != nil {
			return c.badMsg(sess, msgID, seqno, badMsgInvalidContainer)
		}
		return c.sendObj(sess, &mt.Pong{MsgID: msgID, PingID: p.PingID}, true, true)
	case mt.PingDelayDisconnectRequestTypeID:
		defer sess.finish(msgID, nil)
		var p mt.PingDelayDisconnectRequest
		if err := p.Decode(b); err != nil {
			return c.badMsg(sess, msgID, seqno, badMsgInvalidContainer)
		}
		c.armDisconnect(time.Duration(p.DisconnectDelay) * time.Second)
		return c.sendObj(sess, &mt.Pong{MsgID: msgID, PingID: p.PingID}, true, true)
	case mt.MsgsStateReqTypeID:
		defer sess.finish(msgID, nil)
		var r mt.MsgsStateReq
		if err := r.Decode(b); err != nil || len(r.MsgIDs) > maxVectorLen {
			return c.badMsg(sess, msgID, seqno, badMsgInvalidContainer)
		}
		info := make([]byte, len(r.MsgIDs))
		for i, id := range r.MsgIDs {
			info[i] = sess.status(id, now)
		}
		return c.sendObj(sess, &mt.MsgsStateInfo{ReqMsgID: msgID, Info: info}, false, true)
	case mt.MsgResendReqTypeID:
		defer sess.finish(msgID, nil)
		var r mt.MsgResendReq
		if err := r.Decode(b); err != nil || len(r.MsgIDs) > maxVectorLen {
			return c.badMsg(sess, msgID, seqno, badMsgInvalidContainer)
		}
		for _, id := range r.MsgIDs {
			if res, ok := sess.result(id); ok {
				if err := c.send(outMsg{sess: sess, body: res, content: true, response: true, reqID: id}); err != nil {
					return err
				}
			}
		}
		return nil
	case mt.HTTPWaitRequestTypeID:
		sess.finish(msgID, nil)
		return nil
	case mt.DestroySessionRequestTypeID:
		var r mt.DestroySessionRequest
		if err := r.Decode(b); err != nil {
			return c.badMsg(sess, msgID, seqno, badMsgInvalidContainer)
		}
		var res bin.Encoder = &mt.DestroySessionNone{SessionID: r.SessionID}
		if r.SessionID != sess.id && c.srv.destroySession(sess.key.ID(), r.SessionID) {
			res = &mt.DestroySessionOk{SessionID: r.SessionID}
		}
		return c.answer(sess, msgID, res)
	case mt.GetFutureSaltsRequestTypeID:
		defer sess.finish(msgID, nil)
		var r mt.GetFutureSaltsRequest
		if err := r.Decode(b); err != nil {
			return c.badMsg(sess, msgID, seqno, badMsgInvalidContainer)
		}
		return c.sendObj(sess, &mt.FutureSalts{
			ReqMsgID: msgID,
			Now:      int(now.Unix()),
			Salts:    c.srv.salts.future(sess.key, now, r.Num),
		}, false, true)
	case mt.RPCDropAnswerRequestTypeID:
		var r mt.RPCDropAnswerRequest
		if err := r.Decode(b); err != nil {
			return c.badMsg(sess, msgID, seqno, badMsgInvalidContainer)
		}
		// Calls run to completion here; there is never a pending answer
		// to drop by the time this is read in order.
		return c.answer(sess, msgID, &mt.RPCAnswerUnknown{})
	}
	c.queueAck(sess, msgID)
	return c.startRPC(sess, msgID, b.Buf)
}

// announce sends new_session_created before the first answer of a session.
func (c *conn) announce(sess *session, firstMsgID int64) error {
	sess.mu.Lock()
	if sess.announced {
		sess.mu.Unlock()
		return nil
	}
	sess.announced = true
	sess.mu.Unlock()
	unique, err := crypto.RandInt64(c.srv.rand)
	if err != nil {
		return errorf("random unique_id", err)
	}
	return c.sendObj(sess, &mt.NewSessionCreated{
		FirstMsgID: firstMsgID,
		UniqueID:   unique,
		ServerSalt: c.srv.salts.current(sess.key, c.srv.now()),
	}, true, false)
}

// decodeContainer reads msg_container with bounds on count and sizes.
func decodeContainer(b *bin.Buffer) ([]proto.Message, error) {
	if err := b.ConsumeID(proto.MessageContainerTypeID); err != nil {
		return nil, err
	}
	n, err := b.Int()
	if err != nil {
		return nil, err
	}
	if n < 0 || n > maxContainerLen || n*16 > b.Len() {
		return nil, errors.New("container length out of range")
	}
	msgs := make([]proto.Message, 0, n)
	for i := 0; i < n; i++ {
		var m proto.Message
		if err := m.Decode(b); err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// answer sends obj as the rpc_result of msgID and remembers it for resends.
func (c *conn) answer(sess *session, msgID int64, obj bin.Encoder) error {
	body, err := encodeResult(msgID, obj)
	if err != nil {
		return err
	}
	sess.finish(msgID, body)
	return c.send(outMsg{sess: sess, body: body, content: true, response: true, reqID: msgID})
}

func encodeResult(msgID int64, obj bin.Encoder) ([]byte, error) {
	var inner bin.Buffer
	if err := obj.Encode(&inner); err != nil {
		return nil, errorf("encode result", err)
	}
	var b bin.Buffer
	if err := (&proto.Result{RequestMessageID: msgID, Result: inner.Buf}).Encode(&b); err != nil {
		return nil, errorf("encode rpc_result", err)
	}
	return b.Buf, nil
}

// startRPC runs a call on a worker; at most maxInflight per connection, so a
// client that floods calls is slowed to the pace of its answers.
func (c *conn) startRPC(sess *session, msgID int64, body []byte) error {
	select {
	case c.inflight <- struct{}{}:
	case <-c.ctx.Done():
		return nil
	}
	body = append([]byte(nil), body...) // the read buffer is reused
	c.rpcs.Add(1)
	go func() {
		defer c.rpcs.Done()
		defer func() { <-c.inflight }()
		res := c.srv.invoke(c.ctx, sess, msgID, body)
		sess.finish(msgID, res)
		_ = c.send(outMsg{sess: sess, body: res, content: true, response: true, reqID: msgID})
	}()
	return nil
}

// invoke unwraps and dispatches one call and returns its encoded rpc_result.
func (s *Server) invoke(ctx context.Context, sess *session, msgID int64, body []byte) []byte {
	start := time.Now()
	method := "unknown"
	result, err := func() (bin.Encoder, error) {
		u, err := unwrap(body)
		if err != nil {
			return nil, err
		}
		// initConnection comes once, with a session's first call; later
		// calls are answered with what it said.
		sess.mu.Lock()
		if u.layer != 0 {
			sess.layer = u.layer
		}
		if u.client != nil {
			sess.client = u.client
		}
		// invokeWithoutUpdates: a call so wrapped does not subscribe the
		// session to updates; any other call does (see Push).
		if u.noUpdates {
			sess.quiet = !sess.subscribed
		} else {
			sess.subscribed, sess.quiet = true, false
		}
		layer, client := sess.layer, sess.client
		sess.mu.Unlock()
		if len(u.afterMsgs) > 0 && !sess.waitDone(ctx, u.afterMsgs, time.Now().Add(afterMsgWait)) {
			return nil, tgerr.New(400, "MSG_WAIT_FAILED")
		}
		ub := &bin.Buffer{Buf: u.body}
		id, err := ub.PeekID()
		if err != nil {
			return nil, tgerr.New(400, "INPUT_REQUEST_INVALID")
		}
		method = s.metrics.method(id)
		key, err := s.keys.get(sess.key.ID())
		if err != nil {
			return nil, err
		}
		if id == tg.AuthBindTempAuthKeyRequestTypeID {
			return s.bindTempKey(key, sess, msgID, ub)
		}
		perm := key.ID()
		if key.Temp {
			perm = key.PermKeyID
		}
		call := &Call{
			AuthKeyID: key.ID(),
			PermKeyID: perm,
			SessionID: sess.id,
			MsgID:     msgID,
			Layer:     layer,
			NoUpdates: u.noUpdates,
			Client:    client,
			Body:      ub,
		}
		return s.safeHandle(ctx, call)
	}()
	s.metrics.rpcSeconds.WithLabelValues(method).Observe(time.Since(start).Seconds())
	if err != nil {
		code, msg := rpcError(err)
		if code >= 500 {
			s.log.Error("rpc failed", "method", method, "err", err)
		}
		label := msg
		var te *tgerr.Error
		if errors.As(err, &te) {
			label = te.Type
		}
		s.metrics.rpcs.WithLabelValues(method, label).Inc()
		result = &mt.RPCError{ErrorCode: code, ErrorMessage: msg}
	} else {
		s.metrics.rpcs.WithLabelValues(method, "ok").Inc()
	}
	out, err := encodeResult(msgID, result)
	if err != nil {
		s.log.Error("encode rpc result", "method", method, "err", err)
		out, _ = encodeResult(msgID, &mt.RPCError{ErrorCode: 500, ErrorMessage: "INTERNAL"})
	}
	return out
}

// safeHandle calls the handler; a panic becomes INTERNAL and the connection
// lives on.
func (s *Server) safeHandle(ctx context.Context, call *Call) (res bin.Encoder, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("handler panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			res, err = nil, tgerr.New(500, "INTERNAL")
		}
	}()
	res, err = s.handler.Handle(ctx, call)
	if err == nil && res == nil {
		return nil, tgerr.New(500, "INTERNAL")
	}
	return res, err
}

// bindTempKey implements auth.bindTempAuthKey: it is part of the protocol,
// not of the API, because it changes which key a session speaks for.
func (s *Server) bindTempKey(key *AuthKey, sess *session, msgID int64, b *bin.Buffer) (bin.Encoder, error) {
	var req tg.AuthBindTempAuthKeyRequest
	if err := req.Decode(b); err != nil {
		return nil, badRequest(err)
	}
	if !key.Temp {
		return nil, tgerr.New(400, "TEMP_AUTH_KEY_EMPTY")
	}
	perm, err := s.keys.get(req.PermAuthKeyID)
	if err != nil || perm.Temp {
		return nil, tgerr.New(400, "ENCRYPTED_MESSAGE_INVALID")
	}
	if _, err := keyx.VerifyBind(perm.Key, key.ID(), sess.id, msgID, &req); err != nil {
		var te *tgerr.Error
		if errors.As(err, &te) {
			return nil, te
		}
		return nil, tgerr.New(400, "ENCRYPTED_MESSAGE_INVALID")
	}
	bound := *key
	bound.PermKeyID = perm.ID()
	if exp := int64(req.ExpiresAt); exp < bound.ExpiresAt {
		bound.ExpiresAt = exp
	}
	if err := s.keys.put(&bound); err != nil {
		return nil, errorf("store bound key", err)
	}
	s.sessMu.Lock()
	s.indexPermLocked(&bound)
	s.sessMu.Unlock()
	return &tg.BoolTrue{}, nil
}

// armDisconnect implements ping_delay_disconnect: close the connection if no
// new ping arrives within d.
func (c *conn) armDisconnect(d time.Duration) {
	if d <= 0 {
		return
	}
	if d > time.Hour {
		d = time.Hour
	}
	c.discMu.Lock()
	defer c.discMu.Unlock()
	if c.disc != nil {
		c.disc.Stop()
	}
	c.disc = time.AfterFunc(d, func() {
		c.log.Debug("ping_delay_disconnect expired")
		c.cancel()
		c.tc.Close()
	})
}

// sendObj encodes obj and queues it.
func (c *conn) sendObj(sess *session, obj bin.Encoder, content, response bool) error {
	var b bin.Buffer
	if err := obj.Encode(&b); err != nil {
		return errorf("encode", err)
	}
	return c.send(outMsg{sess: sess, body: b.Buf, content: content, response: response})
}

// send queues m for the writer, waiting for room.
func (c *conn) send(m outMsg) error {
	select {
	case c.out <- m:
		return nil
	case <-c.ctx.Done():
		return c.ctx.Err()
	}
}

// trySend queues m if there is room now.
func (c *conn) trySend(m outMsg) bool {
	select {
	case c.out <- m:
		return true
	default:
		c.srv.metrics.pushDropped.Inc()
		return false
	}
}

// queueAck remembers a client message that needs msgs_ack unless its answer
// goes out first (an answer acknowledges its request).
func (c *conn) queueAck(sess *session, msgID int64) {
	c.ackMu.Lock()
	if len(c.acks[sess]) < maxVectorLen {
		c.acks[sess] = append(c.acks[sess], msgID)
	}
	c.ackMu.Unlock()
	select {
	case c.poke <- struct{}{}:
	default:
	}
}

func (c *conn) unqueueAck(sess *session, msgID int64) {
	c.ackMu.Lock()
	defer c.ackMu.Unlock()
	ids := c.acks[sess]
	for i, id := range ids {
		if id == msgID {
			c.acks[sess] = append(ids[:i], ids[i+1:]...)
			return
		}
	}
}

func (c *conn) writeLoop() error {
	var (
		buf      bin.Buffer
		ackTimer <-chan time.Time
	)
	for {
		select {
		case m := <-c.out:
			if err := c.write(&buf, m); err != nil {
				return err
			}
		case <-c.poke:
			if ackTimer == nil {
				ackTimer = time.After(ackDelay)
			}
		case <-ackTimer:
			ackTimer = nil
			c.ackMu.Lock()
			pending := c.acks
			c.acks = make(map[*session][]int64)
			c.ackMu.Unlock()
			for sess, ids := range pending {
				if len(ids) == 0 {
					continue
				}
				var b bin.Buffer
				if err := (&mt.MsgsAck{MsgIDs: ids}).Encode(&b); err != nil {
					return err
				}
				if err := c.write(&buf, outMsg{sess: sess, body: b.Buf}); err != nil {
					return err
				}
			}
		case <-c.ctx.Done():
			return nil
		}
	}
}

func (c *conn) write(buf *bin.Buffer, m outMsg) error {
	_ = c.tc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if m.sess == nil {
		return c.tc.WriteFrame(m.raw)
	}
	id := c.srv.ids.next(m.response)
	if m.reqID != 0 {
		c.unqueueAck(m.sess, m.reqID)
		m.sess.sent(id, m.reqID)
	}
	data := crypto.EncryptedMessageData{
		Salt:                   c.srv.salts.current(m.sess.key, c.srv.now()),
		SessionID:              m.sess.id,
		MessageID:              id,
		SeqNo:                  m.sess.nextSeq(m.content),
		MessageDataLen:         int32(len(m.body)),
		MessageDataWithPadding: m.body,
	}
	if err := c.srv.cipher.Encrypt(m.sess.key.Key, data, buf); err != nil {
		return errorf("encrypt", err)
	}
	return c.tc.WriteFrame(buf.Buf)
}

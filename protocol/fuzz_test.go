package protocol

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/crypto"
	"github.com/gotd/td/mt"
	"github.com/gotd/td/proto"
	"github.com/gotd/td/tg"
)

// frameSink is a transport.Conn that keeps what the server writes; the
// fuzz targets drive the message layer directly, below the transports
// (which have fuzz targets of their own).
type frameSink struct {
	mu     sync.Mutex
	frames int
}

func (f *frameSink) ReadFrame(*bin.Buffer) error      { return net.ErrClosed }
func (f *frameSink) WriteFrame(p []byte) error        { f.mu.Lock(); f.frames++; f.mu.Unlock(); return nil }
func (f *frameSink) WriteError(int32) error           { return nil }
func (f *frameSink) Name() string                     { return "sink" }
func (f *frameSink) SetReadDeadline(time.Time) error  { return nil }
func (f *frameSink) SetWriteDeadline(time.Time) error { return nil }
func (f *frameSink) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (f *frameSink) Close() error                     { return nil }

// memKeys is an in-memory KeyStore for fuzzing the message layer, where
// storage is not what is under test.
type memKeys struct {
	mu sync.Mutex
	m  map[int64]*AuthKey
}

func (k *memKeys) LoadKey(id int64) (*AuthKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if v, ok := k.m[id]; ok {
		return v, nil
	}
	return nil, ErrKeyNotFound
}

func (k *memKeys) StoreKey(a *AuthKey) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.m[a.ID()] = a
	return nil
}

var (
	fuzzKeyOnce sync.Once
	fuzzRSA     *rsa.PrivateKey
)

// fuzzServer builds a server with one known auth key and a connection on a
// frame sink, its writer running.
func fuzzServer(t testing.TB) (*Server, *conn, *AuthKey, func()) {
	fuzzKeyOnce.Do(func() {
		var err error
		if fuzzRSA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	var raw crypto.Key
	_, _ = rand.Read(raw[:])
	key := &AuthKey{Key: raw.WithID(), CreatedAt: time.Now().Unix(), InitialSalt: 1}
	keys := &memKeys{m: map[int64]*AuthKey{key.ID(): key}}
	h := HandlerFunc(func(ctx context.Context, call *Call) (bin.Encoder, error) {
		return &tg.BoolTrue{}, nil
	})
	s, err := NewServer(Options{Key: fuzzRSA, Keys: keys, SaltSecret: make([]byte, 32), Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(s, &frameSink{})
	ctx, cancel := context.WithCancel(context.Background())
	c.ctx, c.cancel = context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = c.writeLoop() }()
	return s, c, key, func() {
		cancel()
		c.rpcs.Wait()
		<-done
		s.Close()
	}
}

func encode(t testing.TB, objs ...bin.Encoder) []byte {
	var b bin.Buffer
	for _, o := range objs {
		if err := o.Encode(&b); err != nil {
			t.Fatal(err)
		}
	}
	return b.Buf
}

func messageSeeds(t testing.TB) [][]byte {
	ping := encode(t, &mt.PingRequest{PingID: 1})
	var cont bin.Buffer
	cont.PutID(proto.MessageContainerTypeID)
	cont.PutInt(2)
	for i := 0; i < 2; i++ {
		cont.PutLong(int64(time.Now().Unix()<<32) + int64(i*4) + 4)
		cont.PutInt(1)
		cont.PutInt(len(ping))
		cont.Put(ping)
	}
	gz := encode(t, &proto.GZIP{Data: ping})
	return [][]byte{
		ping,
		cont.Buf,
		gz,
		encode(t, &mt.PingDelayDisconnectRequest{PingID: 2, DisconnectDelay: 75}),
		encode(t, &mt.MsgsAck{MsgIDs: []int64{1, 2, 3}}),
		encode(t, &mt.MsgsStateReq{MsgIDs: []int64{4, 8}}),
		encode(t, &mt.MsgResendReq{MsgIDs: []int64{4}}),
		encode(t, &mt.DestroySessionRequest{SessionID: 9}),
		encode(t, &mt.GetFutureSaltsRequest{Num: 3}),
		encode(t, &mt.RPCDropAnswerRequest{ReqMsgID: 4}),
		encode(t, &tg.InvokeWithLayerRequest{Layer: tg.Layer, Query: &tg.InitConnectionRequest{
			APIID: 1, DeviceModel: "d", Query: &tg.HelpGetConfigRequest{},
		}}),
		encode(t, &tg.InvokeAfterMsgsRequest{MsgIDs: []int64{1}, Query: &tg.HelpGetConfigRequest{}}),
		encode(t, &tg.AuthBindTempAuthKeyRequest{PermAuthKeyID: 1, Nonce: 2, ExpiresAt: 3, EncryptedMessage: []byte{1, 2, 3, 4}}),
		{},
		{1, 2, 3},
	}
}

// FuzzProcess feeds arbitrary decrypted message bodies (with arbitrary
// seqnos) to the session layer: containers, gzip, service messages and RPC
// wrappers must never panic or hang.
func FuzzProcess(f *testing.F) {
	for _, s := range messageSeeds(f) {
		f.Add(s, int32(1))
		f.Add(s, int32(0))
	}
	s, c, key, stop := fuzzServer(f)
	defer stop()
	sess, _ := s.session(key, 1, c)
	f.Fuzz(func(t *testing.T, body []byte, seqno int32) {
		id := s.ids.next(false) &^ 3 // a valid client id: now, divisible by 4
		_ = c.process(sess, id, seqno, body, false)
	})
}

// FuzzEncryptedMessage encrypts arbitrary plaintext fields correctly under
// a known key and hands the frame to the decrypting path, so the checks
// after decryption (lengths, padding, salt, session) see every shape.
func FuzzEncryptedMessage(f *testing.F) {
	for _, s := range messageSeeds(f) {
		f.Add(int64(1), int64(7), int32(1), int32(len(s)), s)
	}
	f.Add(int64(1), int64(7), int32(1), int32(-4), []byte{1, 2, 3, 4})
	f.Add(int64(1), int64(7), int32(1), int32(1<<30), []byte{1, 2, 3, 4})
	s, c, key, stop := fuzzServer(f)
	defer stop()
	cipher := crypto.NewClientCipher(rand.Reader)
	f.Fuzz(func(t *testing.T, salt, session int64, seqno, declared int32, body []byte) {
		var b bin.Buffer
		data := crypto.EncryptedMessageData{
			Salt:                   salt,
			SessionID:              session,
			MessageID:              s.ids.next(false) &^ 3,
			SeqNo:                  seqno,
			MessageDataLen:         declared,
			MessageDataWithPadding: body,
		}
		if err := cipher.Encrypt(key.Key, data, &b); err != nil {
			return
		}
		_ = c.handleEncrypted(b.Buf)
	})
}

// FuzzUnwrap parses invoke* wrappers of arbitrary bytes.
func FuzzUnwrap(f *testing.F) {
	for _, s := range messageSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		u, err := unwrap(body)
		if err == nil && len(u.body) > len(body) {
			t.Fatalf("unwrapped body grew from %d to %d bytes", len(body), len(u.body))
		}
	})
}

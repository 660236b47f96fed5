package protocol_test

import (
	"context"
	"crypto/aes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/crypto"
	"github.com/gotd/td/exchange"
	"github.com/gotd/td/mt"
	"github.com/gotd/td/proto"
	"github.com/gotd/td/proto/codec"
	"github.com/gotd/td/transport"
	"go.uber.org/goleak"

	"github.com/mtnode/mtnode/protocol"
	"github.com/mtnode/mtnode/storage"
)

// serverKey is generated once: RSA-2048 generation is slow.
var serverKey *rsa.PrivateKey

func TestMain(m *testing.M) {
	var err error
	if serverKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2/z.(*AllocatorPool).freeupAllocators"),
	)
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// badgerKeys keeps auth keys in a real Badger table, as the node does.
type badgerKeys struct{ t *storage.Table }

func (b badgerKeys) LoadKey(id int64) (*protocol.AuthKey, error) {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], uint64(id))
	v, err := b.t.Get(k[:])
	if errors.Is(err, storage.ErrNotFound) {
		return nil, protocol.ErrKeyNotFound
	}
	if err != nil {
		return nil, err
	}
	var ak protocol.AuthKey
	return &ak, ak.UnmarshalBinary(v)
}

func (b badgerKeys) StoreKey(ak *protocol.AuthKey) error {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], uint64(ak.ID()))
	v, _ := ak.MarshalBinary()
	return b.t.Put(k[:], v)
}

type testServer struct {
	srv     *protocol.Server
	addr    string
	metrics *protocol.Metrics
}

// startServer serves the protocol on loopback with real storage.
func startServer(t *testing.T, cfg protocol.Config, h protocol.Handler) *testServer {
	t.Helper()
	db, err := storage.Open(t.TempDir(), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	metrics := protocol.NewMetrics(nil)
	srv, err := protocol.NewServer(protocol.Options{
		Metrics:    metrics,
		Config:     cfg,
		Key:        serverKey,
		Keys:       badgerKeys{t: db.Table("authkey")},
		SaltSecret: []byte("0123456789abcdef0123456789abcdef"),
		Handler:    h,
		Logger:     testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(context.Background(), ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
		db.Close()
	})
	return &testServer{srv: srv, addr: ln.Addr().String(), metrics: metrics}
}

// rawClient speaks MTProto with a hand-built encryption layer: the key is
// created by gotd's client exchange, but messages are encrypted and
// decrypted by an implementation of the spec written here, independent of
// the server's (gotd's crypto package). Every exchange with the server is
// therefore also a known-answer check of MTProto 2.0 encryption.
type rawClient struct {
	t       *testing.T
	nc      net.Conn
	conn    transport.Conn
	key     crypto.AuthKey
	salt    int64
	session int64
	seq     int32
	lastID  int64
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := transport.Intermediate.Handshake(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var sid [8]byte
	_, _ = rand.Read(sid[:])
	return &rawClient{t: t, nc: nc, conn: conn, session: int64(binary.LittleEndian.Uint64(sid[:]))}
}

// exchangeKey runs gotd's client key exchange on the connection.
func (c *rawClient) exchangeKey() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := exchange.NewExchanger(c.conn, 1).Client([]exchange.PublicKey{{RSA: &serverKey.PublicKey}}).Run(ctx)
	if err != nil {
		c.t.Fatalf("key exchange: %v", err)
	}
	c.key = res.AuthKey
	c.salt = res.ServerSalt
}

// nextID returns a fresh client msg_id (divisible by 4, increasing).
func (c *rawClient) nextID() int64 {
	id := time.Now().UnixNano()
	id = (id/1e9)<<32 | (id%1e9)<<2
	id &^= 3
	if id <= c.lastID {
		id = c.lastID + 4
	}
	c.lastID = id
	return id
}

// kdf is MTProto 2.0 key derivation, written from the spec
// (https://core.telegram.org/mtproto/description#defining-aes-key-and-initialization-vector).
// x is 0 for client→server and 8 for server→client.
func kdf(authKey []byte, msgKey []byte, x int) (key, iv []byte) {
	a := sha256.Sum256(append(append([]byte{}, msgKey...), authKey[x:x+36]...))
	b := sha256.Sum256(append(append([]byte{}, authKey[40+x:40+x+36]...), msgKey...))
	key = append(append(append([]byte{}, a[0:8]...), b[8:24]...), a[24:32]...)
	iv = append(append(append([]byte{}, b[0:8]...), a[8:24]...), b[24:32]...)
	return key, iv
}

// ige encrypts or decrypts AES-256-IGE, written from its definition.
func ige(key, iv, in []byte, decrypt bool) []byte {
	blk, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	out := make([]byte, len(in))
	x, y := append([]byte{}, iv[:16]...), append([]byte{}, iv[16:]...) // x: prev cipher, y: prev plain
	if decrypt {
		x, y = y, x // for decryption the roles of the two halves swap
	}
	tmp := make([]byte, 16)
	for i := 0; i < len(in); i += 16 {
		for j := 0; j < 16; j++ {
			tmp[j] = in[i+j] ^ x[j]
		}
		if decrypt {
			blk.Decrypt(tmp, tmp)
		} else {
			blk.Encrypt(tmp, tmp)
		}
		for j := 0; j < 16; j++ {
			out[i+j] = tmp[j] ^ y[j]
		}
		x, y = out[i:i+16], in[i:i+16]
	}
	return out
}

// seal builds the encrypted frame for body with the given header fields.
func (c *rawClient) seal(msgID int64, seqno int32, salt int64, body []byte) []byte {
	plain := make([]byte, 32, 32+len(body)+1040)
	binary.LittleEndian.PutUint64(plain[0:], uint64(salt))
	binary.LittleEndian.PutUint64(plain[8:], uint64(c.session))
	binary.LittleEndian.PutUint64(plain[16:], uint64(msgID))
	binary.LittleEndian.PutUint32(plain[24:], uint32(seqno))
	binary.LittleEndian.PutUint32(plain[28:], uint32(len(body)))
	plain = append(plain, body...)
	pad := 12 + (16-(len(plain)+12)%16)%16
	padding := make([]byte, pad)
	_, _ = rand.Read(padding)
	plain = append(plain, padding...)
	ak := c.key.Value[:]
	large := sha256.Sum256(append(append([]byte{}, ak[88:88+32]...), plain...))
	msgKey := large[8:24]
	key, iv := kdf(ak, msgKey, 0)
	out := make([]byte, 0, 24+len(plain))
	out = append(out, c.key.ID[:]...)
	out = append(out, msgKey...)
	return append(out, ige(key, iv, plain, false)...)
}

// sendRaw sends a frame as is.
func (c *rawClient) sendRaw(frame []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.conn.Send(ctx, &bin.Buffer{Buf: frame})
}

// send encrypts obj as one message; content-related messages get odd seqnos.
func (c *rawClient) send(obj bin.Encoder, content bool) int64 {
	c.t.Helper()
	var b bin.Buffer
	if err := obj.Encode(&b); err != nil {
		c.t.Fatal(err)
	}
	id := c.nextID()
	seq := c.seq * 2
	if content {
		seq++
		c.seq++
	}
	if err := c.sendRaw(c.seal(id, seq, c.salt, b.Buf)); err != nil {
		c.t.Fatal(err)
	}
	return id
}

// message is one decrypted message from the server.
type message struct {
	id    int64
	seqno int32
	body  []byte
}

// recv reads one frame; it returns a *codec.ProtocolErr for transport errors.
func (c *rawClient) recv(timeout time.Duration) (message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var b bin.Buffer
	if err := c.conn.Recv(ctx, &b); err != nil {
		return message{}, err
	}
	f := b.Buf
	if len(f) < 24+32 || [8]byte(f[:8]) != c.key.ID {
		return message{}, errors.New("not an encrypted message for our key")
	}
	ak := c.key.Value[:]
	key, iv := kdf(ak, f[8:24], 8)
	plain := ige(key, iv, f[24:], true)
	large := sha256.Sum256(append(append([]byte{}, ak[88+8:88+8+32]...), plain...))
	if string(large[8:24]) != string(f[8:24]) {
		return message{}, errors.New("msg_key mismatch")
	}
	if sid := int64(binary.LittleEndian.Uint64(plain[8:])); sid != c.session {
		return message{}, errors.New("wrong session id")
	}
	n := int(binary.LittleEndian.Uint32(plain[28:]))
	if n > len(plain)-32 || len(plain)-32-n < 12 {
		return message{}, errors.New("bad length or padding from server")
	}
	return message{
		id:    int64(binary.LittleEndian.Uint64(plain[16:])),
		seqno: int32(binary.LittleEndian.Uint32(plain[24:])),
		body:  plain[32 : 32+n],
	}, nil
}

// expect reads messages until one with the type id arrives, skipping
// service messages (new_session_created, msgs_ack) on the way.
func (c *rawClient) expect(typeID uint32) message {
	c.t.Helper()
	for i := 0; i < 20; i++ {
		m, err := c.recv(10 * time.Second)
		if err != nil {
			c.t.Fatalf("waiting for %#x: %v", typeID, err)
		}
		id, _ := (&bin.Buffer{Buf: m.body}).PeekID()
		if id == typeID {
			return m
		}
		if id != mt.NewSessionCreatedTypeID && id != mt.MsgsAckTypeID {
			c.t.Fatalf("waiting for %#x, got %#x", typeID, id)
		}
	}
	c.t.Fatalf("no %#x in 20 messages", typeID)
	return message{}
}

// expectClosed waits for the server's transport error code (if want != 0)
// and then for the connection to close, within timeout.
func (c *rawClient) expectClosed(want int32, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	gotCode := false
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		var b bin.Buffer
		err := c.conn.Recv(ctx, &b)
		cancel()
		var pe *codec.ProtocolErr
		switch {
		case errors.As(err, &pe):
			if pe.Code != -want { // gotd reports the code negated
				c.t.Fatalf("transport error %d, want %d", pe.Code, want)
			}
			gotCode = true
		case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err):
			if want != 0 && !gotCode {
				c.t.Fatalf("closed without transport error %d", want)
			}
			return
		case err != nil:
			c.t.Fatalf("waiting for close: %v", err)
		}
	}
	c.t.Fatalf("connection still open after %v", timeout)
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

// decodeResult unpacks rpc_result and returns the inner object's bytes.
func decodeResult(t *testing.T, m message) (reqID int64, inner []byte) {
	t.Helper()
	var r proto.Result
	if err := r.Decode(&bin.Buffer{Buf: m.body}); err != nil {
		t.Fatalf("decode rpc_result: %v", err)
	}
	return r.RequestMessageID, r.Result
}

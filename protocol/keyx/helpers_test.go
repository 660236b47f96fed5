package keyx

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"math/bits"
	mrand "math/rand/v2"
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
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// loadKey reads the fixed test RSA key: generating a 2048-bit key per test
// would cost more than the tests themselves.
func loadKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	raw, err := os.ReadFile("testdata/server_key.pem")
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(raw)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	k, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// seededRand is a deterministic io.Reader so exchanges can be replayed.
func seededRand(seed uint64) io.Reader {
	return mrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 1})
}

func testConfig(t testing.TB) *Config {
	return &Config{Key: loadKey(t), DC: 2}
}

// requireKeyxError checks err is an *Error with code -404 wrapping want.
func requireKeyxError(t testing.TB, err, want error) {
	t.Helper()
	if err == nil {
		t.Fatalf("want error %v, got nil", want)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is %T, not *keyx.Error", err, err)
	}
	if e.Code != -404 {
		t.Fatalf("code %d, want -404", e.Code)
	}
	if !errors.Is(err, want) {
		t.Fatalf("error %v does not wrap %v", err, want)
	}
}

var allSentinels = []error{
	ErrOutOfOrder, ErrMalformed, ErrNonceMismatch, ErrPQMismatch,
	ErrUnknownFingerprint, ErrDecrypt, ErrWrongDC, ErrExpiresIn, ErrRetryID,
	ErrBadGB, ErrRetriesExhausted, ErrTooManyRequests, ErrFinished, ErrInternal,
}

// requireDocumented checks err is an *Error wrapping one of the sentinels.
func requireDocumented(t testing.TB, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeAuthKeyNotFound {
		t.Fatalf("error %v (%T) is not a -404 *keyx.Error", err, err)
	}
	for _, s := range allSentinels {
		if errors.Is(err, s) {
			return
		}
	}
	t.Fatalf("error %v wraps no documented sentinel", err)
}

// pipeConn is the client side transport.Conn for gotd's exchanger: the
// intermediate codec over one end of a net.Pipe.
type pipeConn struct{ c net.Conn }

func (p pipeConn) Send(ctx context.Context, b *bin.Buffer) error {
	if d, ok := ctx.Deadline(); ok {
		_ = p.c.SetWriteDeadline(d)
	}
	return codec.Intermediate{}.Write(p.c, b)
}

func (p pipeConn) Recv(ctx context.Context, b *bin.Buffer) error {
	if d, ok := ctx.Deadline(); ok {
		_ = p.c.SetReadDeadline(d)
	}
	return codec.Intermediate{}.Read(p.c, b)
}

func (p pipeConn) Close() error { return p.c.Close() }

// serveConn is the tiny unencrypted framing loop a real server would run:
// read a frame, unwrap the unencrypted message, Step, wrap and write the
// reply. mutate, if set, rewrites the i-th client body before Step.
func serveConn(conn net.Conn, h *Handshake, mutate func(i int, body []byte) []byte) (*Result, error) {
	for i := 0; ; i++ {
		var b bin.Buffer
		if err := (codec.Intermediate{}).Read(conn, &b); err != nil {
			return nil, err
		}
		var msg proto.UnencryptedMessage
		if err := msg.Decode(&b); err != nil {
			return nil, err
		}
		body := msg.MessageData
		if mutate != nil {
			body = mutate(i, body)
		}
		reply, res, err := h.Step(body)
		if reply != nil {
			out := proto.UnencryptedMessage{
				MessageID:   int64(proto.NewMessageID(time.Now(), proto.MessageServerResponse)),
				MessageData: reply,
			}
			var ob bin.Buffer
			if err := out.Encode(&ob); err != nil {
				return nil, err
			}
			if werr := (codec.Intermediate{}).Write(conn, &ob); werr != nil && err == nil {
				return nil, werr
			}
		}
		if err != nil {
			return nil, err
		}
		if res != nil {
			return res, nil
		}
	}
}

type exchangeOutcome struct {
	server    *Result
	serverErr error
	client    exchange.ClientExchangeResult
	clientErr error
}

// runGotdExchange runs gotd's real client against a Handshake over a pipe.
func runGotdExchange(t testing.TB, cfg *Config, clientDC int, temp int, mutate func(int, []byte) []byte) exchangeOutcome {
	t.Helper()
	sc, cc := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	type srv struct {
		res *Result
		err error
	}
	done := make(chan srv, 1)
	go func() {
		res, err := serveConn(sc, New(cfg), mutate)
		_ = sc.Close()
		done <- srv{res, err}
	}()

	ex := exchange.NewExchanger(pipeConn{cc}, clientDC).WithTimeout(10 * time.Second)
	if temp > 0 {
		ex = ex.WithTempMode(temp)
	}
	cres, cerr := ex.Client([]exchange.PublicKey{{RSA: &cfg.Key.PublicKey}}).Run(ctx)
	_ = cc.Close()
	s := <-done
	return exchangeOutcome{server: s.res, serverErr: s.err, client: cres, clientErr: cerr}
}

// factorPQ splits a product of two primes with Pollard-Brent rho, as a
// client must. Small and fast: pq < 2^63.
func factorPQ(n uint64) (p, q uint64) {
	mulmod := func(a, b uint64) uint64 {
		hi, lo := bits.Mul64(a, b)
		return bits.Rem64(hi, lo, n)
	}
	gcd := func(a, b uint64) uint64 {
		for b != 0 {
			a, b = b, a%b
		}
		return a
	}
	for c := uint64(1); ; c++ {
		f := func(x uint64) uint64 { return (mulmod(x, x) + c) % n }
		x, y, d := uint64(2), uint64(2), uint64(1)
		for d == 1 {
			x = f(x)
			y = f(f(y))
			if x > y {
				d = gcd(x-y, n)
			} else {
				d = gcd(y-x, n)
			}
		}
		if d != n {
			p, q = d, n/d
			if p > q {
				p, q = q, p
			}
			return p, q
		}
	}
}

// innerSpec describes the p_q_inner_data a scripted client sends.
type innerSpec struct {
	ctor      string // "dc" (default), "temp_dc", "plain", "temp"
	legacy    bool   // SHA1(data)+data+random instead of RSA_PAD
	dc        int
	expiresIn int
}

// scriptClient is a hand-written client that builds every message itself so
// tests can corrupt any field. It drives Handshake.Step directly.
type scriptClient struct {
	t    testing.TB
	h    *Handshake
	pub  *rsa.PublicKey
	rand io.Reader

	nonce, serverNonce bin.Int128
	newNonce           bin.Int256
	pq, p, q           []byte
	fingerprint        int64

	dhPrime, gA *big.Int
	g           int
	tmpKey      []byte
	tmpIV       []byte

	authKey crypto.Key
	retryID int64

	// messages records every client body sent, for fuzz seeds.
	messages [][]byte
}

func newScriptClient(t testing.TB, cfg *Config) *scriptClient {
	return &scriptClient{t: t, h: New(cfg), pub: &cfg.Key.PublicKey, rand: seededRand(7)}
}

func (c *scriptClient) encode(e bin.Encoder) []byte {
	c.t.Helper()
	var b bin.Buffer
	if err := e.Encode(&b); err != nil {
		c.t.Fatal(err)
	}
	c.messages = append(c.messages, append([]byte(nil), b.Buf...))
	return b.Buf
}

func (c *scriptClient) step(body []byte) ([]byte, *Result, error) {
	return c.h.Step(body)
}

// reqPQ sends req_pq_multi (or legacy req_pq) and parses resPQ.
func (c *scriptClient) reqPQ(legacy bool) error {
	c.t.Helper()
	nonce, err := crypto.RandInt128(c.rand)
	if err != nil {
		c.t.Fatal(err)
	}
	c.nonce = nonce
	var body []byte
	if legacy {
		body = c.encode(&mt.ReqPqRequest{Nonce: nonce})
	} else {
		body = c.encode(&mt.ReqPqMultiRequest{Nonce: nonce})
	}
	reply, _, err := c.step(body)
	if err != nil {
		return err
	}
	var res mt.ResPQ
	if err := res.Decode(&bin.Buffer{Buf: reply}); err != nil {
		c.t.Fatal(err)
	}
	if res.Nonce != nonce {
		c.t.Fatal("resPQ nonce mismatch")
	}
	if len(res.ServerPublicKeyFingerprints) != 1 {
		c.t.Fatal("want one fingerprint")
	}
	c.serverNonce = res.ServerNonce
	c.fingerprint = res.ServerPublicKeyFingerprints[0]
	c.pq = res.Pq
	n := new(big.Int).SetBytes(res.Pq)
	if n.BitLen() > 63 {
		c.t.Fatalf("pq has %d bits", n.BitLen())
	}
	p, q := factorPQ(n.Uint64())
	c.p, c.q = uintBytes(p), uintBytes(q)
	return nil
}

// reqDH sends req_DH_params. mutateInner/mutateOuter may corrupt fields.
func (c *scriptClient) reqDH(spec innerSpec, mutateInner func(*pqInner), mutateOuter func(*mt.ReqDHParamsRequest)) error {
	c.t.Helper()
	newNonce, err := crypto.RandInt256(c.rand)
	if err != nil {
		c.t.Fatal(err)
	}
	c.newNonce = newNonce
	in := pqInner{
		pq: c.pq, p: c.p, q: c.q,
		nonce: c.nonce, serverNonce: c.serverNonce, newNonce: newNonce,
		dc: spec.dc, expiresIn: spec.expiresIn,
	}
	if mutateInner != nil {
		mutateInner(&in)
	}
	var enc bin.Encoder
	switch spec.ctor {
	case "", "dc":
		enc = &mt.PQInnerDataDC{Pq: in.pq, P: in.p, Q: in.q, Nonce: in.nonce, ServerNonce: in.serverNonce, NewNonce: in.newNonce, DC: in.dc}
	case "temp_dc":
		enc = &mt.PQInnerDataTempDC{Pq: in.pq, P: in.p, Q: in.q, Nonce: in.nonce, ServerNonce: in.serverNonce, NewNonce: in.newNonce, DC: in.dc, ExpiresIn: in.expiresIn}
	case "plain":
		enc = &mt.PQInnerData{Pq: in.pq, P: in.p, Q: in.q, Nonce: in.nonce, ServerNonce: in.serverNonce, NewNonce: in.newNonce}
	case "temp":
		enc = &pqInnerDataTemp{Pq: in.pq, P: in.p, Q: in.q, Nonce: in.nonce, ServerNonce: in.serverNonce, NewNonce: in.newNonce, ExpiresIn: in.expiresIn}
	default:
		c.t.Fatalf("ctor %q", spec.ctor)
	}
	var ib bin.Buffer
	if err := enc.Encode(&ib); err != nil {
		c.t.Fatal(err)
	}
	var encrypted []byte
	if spec.legacy {
		encrypted, err = crypto.RSAEncryptHashed(ib.Buf, c.pub, c.rand)
	} else {
		encrypted, err = crypto.RSAPad(ib.Buf, c.pub, c.rand)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	req := &mt.ReqDHParamsRequest{
		Nonce: c.nonce, ServerNonce: c.serverNonce,
		P: c.p, Q: c.q,
		PublicKeyFingerprint: c.fingerprint,
		EncryptedData:        encrypted,
	}
	if mutateOuter != nil {
		mutateOuter(req)
	}
	reply, _, err := c.step(c.encode(req))
	if err != nil {
		return err
	}
	var ok mt.ServerDHParamsOk
	if err := ok.Decode(&bin.Buffer{Buf: reply}); err != nil {
		c.t.Fatal(err)
	}
	if ok.Nonce != c.nonce || ok.ServerNonce != c.serverNonce {
		c.t.Fatal("server_DH_params_ok nonces")
	}
	c.tmpKey, c.tmpIV = crypto.TempAESKeys(newNonce.BigInt(), c.serverNonce.BigInt())
	answer, err := crypto.DecryptExchangeAnswer(ok.EncryptedAnswer, c.tmpKey, c.tmpIV)
	if err != nil || answer == nil {
		c.t.Fatalf("decrypt answer: %v", err)
	}
	var inner mt.ServerDHInnerData
	if err := inner.Decode(&bin.Buffer{Buf: answer}); err != nil {
		c.t.Fatal(err)
	}
	if inner.Nonce != c.nonce || inner.ServerNonce != c.serverNonce {
		c.t.Fatal("server_DH_inner_data nonces")
	}
	c.g = inner.G
	c.dhPrime = new(big.Int).SetBytes(inner.DhPrime)
	c.gA = new(big.Int).SetBytes(inner.GA)
	if err := crypto.CheckDHParams(c.dhPrime, big.NewInt(int64(c.g)), c.gA, c.gA); err != nil {
		c.t.Fatalf("server g_a: %v", err)
	}
	return nil
}

// setDH sends set_client_DH_params and decodes the answer. gb, if non-nil,
// replaces the honest g_b (the auth key then is meaningless).
type dhAnswer struct {
	ok, retry, fail bool
	result          *Result
}

func (c *scriptClient) setDH(gbOverride *big.Int, mutateInner func(*mt.ClientDHInnerData), mutateOuter func(*mt.SetClientDHParamsRequest)) (dhAnswer, error) {
	c.t.Helper()
	bBytes := make([]byte, 256)
	if _, err := io.ReadFull(c.rand, bBytes); err != nil {
		c.t.Fatal(err)
	}
	b := new(big.Int).SetBytes(bBytes)
	gb := new(big.Int).Exp(big.NewInt(int64(c.g)), b, c.dhPrime)
	if gbOverride != nil {
		gb = gbOverride
	}
	new(big.Int).Exp(c.gA, b, c.dhPrime).FillBytes(c.authKey[:])

	inner := mt.ClientDHInnerData{Nonce: c.nonce, ServerNonce: c.serverNonce, RetryID: c.retryID, GB: gb.Bytes()}
	if mutateInner != nil {
		mutateInner(&inner)
	}
	var ib bin.Buffer
	if err := inner.Encode(&ib); err != nil {
		c.t.Fatal(err)
	}
	encrypted, err := crypto.EncryptExchangeAnswer(c.rand, ib.Buf, c.tmpKey, c.tmpIV)
	if err != nil {
		c.t.Fatal(err)
	}
	req := &mt.SetClientDHParamsRequest{Nonce: c.nonce, ServerNonce: c.serverNonce, EncryptedData: encrypted}
	if mutateOuter != nil {
		mutateOuter(req)
	}
	reply, res, err := c.step(c.encode(req))
	var ans dhAnswer
	ans.result = res
	if reply == nil {
		return ans, err
	}
	v, derr := mt.DecodeSetClientDHParamsAnswer(&bin.Buffer{Buf: reply})
	if derr != nil {
		c.t.Fatal(derr)
	}
	switch v := v.(type) {
	case *mt.DhGenOk:
		ans.ok = true
		if v.NewNonceHash1 != crypto.NonceHash1(c.newNonce, c.authKey) {
			c.t.Fatal("new_nonce_hash1 mismatch")
		}
	case *mt.DhGenRetry:
		ans.retry = true
		if v.NewNonceHash2 != nonceHash(c.newNonce, 2, c.authKey) {
			c.t.Fatal("new_nonce_hash2 mismatch")
		}
		aux := c.authKey.AuxHash()
		c.retryID = int64(leUint64(aux[:]))
	case *mt.DhGenFail:
		ans.fail = true
		// With a forged g_b the client cannot know the server's key.
		if gbOverride == nil && v.NewNonceHash3 != nonceHash(c.newNonce, 3, c.authKey) {
			c.t.Fatal("new_nonce_hash3 mismatch")
		}
	}
	return ans, err
}

func leUint64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// fullExchange runs a scripted, honest exchange and fails the test on error.
func (c *scriptClient) fullExchange(spec innerSpec) *Result {
	c.t.Helper()
	if err := c.reqPQ(false); err != nil {
		c.t.Fatal(err)
	}
	if err := c.reqDH(spec, nil, nil); err != nil {
		c.t.Fatal(err)
	}
	ans, err := c.setDH(nil, nil, nil)
	if err != nil || !ans.ok || ans.result == nil {
		c.t.Fatalf("set_client_DH_params: %+v %v", ans, err)
	}
	if ans.result.Key.Value != c.authKey {
		c.t.Fatal("auth key mismatch")
	}
	return ans.result
}

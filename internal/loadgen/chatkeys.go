package loadgen

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"math/bits"
	"sync"
	"time"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/crypto"
	"github.com/gotd/td/exchange"
	"github.com/gotd/td/mt"
	"github.com/gotd/td/proto"
	"github.com/gotd/td/session"
)

// The chat scenario needs one permanent auth key per user (an
// authorization belongs to a key, so users cannot share one), a thousand
// of them. gotd's client spends a fifth to two fifths of a CPU-second per
// key in crypto.DecomposePQ, a big.Int loop; that alone would take minutes
// on two cores. fastKey is the same client flow as gotd's
// exchange.ClientExchange.Run (permanent key, p_q_inner_data_dc), built
// from gotd's own TL types and crypto primitives, with pq factored by
// Brent's Pollard rho on uint64 (microseconds). Everything the node sees
// is byte for byte what a gotd client sends; only the client's CPU differs.

// factorPQ splits pq (< 2^63, the product of two primes) into p < q.
func factorPQ(pq uint64) (p, q uint64, err error) {
	if pq < 4 {
		return 0, 0, fmt.Errorf("pq %d too small", pq)
	}
	if pq%2 == 0 {
		return 2, pq / 2, nil
	}
	for c := uint64(1); c < 64; c++ {
		if g := brent(pq, c); g != 1 && g != pq {
			p, q = g, pq/g
			if p > q {
				p, q = q, p
			}
			return p, q, nil
		}
	}
	return 0, 0, fmt.Errorf("pq %d: no factor found", pq)
}

func mulMod(a, b, n uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	_, r := bits.Div64(hi, lo, n) // hi < n since a, b < n
	return r
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func absDiff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}

// brent is Brent's variant of Pollard's rho with f(x) = x² + c mod n; it
// returns a divisor of n, n itself on failure (try another c). The loop
// is bounded: n < 2^63 has a factor below 2^32, found in about 2^16 steps.
func brent(n, c uint64) uint64 {
	f := func(x uint64) uint64 { return (mulMod(x, x, n) + c) % n }
	const m = 128
	y, r, q, g := uint64(2), uint64(1), uint64(1), uint64(1)
	var x, ys uint64
	for g == 1 && r < 1<<24 {
		x = y
		for range r {
			y = f(y)
		}
		for k := uint64(0); k < r && g == 1; k += m {
			ys = y
			for range min(m, r-k) {
				y = f(y)
				q = mulMod(q, absDiff(x, y), n)
			}
			g = gcd(q, n)
		}
		r *= 2
	}
	if g == n {
		for i := 0; i < 1<<24; i++ {
			ys = f(ys)
			if g = gcd(absDiff(x, ys), n); g != 1 {
				break
			}
		}
	}
	return g
}

// kxConn sends and receives unencrypted key exchange messages.
type kxConn struct {
	tc exchangeConn
	b  bin.Buffer
}

func (k *kxConn) send(ctx context.Context, e bin.Encoder) error {
	var body bin.Buffer
	if err := e.Encode(&body); err != nil {
		return err
	}
	msg := proto.UnencryptedMessage{
		MessageID:   int64(proto.NewMessageID(time.Now(), proto.MessageFromClient)),
		MessageData: body.Buf,
	}
	k.b.Reset()
	if err := msg.Encode(&k.b); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, exchangeTimeout)
	defer cancel()
	return k.tc.Send(ctx, &k.b)
}

// recv reads one message and leaves k.b holding its body.
func (k *kxConn) recv(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, exchangeTimeout)
	defer cancel()
	k.b.Reset()
	if err := k.tc.Recv(ctx, &k.b); err != nil {
		return err
	}
	var msg proto.UnencryptedMessage
	if err := msg.Decode(&k.b); err != nil {
		return err
	}
	if proto.MessageID(msg.MessageID).Type() != proto.MessageServerResponse {
		return errors.New("bad msg_id type")
	}
	k.b.ResetTo(msg.MessageData)
	return nil
}

// dhChecked remembers DH primes that passed crypto.CheckDH. The check
// proves p and (p-1)/2 prime, about a tenth of a CPU-second each time;
// the node always sends the same prime, and Telegram's docs let clients
// cache the check, as TDLib does.
type dhChecked struct {
	mu sync.Mutex
	ok map[string]bool
}

func (d *dhChecked) check(g int, prime *big.Int) error {
	k := fmt.Sprint(g, ":", prime.Text(16))
	d.mu.Lock()
	ok := d.ok[k]
	d.mu.Unlock()
	if ok {
		return nil
	}
	if err := crypto.CheckDH(g, prime); err != nil {
		return err
	}
	d.mu.Lock()
	if d.ok == nil {
		d.ok = make(map[string]bool)
	}
	d.ok[k] = true
	d.mu.Unlock()
	return nil
}

// fastKey creates one permanent auth key on a fresh connection, as
// exchange.ClientExchange.Run does, with a fast pq factoring and a cached
// check of the DH prime. expBits is the size of the client's secret DH
// exponent b; 0 is crypto.RSAKeyBits (2048, as gotd). A shorter one (the
// handshake scenario uses shortDHExpBits) makes the client's two modexps
// cheaper; g_b is still a full-size residue mod p, so the node can neither
// tell nor do less work.
func fastKey(ctx context.Context, addr string, dc int, key exchange.PublicKey, dh *dhChecked, expBits int) (r exchange.ClientExchangeResult, err error) {
	err = withExchangeConn(ctx, addr, func(tc exchangeConn) error {
		r, err = fastKeyOn(ctx, &kxConn{tc: tc}, dc, key, dh, expBits)
		return err
	})
	return r, err
}

func fastKeyOn(ctx context.Context, c *kxConn, dc int, pub exchange.PublicKey, dh *dhChecked, expBits int) (exchange.ClientExchangeResult, error) {
	if expBits <= 0 {
		expBits = crypto.RSAKeyBits
	}
	var none exchange.ClientExchangeResult
	nonce, err := crypto.RandInt128(rand.Reader)
	if err != nil {
		return none, err
	}
	if err := c.send(ctx, &mt.ReqPqMultiRequest{Nonce: nonce}); err != nil {
		return none, fmt.Errorf("send req_pq_multi: %w", err)
	}
	if err := c.recv(ctx); err != nil {
		return none, fmt.Errorf("read resPQ: %w", err)
	}
	var res mt.ResPQ
	if err := res.Decode(&c.b); err != nil {
		return none, fmt.Errorf("decode resPQ: %w", err)
	}
	if res.Nonce != nonce {
		return none, errors.New("resPQ nonce mismatch")
	}
	fp := pub.Fingerprint()
	found := false
	for _, f := range res.ServerPublicKeyFingerprints {
		found = found || f == fp
	}
	if !found {
		return none, exchange.ErrKeyFingerprintNotFound
	}
	pqBig := new(big.Int).SetBytes(res.Pq)
	if pqBig.BitLen() > 63 {
		return none, errors.New("server provided bad pq")
	}
	p, q, err := factorPQ(pqBig.Uint64())
	if err != nil {
		return none, err
	}
	pBytes := new(big.Int).SetUint64(p).Bytes()
	qBytes := new(big.Int).SetUint64(q).Bytes()
	newNonce, err := crypto.RandInt256(rand.Reader)
	if err != nil {
		return none, err
	}
	var inner bin.Buffer
	if err := (&mt.PQInnerDataDC{
		Pq: res.Pq, P: pBytes, Q: qBytes,
		Nonce: nonce, ServerNonce: res.ServerNonce, NewNonce: newNonce, DC: dc,
	}).Encode(&inner); err != nil {
		return none, err
	}
	enc, err := crypto.RSAPad(inner.Buf, pub.RSA, rand.Reader)
	if err != nil {
		return none, fmt.Errorf("rsa_pad: %w", err)
	}
	if err := c.send(ctx, &mt.ReqDHParamsRequest{
		Nonce: nonce, ServerNonce: res.ServerNonce, P: pBytes, Q: qBytes,
		PublicKeyFingerprint: fp, EncryptedData: enc,
	}); err != nil {
		return none, fmt.Errorf("send req_DH_params: %w", err)
	}
	if err := c.recv(ctx); err != nil {
		return none, fmt.Errorf("read server_DH_params: %w", err)
	}
	params, err := mt.DecodeServerDHParams(&c.b)
	if err != nil {
		return none, fmt.Errorf("decode server_DH_params: %w", err)
	}
	ok, isOK := params.(*mt.ServerDHParamsOk)
	if !isOK {
		return none, fmt.Errorf("server_DH_params: %T", params)
	}
	if ok.Nonce != nonce || ok.ServerNonce != res.ServerNonce {
		return none, errors.New("server_DH_params nonce mismatch")
	}
	aesKey, iv := crypto.TempAESKeys(newNonce.BigInt(), res.ServerNonce.BigInt())
	data, err := crypto.DecryptExchangeAnswer(ok.EncryptedAnswer, aesKey, iv)
	if err != nil {
		return none, fmt.Errorf("decrypt answer: %w", err)
	}
	var inner2 mt.ServerDHInnerData
	if err := inner2.Decode(&bin.Buffer{Buf: data}); err != nil {
		return none, fmt.Errorf("decode server_DH_inner_data: %w", err)
	}
	if inner2.Nonce != nonce || inner2.ServerNonce != res.ServerNonce {
		return none, errors.New("server_DH_inner_data nonce mismatch")
	}
	prime := new(big.Int).SetBytes(inner2.DhPrime)
	if err := dh.check(inner2.G, prime); err != nil {
		return none, fmt.Errorf("check DH: %w", err)
	}
	g := big.NewInt(int64(inner2.G))
	gA := new(big.Int).SetBytes(inner2.GA)
	b, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), uint(expBits)))
	if err != nil {
		return none, err
	}
	gB := new(big.Int).Exp(g, b, prime)
	if err := crypto.CheckDHParams(prime, g, gA, gB); err != nil {
		return none, fmt.Errorf("check DH params: %w", err)
	}
	var ci bin.Buffer
	if err := (&mt.ClientDHInnerData{Nonce: nonce, ServerNonce: res.ServerNonce, GB: gB.Bytes()}).Encode(&ci); err != nil {
		return none, err
	}
	cenc, err := crypto.EncryptExchangeAnswer(rand.Reader, ci.Buf, aesKey, iv)
	if err != nil {
		return none, fmt.Errorf("encrypt answer: %w", err)
	}
	if err := c.send(ctx, &mt.SetClientDHParamsRequest{Nonce: nonce, ServerNonce: res.ServerNonce, EncryptedData: cenc}); err != nil {
		return none, fmt.Errorf("send set_client_DH_params: %w", err)
	}
	authKey := new(big.Int).Exp(gA, b, prime)
	if err := c.recv(ctx); err != nil {
		return none, fmt.Errorf("read dh_gen: %w", err)
	}
	ans, err := mt.DecodeSetClientDHParamsAnswer(&c.b)
	if err != nil {
		return none, fmt.Errorf("decode dh_gen: %w", err)
	}
	gen, isOK := ans.(*mt.DhGenOk)
	if !isOK {
		return none, fmt.Errorf("dh_gen: %T", ans)
	}
	if gen.Nonce != nonce || gen.ServerNonce != res.ServerNonce {
		return none, errors.New("dh_gen_ok nonce mismatch")
	}
	var k crypto.Key
	authKey.FillBytes(k[:])
	if crypto.NonceHash1(newNonce, k) != gen.NewNonceHash1 {
		return none, errors.New("dh_gen_ok new_nonce_hash1 mismatch")
	}
	sid, err := crypto.NewSessionID(rand.Reader)
	if err != nil {
		return none, err
	}
	return exchange.ClientExchangeResult{
		AuthKey:    crypto.AuthKey{Value: k, ID: k.ID()},
		SessionID:  sid,
		ServerSalt: crypto.ServerSalt(newNonce, gen.ServerNonce),
	}, nil
}

// makeUserKeys creates n permanent keys with fastKey, workers at a time,
// and returns each as a session for one client: key i is made on, and
// names, the node user i connects to (t.addrFor(i)). It is bounded by ctx
// and by n attempts plus n/10+3 retries.
func makeUserKeys(ctx context.Context, t *target, n, workers int) ([]session.Data, error) {
	out := make([]session.Data, n)
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		retries  = n/10 + 3
		made     int
		firstErr error
		dh       dhChecked
	)
	jobs := make(chan int, n)
	for i := range n {
		jobs <- i
	}
	close(jobs)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				addr := t.addrFor(i)
				for {
					r, err := fastKey(ctx, addr, t.dc, t.key, &dh, 0)
					mu.Lock()
					if err == nil {
						out[i] = session.Data{
							DC: t.dc, Addr: addr,
							AuthKey:   append([]byte(nil), r.AuthKey.Value[:]...),
							AuthKeyID: append([]byte(nil), r.AuthKey.ID[:]...),
							Salt:      r.ServerSalt,
						}
						made++
						mu.Unlock()
						break
					}
					if firstErr == nil {
						firstErr = err
					}
					retry := retries > 0 && ctx.Err() == nil
					retries--
					mu.Unlock()
					if !retry {
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if made < n {
		return nil, fmt.Errorf("create auth keys: %d of %d: %w", made, n, firstErr)
	}
	return out, nil
}

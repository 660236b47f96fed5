package keyx

import (
	"bytes"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"math/big"
	"testing"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/crypto"
	"github.com/gotd/td/mt"
)

func spec2() innerSpec { return innerSpec{dc: 2} }

func TestScriptedVariants(t *testing.T) {
	for _, tc := range []struct {
		name      string
		spec      innerSpec
		temp      bool
		expiresIn int
		dc        int
	}{
		{"rsa_pad dc", innerSpec{ctor: "dc", dc: 2}, false, 0, 2},
		{"rsa_pad temp_dc", innerSpec{ctor: "temp_dc", dc: 2, expiresIn: 86400}, true, 86400, 2},
		{"legacy plain", innerSpec{ctor: "plain", legacy: true}, false, 0, 2},
		{"legacy dc", innerSpec{ctor: "dc", legacy: true, dc: -2}, false, 0, -2},
		{"legacy temp", innerSpec{ctor: "temp", legacy: true, expiresIn: 60}, true, 60, 2},
		{"legacy temp_dc", innerSpec{ctor: "temp_dc", legacy: true, dc: 10002, expiresIn: MaxTempKeyLifetime}, true, MaxTempKeyLifetime, 10002},
		{"test dc media", innerSpec{ctor: "dc", dc: -10002}, false, 0, -10002},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newScriptClient(t, testConfig(t))
			res := c.fullExchange(tc.spec)
			if res.Temp != tc.temp || res.ExpiresIn != tc.expiresIn || res.DC != tc.dc {
				t.Fatalf("result %+v", res)
			}
			if res.ServerSalt != crypto.ServerSalt(c.newNonce, c.serverNonce) {
				t.Fatal("salt")
			}
			if res.Key.ID != c.authKey.ID() {
				t.Fatal("key id")
			}
			// The exchange is over: anything more is ErrFinished.
			_, _, err := c.step(c.messages[0])
			requireKeyxError(t, err, ErrFinished)
		})
	}
}

func TestRepeatedReqPQ(t *testing.T) {
	c := newScriptClient(t, testConfig(t))
	if err := c.reqPQ(true); err != nil { // desktop's legacy probe
		t.Fatal(err)
	}
	first, firstPQ := c.serverNonce, c.pq
	if err := c.reqPQ(false); err != nil {
		t.Fatal(err)
	}
	if c.serverNonce == first {
		t.Fatal("repeated req_pq reused server_nonce")
	}
	if bytes.Equal(c.pq, firstPQ) {
		t.Fatal("repeated req_pq reused pq")
	}
	if err := c.reqDH(spec2(), nil, nil); err != nil {
		t.Fatal(err)
	}
	if ans, err := c.setDH(nil, nil, nil); err != nil || !ans.ok {
		t.Fatalf("%+v %v", ans, err)
	}
}

func TestTooManyReqPQ(t *testing.T) {
	c := newScriptClient(t, testConfig(t))
	for i := 0; i < MaxReqPQ; i++ {
		if err := c.reqPQ(i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	requireKeyxError(t, c.reqPQ(false), ErrTooManyRequests)
}

func TestPQShape(t *testing.T) {
	r := seededRand(1)
	for i := 0; i < 200; i++ {
		p, q, err := generatePQ(r)
		if err != nil {
			t.Fatal(err)
		}
		if p >= q {
			t.Fatalf("p=%d >= q=%d", p, q)
		}
		pq := new(big.Int).Mul(new(big.Int).SetUint64(p), new(big.Int).SetUint64(q))
		if pq.BitLen() > 63 {
			t.Fatalf("pq %v has %d bits", pq, pq.BitLen())
		}
		for _, v := range []uint64{p, q} {
			if !new(big.Int).SetUint64(v).ProbablyPrime(20) || v < 1<<30 {
				t.Fatalf("%d is not a 31-bit prime", v)
			}
		}
	}
}

func TestDHPrime(t *testing.T) {
	g := newDHGroup()
	if err := crypto.CheckDH(dhG, g.p); err != nil {
		t.Fatalf("published prime with g=%d fails CheckDH: %v", dhG, err)
	}
	a, ga, err := g.generateA(seededRand(3))
	if err != nil {
		t.Fatal(err)
	}
	if a.BitLen() < 2000 || !g.inRange(ga) {
		t.Fatal("a/g_a")
	}
	if g.inRange(g.safeMin) || g.inRange(big.NewInt(1)) || g.inRange(g.pMinusOne) || g.inRange(g.safeMax) {
		t.Fatal("range bounds must be exclusive")
	}
	if !g.inRange(new(big.Int).Add(g.safeMin, big.NewInt(1))) {
		t.Fatal("2^1984+1 must be in range")
	}
}

// brokenRand fails after n bytes, to reach ErrInternal paths.
type brokenRand struct{ n int }

func (b *brokenRand) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, errors.New("entropy exhausted")
	}
	if len(p) > b.n {
		p = p[:b.n]
	}
	b.n -= len(p)
	return len(p), nil
}

func TestRandomFailure(t *testing.T) {
	cfg := testConfig(t)
	cfg.Rand = &brokenRand{n: 4}
	_, _, err := New(cfg).Step(mustEncode(t, &mt.ReqPqMultiRequest{}))
	requireKeyxError(t, err, ErrInternal)
}

func TestNoKey(t *testing.T) {
	_, _, err := New(&Config{DC: 2}).Step(mustEncode(t, &mt.ReqPqMultiRequest{}))
	requireKeyxError(t, err, ErrInternal)
}

func mustEncode(t testing.TB, e bin.Encoder) []byte {
	t.Helper()
	var b bin.Buffer
	if err := e.Encode(&b); err != nil {
		t.Fatal(err)
	}
	return b.Buf
}

func TestOutOfOrderAndMalformed(t *testing.T) {
	cfg := testConfig(t)
	for _, tc := range []struct {
		name string
		body []byte
		want error
	}{
		{"req_DH_params first", mustEncode(t, &mt.ReqDHParamsRequest{}), ErrOutOfOrder},
		{"set_client_DH_params first", mustEncode(t, &mt.SetClientDHParamsRequest{}), ErrOutOfOrder},
		{"empty", nil, ErrMalformed},
		{"short", []byte{1, 2}, ErrMalformed},
		{"unknown type", mustEncode(t, &mt.DhGenOk{}), ErrMalformed},
		{"truncated req_pq", mustEncode(t, &mt.ReqPqMultiRequest{})[:10], ErrMalformed},
		{"trailing bytes", append(mustEncode(t, &mt.ReqPqMultiRequest{}), 0, 0, 0, 0), ErrMalformed},
		{"too big", append(mustEncode(t, &mt.ReqPqMultiRequest{}), make([]byte, MaxMessageSize)...), ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := New(cfg).Step(tc.body)
			requireKeyxError(t, err, tc.want)
		})
	}

	t.Run("set_client_DH_params after resPQ", func(t *testing.T) {
		c := newScriptClient(t, cfg)
		if err := c.reqPQ(false); err != nil {
			t.Fatal(err)
		}
		_, _, err := c.step(mustEncode(t, &mt.SetClientDHParamsRequest{Nonce: c.nonce, ServerNonce: c.serverNonce}))
		requireKeyxError(t, err, ErrOutOfOrder)
	})
	t.Run("req_pq after req_DH_params", func(t *testing.T) {
		c := newScriptClient(t, cfg)
		if err := c.reqPQ(false); err != nil {
			t.Fatal(err)
		}
		if err := c.reqDH(spec2(), nil, nil); err != nil {
			t.Fatal(err)
		}
		requireKeyxError(t, c.reqPQ(false), ErrOutOfOrder)
	})
	t.Run("req_DH_params twice", func(t *testing.T) {
		c := newScriptClient(t, cfg)
		if err := c.reqPQ(false); err != nil {
			t.Fatal(err)
		}
		if err := c.reqDH(spec2(), nil, nil); err != nil {
			t.Fatal(err)
		}
		_, _, err := c.step(c.messages[1])
		requireKeyxError(t, err, ErrOutOfOrder)
	})
	t.Run("error is final", func(t *testing.T) {
		h := New(cfg)
		if _, _, err := h.Step([]byte{1}); err == nil {
			t.Fatal("want error")
		}
		_, _, err := h.Step(mustEncode(t, &mt.ReqPqMultiRequest{}))
		requireKeyxError(t, err, ErrFinished)
	})
}

func TestReqDHParamsRejections(t *testing.T) {
	cfg := testConfig(t)
	flip := func(b []byte) []byte { b = append([]byte(nil), b...); b[len(b)-1] ^= 1; return b }
	for _, tc := range []struct {
		name  string
		spec  innerSpec
		inner func(*pqInner)
		outer func(*mt.ReqDHParamsRequest)
		want  error
	}{
		{"outer nonce", spec2(), nil, func(r *mt.ReqDHParamsRequest) { r.Nonce[0] ^= 1 }, ErrNonceMismatch},
		{"outer server_nonce", spec2(), nil, func(r *mt.ReqDHParamsRequest) { r.ServerNonce[3] ^= 1 }, ErrNonceMismatch},
		{"outer p", spec2(), nil, func(r *mt.ReqDHParamsRequest) { r.P = flip(r.P) }, ErrPQMismatch},
		{"outer q", spec2(), nil, func(r *mt.ReqDHParamsRequest) { r.Q = flip(r.Q) }, ErrPQMismatch},
		{"outer p q swapped", spec2(), nil, func(r *mt.ReqDHParamsRequest) { r.P, r.Q = r.Q, r.P }, ErrPQMismatch},
		{"fingerprint", spec2(), nil, func(r *mt.ReqDHParamsRequest) { r.PublicKeyFingerprint++ }, ErrUnknownFingerprint},
		{"encrypted_data flipped", spec2(), nil, func(r *mt.ReqDHParamsRequest) { r.EncryptedData = flip(r.EncryptedData) }, ErrDecrypt},
		{"encrypted_data flipped legacy", innerSpec{ctor: "dc", dc: 2, legacy: true}, nil, func(r *mt.ReqDHParamsRequest) { r.EncryptedData = flip(r.EncryptedData) }, ErrDecrypt},
		{"encrypted_data too long", spec2(), nil, func(r *mt.ReqDHParamsRequest) { r.EncryptedData = append(r.EncryptedData, 0) }, ErrDecrypt},
		{"encrypted_data empty", spec2(), nil, func(r *mt.ReqDHParamsRequest) { r.EncryptedData = nil }, ErrDecrypt},
		{"encrypted_data >= modulus", spec2(), nil, func(r *mt.ReqDHParamsRequest) { r.EncryptedData = bytes.Repeat([]byte{0xff}, 256) }, ErrDecrypt},
		{"inner nonce", spec2(), func(in *pqInner) { in.nonce[1] ^= 1 }, nil, ErrNonceMismatch},
		{"inner server_nonce", spec2(), func(in *pqInner) { in.serverNonce[1] ^= 1 }, nil, ErrNonceMismatch},
		{"inner pq", spec2(), func(in *pqInner) { in.pq = flip(in.pq) }, nil, ErrPQMismatch},
		{"inner p", innerSpec{ctor: "plain", legacy: true}, func(in *pqInner) { in.p = flip(in.p) }, nil, ErrPQMismatch},
		{"inner q", spec2(), func(in *pqInner) { in.q = flip(in.q) }, nil, ErrPQMismatch},
		{"wrong dc", innerSpec{dc: 3}, nil, nil, ErrWrongDC},
		{"dc zero", innerSpec{dc: 0}, nil, nil, ErrWrongDC},
		{"wrong test dc", innerSpec{dc: 10003}, nil, nil, ErrWrongDC},
		{"temp expires_in 0", innerSpec{ctor: "temp_dc", dc: 2}, nil, nil, ErrExpiresIn},
		{"temp expires_in negative", innerSpec{ctor: "temp", legacy: true, expiresIn: -1}, nil, nil, ErrExpiresIn},
		{"temp expires_in too long", innerSpec{ctor: "temp_dc", dc: 2, expiresIn: MaxTempKeyLifetime + 1}, nil, nil, ErrExpiresIn},
		{"rsa_pad with p_q_inner_data", innerSpec{ctor: "plain"}, nil, nil, ErrMalformed},
		{"rsa_pad with p_q_inner_data_temp", innerSpec{ctor: "temp", expiresIn: 10}, nil, nil, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newScriptClient(t, cfg)
			if err := c.reqPQ(false); err != nil {
				t.Fatal(err)
			}
			requireKeyxError(t, c.reqDH(tc.spec, tc.inner, tc.outer), tc.want)
		})
	}
}

func TestSetClientDHParamsRejections(t *testing.T) {
	cfg := testConfig(t)
	grp := newDHGroup()
	for _, tc := range []struct {
		name     string
		gb       *big.Int
		inner    func(*mt.ClientDHInnerData)
		outer    func(*mt.SetClientDHParamsRequest)
		want     error
		wantFail bool // dh_gen_fail reply expected
	}{
		{"outer nonce", nil, nil, func(r *mt.SetClientDHParamsRequest) { r.Nonce[0] ^= 1 }, ErrNonceMismatch, false},
		{"outer server_nonce", nil, nil, func(r *mt.SetClientDHParamsRequest) { r.ServerNonce[0] ^= 1 }, ErrNonceMismatch, false},
		{"inner nonce", nil, func(in *mt.ClientDHInnerData) { in.Nonce[0] ^= 1 }, nil, ErrNonceMismatch, false},
		{"inner server_nonce", nil, func(in *mt.ClientDHInnerData) { in.ServerNonce[0] ^= 1 }, nil, ErrNonceMismatch, false},
		{"retry_id on first attempt", nil, func(in *mt.ClientDHInnerData) { in.RetryID = 1 }, nil, ErrRetryID, false},
		{"ciphertext flipped", nil, nil, func(r *mt.SetClientDHParamsRequest) { r.EncryptedData[20] ^= 1 }, ErrDecrypt, false},
		{"ciphertext last block flipped", nil, nil, func(r *mt.SetClientDHParamsRequest) { r.EncryptedData[len(r.EncryptedData)-1] ^= 1 }, ErrDecrypt, false},
		{"ciphertext not block aligned", nil, nil, func(r *mt.SetClientDHParamsRequest) { r.EncryptedData = r.EncryptedData[:len(r.EncryptedData)-1] }, ErrMalformed, false},
		{"ciphertext empty", nil, nil, func(r *mt.SetClientDHParamsRequest) { r.EncryptedData = nil }, ErrMalformed, false},
		{"ciphertext too long", nil, nil, func(r *mt.SetClientDHParamsRequest) { r.EncryptedData = make([]byte, 528) }, ErrMalformed, false},
		{"g_b = 1", big.NewInt(1), nil, nil, ErrBadGB, true},
		{"g_b = 0", big.NewInt(0), nil, nil, ErrBadGB, true},
		{"g_b = p-1", grp.pMinusOne, nil, nil, ErrBadGB, true},
		{"g_b = p", grp.p, nil, nil, ErrBadGB, true},
		{"g_b = 2^1984", grp.safeMin, nil, nil, ErrBadGB, true},
		{"g_b small", big.NewInt(3), nil, nil, ErrBadGB, true},
		{"g_b = p - 2^1984", grp.safeMax, nil, nil, ErrBadGB, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newScriptClient(t, cfg)
			if err := c.reqPQ(false); err != nil {
				t.Fatal(err)
			}
			if err := c.reqDH(spec2(), nil, nil); err != nil {
				t.Fatal(err)
			}
			ans, err := c.setDH(tc.gb, tc.inner, tc.outer)
			requireKeyxError(t, err, tc.want)
			if ans.fail != tc.wantFail || ans.ok || ans.retry || ans.result != nil {
				t.Fatalf("answer %+v", ans)
			}
		})
	}
}

func TestDHGenRetry(t *testing.T) {
	cfg := testConfig(t)
	var seen [][8]byte
	cfg.Exists = func(id [8]byte) bool {
		seen = append(seen, id)
		return len(seen) == 1 // the first key collides once
	}
	c := newScriptClient(t, cfg)
	if err := c.reqPQ(false); err != nil {
		t.Fatal(err)
	}
	if err := c.reqDH(spec2(), nil, nil); err != nil {
		t.Fatal(err)
	}
	ans, err := c.setDH(nil, nil, nil)
	if err != nil || !ans.retry {
		t.Fatalf("want dh_gen_retry, got %+v %v", ans, err)
	}
	if c.retryID == 0 {
		t.Fatal("retry id not set")
	}
	ans, err = c.setDH(nil, nil, nil) // retry_id = aux hash of the first key
	if err != nil || !ans.ok {
		t.Fatalf("want dh_gen_ok, got %+v %v", ans, err)
	}
	if ans.result.Key.Value != c.authKey || len(seen) != 2 || seen[1] != c.authKey.ID() {
		t.Fatal("retry produced the wrong key")
	}
}

func TestDHGenRetryWrongRetryID(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   func(c *scriptClient) int64
	}{
		{"zero", func(*scriptClient) int64 { return 0 }},
		{"off by one", func(c *scriptClient) int64 { return c.retryID + 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			n := 0
			cfg.Exists = func([8]byte) bool { n++; return n == 1 }
			c := newScriptClient(t, cfg)
			if err := c.reqPQ(false); err != nil {
				t.Fatal(err)
			}
			if err := c.reqDH(spec2(), nil, nil); err != nil {
				t.Fatal(err)
			}
			if ans, err := c.setDH(nil, nil, nil); err != nil || !ans.retry {
				t.Fatalf("%+v %v", ans, err)
			}
			id := tc.id(c)
			_, err := c.setDH(nil, func(in *mt.ClientDHInnerData) { in.RetryID = id }, nil)
			requireKeyxError(t, err, ErrRetryID)
		})
	}
}

func TestDHGenRetriesExhausted(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxRetries = 2
	cfg.Exists = func([8]byte) bool { return true }
	c := newScriptClient(t, cfg)
	if err := c.reqPQ(false); err != nil {
		t.Fatal(err)
	}
	if err := c.reqDH(spec2(), nil, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if ans, err := c.setDH(nil, nil, nil); err != nil || !ans.retry {
			t.Fatalf("attempt %d: %+v %v", i, ans, err)
		}
	}
	ans, err := c.setDH(nil, nil, nil)
	requireKeyxError(t, err, ErrRetriesExhausted)
	if !ans.fail {
		t.Fatalf("want dh_gen_fail, got %+v", ans)
	}
}

func TestDCAllowed(t *testing.T) {
	cfg := &Config{DC: 4}
	for dc, want := range map[int]bool{4: true, -4: true, 10004: true, -10004: true, 0: false, 5: false, -5: false, 4 + 20000: false, 10005: false} {
		if got := cfg.dcAllowed(dc); got != want {
			t.Errorf("dc %d: got %v want %v", dc, got, want)
		}
	}
	if (&Config{}).dcAllowed(0) {
		t.Error("dc 0 must never be allowed")
	}
}

func TestFingerprint(t *testing.T) {
	cfg := testConfig(t)
	if cfg.Fingerprint() != crypto.RSAFingerprint(&cfg.Key.PublicKey) || cfg.Fingerprint() == 0 {
		t.Fatal("fingerprint")
	}
}

func TestNonceHashes(t *testing.T) {
	r := seededRand(5)
	for i := 0; i < 20; i++ {
		var key crypto.Key
		var nn bin.Int256
		_, _ = r.Read(key[:])
		_, _ = r.Read(nn[:])
		if nonceHash(nn, 1, key) != crypto.NonceHash1(nn, key) {
			t.Fatal("new_nonce_hash1 differs from gotd")
		}
		// Independent spelling of the spec formula for 2 and 3.
		for _, n := range []byte{2, 3} {
			keySum := sha1.Sum(key[:])
			sum := sha1.Sum(append(append(append([]byte{}, nn[:]...), n), keySum[:8]...))
			var want bin.Int128
			copy(want[:], sum[4:])
			if nonceHash(nn, n, key) != want {
				t.Fatalf("new_nonce_hash%d", n)
			}
		}
	}
}

func TestRSADecryptMatchesGotd(t *testing.T) {
	key := loadKey(t)
	rk := newRSAKey(key)
	r := seededRand(9)
	data := make([]byte, 144)
	for i := 0; i < 5; i++ {
		_, _ = r.Read(data)
		enc, err := crypto.RSAPad(data, &key.PublicKey, r)
		if err != nil {
			t.Fatal(err)
		}
		want, err := crypto.DecodeRSAPad(enc, key)
		if err != nil {
			t.Fatal(err)
		}
		var blk [rsaSize]byte
		if !rk.decrypt(r, enc, &blk) {
			t.Fatal("decrypt failed")
		}
		got := decodeRSAPad(&blk)
		if !bytes.Equal(got, want) || !bytes.Equal(got[:144], data) {
			t.Fatal("RSA_PAD decode differs from gotd")
		}
	}
	// Without CRT parameters the plain exponent path must agree.
	plain := &rsaKey{n: rk.n, e: rk.e, d: rk.d, byteLength: rk.byteLength}
	enc, _ := crypto.RSAPad(data, &key.PublicKey, r)
	var a, b [rsaSize]byte
	if !rk.decrypt(r, enc, &a) || !plain.decrypt(r, enc, &b) || a != b {
		t.Fatal("CRT and plain decryption differ")
	}
}

func TestRetryIDEncoding(t *testing.T) {
	// retry_id is auth_key_aux_hash read as a TL long (little endian).
	var key crypto.Key
	key[0] = 1
	aux := key.AuxHash()
	if int64(binary.LittleEndian.Uint64(aux[:])) != int64(leUint64(aux[:])) {
		t.Fatal("helper")
	}
}

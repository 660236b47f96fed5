package keyx

import (
	"crypto/rsa"
	"errors"
	"testing"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/mt"
)

// replaySetup builds a Config and scripted client whose randomness is fixed,
// so a recorded exchange replays byte for byte: the recorded client messages
// are valid again at every state, which makes them useful fuzz seeds.
func replaySetup(t testing.TB, key *rsa.PrivateKey) (*Config, *scriptClient) {
	cfg := &Config{Key: key, DC: 2, Rand: seededRand(100)}
	return cfg, &scriptClient{t: t, h: New(cfg), pub: &key.PublicKey, rand: seededRand(7)}
}

// recordExchange returns the three client bodies of an honest exchange.
func recordExchange(t testing.TB, key *rsa.PrivateKey) [][]byte {
	_, c := replaySetup(t, key)
	c.fullExchange(spec2())
	return c.messages
}

// driveTo advances a fresh replayable handshake to state s (0: nothing sent,
// 1: resPQ sent, 2: server_DH_params_ok sent).
func driveTo(t testing.TB, key *rsa.PrivateKey, s int) *Handshake {
	_, c := replaySetup(t, key)
	if s >= 1 {
		if err := c.reqPQ(false); err != nil {
			t.Fatal(err)
		}
	}
	if s >= 2 {
		if err := c.reqDH(spec2(), nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	return c.h
}

func FuzzStep(f *testing.F) {
	key := loadKey(f)
	msgs := recordExchange(f, key)
	for s := range 3 {
		for _, m := range msgs {
			f.Add(uint8(s), m)
		}
		f.Add(uint8(s), []byte{})
		f.Add(uint8(s), mustEncode(f, &mt.ReqPqRequest{}))
	}
	f.Fuzz(func(t *testing.T, s uint8, body []byte) {
		state := int(s % 3)
		h := driveTo(t, key, state)
		reply, done, err := h.Step(body)
		if err != nil {
			requireDocumented(t, err)
			if reply != nil {
				// Only dh_gen_fail accompanies an error.
				if _, derr := mt.DecodeSetClientDHParamsAnswer(&bin.Buffer{Buf: reply}); derr != nil {
					t.Fatalf("reply with error is not dh_gen_*: %v", derr)
				}
			}
			if _, _, err2 := h.Step(body); !errors.Is(err2, ErrFinished) {
				t.Fatalf("after error: %v", err2)
			}
			return
		}
		if reply == nil {
			t.Fatal("no error and no reply")
		}
		if done != nil && state != 2 {
			t.Fatalf("key created from state %d", state)
		}
	})
}

// FuzzExchange runs gotd's client against the server over a pipe while the
// fuzzer corrupts one client message on the way in. Whatever happens, the
// server must not panic, must fail only with documented errors, and must
// never hand out a key the client did not also derive.
func FuzzExchange(f *testing.F) {
	f.Add(uint8(0), uint16(0), byte(0), false)
	f.Add(uint8(0), uint16(5), byte(1), false)
	f.Add(uint8(1), uint16(40), byte(0x80), false)
	f.Add(uint8(1), uint16(100), byte(0), true)
	f.Add(uint8(2), uint16(60), byte(4), false)
	f.Add(uint8(2), uint16(3), byte(0), true)
	key := loadKey(f)
	f.Fuzz(func(t *testing.T, idx uint8, pos uint16, x byte, cut bool) {
		cfg := &Config{Key: key, DC: 2}
		mutate := func(i int, body []byte) []byte {
			if i != int(idx%3) || len(body) == 0 {
				return body
			}
			body = append([]byte(nil), body...)
			p := int(pos) % len(body)
			if cut {
				return body[:p]
			}
			body[p] ^= x
			return body
		}
		out := runGotdExchange(t, cfg, 2, 0, mutate)
		var ke *Error
		if errors.As(out.serverErr, &ke) {
			requireDocumented(t, out.serverErr)
		}
		if out.serverErr == nil {
			if out.clientErr != nil {
				t.Fatalf("server made a key, client failed: %v", out.clientErr)
			}
			if out.server.Key != out.client.AuthKey {
				t.Fatal("keys differ")
			}
		}
		if x == 0 && !cut && (out.serverErr != nil || out.clientErr != nil) {
			t.Fatalf("unmodified exchange failed: %v / %v", out.serverErr, out.clientErr)
		}
	})
}

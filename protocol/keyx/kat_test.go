package keyx

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/big"
	"strings"
	"testing"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/crypto"
	"github.com/gotd/td/mt"
)

// Values from the docs' worked example,
// https://core.telegram.org/mtproto/samples-auth_key (the edition with
// server_nonce A5CF4D33...; the same numbers gotd's crypto tests cite).
const (
	samplePQ          = 0x17ED48941A08F981
	sampleP           = 0x494C553B
	sampleQ           = 0x53911073
	sampleNewNonce    = "311C85DB234AA2640AFC4A76A735CF5B1F0FD68BD17FA181E1229AD867CC024D"
	sampleServerNonce = "A5CF4D33F4A11EA877BA4AA573907330"
	sampleNonce       = "3E0549828CCA27E966B301A48FECE2FC"
	sampleTmpKey      = "F011280887C7BB01DF0FC4E17830E0B91FBB8BE4B2267CB985AE25F33B527253"
	sampleTmpIV       = "3212D579EE35452ED23E0D0C92841AA7D31B2E9BDEF2151E80D15860311C85DB"
	sampleEncrypted   = "28A92FE20173B347A8BB324B5FAB2667C9A8BBCE6468D5B509A4CB" +
		"DDC186240AC912CF7006AF8926DE606A2E74C0493CAA57741E6C82451F54D3E068F5CCC49B4444124B966" +
		"6FFB405AAB564A3D01E67F6E912867C8D20D9882707DC330B17B4E0DD57CB53BFAAFA9EF5BE76AE6C1B9B6" +
		"C51E2D6502A47C883095C46C81E3BE25F62427B585488BB3BF239213BF48EB8FE34C9A026CC8413934043" +
		"974DB03556633038392CECB51F94824E140B98637730A4BE79A8F9DAFA39BAE81E1095849EA4C83467C9" +
		"2A3A17D997817C8A7AC61C3FF414DA37B7D66E949C0AEC858F048224210FCC61F11C3A910B431CCBD104" +
		"CCCC8DC6D29D4A5D133BE639A4C32BBFF153E63ACA3AC52F2E4709B8AE01844B142C1EE89D075D64F69A" +
		"399FEB04E656FE3675A6F8F412078F3D0B58DA15311C1A9F8E53B3CD6BB5572C294904B726D0BE337E2E2" +
		"1977DA26DD6E33270251C2CA29DFCC70227F0755F84CFDA9AC4B8DD5F84F1D1EB36BA45CDDC70444D8C21" +
		"3E4BD8F63B8AB95A2D0B4180DC91283DC063ACFB92D6A4E407CDE7C8C69689F77A007441D4A6A8384B666" +
		"502D9B77FC68B5B43CC607E60A146223E110FCB43BC3C942EF981930CDC4A1D310C0B64D5E55D308D86325" +
		"1AB90502C3E46CC599E886A927CDA963B9EB16CE62603B68529EE98F9F5206419E03FB458EC4BD9454AA8F6" +
		"BA777573CC54B328895B1DF25EAD9FB4CD5198EE022B2B81F388D281D5E5BC580107CA01A50665C32B55271" +
		"5F335FD76264FAD00DDD5AE45B94832AC79CE7C511D194BC42B70EFA850BB15C2012C5215CABFE97CE66B8D8" +
		"734D0EE759A638AF013"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	if len(s)%2 == 1 {
		s = "0" + s
	}
	b, err := hex.DecodeString(strings.ToLower(s))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSamplePQ(t *testing.T) {
	if sampleP*sampleQ != samplePQ {
		t.Fatal("sample product")
	}
	p, q := factorPQ(samplePQ)
	if p != sampleP || q != sampleQ {
		t.Fatalf("factor: %x %x", p, q)
	}
	// The TL strings we would send and compare.
	if !bytes.Equal(uintBytes(samplePQ), unhex(t, "17ED48941A08F981")) ||
		!bytes.Equal(uintBytes(sampleP), unhex(t, "494C553B")) ||
		!bytes.Equal(uintBytes(sampleQ), unhex(t, "53911073")) {
		t.Fatal("uintBytes")
	}
}

func TestSampleTmpAESAndAnswer(t *testing.T) {
	var newNonce bin.Int256
	var serverNonce, nonce bin.Int128
	copy(newNonce[:], unhex(t, sampleNewNonce))
	copy(serverNonce[:], unhex(t, sampleServerNonce))
	copy(nonce[:], unhex(t, sampleNonce))

	key, iv := crypto.TempAESKeys(newNonce.BigInt(), serverNonce.BigInt())
	if !bytes.Equal(key, unhex(t, sampleTmpKey)) || !bytes.Equal(iv, unhex(t, sampleTmpIV)) {
		t.Fatal("tmp_aes_key/iv differ from the docs")
	}

	// Our data_with_hash check (the one used on set_client_DH_params)
	// applied to the docs' encrypted answer: it must find the hash and
	// yield server_DH_inner_data with the docs' nonces and OUR dh_prime.
	var inner mt.ServerDHInnerData
	err := decryptAnswer(unhex(t, sampleEncrypted), key, iv, 1024, func(data []byte) (int, error) {
		b := &bin.Buffer{Buf: data}
		if err := inner.Decode(b); err != nil {
			return 0, err
		}
		return len(data) - b.Len(), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if inner.Nonce != nonce || inner.ServerNonce != serverNonce {
		t.Fatal("nonces")
	}
	if !bytes.Equal(inner.DhPrime, newDHGroup().pBytes) {
		t.Fatal("the docs' dh_prime is not our dhPrimeHex")
	}
	if inner.G != 2 {
		t.Fatalf("docs example uses g=2, got %d", inner.G)
	}
	ga := new(big.Int).SetBytes(inner.GA)
	if !newDHGroup().inRange(ga) {
		t.Fatal("docs g_a out of range")
	}

	// A wrong key must fail the hash check, not decode garbage.
	bad := append([]byte(nil), key...)
	bad[0] ^= 1
	err = decryptAnswer(unhex(t, sampleEncrypted), bad, iv, 1024, func(data []byte) (int, error) {
		var v mt.ServerDHInnerData
		b := &bin.Buffer{Buf: data}
		if err := v.Decode(b); err != nil {
			return 0, err
		}
		return len(data) - b.Len(), nil
	})
	requireSentinel(t, err, ErrDecrypt)
}

func requireSentinel(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("want %v, got %v", want, err)
	}
}

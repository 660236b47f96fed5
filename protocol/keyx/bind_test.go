package keyx

import (
	"errors"
	"testing"

	"github.com/gotd/td/crypto"
	"github.com/gotd/td/tg"
)

func bindFixture(t *testing.T) (perm crypto.AuthKey, tempID, session, msgID int64, req *tg.AuthBindTempAuthKeyRequest) {
	t.Helper()
	r := seededRand(11)
	var k crypto.Key
	_, _ = r.Read(k[:])
	perm = k.WithID()
	tempID, session, msgID = 0x1122334455667788, 0x0102030405060708, 0x5f00000000000004
	inner := &crypto.BindAuthKeyInner{
		Nonce: 42, TempAuthKeyID: tempID, PermAuthKeyID: perm.IntID(),
		TempSessionID: session, ExpiresAt: 1700000000,
	}
	msg, err := crypto.EncryptBindMessage(r, perm, msgID, inner)
	if err != nil {
		t.Fatal(err)
	}
	req = &tg.AuthBindTempAuthKeyRequest{PermAuthKeyID: perm.IntID(), Nonce: 42, ExpiresAt: 1700000000, EncryptedMessage: msg}
	return perm, tempID, session, msgID, req
}

func TestVerifyBindOK(t *testing.T) {
	perm, tempID, session, msgID, req := bindFixture(t)
	inner, err := VerifyBind(perm, tempID, session, msgID, req)
	if err != nil {
		t.Fatal(err)
	}
	if inner.TempAuthKeyID != tempID || inner.PermAuthKeyID != perm.IntID() || inner.Nonce != 42 {
		t.Fatalf("inner %+v", inner)
	}
}

func TestVerifyBindRejections(t *testing.T) {
	perm, tempID, session, msgID, req := bindFixture(t)
	var other crypto.Key
	other[0] = 9
	otherPerm := other.WithID()
	for _, tc := range []struct {
		name string
		call func() error
		want error
	}{
		{"no temp key", func() error { _, err := VerifyBind(perm, 0, session, msgID, req); return err }, ErrBindTempKeyEmpty},
		{"other temp key", func() error { _, err := VerifyBind(perm, tempID+1, session, msgID, req); return err }, ErrBindEncryptedMessageInvalid},
		{"other session", func() error { _, err := VerifyBind(perm, tempID, session+1, msgID, req); return err }, ErrBindEncryptedMessageInvalid},
		{"other msg_id", func() error { _, err := VerifyBind(perm, tempID, session, msgID+4, req); return err }, ErrBindEncryptedMessageInvalid},
		{"other perm key", func() error {
			r := *req
			r.PermAuthKeyID = otherPerm.IntID()
			_, err := VerifyBind(otherPerm, tempID, session, msgID, &r)
			return err
		}, ErrBindEncryptedMessageInvalid},
		{"perm id mismatch", func() error {
			r := *req
			r.PermAuthKeyID++
			_, err := VerifyBind(perm, tempID, session, msgID, &r)
			return err
		}, ErrBindEncryptedMessageInvalid},
		{"nonce", func() error {
			r := *req
			r.Nonce++
			_, err := VerifyBind(perm, tempID, session, msgID, &r)
			return err
		}, ErrBindEncryptedMessageInvalid},
		{"expires_at", func() error {
			r := *req
			r.ExpiresAt++
			_, err := VerifyBind(perm, tempID, session, msgID, &r)
			return err
		}, ErrBindEncryptedMessageInvalid},
		{"nil request", func() error { _, err := VerifyBind(perm, tempID, session, msgID, nil); return err }, ErrBindEncryptedMessageInvalid},
		{"zero perm", func() error { _, err := VerifyBind(crypto.AuthKey{}, tempID, session, msgID, req); return err }, ErrBindEncryptedMessageInvalid},
		{"too long", func() error {
			r := *req
			r.EncryptedMessage = append(append([]byte(nil), req.EncryptedMessage...), make([]byte, 512)...)
			_, err := VerifyBind(perm, tempID, session, msgID, &r)
			return err
		}, ErrBindEncryptedMessageInvalid},
		{"truncated", func() error {
			r := *req
			r.EncryptedMessage = req.EncryptedMessage[:20]
			_, err := VerifyBind(perm, tempID, session, msgID, &r)
			return err
		}, ErrBindEncryptedMessageInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var be *BindError
			if !errors.As(err, &be) || be.Code != 400 || !errors.Is(err, tc.want) || be.Type != tc.want.Error() {
				t.Fatalf("want %v as *BindError, got %v", tc.want, err)
			}
		})
	}
	// Every single flipped byte must be rejected.
	for i := range req.EncryptedMessage {
		r := *req
		r.EncryptedMessage = append([]byte(nil), req.EncryptedMessage...)
		r.EncryptedMessage[i] ^= 0x80
		if _, err := VerifyBind(perm, tempID, session, msgID, &r); !errors.Is(err, ErrBindEncryptedMessageInvalid) {
			t.Fatalf("flip at %d: %v", i, err)
		}
	}
}

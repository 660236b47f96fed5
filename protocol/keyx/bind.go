package keyx

import (
	"crypto/aes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/gotd/ige"
	"github.com/gotd/td/bin"
	"github.com/gotd/td/crypto"
	"github.com/gotd/td/tg"
)

// Binding errors, each naming the RPC error auth.bindTempAuthKey returns
// (https://core.telegram.org/method/auth.bindTempAuthKey).
var (
	// ErrBindEncryptedMessageInvalid is ENCRYPTED_MESSAGE_INVALID: the
	// encrypted_message does not decrypt under the permanent key, or its
	// contents do not match the request and the connection it arrived on.
	ErrBindEncryptedMessageInvalid = errors.New("ENCRYPTED_MESSAGE_INVALID")
	// ErrBindTempKeyEmpty is TEMP_AUTH_KEY_EMPTY: the request did not
	// arrive over a temporary key (tempKeyID is 0).
	ErrBindTempKeyEmpty = errors.New("TEMP_AUTH_KEY_EMPTY")
)

// BindError is the error VerifyBind returns: Type is the RPC error type to
// answer with (error code Code, 400), Err wraps the sentinel and a reason for
// logs.
type BindError struct {
	// Code is the RPC error code (400).
	Code int
	// Type is the RPC error type, e.g. "ENCRYPTED_MESSAGE_INVALID".
	Type string
	// Err wraps ErrBindEncryptedMessageInvalid or ErrBindTempKeyEmpty.
	Err error
}

// Error implements error.
func (e *BindError) Error() string { return fmt.Sprintf("keyx: bind: %v", e.Err) }

// Unwrap lets errors.Is find the sentinel.
func (e *BindError) Unwrap() error { return e.Err }

func bindError(sentinel error, reason string) error {
	return &BindError{Code: 400, Type: sentinel.Error(), Err: fmt.Errorf("%s: %w", reason, sentinel)}
}

const (
	// bindInnerSize is the serialized size of bind_auth_key_inner.
	bindInnerSize = 4 + 8*4 + 4
	// bindHeaderSize is random(16) + msg_id(8) + seq_no(4) + msg_len(4),
	// the MTProto v1 plaintext header with the salt and session replaced by
	// 16 random bytes.
	bindHeaderSize = 16 + 8 + 4 + 4
	// maxBindMessage bounds encrypted_message: auth_key_id + msg_key + one
	// header and inner padded to 16. Generous, but far from unbounded.
	maxBindMessage = 8 + 16 + 256
)

// VerifyBind checks the encrypted_message of auth.bindTempAuthKey. Per spec
// it is encrypted with the PERMANENT key using MTProto v1 (msg_key =
// SHA1(plaintext without padding)[4:20], SHA1 KDF with x=0) and carries
// bind_auth_key_inner. It returns the decoded inner if it decrypts under perm,
// its msg_id equals msgID (the msg_id of the outer message carrying the
// request), and the inner names tempKeyID (the key the request arrived on),
// perm, sessionID (the session of the request), req.Nonce and req.ExpiresAt.
// Anything else is a *BindError naming the RPC error to return.
//
// VerifyBind does not check expires_at against a clock or whether the temp
// key is already bound; the caller owns both.
func VerifyBind(perm crypto.AuthKey, tempKeyID int64, sessionID int64, msgID int64, req *tg.AuthBindTempAuthKeyRequest) (*crypto.BindAuthKeyInner, error) {
	if tempKeyID == 0 {
		return nil, bindError(ErrBindTempKeyEmpty, "request not sent over a temporary key")
	}
	if req == nil || perm.Zero() {
		return nil, bindError(ErrBindEncryptedMessageInvalid, "no request or permanent key")
	}
	permID := perm.IntID()
	if req.PermAuthKeyID != permID {
		return nil, bindError(ErrBindEncryptedMessageInvalid, "perm_auth_key_id is not the given key")
	}
	raw := req.EncryptedMessage
	if len(raw) > maxBindMessage {
		return nil, bindError(ErrBindEncryptedMessageInvalid, "encrypted_message too long")
	}
	var msg crypto.EncryptedMessage
	if err := msg.Decode(&bin.Buffer{Buf: raw}); err != nil {
		return nil, bindError(ErrBindEncryptedMessageInvalid, "encrypted_message too short")
	}
	if subtle.ConstantTimeCompare(msg.AuthKeyID[:], perm.ID[:]) != 1 {
		return nil, bindError(ErrBindEncryptedMessageInvalid, "encrypted under another key")
	}
	data := msg.EncryptedData
	if len(data) < bindHeaderSize+bindInnerSize || len(data)%aes.BlockSize != 0 {
		return nil, bindError(ErrBindEncryptedMessageInvalid, "encrypted data length")
	}

	key, iv := crypto.KeysV1(perm.Value, msg.MsgKey)
	c, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, bindError(ErrBindEncryptedMessageInvalid, "aes key")
	}
	plain := make([]byte, len(data))
	ige.DecryptBlocks(c, iv[:], plain, data)

	msgLen := int(int32(binary.LittleEndian.Uint32(plain[28:32])))
	if msgLen != bindInnerSize || bindHeaderSize+msgLen > len(plain) ||
		len(plain)-(bindHeaderSize+msgLen) >= aes.BlockSize {
		// Checked before msg_key so a garbage length cannot slice out of
		// range; a wrong key lands here or at the msg_key check alike.
		return nil, bindError(ErrBindEncryptedMessageInvalid, "message length")
	}
	mk := crypto.MessageKeyV1(plain[:bindHeaderSize+msgLen])
	if subtle.ConstantTimeCompare(mk[:], msg.MsgKey[:]) != 1 {
		return nil, bindError(ErrBindEncryptedMessageInvalid, "msg_key mismatch")
	}
	if innerMsgID := int64(binary.LittleEndian.Uint64(plain[16:24])); innerMsgID != msgID {
		return nil, bindError(ErrBindEncryptedMessageInvalid, "msg_id mismatch")
	}
	var inner crypto.BindAuthKeyInner
	ib := &bin.Buffer{Buf: plain[bindHeaderSize : bindHeaderSize+msgLen]}
	if err := inner.Decode(ib); err != nil || ib.Len() != 0 {
		return nil, bindError(ErrBindEncryptedMessageInvalid, "bind_auth_key_inner")
	}
	switch {
	case inner.Nonce != req.Nonce:
		return nil, bindError(ErrBindEncryptedMessageInvalid, "nonce mismatch")
	case inner.TempAuthKeyID != tempKeyID:
		return nil, bindError(ErrBindEncryptedMessageInvalid, "temp_auth_key_id mismatch")
	case inner.PermAuthKeyID != permID:
		return nil, bindError(ErrBindEncryptedMessageInvalid, "perm_auth_key_id mismatch")
	case inner.TempSessionID != sessionID:
		return nil, bindError(ErrBindEncryptedMessageInvalid, "temp_session_id mismatch")
	case inner.ExpiresAt != req.ExpiresAt:
		return nil, bindError(ErrBindEncryptedMessageInvalid, "expires_at mismatch")
	}
	return &inner, nil
}

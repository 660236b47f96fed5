package messaging

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"unicode/utf8"
)

// Log encoding of commands, so a Command and its Env can be a Raft log
// entry:
//
//	version (1) | kind length (1) | kind | Env.Now (8, big endian) | Env.Rand (32) | body
//
// body is the command struct as JSON (exported fields, encoding/json's
// rules). JSON is chosen over a hand-written binary form because commands
// are small, change shape as features land, and a mismatch between the
// encoder and a struct is then impossible to write by hand; the cost is a
// few microseconds per command, far below a Raft round trip. Decoding is
// strict (unknown fields and trailing bytes are errors) so that two
// versions of a command never silently decode to different values on
// different replicas: a change to a command's fields that old nodes cannot
// apply bumps codecVersion.

// codecVersion is the version byte of entries this package writes.
const codecVersion = 1

const (
	// MaxCommandSize bounds an encoded command. The largest legitimate
	// command is an ImportContacts of ImportMax entries, well below it.
	MaxCommandSize = 1 << 20
	// maxKindLen bounds the kind string.
	maxKindLen = 64
	// headerFixed is the fixed-size part of the header after the kind.
	headerFixed = 8 + 32
)

// ErrCodec wraps every encoding and decoding failure of a logged command.
var ErrCodec = errors.New("command codec")

// EncodeCommand encodes cmd and the Env it is to be applied with as one
// log entry. It fails for a command type that is not registered, for one
// whose strings are not valid UTF-8 (JSON would replace the bad bytes, so
// replicas would apply something other than what the proposer built) and
// for one larger than MaxCommandSize.
func EncodeCommand(cmd Command, env Env) ([]byte, error) {
	if cmd == nil {
		return nil, fmt.Errorf("%w: nil command", ErrCodec)
	}
	kind := cmd.Kind()
	if _, ok := newCommand(kind); !ok {
		return nil, fmt.Errorf("%w: unregistered kind %q", ErrCodec, kind)
	}
	if len(kind) == 0 || len(kind) > maxKindLen {
		return nil, fmt.Errorf("%w: kind length %d", ErrCodec, len(kind))
	}
	if !validStrings(reflect.ValueOf(cmd)) {
		return nil, fmt.Errorf("%w: %s: string is not valid UTF-8", ErrCodec, kind)
	}
	body, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("%w: encode %s: %v", ErrCodec, kind, err)
	}
	n := 2 + len(kind) + headerFixed + len(body)
	if n > MaxCommandSize {
		return nil, fmt.Errorf("%w: %s is %d bytes, over %d", ErrCodec, kind, n, MaxCommandSize)
	}
	out := make([]byte, 0, n)
	out = append(out, codecVersion, byte(len(kind)))
	out = append(out, kind...)
	out = binary.BigEndian.AppendUint64(out, uint64(env.Now))
	out = append(out, env.Rand[:]...)
	return append(out, body...), nil
}

// DecodeCommand decodes a log entry written by EncodeCommand. Every
// malformed input is an error wrapping ErrCodec, never a panic.
func DecodeCommand(data []byte) (Command, Env, error) {
	var env Env
	if len(data) > MaxCommandSize {
		return nil, env, fmt.Errorf("%w: entry is %d bytes, over %d", ErrCodec, len(data), MaxCommandSize)
	}
	if len(data) < 2 {
		return nil, env, fmt.Errorf("%w: short entry", ErrCodec)
	}
	if data[0] != codecVersion {
		return nil, env, fmt.Errorf("%w: unknown version %d", ErrCodec, data[0])
	}
	kl := int(data[1])
	if kl == 0 || kl > maxKindLen || len(data) < 2+kl+headerFixed {
		return nil, env, fmt.Errorf("%w: short entry", ErrCodec)
	}
	kind := string(data[2 : 2+kl])
	rest := data[2+kl:]
	env.Now = int64(binary.BigEndian.Uint64(rest))
	copy(env.Rand[:], rest[8:40])
	body := rest[headerFixed:]
	mk, ok := newCommand(kind)
	if !ok {
		return nil, Env{}, fmt.Errorf("%w: unknown kind %q", ErrCodec, kind)
	}
	cmd, err := mk(body)
	if err != nil {
		return nil, Env{}, fmt.Errorf("%w: decode %s: %v", ErrCodec, kind, err)
	}
	return cmd, env, nil
}

// newCommand returns the decoder for kind. Every Command type of the
// package is listed here and in registeredCommands; the tests check that
// both lists name every type with a Kind method.
func newCommand(kind string) (func([]byte) (Command, error), bool) {
	switch kind {
	case SendCode{}.Kind():
		return decodeAs[SendCode], true
	case CancelCode{}.Kind():
		return decodeAs[CancelCode], true
	case SignIn{}.Kind():
		return decodeAs[SignIn], true
	case SignUp{}.Kind():
		return decodeAs[SignUp], true
	case LogOut{}.Kind():
		return decodeAs[LogOut], true
	case ResetAuthorizations{}.Kind():
		return decodeAs[ResetAuthorizations], true
	case ResetAuthorization{}.Kind():
		return decodeAs[ResetAuthorization], true
	case UpdateProfile{}.Kind():
		return decodeAs[UpdateProfile], true
	case UpdateUsername{}.Kind():
		return decodeAs[UpdateUsername], true
	case ImportContacts{}.Kind():
		return decodeAs[ImportContacts], true
	case DeleteContacts{}.Kind():
		return decodeAs[DeleteContacts], true
	case Block{}.Kind():
		return decodeAs[Block], true
	case Unblock{}.Kind():
		return decodeAs[Unblock], true
	case SaveDraft{}.Kind():
		return decodeAs[SaveDraft], true
	case ToggleDialogPin{}.Kind():
		return decodeAs[ToggleDialogPin], true
	case SendMessage{}.Kind():
		return decodeAs[SendMessage], true
	case DeliverMessage{}.Kind():
		return decodeAs[DeliverMessage], true
	case EditCopy{}.Kind():
		return decodeAs[EditCopy], true
	case DeleteCopies{}.Kind():
		return decodeAs[DeleteCopies], true
	case ReadOutbox{}.Kind():
		return decodeAs[ReadOutbox], true
	case DeviceIndex{}.Kind():
		return decodeAs[DeviceIndex], true
	case BlockedBy{}.Kind():
		return decodeAs[BlockedBy], true
	case Inbox{}.Kind():
		return decodeAs[Inbox], true
	case OutboxAck{}.Kind():
		return decodeAs[OutboxAck], true
	case ForwardMessages{}.Kind():
		return decodeAs[ForwardMessages], true
	case EditMessage{}.Kind():
		return decodeAs[EditMessage], true
	case DeleteMessages{}.Kind():
		return decodeAs[DeleteMessages], true
	case ReadHistory{}.Kind():
		return decodeAs[ReadHistory], true
	case StoreAuthKey{}.Kind():
		return decodeAs[StoreAuthKey], true
	case InitSecrets{}.Kind():
		return decodeAs[InitSecrets], true
	case RemoteUser{}.Kind():
		return decodeAs[RemoteUser], true
	case ClaimUsername{}.Kind():
		return decodeAs[ClaimUsername], true
	case ExportAuthorization{}.Kind():
		return decodeAs[ExportAuthorization], true
	case ImportAuthorization{}.Kind():
		return decodeAs[ImportAuthorization], true
	case GuestAuthorization{}.Kind():
		return decodeAs[GuestAuthorization], true
	case RevokeGuest{}.Kind():
		return decodeAs[RevokeGuest], true
	}
	return nil, false
}

// registeredCommands is a zero value of every command type newCommand
// decodes, for tests and tools that enumerate them.
func registeredCommands() []Command {
	return []Command{
		SendCode{}, CancelCode{}, SignIn{}, SignUp{}, LogOut{},
		ResetAuthorizations{}, ResetAuthorization{},
		UpdateProfile{}, UpdateUsername{},
		ImportContacts{}, DeleteContacts{}, Block{}, Unblock{},
		SaveDraft{}, ToggleDialogPin{},
		SendMessage{}, DeliverMessage{}, ForwardMessages{}, EditMessage{},
		DeleteMessages{}, ReadHistory{}, EditCopy{}, DeleteCopies{}, ReadOutbox{},
		BlockedBy{}, DeviceIndex{}, Inbox{}, OutboxAck{},
		StoreAuthKey{}, InitSecrets{}, RemoteUser{}, ClaimUsername{},
		ExportAuthorization{}, ImportAuthorization{}, GuestAuthorization{}, RevokeGuest{},
	}
}

// decodeAs decodes body strictly as a T.
func decodeAs[T Command](body []byte) (Command, error) {
	var c T
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data")
	}
	return c, nil
}

// validStrings reports whether every string reachable from v is valid
// UTF-8. []byte fields are bytes, not strings, and are base64 in JSON.
func validStrings(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String:
		return utf8.ValidString(v.String())
	case reflect.Pointer, reflect.Interface:
		return v.IsNil() || validStrings(v.Elem())
	case reflect.Struct:
		for i := range v.NumField() {
			if !validStrings(v.Field(i)) {
				return false
			}
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return true
		}
		for i := range v.Len() {
			if !validStrings(v.Index(i)) {
				return false
			}
		}
	}
	return true
}

package node

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/tg"

	"github.com/mtnode/mtnode/protocol"
)

// FuzzRPC feeds the parsers of node-to-node RPC arbitrary bytes: none may
// panic, what they accept stays inside its bounds, and a call encoded by
// a node decodes to the same call.
func FuzzRPC(f *testing.F) {
	var b bin.Buffer
	(&tg.HelpGetConfigRequest{}).Encode(&b)
	call := &protocol.Call{AuthKeyID: 1, PermKeyID: 2, SessionID: 3, MsgID: 4, Layer: 228,
		Client: &protocol.ClientInfo{APIID: 5, DeviceModel: "d"}, Body: &b}
	f.Add(encodeCall(call, b.Buf))
	f.Add(binary.BigEndian.AppendUint64([]byte{opLoadKey}, 42))
	f.Add(append(binary.BigEndian.AppendUint64([]byte{opStoreKey}, 42), make([]byte, 300)...))
	f.Add([]byte{opStoreKey, 1, 2})
	f.Add(append([]byte{stRPCError}, `{"Code":420,"Message":"FLOOD_WAIT_3"}`...))
	f.Add(append([]byte{stRPCError}, `{"Code":99999,"Message":""}`...))
	f.Add(append([]byte{opCall}, `{"Body":"AA=="}`...))
	f.Add([]byte{opCall, '{', '"', 'L'})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		op, body := in[0], in[1:]
		if c, err := parseCall(body); err == nil {
			if c.Body == nil || len(c.Body.Buf) < 4 || c.Layer < 0 || c.Layer > 10000 {
				t.Fatalf("accepted call %+v", c)
			}
			again, err := parseCall(encodeCall(c, c.Body.Buf)[1:])
			if err != nil || again.MsgID != c.MsgID || !bytes.Equal(again.Body.Buf, c.Body.Buf) {
				t.Fatalf("call does not round-trip: %v", err)
			}
		}
		if id, rec, err := parseKeyRequest(op, body); err == nil {
			if binary.BigEndian.Uint64(body) != uint64(id) || !bytes.Equal(rec, body[8:]) {
				t.Fatal("key request misread")
			}
		}
		if te, err := parseRPCError(body); err == nil {
			if te.Message == "" || len(te.Message) > maxErrorMessage {
				t.Fatalf("accepted error %v", te)
			}
		}
	})
}

// FuzzPushFrame feeds the push bus's frame decoder arbitrary bytes.
func FuzzPushFrame(f *testing.F) {
	ok, _ := encodePushFrame([]int64{1, -2, 3}, []byte{1, 2, 3, 4, 5})
	f.Add(ok)
	f.Add([]byte{0, 1, 2, 3, 4})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		perms, tl, err := decodePushFrame(in)
		if err != nil {
			return
		}
		if len(perms) > maxPushPerms || len(tl) < 4 {
			t.Fatalf("accepted %d perms, %d bytes of update", len(perms), len(tl))
		}
		again, ok := encodePushFrame(perms, tl)
		if !ok {
			t.Fatal("accepted frame does not re-encode")
		}
		p2, tl2, err := decodePushFrame(again)
		if err != nil || !slices.Equal(p2, perms) || !bytes.Equal(tl2, tl) {
			t.Fatal("frame does not round-trip")
		}
	})
}

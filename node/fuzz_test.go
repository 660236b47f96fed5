package node

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/tg"

	"github.com/mtnode/mtnode/messaging"
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
	f.Add(encodeCall(call, 3, b.Buf))
	f.Add(append([]byte{opRead}, `{"Group":2,"Key":"dXNlcgA="}`...))
	f.Add(append([]byte{opRead}, `{"Group":0,"Scan":true,"Prefix":"dW5hbWUv","After":"eA=="}`...))
	inbox, _ := messaging.EncodeCommand(messaging.Inbox{Group: 2, Src: 1, Seqs: []int64{7}, Steps: [][]byte{{1, 2}}}, messaging.Env{})
	f.Add(append(binary.BigEndian.AppendUint32([]byte{opPropose}, 2), inbox...))
	f.Add(binary.BigEndian.AppendUint64([]byte{opLoadKey}, 42))
	f.Add(append(binary.BigEndian.AppendUint64([]byte{opStoreKey}, 42), make([]byte, 300)...))
	f.Add([]byte{opStoreKey, 1, 2})
	f.Add(append([]byte{stRPCError}, `{"Code":420,"Message":"FLOOD_WAIT_3"}`...))
	f.Add(append([]byte{stRPCError}, `{"Code":99999,"Message":""}`...))
	f.Add(append([]byte{opCall}, `{"Body":"AA=="}`...))
	f.Add(append([]byte{opDCCall}, `{"Group":0,"Body":"AAAAAA==","KeyDC":2000}`...))
	f.Add([]byte{opCall, '{', '"', 'L'})
	f.Add(append([]byte{opDCInbox}, `{"SrcDC":2,"SrcGroup":3,"Seqs":[1,2],"Steps":["AQI=","AwQ="]}`...))
	f.Add(append([]byte{opDCInbox}, `{"SrcDC":0,"SrcGroup":70000,"Seqs":[2,1],"Steps":["",""]}`...))
	f.Add(append([]byte{opDCGet}, "user/\x00\x00\x02\x00\x00\x00\x00\x01"...))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		op, body := in[0], in[1:]
		const groups = 18
		if c, g, err := parseCall(body, groups); err == nil {
			if c.Body == nil || len(c.Body.Buf) < 4 || c.Layer < 0 || c.Layer > 10000 || c.KeyDC < 0 || c.KeyDC > 1000 || g >= groups {
				t.Fatalf("accepted call %+v for group %d", c, g)
			}
			again, g2, err := parseCall(encodeCall(c, int(g), c.Body.Buf)[1:], groups)
			if err != nil || g2 != g || again.MsgID != c.MsgID || !bytes.Equal(again.Body.Buf, c.Body.Buf) {
				t.Fatalf("call does not round-trip: %v", err)
			}
		}
		if q, err := parseReadRequest(body, groups); err == nil {
			if q.Group < 0 || q.Group >= groups || len(q.Key) > maxReadKey || len(q.Prefix) > maxReadKey || q.Scan == (len(q.Key) > 0) {
				t.Fatalf("accepted read %+v", q)
			}
		}
		if g, cmd, err := parsePropose(body, layoutFor(groups-2, 1)); err == nil {
			if in, ok := cmd.(messaging.Inbox); !ok || in.Group != g || g >= groups {
				t.Fatalf("accepted proposal %T for group %d", cmd, g)
			}
		}
		if b, err := parseDCBatch(body); err == nil {
			if b.SrcDC < 1 || b.SrcDC > 1000 || len(b.Seqs) != len(b.Steps) || len(b.Steps) == 0 || len(b.Steps) > messaging.InboxMaxSteps {
				t.Fatalf("accepted dc batch %+v", b)
			}
			for i := 1; i < len(b.Seqs); i++ {
				if b.Seqs[i] <= b.Seqs[i-1] {
					t.Fatalf("accepted dc batch with seqs out of order: %v", b.Seqs)
				}
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
	up, _ := encodePushFrame(frameUpdate, []int64{1, -2, 3}, []byte{1, 2, 3, 4, 5})
	f.Add(up)
	reset, _ := encodePushFrame(frameReset, nil, nil)
	f.Add(reset)
	sub, _ := encodePushFrame(frameSub, []int64{7, 8}, nil)
	f.Add(sub)
	f.Add([]byte{frameUnsub, 1, 2, 3, 4})
	f.Add([]byte{frameUpdate, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{frameSub, 2, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		typ, perms, tl, err := decodePushFrame(in)
		if err != nil {
			return
		}
		if len(perms) > maxPushPerms || (typ == frameUpdate && len(tl) < 4) || (typ != frameUpdate && len(tl) > 0) {
			t.Fatalf("accepted type %q, %d perms, %d bytes of update", typ, len(perms), len(tl))
		}
		again, ok := encodePushFrame(typ, perms, tl)
		if !ok {
			t.Fatal("accepted frame does not re-encode")
		}
		t2, p2, tl2, err := decodePushFrame(again)
		if err != nil || t2 != typ || !slices.Equal(p2, perms) || !bytes.Equal(tl2, tl) {
			t.Fatal("frame does not round-trip")
		}
	})
}

package protocol_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/mt"
	"github.com/gotd/td/tg"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mtnode/mtnode/protocol"
)

// echoHandler answers help.getNearestDc with the caller's key ids in the
// country field, so tests can see what the protocol handed the handler.
func echoHandler() protocol.Handler {
	return protocol.HandlerFunc(func(ctx context.Context, call *protocol.Call) (bin.Encoder, error) {
		id, _ := call.Body.PeekID()
		switch id {
		case tg.HelpGetNearestDCRequestTypeID:
			return &tg.NearestDC{Country: "ok", ThisDC: call.Layer, NearestDC: 1}, nil
		case tg.HelpGetConfigRequestTypeID:
			panic("handler bug")
		}
		return nil, errUnknown
	})
}

var errUnknown = &protoErr{}

type protoErr struct{}

func (protoErr) Error() string { return "unknown" }

// shortConfig makes abuse tests finish fast.
func shortConfig() protocol.Config {
	// gotd's client spends about a second checking the DH prime, so the
	// idle timeout must leave room for one exchange step.
	return protocol.Config{IdleTimeout: 30 * time.Second, HandshakeTimeout: 30 * time.Second, MaxHandshakes: 4}
}

func TestGarbageFirstBytesClose(t *testing.T) {
	ts := startServer(t, shortConfig(), echoHandler())
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [16]byte
	if n, err := nc.Read(b[:]); err == nil {
		t.Fatalf("server answered %d bytes to HTTP on the MTProto port", n)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("connection not closed")
	}
}

func TestOversizedFrameGets404(t *testing.T) {
	ts := startServer(t, shortConfig(), echoHandler())
	c := dialRaw(t, ts.addr)
	// Intermediate frame claiming 1 GiB.
	var hdr [4]byte
	binary.LittleEndian.PutUint32(hdr[:], 1<<30)
	if _, err := c.nc.Write(hdr[:]); err != nil {
		t.Fatal(err)
	}
	c.expectClosed(-404, 5*time.Second)
}

func TestUnknownAuthKeyGets404(t *testing.T) {
	ts := startServer(t, shortConfig(), echoHandler())
	c := dialRaw(t, ts.addr)
	frame := make([]byte, 8+16+64)
	_, _ = rand.Read(frame)
	if err := c.sendRaw(frame); err != nil {
		t.Fatal(err)
	}
	c.expectClosed(-404, 5*time.Second)
}

func TestWrongKeyMaterialGets404(t *testing.T) {
	ts := startServer(t, shortConfig(), echoHandler())
	c := dialRaw(t, ts.addr)
	c.exchangeKey()
	// Right key id, wrong key: msg_key cannot verify.
	c.key.Value[100] ^= 1
	c.send(&mt.PingRequest{PingID: 1}, true)
	c.expectClosed(-404, 5*time.Second)
}

func TestStalledHalfFrameIsClosed(t *testing.T) {
	cfg := shortConfig()
	cfg.IdleTimeout = time.Second
	ts := startServer(t, cfg, echoHandler())
	c := dialRaw(t, ts.addr)
	var hdr [4]byte
	binary.LittleEndian.PutUint32(hdr[:], 100)
	if _, err := c.nc.Write(append(hdr[:], make([]byte, 10)...)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.expectClosed(0, 5*time.Second)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v, idle timeout is 1s", d)
	}
}

func TestPingAndReplayedMsgID(t *testing.T) {
	ts := startServer(t, shortConfig(), echoHandler())
	c := dialRaw(t, ts.addr)
	c.exchangeKey()

	var b bin.Buffer
	_ = (&mt.PingRequest{PingID: 7}).Encode(&b)
	id := c.nextID()
	frame := c.seal(id, 1, c.salt, b.Buf)
	c.seq = 1
	if err := c.sendRaw(frame); err != nil {
		t.Fatal(err)
	}
	m := c.expect(mt.PongTypeID)
	var pong mt.Pong
	_ = pong.Decode(&bin.Buffer{Buf: m.body})
	if pong.MsgID != id || pong.PingID != 7 {
		t.Fatalf("pong %+v, want msg_id %d ping_id 7", pong, id)
	}
	if m.id&3 != 1 {
		t.Fatalf("server msg_id %d of a response is not 1 mod 4", m.id)
	}
	if m.seqno%2 != 1 {
		t.Fatalf("pong seqno %d is even", m.seqno)
	}
	// The same frame again is a replay: no second pong.
	if err := c.sendRaw(frame); err != nil {
		t.Fatal(err)
	}
	// gotd sends pings as service messages, with an even seqno.
	c.send(&mt.PingRequest{PingID: 8}, false)
	m = c.expect(mt.PongTypeID)
	_ = pong.Decode(&bin.Buffer{Buf: m.body})
	if pong.PingID != 8 {
		t.Fatalf("replayed ping answered again (ping_id %d)", pong.PingID)
	}
}

func TestRepeatedRPCGetsSameAnswerWithoutRerun(t *testing.T) {
	calls := 0
	h := protocol.HandlerFunc(func(ctx context.Context, call *protocol.Call) (bin.Encoder, error) {
		calls++
		return &tg.NearestDC{Country: "x", ThisDC: calls, NearestDC: 1}, nil
	})
	ts := startServer(t, shortConfig(), h)
	c := dialRaw(t, ts.addr)
	c.exchangeKey()
	var b bin.Buffer
	_ = (&tg.HelpGetNearestDCRequest{}).Encode(&b)
	id := c.nextID()
	frame := c.seal(id, 1, c.salt, b.Buf)
	c.seq = 1
	for i := 0; i < 2; i++ {
		if err := c.sendRaw(frame); err != nil {
			t.Fatal(err)
		}
		m := c.expect(0xf35c6d01) // rpc_result
		req, inner := decodeResult(t, m)
		var dc tg.NearestDC
		if err := dc.Decode(&bin.Buffer{Buf: inner}); err != nil {
			t.Fatal(err)
		}
		if req != id || dc.ThisDC != 1 {
			t.Fatalf("answer %d: req %d this_dc %d; want req %d, handler run once", i, req, dc.ThisDC, id)
		}
	}
}

func TestBadMsgIDs(t *testing.T) {
	ts := startServer(t, shortConfig(), echoHandler())
	c := dialRaw(t, ts.addr)
	c.exchangeKey()
	var ping bin.Buffer
	_ = (&mt.PingRequest{PingID: 1}).Encode(&ping)
	cases := []struct {
		name  string
		id    int64
		seqno int32
		code  int
	}{
		{"too old", (time.Now().Add(-time.Hour).Unix() << 32), 1, 16},
		{"too new", (time.Now().Add(time.Hour).Unix() << 32), 1, 17},
		{"parity", c.nextID() | 1, 1, 18},
	}
	for _, tc := range cases {
		if err := c.sendRaw(c.seal(tc.id, tc.seqno, c.salt, ping.Buf)); err != nil {
			t.Fatal(err)
		}
		m := c.expect(mt.BadMsgNotificationTypeID)
		var n mt.BadMsgNotification
		_ = n.Decode(&bin.Buffer{Buf: m.body})
		if n.ErrorCode != tc.code || n.BadMsgID != tc.id {
			t.Errorf("%s: got code %d for %d, want %d", tc.name, n.ErrorCode, n.BadMsgID, tc.code)
		}
	}
	// Even seqno on an API call.
	var call bin.Buffer
	_ = (&tg.HelpGetNearestDCRequest{}).Encode(&call)
	evenID := c.nextID()
	if err := c.sendRaw(c.seal(evenID, 2, c.salt, call.Buf)); err != nil {
		t.Fatal(err)
	}
	if m := c.expect(mt.BadMsgNotificationTypeID); true {
		var n mt.BadMsgNotification
		_ = n.Decode(&bin.Buffer{Buf: m.body})
		if n.ErrorCode != 35 || n.BadMsgID != evenID {
			t.Errorf("even seqno on an RPC: code %d, want 35", n.ErrorCode)
		}
	}
	// Odd seqno on a non-content message (msgs_ack).
	var ack bin.Buffer
	_ = (&mt.MsgsAck{MsgIDs: []int64{1}}).Encode(&ack)
	id := c.nextID()
	if err := c.sendRaw(c.seal(id, 3, c.salt, ack.Buf)); err != nil {
		t.Fatal(err)
	}
	m := c.expect(mt.BadMsgNotificationTypeID)
	var n mt.BadMsgNotification
	_ = n.Decode(&bin.Buffer{Buf: m.body})
	if n.ErrorCode != 34 {
		t.Errorf("odd seqno on msgs_ack: code %d, want 34", n.ErrorCode)
	}
}

func TestBadServerSaltThenRetry(t *testing.T) {
	ts := startServer(t, shortConfig(), echoHandler())
	c := dialRaw(t, ts.addr)
	c.exchangeKey()
	c.salt ^= 0x5a5a
	id := c.send(&mt.PingRequest{PingID: 3}, true)
	m := c.expect(mt.BadServerSaltTypeID)
	var bs mt.BadServerSalt
	_ = bs.Decode(&bin.Buffer{Buf: m.body})
	if bs.ErrorCode != 48 || bs.BadMsgID != id {
		t.Fatalf("bad_server_salt %+v", bs)
	}
	c.salt = bs.NewServerSalt
	c.send(&mt.PingRequest{PingID: 4}, true)
	c.expect(mt.PongTypeID)

	// get_future_salts lists the current salt first, and it works.
	c.send(&mt.GetFutureSaltsRequest{Num: 3}, true)
	m = c.expect(mt.FutureSaltsTypeID)
	var fs mt.FutureSalts
	_ = fs.Decode(&bin.Buffer{Buf: m.body})
	if len(fs.Salts) != 3 || fs.Salts[0].Salt != bs.NewServerSalt {
		t.Fatalf("future salts %+v, want 3 starting with %d", fs.Salts, bs.NewServerSalt)
	}
	// gotd sends get_future_salts with an even seqno; it is answered too.
	c.send(&mt.GetFutureSaltsRequest{Num: 1}, false)
	_ = fs.Decode(&bin.Buffer{Buf: c.expect(mt.FutureSaltsTypeID).body})
	if len(fs.Salts) != 1 {
		t.Fatalf("future salts for an even seqno: %+v", fs.Salts)
	}
}

func TestHandlerPanicIsInternalAndConnectionLives(t *testing.T) {
	ts := startServer(t, shortConfig(), echoHandler())
	c := dialRaw(t, ts.addr)
	c.exchangeKey()
	c.send(&tg.HelpGetConfigRequest{}, true)
	_, inner := decodeResult(t, c.expect(0xf35c6d01))
	var e mt.RPCError
	if err := e.Decode(&bin.Buffer{Buf: inner}); err != nil || e.ErrorCode != 500 || e.ErrorMessage != "INTERNAL" {
		t.Fatalf("panic answered %+v (%v), want 500 INTERNAL", e, err)
	}
	c.send(&tg.HelpGetNearestDCRequest{}, true)
	_, inner = decodeResult(t, c.expect(0xf35c6d01))
	var dc tg.NearestDC
	if err := dc.Decode(&bin.Buffer{Buf: inner}); err != nil || dc.Country != "ok" {
		t.Fatalf("after panic: %+v %v", dc, err)
	}
}

func TestOldLayerIsRefused(t *testing.T) {
	ts := startServer(t, shortConfig(), echoHandler())
	c := dialRaw(t, ts.addr)
	c.exchangeKey()
	c.send(&tg.InvokeWithLayerRequest{Layer: 100, Query: &tg.HelpGetNearestDCRequest{}}, true)
	_, inner := decodeResult(t, c.expect(0xf35c6d01))
	var e mt.RPCError
	if err := e.Decode(&bin.Buffer{Buf: inner}); err != nil || e.ErrorMessage != "CONNECTION_LAYER_INVALID" {
		t.Fatalf("layer 100: %+v %v", e, err)
	}
	c.send(&tg.InvokeWithLayerRequest{Layer: tg.Layer, Query: &tg.InitConnectionRequest{
		APIID: 1, DeviceModel: "t", SystemVersion: "t", AppVersion: "t", SystemLangCode: "en", LangCode: "en",
		Query: &tg.InvokeWithoutUpdatesRequest{Query: &tg.HelpGetNearestDCRequest{}},
	}}, true)
	_, inner = decodeResult(t, c.expect(0xf35c6d01))
	var dc tg.NearestDC
	if err := dc.Decode(&bin.Buffer{Buf: inner}); err != nil || dc.ThisDC != tg.Layer {
		t.Fatalf("wrapped call: %+v %v (handler should see layer %d)", dc, err, tg.Layer)
	}
}

func TestContainerAndStateAndDestroySession(t *testing.T) {
	ts := startServer(t, shortConfig(), echoHandler())
	c := dialRaw(t, ts.addr)
	c.exchangeKey()
	// A container with two pings.
	var p1, p2 bin.Buffer
	_ = (&mt.PingRequest{PingID: 11}).Encode(&p1)
	_ = (&mt.PingRequest{PingID: 12}).Encode(&p2)
	id1, id2 := c.nextID(), c.nextID()
	var cont bin.Buffer
	cont.PutID(0x73f1f8dc)
	cont.PutInt(2)
	for i, p := range []bin.Buffer{p1, p2} {
		cont.PutLong([]int64{id1, id2}[i])
		cont.PutInt(int(c.seq*2 + 1))
		c.seq++
		cont.PutInt(len(p.Buf))
		cont.Put(p.Buf)
	}
	if err := c.sendRaw(c.seal(c.nextID(), c.seq*2, c.salt, cont.Buf)); err != nil {
		t.Fatal(err)
	}
	got := map[int64]bool{}
	for i := 0; i < 2; i++ {
		var pong mt.Pong
		_ = pong.Decode(&bin.Buffer{Buf: c.expect(mt.PongTypeID).body})
		got[pong.PingID] = true
	}
	if !got[11] || !got[12] {
		t.Fatalf("pongs for container: %v", got)
	}
	// msgs_state_req: id1 received, a fresh id not received.
	fresh := c.nextID() + 1<<20
	c.send(&mt.MsgsStateReq{MsgIDs: []int64{id1, fresh}}, true)
	var info mt.MsgsStateInfo
	_ = info.Decode(&bin.Buffer{Buf: c.expect(mt.MsgsStateInfoTypeID).body})
	if len(info.Info) != 2 || info.Info[0] != 4 || info.Info[1] != 2 {
		t.Fatalf("msgs_state_info %v, want [4 2]", info.Info)
	}
	// destroy_session of an unknown session.
	c.send(&mt.DestroySessionRequest{SessionID: 42}, true)
	_, inner := decodeResult(t, c.expect(0xf35c6d01))
	if id, _ := (&bin.Buffer{Buf: inner}).PeekID(); id != mt.DestroySessionNoneTypeID {
		t.Fatalf("destroy_session of unknown: %#x", id)
	}
}

func TestHandshakeCapGets429(t *testing.T) {
	cfg := shortConfig()
	cfg.MaxHandshakes = 1
	cfg.HandshakeTimeout = 5 * time.Second
	ts := startServer(t, cfg, echoHandler())
	// The first connection starts an exchange and stalls in it.
	a := dialRaw(t, ts.addr)
	if err := a.sendRaw(reqPQ()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.recvPlain(); err != nil {
		t.Fatal(err)
	}
	b := dialRaw(t, ts.addr)
	if err := b.sendRaw(reqPQ()); err != nil {
		t.Fatal(err)
	}
	b.expectClosed(-429, 5*time.Second)
}

// A connection over MaxConnections is told -429 in its transport, as a
// Telegram DC answers a flood, then closed; one that ends frees its slot.
func TestConnectionCapGets429(t *testing.T) {
	cfg := shortConfig()
	cfg.MaxConnections = 1
	ts := startServer(t, cfg, echoHandler())
	a := dialRaw(t, ts.addr)
	a.exchangeKey() // a holds the one slot
	b := dialRaw(t, ts.addr)
	b.expectClosed(-429, 5*time.Second)
	a.conn.Close()
	waitFor(t, 5*time.Second, func() bool {
		return testutil.ToFloat64(activeConns(ts)) == 0
	})
	c := dialRaw(t, ts.addr)
	c.exchangeKey()
}

func reqPQ() []byte {
	var body bin.Buffer
	_ = (&mt.ReqPqMultiRequest{}).Encode(&body)
	var b bin.Buffer
	b.PutLong(0)
	b.PutLong(time.Now().Unix() << 32)
	b.PutInt(len(body.Buf))
	b.Put(body.Buf)
	return b.Buf
}

func (c *rawClient) recvPlain() ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var b bin.Buffer
	err := c.conn.Recv(ctx, &b)
	return b.Buf, err
}

// TestStalledLargeClaimsHoldLittleMemory opens many connections that each
// claim a near-maximal frame, send a little of it and stall. Server memory
// must stay proportional to bytes received, not bytes claimed, and all of
// it must be released when the idle timeout closes them.
func TestStalledLargeClaimsHoldLittleMemory(t *testing.T) {
	cfg := shortConfig()
	cfg.IdleTimeout = 2 * time.Second
	ts := startServer(t, cfg, echoHandler())
	const conns = 200
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := heap()
	var hdr [8]byte
	copy(hdr[:4], []byte{0xee, 0xee, 0xee, 0xee})
	binary.LittleEndian.PutUint32(hdr[4:], 1<<20)
	ncs := make([]net.Conn, 0, conns)
	defer func() {
		for _, nc := range ncs {
			nc.Close()
		}
	}()
	for i := 0; i < conns; i++ {
		nc, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		ncs = append(ncs, nc)
		if _, err := nc.Write(append(hdr[:], make([]byte, 1000)...)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, func() bool { return testutil.ToFloat64(activeConns(ts)) == conns })
	held := heap() - before
	if perConn := held / conns; perConn > 256<<10 {
		t.Fatalf("each stalled connection holds %d bytes; claims of 1 MiB must not be allocated up front", perConn)
	}
	t.Logf("%d stalled connections hold %d KiB (%d bytes each)", conns, held>>10, held/conns)
	waitFor(t, 10*time.Second, func() bool { return testutil.ToFloat64(activeConns(ts)) == 0 })
}

func activeConns(ts *testServer) prometheus.Collector { return ts.metrics.ConnsActive() }

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPushReachesConnectedSession checks the outbound path for
// server-initiated messages: queued by key, encrypted for the session,
// msg_id ≡ 3 mod 4 (not a response), odd seqno (content).
func TestPushReachesConnectedSession(t *testing.T) {
	ts := startServer(t, shortConfig(), echoHandler())
	c := dialRaw(t, ts.addr)
	c.exchangeKey()
	if ts.srv.Push(c.key.IntID(), &tg.UpdatesTooLong{}) != 0 {
		t.Fatal("push delivered before the client had a session")
	}
	c.send(&mt.PingRequest{PingID: 1}, true)
	c.expect(mt.PongTypeID)
	if n := ts.srv.Push(c.key.IntID(), &tg.UpdatesTooLong{}); n != 1 {
		t.Fatalf("push reached %d sessions, want 1", n)
	}
	m := c.expect(tg.UpdatesTooLongTypeID)
	if m.id&3 != 3 || m.seqno%2 != 1 {
		t.Fatalf("pushed message id %d seqno %d: want id ≡ 3 mod 4 and odd seqno", m.id, m.seqno)
	}
}

func TestPushPermReachesPermanentKeySessions(t *testing.T) {
	ts := startServer(t, shortConfig(), echoHandler())
	c := dialRaw(t, ts.addr)
	c.exchangeKey()
	c.send(&mt.PingRequest{PingID: 1}, true)
	c.expect(mt.PongTypeID)
	if n := ts.srv.PushPerm(c.key.IntID(), &tg.UpdatesTooLong{}); n != 1 {
		t.Fatalf("PushPerm reached %d sessions, want 1", n)
	}
	c.expect(tg.UpdatesTooLongTypeID)
}

package protocol_test

import (
	"testing"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/tg"
)

// TestInvokeWithoutUpdatesKeepsSessionQuiet: a session whose calls all
// come wrapped in invokeWithoutUpdates (how apps make file-transfer
// connections) is not pushed updates; its first plain call subscribes it,
// and later wrapped calls do not unsubscribe it.
func TestInvokeWithoutUpdatesKeepsSessionQuiet(t *testing.T) {
	ts := startServer(t, shortConfig(), echoHandler())
	c := dialRaw(t, ts.addr)
	c.exchangeKey()
	call := func(wrapped bool) {
		t.Helper()
		var q bin.Encoder = &tg.HelpGetNearestDCRequest{}
		if wrapped {
			q = &tg.InvokeWithoutUpdatesRequest{Query: &tg.HelpGetNearestDCRequest{}}
		}
		c.send(q, true)
		c.expect(0xf35c6d01) // rpc_result
	}
	call(true)
	if n := ts.srv.PushPerm(c.key.IntID(), &tg.UpdatesTooLong{}); n != 0 {
		t.Fatalf("push reached %d quiet sessions", n)
	}
	call(false)
	if n := ts.srv.PushPerm(c.key.IntID(), &tg.UpdatesTooLong{}); n != 1 {
		t.Fatalf("push reached %d sessions after a plain call, want 1", n)
	}
	c.expect(tg.UpdatesTooLongTypeID)
	call(true)
	if n := ts.srv.Push(c.key.IntID(), &tg.UpdatesTooLong{}); n != 1 {
		t.Fatalf("a wrapped call unsubscribed the session: %d", n)
	}
	c.expect(tg.UpdatesTooLongTypeID)
}

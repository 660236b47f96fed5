package cluster

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

func newRaftTransport(t *testing.T, m *Mesh, layers *RaftLayers, group uint64) *raft.NetworkTransport {
	t.Helper()
	l, err := layers.Layer(group)
	if err != nil {
		t.Fatal(err)
	}
	tr := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  l,
		MaxPool: 2,
		Timeout: 5 * time.Second,
		Logger:  hclog.New(&hclog.LoggerOptions{Output: io.Discard}),
	})
	t.Cleanup(func() { tr.Close() })
	return tr
}

// TestRaftTransportOverMesh: two raft NetworkTransports per node, for two
// groups sharing one mesh connection, exchange AppendEntries.
func TestRaftTransportOverMesh(t *testing.T) {
	ca := testCA(t)
	a := startMesh(t, ca, "a", nodeCert(t, ca, "a"))
	b := startMesh(t, ca, "b", nodeCert(t, ca, "b"))
	la, lb := NewRaftLayers(a), NewRaftLayers(b)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })

	for _, group := range []uint64{7, 1 << 40} {
		ta := newRaftTransport(t, a, la, group)
		tb := newRaftTransport(t, b, lb, group)
		if got, want := tb.LocalAddr(), RaftAddress("b", b.Addr().String()); got != want {
			t.Fatalf("LocalAddr = %q, want %q", got, want)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case rpc := <-tb.Consumer():
					req := rpc.Command.(*raft.AppendEntriesRequest)
					rpc.Respond(&raft.AppendEntriesResponse{
						Term:    req.Term,
						LastLog: req.PrevLogEntry + uint64(len(req.Entries)) + group,
						Success: true,
					}, nil)
				case <-ctx.Done():
					return
				}
			}
		}()
		for i := 0; i < 3; i++ {
			req := &raft.AppendEntriesRequest{
				RPCHeader:    raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("a"), Addr: []byte(ta.LocalAddr())},
				Term:         5,
				PrevLogEntry: 10,
				Entries:      []*raft.Log{{Index: 11, Term: 5, Data: []byte("hello")}},
			}
			var resp raft.AppendEntriesResponse
			if err := ta.AppendEntries("b", tb.LocalAddr(), req, &resp); err != nil {
				t.Fatalf("group %d: AppendEntries: %v", group, err)
			}
			if !resp.Success || resp.Term != 5 || resp.LastLog != 11+group {
				t.Fatalf("group %d: response %+v", group, resp)
			}
		}
	}
	a.mu.Lock()
	n := len(a.conns["b"])
	a.mu.Unlock()
	if n != 1 {
		t.Fatalf("a holds %d connections to b, want 1", n)
	}
}

func TestRaftLayerUnknownGroupRefused(t *testing.T) {
	ca := testCA(t)
	a := startMesh(t, ca, "a", nodeCert(t, ca, "a"))
	b := startMesh(t, ca, "b", nodeCert(t, ca, "b"))
	la := NewRaftLayers(a)
	NewRaftLayers(b)
	l, err := la.Layer(3)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := la.Layer(3); err == nil {
		t.Fatal("second layer for one group")
	}
	c, err := l.Dial(RaftAddress("b", b.Addr().String()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || err == io.EOF {
		t.Fatalf("stream to a group b does not run: %v, want a reset", err)
	}
	if _, _, err := ParseRaftAddress("no-at-sign"); err == nil {
		t.Fatal("ParseRaftAddress accepted a bare address")
	}
}

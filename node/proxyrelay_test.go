package node

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/mtnode/mtnode/cluster"
)

// TestRelayTriesUnreachableMembersLast: a member that could not be
// reached (dead, and gossip has not noticed yet) is tried after the
// others for a while, so each reconnecting client does not wait out a
// dial to it first.
func TestRelayTriesUnreachableMembersLast(t *testing.T) {
	dir := t.TempDir()
	if _, err := cluster.Keygen(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	ca, err := cluster.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	mesh := func(id cluster.NodeID) *cluster.Mesh {
		cert, err := cluster.IssueNodeCert(ca, id, []string{"127.0.0.1"}, time.Now().Add(-time.Hour), cluster.DefaultNodeValidity)
		if err != nil {
			t.Fatal(err)
		}
		m, err := cluster.NewMesh(cluster.MeshConfig{ID: id, Addr: "127.0.0.1:0", Cert: cert, CA: ca.Pool(), HandshakeTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); m.Run(context.Background()) }()
		t.Cleanup(func() { m.Close(); <-done })
		return m
	}
	px, live := mesh("px"), mesh("live")
	live.Handle(cluster.KindProxy, func(ctx context.Context, _ cluster.NodeID, s *cluster.Stream) {
		cluster.ReadFrame(s, nil, 1024)
	})
	// "dead": an address where nothing answers, UDP or TCP.
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := uc.LocalAddr().String()
	uc.Close()
	members := []cluster.Member{{ID: "dead", Addr: deadAddr}, {ID: "live", Addr: live.Addr().String()}}
	results, bytes := newRelayMetrics()
	r := &relayer{mesh: px, members: func(int) []cluster.Member { return members }, results: results, bytes: bytes,
		log: slog.New(slog.DiscardHandler), maxFrame: 1 << 20, dial: 500 * time.Millisecond}

	open := func() (time.Duration, cluster.NodeID) {
		t.Helper()
		r.next.Store(uint32(len(members) - 1)) // the next open starts at "dead"
		start := time.Now()
		s, err := r.open(context.Background(), 2)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		return time.Since(start), s.Peer()
	}
	if d, peer := open(); peer != "live" || d < r.dial {
		t.Fatalf("first open: %s after %v; want live, after the dead member's %v", peer, d, r.dial)
	}
	if d, peer := open(); peer != "live" || d >= r.dial {
		t.Fatalf("second open: %s after %v; want live at once", peer, d)
	}
}

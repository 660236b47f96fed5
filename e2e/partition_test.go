package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/gotd/td/tg"
	"github.com/gotd/td/tgerr"

	"github.com/mtnode/mtnode/internal/mtclient"
)

// TestClusterPartition runs a 3-node DC in network namespaces and cuts
// the leader off from the other two (its clients still reach it). The cut
// off node accepts no write: a send through it fails and changes nothing.
// A read through it fails rather than answer from its stale replica.
// The majority elects a new leader and carries on. On healing, the cut
// off node catches up, and the send retried with its random_id through it
// lands exactly once.
func TestClusterPartition(t *testing.T) {
	t.Parallel()
	lab := newNetLab(t, 3)
	d := newDC(t, "hold_timeout = \"3s\"\n")
	for i := range 3 {
		ip := lab.nodeIP(i)
		d.addAt(lab.wrap(i), ip+":7946", ip+":4430", ip+":8080")
	}
	d.form(3)
	sessions := t.TempDir()
	sessA, sessB := filepath.Join(sessions, "a.json"), filepath.Join(sessions, "b.json")
	lead := d.leader()
	major := (lead + 1) % 3
	signUp(t, d.nodes[lead], sessA, "9996610501")
	b := signUp(t, d.nodes[major], sessB, "9996610502")
	sendN(t, d.nodes[major], sessA, b.Phone, 0, 5)
	// B's key was made through another node: its group may have
	// committed it on the two others only, and a node cut off without the
	// key cannot even open B's connection (it learns keys from the
	// leader), let alone answer RPC_CALL_FAIL. B connects to the node
	// once first, as a client that was using it when the cut came.
	warm := newClient(t, d.nodes[lead], mtclient.Intermediate, sessB)
	if err := runClient(warm, func(ctx context.Context) error {
		_, err := warm.API().HelpGetConfig(ctx)
		return err
	}); err != nil {
		t.Fatal(err)
	}

	lab.cut(lead)
	t.Logf("cut off %s, the leader", d.id(lead))

	// Through the cut off node, a write fails with a clear error.
	const cutRID = 99001
	a := newClient(t, d.nodes[lead], mtclient.Intermediate, sessA)
	if err := runClient(a, func(ctx context.Context) error {
		_, err := importPhone(ctx, a.API(), b.Phone)
		if !tgerr.Is(err, "RPC_CALL_FAIL") {
			return fmt.Errorf("contacts.importContacts on the cut off node: %v, want RPC_CALL_FAIL", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The majority elects a leader and serves writes.
	newLead := d.leader(major, (lead+2)%3)
	t.Logf("majority leader %s", d.id(newLead))
	sendN(t, d.nodes[major], sessA, b.Phone, 5, 10)

	// A send through the cut off node, with a known peer: not applied.
	var peer tg.InputPeerClass
	am := newClient(t, d.nodes[major], mtclient.Intermediate, sessA)
	if err := runClient(am, func(ctx context.Context) (err error) {
		peer, err = importPhone(ctx, am.API(), b.Phone)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	a = newClient(t, d.nodes[lead], mtclient.Intermediate, sessA)
	if err := runClient(a, func(ctx context.Context) error {
		_, err := a.API().MessagesSendMessage(ctx, &tg.MessagesSendMessageRequest{
			Peer: peer, Message: loadText(15), RandomID: cutRID,
		})
		if err == nil {
			return fmt.Errorf("a send through the cut off node was acknowledged")
		}
		if !tgerr.Is(err, "RPC_CALL_FAIL") {
			return fmt.Errorf("send through the cut off node: %v, want RPC_CALL_FAIL", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	checkBox(t, d.nodes[major], sessB, 15)
	// A read through the cut off node fails too: it has at most the first
	// five messages, and must not answer from them (its replica can get
	// no read index, and a deposed leader cannot confirm its leadership).
	bc := newClient(t, d.nodes[lead], mtclient.Intermediate, sessB)
	if err := runClient(bc, func(ctx context.Context) error {
		h, err := history(ctx, bc.API(), nil)
		if err == nil {
			return fmt.Errorf("the cut off node answered a history read with %d messages", len(h))
		}
		if !tgerr.Is(err, "RPC_CALL_FAIL") {
			return fmt.Errorf("history through the cut off node: %v, want RPC_CALL_FAIL", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	lab.heal(lead)
	t.Logf("healed %s", d.id(lead))
	waitFor(t, 30*time.Second, func() error {
		st, err := d.status(lead)
		if err != nil {
			return err
		}
		ls, err := d.status(newLead)
		if err != nil {
			return err
		}
		// The commit index it has heard of: the directory's last entries
		// may be raft's own (a new leader's no-op), which the state
		// machine never applies.
		if st.Self.Group.CommitIndex < ls.Self.Group.CommitIndex {
			return fmt.Errorf("%s knows commit %d, leader committed %d", d.id(lead), st.Self.Group.CommitIndex, ls.Self.Group.CommitIndex)
		}
		return nil
	})
	a = newClient(t, d.nodes[lead], mtclient.Intermediate, sessA)
	if err := runClient(a, func(ctx context.Context) error {
		_, err := a.API().MessagesSendMessage(ctx, &tg.MessagesSendMessageRequest{
			Peer: peer, Message: loadText(15), RandomID: cutRID,
		})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	checkBox(t, d.nodes[lead], sessB, 16)
}

package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// fastGossip shortens memberlist's LAN timings so failures are detected in
// about a second on loopback.
func fastGossip(c *memberlist.Config) {
	c.ProbeInterval = 150 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.GossipInterval = 20 * time.Millisecond
	c.SuspicionMult = 2
	c.SuspicionMaxTimeoutMult = 2
	c.PushPullInterval = time.Second
	c.TCPTimeout = 2 * time.Second
	c.GossipToTheDeadTime = time.Second
}

// eventLog records a membership's events.
type eventLog struct {
	mu  sync.Mutex
	evs []Event
}

func (l *eventLog) add(ev Event) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
}

func (l *eventLog) has(typ EventType, id NodeID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.evs, func(ev Event) bool { return ev.Type == typ && ev.Member.ID == id })
}

type testMember struct {
	*Membership
	mesh   *Mesh
	events *eventLog
}

func (m testMember) addr() string { return string(m.mesh.ID()) + "@" + m.mesh.Addr().String() }

// startMember runs a mesh and a membership on it; cleanup closes both.
func startMember(t *testing.T, ca *CA, id NodeID, key []byte, meta NodeMeta) testMember {
	t.Helper()
	mesh := startMesh(t, ca, id, nodeCert(t, ca, id))
	ev := &eventLog{}
	ms, err := NewMembership(MembershipConfig{
		Mesh:      mesh,
		GossipKey: key,
		Meta:      meta,
		OnEvent:   ev.add,
		Configure: fastGossip,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	return testMember{Membership: ms, mesh: mesh, events: ev}
}

func testGossipKey(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	s, err := Keygen(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	k, err := LoadGossipKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(k) != GossipKeySize || string(k) != string(s.GossipKey) {
		t.Fatal("gossip key did not round-trip")
	}
	return k
}

func metaFor(id NodeID) NodeMeta {
	return NodeMeta{DC: "dc1", ClientAddr: "127.0.0.1:" + fmt.Sprint(4430+len(id)), Version: "test-" + string(id)}
}

// formThree starts three members that join through the first.
func formThree(t *testing.T) []testMember {
	t.Helper()
	ca := testCA(t)
	key := testGossipKey(t)
	var ms []testMember
	for _, id := range []NodeID{"n1", "n2", "n3"} {
		ms = append(ms, startMember(t, ca, id, key, metaFor(id)))
	}
	for _, m := range ms[1:] {
		if _, err := m.Join([]string{ms[0].addr()}); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range ms {
		waitFor(t, 5*time.Second, func() error {
			if n := m.NumMembers(); n != 3 {
				return fmt.Errorf("%s sees %d members", m.mesh.ID(), n)
			}
			return nil
		})
	}
	return ms
}

func TestMembershipFormsWithMetadata(t *testing.T) {
	ms := formThree(t)
	for _, m := range ms {
		got := m.Members()
		slices.SortFunc(got, func(a, b Member) int { return strings.Compare(string(a.ID), string(b.ID)) })
		for i, o := range ms {
			mb := got[i]
			if mb.ID != o.mesh.ID() || mb.Addr != o.mesh.Addr().String() || mb.Leaving {
				t.Errorf("%s: member %d = %+v, want %s at %s", m.mesh.ID(), i, mb, o.mesh.ID(), o.mesh.Addr())
			}
			if mb.MetaErr != nil || mb.Meta != metaFor(o.mesh.ID()) {
				t.Errorf("%s: meta of %s = %+v (%v)", m.mesh.ID(), mb.ID, mb.Meta, mb.MetaErr)
			}
		}
		for _, o := range ms {
			// Events are delivered after the member list changes: wait.
			waitFor(t, 5*time.Second, func() error {
				if !m.events.has(EventJoin, o.mesh.ID()) {
					return fmt.Errorf("%s: no join event for %s", m.mesh.ID(), o.mesh.ID())
				}
				return nil
			})
		}
	}
	// Joining again, through another member, is harmless; so is joining
	// through plain host:port addresses, including this node's own.
	if _, err := ms[2].Join([]string{ms[1].addr(), ms[0].addr()}); err != nil {
		t.Fatal(err)
	}
	plain := []string{ms[0].mesh.Addr().String(), ms[2].mesh.Addr().String()}
	if n, err := ms[2].JoinAny(context.Background(), plain); err != nil || n != 1 {
		t.Fatalf("JoinAny(%v) = %d, %v", plain, n, err)
	}

	// A metadata change reaches the others.
	nm := NodeMeta{DC: "dc1", ClientAddr: "10.0.0.1:443", Version: "v2"}
	if err := ms[1].UpdateMeta(nm, time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() error {
		for _, m := range []testMember{ms[0], ms[2]} {
			if !m.events.has(EventUpdate, "n2") {
				return fmt.Errorf("%s: no update event", m.mesh.ID())
			}
			for _, mb := range m.Members() {
				if mb.ID == "n2" && mb.Meta != nm {
					return fmt.Errorf("%s sees n2 meta %+v", m.mesh.ID(), mb.Meta)
				}
			}
		}
		return nil
	})
}

func TestMembershipDetectsCrash(t *testing.T) {
	ms := formThree(t)
	start := time.Now()
	// A crash: no leave message, and the node's mesh goes away.
	ms[2].Close()
	ms[2].mesh.Close()
	for _, m := range ms[:2] {
		waitFor(t, 10*time.Second, func() error {
			if !m.events.has(EventFail, "n3") {
				return fmt.Errorf("%s has not seen n3 fail", m.mesh.ID())
			}
			if m.NumMembers() != 2 {
				return fmt.Errorf("%s still counts %d members", m.mesh.ID(), m.NumMembers())
			}
			return nil
		})
	}
	t.Logf("crash detected by both survivors in %v", time.Since(start).Round(time.Millisecond))
	for _, m := range ms[:2] {
		if m.events.has(EventLeave, "n3") {
			t.Errorf("%s saw a crash as a leave", m.mesh.ID())
		}
	}
}

func TestMembershipLeave(t *testing.T) {
	ms := formThree(t)
	if err := ms[2].Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	ms[2].Close()
	for _, m := range ms[:2] {
		waitFor(t, 5*time.Second, func() error {
			if !m.events.has(EventLeave, "n3") {
				return fmt.Errorf("%s has not seen n3 leave", m.mesh.ID())
			}
			if m.NumMembers() != 2 {
				return fmt.Errorf("%s still counts %d members", m.mesh.ID(), m.NumMembers())
			}
			return nil
		})
		if m.events.has(EventFail, "n3") {
			t.Errorf("%s saw a leave as a failure", m.mesh.ID())
		}
	}
}

func TestMembershipRefusesOtherCA(t *testing.T) {
	ca := testCA(t)
	key := testGossipKey(t)
	a := startMember(t, ca, "n1", key, metaFor("n1"))
	// Same gossip key, certificate from another CA: the mesh refuses it
	// before memberlist sees a byte.
	x := startMember(t, testCA(t), "x1", key, metaFor("x1"))
	if _, err := x.Join([]string{a.addr()}); err == nil {
		t.Fatal("node with another CA's certificate joined")
	}
	// Nor can a member pull it in.
	if _, err := a.Join([]string{x.addr()}); err == nil {
		t.Fatal("member joined a node with another CA's certificate")
	}
	if a.NumMembers() != 1 || x.NumMembers() != 1 {
		t.Fatalf("members: a %d, x %d", a.NumMembers(), x.NumMembers())
	}
}

func TestGossipTarget(t *testing.T) {
	for _, tc := range []struct {
		a        memberlist.Address
		id, addr string
		err      error
	}{
		{memberlist.Address{Addr: "127.0.0.1:1", Name: "n1"}, "n1", "127.0.0.1:1", nil},
		{memberlist.Address{Addr: "n1@127.0.0.1:1"}, "n1", "127.0.0.1:1", nil},
		{memberlist.Address{Addr: "127.0.0.1:1"}, "", "", ErrNoNodeName},
		{memberlist.Address{Addr: "127.0.0.1:1", Name: "Bad!"}, "", "", ErrBadNodeID},
	} {
		id, addr, err := gossipTarget(tc.a)
		if string(id) != tc.id || addr != tc.addr || !errors.Is(err, tc.err) {
			t.Errorf("gossipTarget(%+v) = %q, %q, %v", tc.a, id, addr, err)
		}
	}
	if _, _, err := gossipTarget(memberlist.Address{Addr: "n1@127.0.0.1:1", Name: "n2"}); err == nil {
		t.Error("mismatched names accepted")
	}
}

func TestNodeMetaEncoding(t *testing.T) {
	m := NodeMeta{DC: "dc1", ClientAddr: "[::1]:443", Version: "1.2.3"}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeNodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	// A later version appends fields; this one ignores them.
	got, err = DecodeNodeMeta(append(append([]byte{2}, b[1:]...), 3, 'x', 'y', 'z'))
	if err != nil || got != m {
		t.Fatalf("v2: %+v, %v", got, err)
	}
	// The leaving flag is carried but not part of NodeMeta.
	lb, _ := m.encode(metaLeaving)
	got, flags, err := decodeMeta(lb)
	if err != nil || got != m || flags != metaLeaving {
		t.Fatalf("leaving: %+v, %d, %v", got, flags, err)
	}
	got, err = DecodeNodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("v2: %+v, %v", got, err)
	}
	if _, err := (NodeMeta{DC: strings.Repeat("x", memberlist.MetaMaxSize)}).Encode(); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("oversized meta: %v", err)
	}
	for _, bad := range [][]byte{nil, {0}, {1}, {1, 5, 'a'}, {1, 0, 0, 0}} {
		if _, err := DecodeNodeMeta(bad); !errors.Is(err, ErrBadMeta) {
			t.Errorf("DecodeNodeMeta(%v) = %v", bad, err)
		}
	}
}

func FuzzDecodeNodeMeta(f *testing.F) {
	b, _ := NodeMeta{DC: "dc1", ClientAddr: "127.0.0.1:443", Version: "v"}.Encode()
	f.Add(b)
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := DecodeNodeMeta(in)
		if err != nil {
			return
		}
		if out, err := m.Encode(); err == nil && len(in) > 0 && in[0] == metaVersion && len(out) > len(in) {
			t.Fatalf("re-encoding grew: %d > %d", len(out), len(in))
		}
	})
}

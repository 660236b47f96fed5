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

func (l *eventLog) about(id NodeID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.evs, func(ev Event) bool { return ev.Member.ID == id })
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
	return startPool(t, startMesh(t, ca, id, nodeCert(t, ca, id)), false, key, meta)
}

// startPool runs a membership of the LAN or WAN pool on mesh, with
// fastGossip timings; cleanup closes it. It checks that the pool starts
// from its own memberlist profile.
func startPool(t *testing.T, mesh *Mesh, wan bool, key []byte, meta NodeMeta) testMember {
	t.Helper()
	profile := memberlist.DefaultLANConfig()
	if wan {
		profile = memberlist.DefaultWANConfig()
	}
	ev := &eventLog{}
	ms, err := NewMembership(MembershipConfig{
		Mesh:      mesh,
		WAN:       wan,
		GossipKey: key,
		Meta:      meta,
		OnEvent:   ev.add,
		// Failed members are joined again quickly (the default is 5 s).
		ReconnectInterval: 200 * time.Millisecond,
		Configure: func(c *memberlist.Config) {
			if c.ProbeInterval != profile.ProbeInterval || c.SuspicionMult != profile.SuspicionMult {
				t.Errorf("wan=%v: profile probe %v suspicion ×%d, want %v ×%d", wan,
					c.ProbeInterval, c.SuspicionMult, profile.ProbeInterval, profile.SuspicionMult)
			}
			fastGossip(c)
		},
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

// memberIDs returns the IDs of ms, sorted.
func memberIDs(ms []Member) []NodeID {
	ids := make([]NodeID, 0, len(ms))
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	return ids
}

// TestMembershipWANPool federates two data centers: a and b are DC 1 and c
// is DC 2, each node in its DC's LAN pool and all three in the WAN pool,
// both pools on the one mesh of each node.
func TestMembershipWANPool(t *testing.T) {
	ca := testCA(t)
	key := testGossipKey(t)
	metas := map[NodeID]NodeMeta{
		"a": {DC: "1", ClientAddr: "127.0.0.1:4431", Version: "t", DCID: 1},
		"b": {DC: "1", ClientAddr: "127.0.0.1:4432", Version: "t", DCID: 1, IPv6Addr: "[::1]:4432"},
		"c": {DC: "2", ClientAddr: "127.0.0.1:4433", Version: "t", DCID: 2, MediaOnly: true},
	}
	lan := map[NodeID]testMember{}
	wan := map[NodeID]testMember{}
	for _, id := range []NodeID{"a", "b", "c"} {
		mesh := startMesh(t, ca, id, nodeCert(t, ca, id))
		lan[id] = startPool(t, mesh, false, key, metas[id])
		wan[id] = startPool(t, mesh, true, key, metas[id])
	}
	if _, err := lan["b"].Join([]string{lan["a"].addr()}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []NodeID{"b", "c"} {
		if _, err := wan[id].Join([]string{wan["a"].addr()}); err != nil {
			t.Fatal(err)
		}
	}

	// Every WAN member sees all three with their metadata, and the same
	// DC table.
	for id, w := range wan {
		waitFor(t, 5*time.Second, func() error {
			ms := w.Members()
			if ids := memberIDs(ms); !slices.Equal(ids, []NodeID{"a", "b", "c"}) {
				return fmt.Errorf("%s: WAN members %v", id, ids)
			}
			for _, mb := range ms {
				if mb.MetaErr != nil || mb.Meta != metas[mb.ID] {
					return fmt.Errorf("%s: WAN meta of %s = %+v (%v)", id, mb.ID, mb.Meta, mb.MetaErr)
				}
			}
			tab := DCTable(ms)
			if len(tab) != 2 || !slices.Equal(memberIDs(tab[1]), []NodeID{"a", "b"}) ||
				!slices.Equal(memberIDs(tab[2]), []NodeID{"c"}) {
				return fmt.Errorf("%s: DC table %v", id, tab)
			}
			return nil
		})
	}

	// The pools do not leak into each other: DC 1's LAN pool holds a and b
	// only, DC 2's holds c alone, though every mesh connects all three.
	checkLAN := func() {
		t.Helper()
		for id, want := range map[NodeID][]NodeID{"a": {"a", "b"}, "b": {"a", "b"}, "c": {"c"}} {
			waitFor(t, 5*time.Second, func() error {
				if ids := memberIDs(lan[id].Members()); !slices.Equal(ids, want) {
					return fmt.Errorf("%s: LAN members %v, want %v", id, ids, want)
				}
				return nil
			})
		}
		for _, id := range []NodeID{"a", "b"} {
			if lan[id].events.about("c") || lan["c"].events.about(id) {
				t.Errorf("LAN events cross DCs between %s and c", id)
			}
		}
	}
	checkLAN()

	// c leaves the federation: a and b see a leave, not a failure, and
	// the LAN pools are untouched.
	if err := wan["c"].Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	wan["c"].Close()
	for _, id := range []NodeID{"a", "b"} {
		w := wan[id]
		waitFor(t, 5*time.Second, func() error {
			if !w.events.has(EventLeave, "c") {
				return fmt.Errorf("%s has not seen c leave the WAN pool", id)
			}
			if ids := memberIDs(w.Members()); !slices.Equal(ids, []NodeID{"a", "b"}) {
				return fmt.Errorf("%s: WAN members %v", id, ids)
			}
			return nil
		})
		if w.events.has(EventFail, "c") {
			t.Errorf("%s saw c's leave as a failure", id)
		}
		if tab := DCTable(w.Members()); len(tab) != 1 || len(tab[1]) != 2 {
			t.Errorf("%s: DC table after c left: %v", id, tab)
		}
	}
	checkLAN()
	if n := lan["c"].NumMembers(); n != 1 {
		t.Errorf("c's LAN pool counts %d members after leaving the WAN pool", n)
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
	m := NodeMeta{DC: "dc1", ClientAddr: "[::1]:443", Version: "1.2.3",
		DCID: 1000, MediaOnly: true, IPv6Addr: "[2001:db8::1]:443"}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != 2 {
		t.Fatalf("version %d, want 2", b[0])
	}
	got, err := DecodeNodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	// The version-1 prefix is unchanged: the same record labelled version
	// 1 is what a version-1 decoder sees, the version-2 tail after the
	// flags byte ignored.
	v1 := NodeMeta{DC: m.DC, ClientAddr: m.ClientAddr, Version: m.Version}
	got, err = DecodeNodeMeta(append([]byte{1}, b[1:]...))
	if err != nil || got != v1 {
		t.Fatalf("v2 record read as v1: %+v, %v", got, err)
	}
	// A version-1 record, as version-1 nodes send it, decodes with zero
	// version-2 fields.
	rec := []byte{1, 3, 'd', 'c', '1', 9, '[', ':', ':', '1', ']', ':', '4', '4', '3', 5, '1', '.', '2', '.', '3', 0}
	got, err = DecodeNodeMeta(rec)
	if err != nil || got != v1 {
		t.Fatalf("v1: %+v, %v", got, err)
	}
	got, flags, err := decodeMeta(append(rec[:len(rec)-1:len(rec)-1], metaLeaving))
	if err != nil || got != v1 || flags != metaLeaving {
		t.Fatalf("v1 leaving: %+v, %d, %v", got, flags, err)
	}
	// A later version appends fields; this one ignores them.
	got, err = DecodeNodeMeta(append(append([]byte{3}, b[1:]...), 3, 'x', 'y', 'z'))
	if err != nil || got != m {
		t.Fatalf("v3: %+v, %v", got, err)
	}
	// The leaving flag is carried but not part of NodeMeta, and the
	// media-only role is not a flag.
	lb, _ := m.encode(metaLeaving)
	got, flags, err = decodeMeta(lb)
	if err != nil || got != m || flags != metaLeaving {
		t.Fatalf("leaving: %+v, %d, %v", got, flags, err)
	}
	m.MediaOnly = false
	b, _ = m.Encode()
	if _, flags, _ := decodeMeta(b); flags != 0 {
		t.Fatalf("flags %d without leaving", flags)
	}
	for _, big := range []NodeMeta{
		{DC: strings.Repeat("x", memberlist.MetaMaxSize)},
		{DC: "dc1", IPv6Addr: strings.Repeat("x", memberlist.MetaMaxSize-8)},
	} {
		if _, err := big.Encode(); !errors.Is(err, ErrMetaTooLarge) {
			t.Fatalf("oversized meta: %v", err)
		}
	}
	for _, dc := range []int{-1, MaxDCID + 1} {
		if _, err := (NodeMeta{DCID: dc}).Encode(); !errors.Is(err, ErrBadMeta) {
			t.Errorf("DCID %d: %v", dc, err)
		}
	}
	for _, bad := range [][]byte{
		nil, {0}, {1}, {1, 5, 'a'}, {1, 0, 0, 0},
		{2, 0, 0, 0, 0},                   // no DCID
		{2, 0, 0, 0, 0, 1},                // no IPv6Addr
		{2, 0, 0, 0, 0, 1, 3, 'a'},        // IPv6Addr truncated
		{2, 0, 0, 0, 0, 1, 0},             // no roles
		{2, 0, 0, 0, 0, 0xe9, 0x07, 0, 0}, // DCID 1001
	} {
		if _, err := DecodeNodeMeta(bad); !errors.Is(err, ErrBadMeta) {
			t.Errorf("DecodeNodeMeta(%v) = %v", bad, err)
		}
	}
}

func TestDCTable(t *testing.T) {
	mb := func(id NodeID, dc int) Member { return Member{ID: id, Meta: NodeMeta{DCID: dc}} }
	leaving := mb("b0", 1)
	leaving.Leaving = true
	broken := mb("b1", 1)
	broken.MetaErr = ErrBadMeta
	got := DCTable([]Member{mb("c", 2), mb("b", 1), leaving, mb("x", 0), broken, mb("a", 1)})
	want := map[int][]Member{1: {mb("a", 1), mb("b", 1)}, 2: {mb("c", 2)}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("DCTable = %v, want %v", got, want)
	}
	if len(DCTable(nil)) != 0 {
		t.Fatal("DCTable(nil) not empty")
	}
}

func FuzzDecodeNodeMeta(f *testing.F) {
	m := NodeMeta{DC: "dc1", ClientAddr: "127.0.0.1:443", Version: "v", DCID: 2, MediaOnly: true, IPv6Addr: "[::1]:443"}
	b, _ := m.Encode()
	f.Add(b)
	lb, _ := m.encode(metaLeaving)
	f.Add(lb)
	f.Add(append([]byte{1}, b[1:]...))                  // v2 record read as v1
	f.Add(append(append([]byte{3}, b[1:]...), 1, 2, 3)) // a later version
	f.Add([]byte{1, 3, 'd', 'c', '1', 0, 0, 0})         // v1 as v1 nodes wrote it
	f.Add([]byte{2, 0, 0, 0, 0, 0xe9, 0x07, 0, 0})      // DCID out of range
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := DecodeNodeMeta(in)
		if err != nil {
			return
		}
		out, err := m.Encode()
		if err != nil {
			if !errors.Is(err, ErrMetaTooLarge) {
				t.Fatalf("decoded %+v does not encode: %v", m, err)
			}
			return
		}
		if in[0] == metaVersion && len(out) > len(in) {
			t.Fatalf("re-encoding grew: %d > %d", len(out), len(in))
		}
		if back, err := DecodeNodeMeta(out); err != nil || back != m {
			t.Fatalf("re-encoded %+v decodes as %+v, %v", m, back, err)
		}
	})
}

// TestMembershipReconnectsAfterPartition cuts two members apart for longer
// than failure detection takes, so each declares the other failed, then
// heals the link: memberlist alone would never talk to a dead member
// again; the reconnect loop joins it back.
func TestMembershipReconnectsAfterPartition(t *testing.T) {
	ca := testCA(t)
	key := testGossipKey(t)
	f := NewFaults()
	// A cut longer than the QUIC idle timeout closes the mesh connection,
	// and with it the gossip packets QUIC would otherwise still deliver
	// after the heal (which make memberlist refute the deaths itself).
	short := func(c *MeshConfig) { c.IdleTimeout, c.KeepAlive = time.Second, 200*time.Millisecond }
	pc := WrapPacketConn(listenUDP(t), f)
	t.Cleanup(func() { pc.Close() })
	am := startMesh(t, ca, "a", nodeCert(t, ca, "a"), short, func(c *MeshConfig) { c.PacketConn = pc })
	a := startPool(t, am, false, key, metaFor("a"))
	b := startPool(t, startMesh(t, ca, "b", nodeCert(t, ca, "b"), short), false, key, metaFor("b"))
	if _, err := a.Join([]string{b.addr()}); err != nil {
		t.Fatal(err)
	}
	both := func(n int) func() error {
		return func() error {
			if a.NumMembers() != n || b.NumMembers() != n {
				return fmt.Errorf("a sees %d members, b %d; want %d", a.NumMembers(), b.NumMembers(), n)
			}
			return nil
		}
	}
	waitFor(t, 5*time.Second, both(2))
	f.Set([]FaultRule{{Drop: true}})
	waitFor(t, 10*time.Second, func() error {
		if !a.events.has(EventFail, "b") || !b.events.has(EventFail, "a") {
			return errors.New("the members have not declared each other failed")
		}
		return nil
	})
	waitFor(t, 5*time.Second, both(1))
	// memberlist still gossips to the dead for GossipToTheDeadTime (1 s in
	// fastGossip), and the mesh connection lives for its idle timeout:
	// either would heal a short cut by itself; wait them out.
	time.Sleep(3 * time.Second)
	f.Set(nil)
	waitFor(t, 10*time.Second, both(2))
}

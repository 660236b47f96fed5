package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/mtnode/mtnode/node"
)

func TestPrintStatus(t *testing.T) {
	g := node.GroupStatus{Leader: "n1", Voters: []string{"n1", "n2", "n3"}, CommitIndex: 10}
	dir, users := g, g
	dir.Shard, users.Shard = 1, 2
	self := node.NodeStatus{ID: "n1", DC: 1, Group: g, Groups: []node.GroupStatus{g, dir, users}, Leads: 2}
	behind := self
	behind.ID, behind.Leads = "n2", 0
	behind.Group.AppliedIndex = 7
	st := node.ClusterStatus{Self: self, Members: []node.MemberStatus{
		{ID: "n1", MeshAddr: "127.0.0.1:1", DC: "1", Status: &self},
		{ID: "n2", MeshAddr: "127.0.0.1:2", DC: "1", Status: &behind},
	}}
	var out bytes.Buffer
	printStatus(&out, st)
	text := out.String()
	for _, want := range []string{"leader n1", "shards (users' boxes and auth keys): 1", "GROUP", "metadata", "directory", "users", "n2  ", "voter", "7 ", "3 ", "n3", "down (not in gossip)"} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q:\n%s", want, text)
		}
	}
	if !strings.Contains(text, "2/3") {
		t.Errorf("status lacks the leader's groups led:\n%s", text)
	}
}

func TestPrintStatusDCQueues(t *testing.T) {
	g := node.GroupStatus{Leader: "n1", Voters: []string{"n1", "n2", "n3"}, CommitIndex: 10,
		Outbox: map[int]int{1: 2, -2: 5, -3: 1}}
	self := node.NodeStatus{ID: "n1", DC: 1, Group: g, Groups: []node.GroupStatus{g}, Leads: 1,
		DCQueues: []node.DCQueue{{DC: 2, Depth: 5, AgeSeconds: 30}, {DC: 3, Depth: 1, AgeSeconds: 3725}}}
	other := node.NodeStatus{ID: "n2", DC: 1, Group: g, Groups: []node.GroupStatus{g},
		DCQueues: []node.DCQueue{{DC: 2, Depth: 7, AgeSeconds: 192}}}
	st := node.ClusterStatus{Self: self, Members: []node.MemberStatus{
		{ID: "n1", MeshAddr: "127.0.0.1:1", DC: "1", Status: &self},
		{ID: "n2", MeshAddr: "127.0.0.1:2", DC: "1", Status: &other},
		{ID: "n3", MeshAddr: "127.0.0.1:3", DC: "1", Error: "timeout"},
	}}
	var out bytes.Buffer
	printStatus(&out, st)
	text := out.String()
	// Depths add over the members, the oldest age wins; the per-group
	// OUTBOX column still sums every destination.
	want := "QUEUES TO OTHER DCs\n" +
		"DC  DEPTH  OLDEST\n" +
		"2   12     3m12s\n" +
		"3   1      1h2m5s\n" +
		"(not counted: the groups led by n3, which did not answer)\n"
	if !strings.Contains(text, want) {
		t.Errorf("status lacks\n%s\nin:\n%s", want, text)
	}
	if !strings.Contains(text, "  8\n") {
		t.Errorf("the OUTBOX column does not sum every destination (2+5+1):\n%s", text)
	}

	// Nothing waiting: no table.
	self.DCQueues, other.DCQueues = nil, nil
	out.Reset()
	printStatus(&out, st)
	if strings.Contains(out.String(), "QUEUES") {
		t.Errorf("a queue table with nothing queued:\n%s", out.String())
	}

	// Asked without the members: this node's own.
	self.DCQueues = []node.DCQueue{{DC: 4, Depth: 2, AgeSeconds: 0}}
	out.Reset()
	printStatus(&out, node.ClusterStatus{Self: self})
	if !strings.Contains(out.String(), "4   2      0s\n") {
		t.Errorf("status without members lacks this node's queue:\n%s", out.String())
	}
}

func TestStatusJSONDCQueues(t *testing.T) {
	b, err := json.Marshal(node.NodeStatus{ID: "n1", DCQueues: []node.DCQueue{{DC: 2, Depth: 3, AgeSeconds: 4}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `"dc_queues":[{"dc":2,"depth":3,"age_seconds":4}]`; !strings.Contains(string(b), want) {
		t.Errorf("JSON lacks %s: %s", want, b)
	}
	if b, _ := json.Marshal(node.NodeStatus{ID: "n1"}); strings.Contains(string(b), "dc_queues") {
		t.Errorf("JSON carries empty queues: %s", b)
	}
}

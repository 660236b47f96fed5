package main

import (
	"bytes"
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

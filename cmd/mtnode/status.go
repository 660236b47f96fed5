package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/node"
)

// runStatus is `mtnode status`: ask a node's HTTP listener for the data
// center's state and print it for a person, or as JSON.
func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mtnode status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http", "127.0.0.1:8080", "the node's http_addr")
	asJSON := fs.Bool("json", false, "print JSON")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	body, err := httpDo(ctx, http.MethodGet, "http://"+*addr+"/cluster/status")
	if err != nil {
		fmt.Fprintln(stderr, "mtnode status:", err)
		return 1
	}
	if *asJSON {
		stdout.Write(body)
		return 0
	}
	var st node.ClusterStatus
	if err := json.Unmarshal(body, &st); err != nil {
		fmt.Fprintln(stderr, "mtnode status: bad answer:", err)
		return 1
	}
	printStatus(stdout, st)
	return 0
}

// groupHolds names what group g of n holds (messaging.Layout).
func groupHolds(g uint32, n int) string {
	switch {
	case n == 1:
		return "everything"
	case g == messaging.MetaGroup:
		return "metadata"
	case g == 1:
		return "directory"
	}
	return "users"
}

func printStatus(w io.Writer, st node.ClusterStatus) {
	s := st.Self
	fmt.Fprintf(w, "node %s  dc %d  mesh %s  clients %s  version %s  gossip health %d\n",
		s.ID, s.DC, s.MeshAddr, s.ClientAddr, s.Version, s.Health)
	g := s.Group
	fmt.Fprintf(w, "metadata (group %d): leader %s, voters %s", g.Shard, orNone(g.Leader), strings.Join(g.Voters, " "))
	if len(g.NonVoters) > 0 {
		fmt.Fprintf(w, ", staging %s", strings.Join(g.NonVoters, " "))
	}
	fmt.Fprintf(w, ", commit index %d\n", g.CommitIndex)
	if len(s.Groups) > 2 {
		fmt.Fprintf(w, "directory (group 1); shards (users' boxes and auth keys): %d\n", len(s.Groups)-2)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tHOLDS\tLEADER\tVOTERS\tSTAGING\tCOMMIT\tAPPLIED HERE\tOUTBOX")
	for _, gs := range s.Groups {
		outbox := 0
		for _, n := range gs.Outbox {
			outbox += n
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", gs.Shard, groupHolds(gs.Shard, len(s.Groups)), orNone(gs.Leader), strings.Join(gs.Voters, ","),
			orDash(strings.Join(gs.NonVoters, ",")), gs.CommitIndex, gs.AppliedIndex, outbox)
	}
	tw.Flush()
	printDCQueues(w, st)
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tMESH\tDC\tROLE\tAPPLIED\tLAG\tLEADS\tSTATE")
	for _, m := range st.Members {
		role, applied, lag, leads, state := "-", "-", "-", "-", "alive"
		if m.Leaving {
			state = "leaving"
		}
		if m.Status != nil {
			ms := m.Status
			role = roleOf(ms.ID, g)
			leads = fmt.Sprintf("%d/%d", ms.Leads, len(ms.Groups))
			applied = fmt.Sprint(ms.Group.AppliedIndex)
			if g.CommitIndex >= ms.Group.AppliedIndex {
				lag = fmt.Sprint(g.CommitIndex - ms.Group.AppliedIndex)
			} else {
				lag = "0"
			}
		} else if m.Error != "" {
			state = "unreachable: " + m.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.MeshAddr, m.DC, role, applied, lag, leads, state)
	}
	// Replicas gossip no longer lists: down, or gone.
	seen := map[string]bool{}
	for _, m := range st.Members {
		seen[m.ID] = true
	}
	for _, id := range append(append([]string(nil), g.Voters...), g.NonVoters...) {
		if !seen[id] {
			fmt.Fprintf(tw, "%s\t-\t-\t%s\t-\t-\t-\tdown (not in gossip)\n", id, roleOf(id, g))
		}
	}
	tw.Flush()
}

// printDCQueues prints what waits for other DCs, per DC, summed over the
// members' statuses: each reports the groups it leads, and each group is
// led by one node, so every group is counted once (a leader deposed a
// moment ago may count its group a second time until it notices). Groups
// led by a member that did not answer are missing, and it says so.
// Nothing is printed when nothing waits.
func printDCQueues(w io.Writer, st node.ClusterStatus) {
	var lists [][]node.DCQueue
	var silent []string
	for _, m := range st.Members {
		if m.Status != nil {
			lists = append(lists, m.Status.DCQueues)
		} else {
			silent = append(silent, m.ID)
		}
	}
	if len(st.Members) == 0 {
		lists = append(lists, st.Self.DCQueues) // asked with ?members=0
	}
	qs := node.SumDCQueues(lists...)
	if len(qs) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "QUEUES TO OTHER DCs")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DC\tDEPTH\tOLDEST")
	for _, q := range qs {
		fmt.Fprintf(tw, "%d\t%d\t%s\n", q.DC, q.Depth, time.Duration(q.AgeSeconds)*time.Second)
	}
	tw.Flush()
	if len(silent) > 0 {
		fmt.Fprintf(w, "(not counted: the groups led by %s, which did not answer)\n", strings.Join(silent, ", "))
	}
}

func roleOf(id string, g node.GroupStatus) string {
	switch {
	case id == g.Leader:
		return "leader"
	case contains(g.Voters, id):
		return "voter"
	case contains(g.NonVoters, id):
		return "staging"
	}
	return "no replica"
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// runLeave is `mtnode leave`: ask a node to hand its replicas off, leave
// the data center and stop.
func runLeave(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mtnode leave", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http", "127.0.0.1:8080", "the leaving node's http_addr")
	timeout := fs.Duration("timeout", 3*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	body, err := httpDo(ctx, http.MethodPost, "http://"+*addr+"/cluster/leave")
	if err != nil {
		fmt.Fprintln(stderr, "mtnode leave:", err)
		return 1
	}
	var res map[string]string
	if err := json.Unmarshal(body, &res); err != nil || res["result"] != "left" {
		fmt.Fprintf(stderr, "mtnode leave: %s", body)
		return 1
	}
	fmt.Fprintf(stdout, "node %s left the data center\n", res["node"])
	return 0
}

func httpDo(ctx context.Context, method, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNotFound {
		return nil, errors.New("the node is not clustered (no /cluster endpoints)")
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

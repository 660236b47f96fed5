package loadgen

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestSpreadOf(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var out []time.Duration
		for _, x := range n {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	for _, tc := range []struct {
		in   []time.Duration
		want Spread
	}{
		{nil, Spread{}},
		{ms(5), Spread{5 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond}},
		{ms(9, 1, 5), Spread{1 * time.Millisecond, 5 * time.Millisecond, 9 * time.Millisecond}},
		{ms(4, 1, 2, 9), Spread{1 * time.Millisecond, 3 * time.Millisecond, 9 * time.Millisecond}},
	} {
		if got := spreadOf(tc.in); got != tc.want {
			t.Errorf("spreadOf(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestClusterOptionErrors(t *testing.T) {
	ctx := context.Background()
	for _, o := range []Options{
		{Scenarios: []Scenario{Chat}, Nodes: []int{0}, NodeBinary: nodeBinary},
		{Scenarios: []Scenario{Chat}, Nodes: []int{3}, Addr: "1.2.3.4:5", PublicKeyFile: "x"},
		{Scenarios: []Scenario{Failover}, Addr: "1.2.3.4:5", PublicKeyFile: "x"},
	} {
		if _, err := Run(ctx, o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

// TestChatOnClusters runs the chat scenario on one node and on a 3-node
// child DC in one run, as `mtnode bench --nodes 1,3` does.
func TestChatOnClusters(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{
		Scenarios:  []Scenario{Chat},
		Nodes:      []int{1, 3},
		ChatUsers:  []int{2},
		Duration:   time.Second,
		NodeBinary: nodeBinary,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Chat) != 2 || rep.Chat[0].Nodes != 1 || rep.Chat[1].Nodes != 3 {
		t.Fatalf("chat rows: %+v", rep.Chat)
	}
	for _, c := range rep.Chat {
		if c.Sent == 0 || c.Received == 0 || c.E2EP50 <= 0 || c.ServerCPU <= 0 {
			t.Errorf("%d nodes: %+v", c.Nodes, c)
		}
	}
	if rep.Chat[1].ServerProcs < 3 {
		t.Errorf("3-node GOMAXPROCS %d: not summed over the nodes", rep.Chat[1].ServerProcs)
	}
	var md bytes.Buffer
	if err := rep.Markdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"nodes per DC: 1, 3", "DC sizes side by side (1 vs 3 nodes", "| 2 | 3 | "} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, md.String())
		}
	}
}

// TestFailover runs one round of the failover scenario. A round waits for
// the restarted node to catch up, which takes tens of seconds, so it runs
// only with LOADGEN_TEST_FAILOVER=1.
func TestFailover(t *testing.T) {
	if os.Getenv("LOADGEN_TEST_FAILOVER") != "1" {
		t.Skip("set LOADGEN_TEST_FAILOVER=1 to run (about a minute)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{Scenarios: []Scenario{Failover}, Failovers: 1, NodeBinary: nodeBinary})
	if err != nil {
		t.Fatal(err)
	}
	f := rep.Failover
	if f == nil || len(f.Rounds) != 1 {
		t.Fatalf("failover: %+v", f)
	}
	r := f.Rounds[0]
	if r.KilledBy != "signal: killed" || r.NewLeader == r.Killed || r.Groups <= 0 || r.Writers <= 0 ||
		r.Leader <= 0 || r.Resume <= 0 || r.Restart <= 0 || r.CatchUp < r.Restart {
		t.Errorf("round: %+v", r)
	}
}

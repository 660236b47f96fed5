package loadgen

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestFederationOptionErrors(t *testing.T) {
	ctx := context.Background()
	for _, o := range []Options{
		{Scenarios: []Scenario{Federation}, Addr: "1.2.3.4:5", PublicKeyFile: "x"},
		{Scenarios: []Scenario{Federation}, Federation: FederationOptions{Users: []int{3}}, NodeBinary: nodeBinary},
		{Scenarios: []Scenario{Federation}, Federation: FederationOptions{NodesPerDC: 6}, NodeBinary: nodeBinary},
		{Scenarios: []Scenario{Federation}, Federation: FederationOptions{WANDelay: 2 * time.Minute}, NodeBinary: nodeBinary},
	} {
		if _, err := Run(ctx, o); err == nil {
			t.Errorf("%+v: no error", o.Federation)
		}
	}
}

// TestFederationScenario runs the federation scenario once, small: two
// one-node DCs, one pair per loop, a backlog of 300, no delayed pass.
// Every acknowledged message must reach its recipient's box exactly
// once, and nothing may cross the cut.
func TestFederationScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two federated DCs of child nodes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{
		Scenarios:  []Scenario{Federation},
		Duration:   time.Second,
		Federation: FederationOptions{Users: []int{2}, Backlog: 300, WANDelay: -1},
		NodeBinary: nodeBinary,
	})
	if err != nil {
		t.Fatal(err)
	}
	f := rep.Federation
	if f == nil || len(f.Passes) != 1 || len(f.Passes[0].Rows) != 2 {
		t.Fatalf("federation: %+v", f)
	}
	p := f.Passes[0]
	for _, r := range p.Rows {
		if r.Sent == 0 || r.Received == 0 || r.E2EP50 <= 0 || r.Users != 2 || r.BoxShort != 0 || r.BoxExtra != 0 {
			t.Errorf("row: %+v", r)
		}
	}
	if !p.Rows[1].Cross || p.Rows[0].Cross {
		t.Errorf("rows out of order: %+v", p.Rows)
	}
	b := p.Backlog
	if b == nil {
		t.Fatal("no backlog")
	}
	if b.Queued != 300 || b.Errors != 0 || b.CrossedInCut != 0 || !b.Drained ||
		b.Delivered != b.Queued || b.InBoxes <= 0 || b.DrainPerSec <= 0 || b.ListsOther != [2]bool{true, true} {
		t.Errorf("backlog: %+v", b)
	}
	if b.DepthMetric && b.DepthAtHeal < float64(b.Queued) {
		t.Errorf("DC1 queue depth %v at the heal, below the %d queued", b.DepthAtHeal, b.Queued)
	}
	var md bytes.Buffer
	if err := rep.Markdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"### Federation: DC1 and DC2 of 1 child node(s) each", "| none | **DC1–DC2** | 2 |", "heal → every queued message in the boxes"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, md.String())
		}
	}
}

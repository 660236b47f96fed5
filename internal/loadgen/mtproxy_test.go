package loadgen

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestMTProxyScenario runs the mtproxy scenario against `mtnode proxy`
// alone (no mtg here), small: the relay answers through a real FakeTLS
// client, every figure is there, and the report prints.
func TestMTProxyScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("starts mtnode proxy and relays through it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{
		Scenarios:  []Scenario{MTProxy},
		Duration:   300 * time.Millisecond,
		IdleConns:  20,
		MTProxy:    MTProxyOptions{Streams: []int{1, 3}, FrameSize: 16 << 10},
		NodeBinary: nodeBinary,
	})
	if err != nil {
		t.Fatal(err)
	}
	m := rep.MTProxy
	if m == nil || len(m.Sides) != 1 || m.Missing == "" {
		t.Fatalf("report %+v: want the mtnode side only, mtg noted as missing", m)
	}
	s := m.Sides[0]
	if s.Err != "" || s.RTTs == 0 || s.RTT50 <= 0 || s.RSSAfter <= 0 || s.IdleOpen < 20 {
		t.Fatalf("mtnode side %+v", s)
	}
	if len(s.Throughput) != 2 {
		t.Fatalf("throughput levels %+v", s.Throughput)
	}
	for _, tp := range s.Throughput {
		if tp.Echoed <= 0 || tp.Up <= 0 || tp.CPUPerGB() <= 0 {
			t.Errorf("%d streams: %+v", tp.Streams, tp)
		}
	}
	var out bytes.Buffer
	if err := rep.Markdown(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "memory per idle proxied connection") {
		t.Errorf("report lacks the mtproxy table:\n%s", out.String())
	}
}

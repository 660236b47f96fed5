package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// nodeBinary is the mtnode built by TestMain, run as a child node.
var nodeBinary string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "loadgen-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	nodeBinary = filepath.Join(dir, "mtnode")
	build := exec.Command("go", "build", "-o", nodeBinary, "github.com/mtnode/mtnode/cmd/mtnode")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build mtnode:", err)
		return 1
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			return 1
		}
	}
	return code
}

// TestHandshakeGotdClient runs the handshake scenario with gotd's own
// exchange client, the alternative to the default fast one.
func TestHandshakeGotdClient(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node and creates auth keys with gotd (seconds of CPU)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{
		Scenarios:        []Scenario{Handshake},
		Duration:         300 * time.Millisecond,
		HandshakeWorkers: 1,
		HandshakeClient:  HandshakeGotd,
		MaxOps:           1,
		NodeBinary:       nodeBinary,
		ServerProcs:      1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if h := rep.Handshake; h == nil || h.Client != HandshakeGotd || h.OK != 1 || h.ServerOK != 1 {
		t.Errorf("handshake: %+v", rep.Handshake)
	}
	if _, err := Run(ctx, Options{Scenarios: []Scenario{Handshake}, HandshakeClient: "nope", NodeBinary: nodeBinary, ServerProcs: 1}); err == nil {
		t.Error("unknown handshake client accepted")
	}
}

// TestRunAllScenarios runs every scenario with tiny counts against a child
// node: it proves the code paths work, not how fast anything is.
func TestRunAllScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node and creates auth keys with gotd (seconds of CPU)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{
		Duration:         300 * time.Millisecond,
		Conns:            []int{2, 1},
		ChatUsers:        []int{2},
		IdleConns:        2,
		HandshakeWorkers: 2,
		NodeBinary:       nodeBinary,
		ServerProcs:      1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if c := rep.Crypto; c == nil || c.HandshakesPerCoreFloor <= 0 || c.IGEBytesPerSec <= 0 || c.PingsPerCoreFloor <= 0 || c.ClientPQ.Ops == 0 {
		t.Errorf("crypto: %+v", rep.Crypto)
	}
	if rep.ServerProcs != 1 {
		t.Errorf("server GOMAXPROCS %d, want 1", rep.ServerProcs)
	}
	if h := rep.Handshake; h == nil || h.Client != HandshakeFast || h.OK == 0 || h.ServerOK != float64(h.OK) || h.ServerCPU <= 0 || h.P50 <= 0 ||
		h.ServerCores <= 0 || h.ServerBusyShare <= 0 || h.FloorRatio <= 0 {
		t.Errorf("handshake: %+v", rep.Handshake)
	}
	if len(rep.Ping) != 2 || rep.Ping[0].Conns != 1 || rep.Ping[1].Conns != 2 {
		t.Fatalf("ping levels: %+v", rep.Ping)
	}
	for _, p := range rep.Ping {
		if p.Pings == 0 || p.P50 <= 0 || p.P99 < p.P50 || p.ServerCPU <= 0 || p.Redials != 0 {
			t.Errorf("ping: %+v", p)
		}
	}
	if rep.PingMethod != PingMTProto && rep.PingMethod != PingRPC {
		t.Errorf("ping method %q", rep.PingMethod)
	}
	if len(rep.Chat) != 1 {
		t.Fatalf("chat levels: %+v", rep.Chat)
	}
	if c := rep.Chat[0]; c.Users != 2 || c.Sent == 0 || c.Received != c.Sent || c.Missing != 0 || c.Errors != 0 ||
		c.AckP50 <= 0 || c.E2EP50 <= 0 || c.ServerCPU <= 0 || c.Floor1 == nil || c.Floor1.PerSec <= 0 ||
		c.FloorN == nil || c.FloorN.Writers != 2 || c.Ratio1 <= 0 {
		t.Errorf("chat: %+v", c)
	}
	if i := rep.Idle; i == nil || i.After.ConnsActive-i.Before.ConnsActive != 2 || !i.Before.AfterGC || !i.After.AfterGC || i.GoroutinesPerConn <= 0 {
		t.Errorf("idle: %+v", rep.Idle)
	}
	var md bytes.Buffer
	if err := rep.Markdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Crypto floor", "Auth key creation", "fast exchange clients", "Node busy", "round trips", "Private messages", "Storage floor", "Idle authorized connections"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
	if testing.Verbose() {
		t.Log("\n" + md.String())
	}
}

// TestExternalTarget points Run at a node it did not start.
func TestExternalTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node and creates an auth key with gotd")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := startChild(ctx, nodeBinary, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	}()
	rep, err := Run(ctx, Options{
		Scenarios:     []Scenario{Ping},
		Duration:      200 * time.Millisecond,
		Conns:         []int{1},
		Addr:          c.addr,
		PublicKeyFile: c.pubKey,
		MetricsAddr:   c.http,
		PingMethod:    PingRPC,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Ping) != 1 || rep.Ping[0].Pings == 0 || rep.PingMethod != PingRPC || rep.Crypto != nil {
		t.Errorf("report: %+v", rep)
	}
	// Idle needs /metrics.
	_, err = Run(ctx, Options{Scenarios: []Scenario{Idle}, Addr: c.addr, PublicKeyFile: c.pubKey})
	if err == nil || !strings.Contains(err.Error(), ErrNoMetrics.Error()) {
		t.Errorf("idle without metrics: %v, want ErrNoMetrics", err)
	}
}

func TestOptionErrors(t *testing.T) {
	ctx := context.Background()
	for _, o := range []Options{
		{Scenarios: []Scenario{"nope"}},
		{Scenarios: []Scenario{Ping}, Conns: []int{0}},
		{Scenarios: []Scenario{Chat}, ChatUsers: []int{3}},
		{Scenarios: []Scenario{Ping}},                    // no binary, no address
		{Scenarios: []Scenario{Ping}, Addr: "1.2.3.4:5"}, // no public key
	} {
		if _, err := Run(ctx, o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

func TestChildStartFailure(t *testing.T) {
	ctx := context.Background()
	if _, err := startChild(ctx, "/nonexistent/mtnode", 0); err == nil {
		t.Error("started a missing binary")
	}
	// `true` exits before serving.
	if path, err := exec.LookPath("true"); err == nil {
		if _, err := startChild(ctx, path, 0); err == nil || !strings.Contains(err.Error(), "exited before serving") {
			t.Errorf("child that exits: %v", err)
		}
	}
}

func TestHistQuantiles(t *testing.T) {
	var h hist
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, 1000 * time.Microsecond}} {
		got := h.quantile(c.q)
		if d := float64(got-c.want) / float64(c.want); d < -1.0/histSub || d > 1.0/histSub {
			t.Errorf("q%.2f = %s, want %s within %.1f%%", c.q, got, c.want, 100.0/histSub)
		}
	}
	var other hist
	other.record(time.Second)
	h.merge(&other)
	if h.n != 1001 || h.max != time.Second || h.quantile(1) != time.Second {
		t.Errorf("merge: n %d max %s q1 %s", h.n, h.max, h.quantile(1))
	}
	var empty hist
	if empty.quantile(0.5) != 0 {
		t.Error("empty histogram has a median")
	}
	// Bucket bounds are increasing and every value lands in its bucket.
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 1 << 20, 1<<40 + 12345, 1<<63 - 1} {
		i := histIndex(v)
		if v < histLower(i) || (i+1 < histBuckets && v >= histLower(i+1)) {
			t.Errorf("value %d in bucket %d [%d, %d)", v, i, histLower(i), histLower(i+1))
		}
	}
}

func TestParseSamples(t *testing.T) {
	in := `# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 26
process_resident_memory_bytes 1.52576e+07
mtnode_handshakes_total{result="ok"} 12
mtnode_connections_total{transport="intermediate"} 3
mtnode_connections_total{transport="abridged"} 2
weird_line_without_value
metric_with_timestamp 5 1700000000000
`
	s, err := parseSamples(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]float64{
		"go_goroutines": 26, mRSS: 1.52576e7, mHandshakesOK: 12, "metric_with_timestamp": 5,
	} {
		if got, ok := s.get(k); !ok || got != want {
			t.Errorf("%s = %v, %v; want %v", k, got, ok, want)
		}
	}
	if connsTotal(s) != 5 {
		t.Errorf("connsTotal %v, want 5", connsTotal(s))
	}
	if d := counterDelta(samples{}, s, mHandshakesBy); d != 0 {
		t.Errorf("absent counter delta %v", d)
	}
}

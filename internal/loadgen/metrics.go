package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// samples is one scrape of a Prometheus text endpoint, keyed by the series
// exactly as printed: `name` or `name{label="value",...}`.
type samples map[string]float64

// get returns a series, and whether it was present.
func (s samples) get(series string) (float64, bool) {
	v, ok := s[series]
	return v, ok
}

// parseSamples reads the Prometheus text exposition format. Only sample
// lines are kept; comments, timestamps and malformed lines are skipped,
// since all we need is a handful of well-known series.
func parseSamples(r io.Reader) (samples, error) {
	out := make(samples)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		// The series ends at the last space outside the label block.
		end := strings.LastIndexByte(line, '}')
		sp := strings.IndexByte(line[end+1:], ' ')
		if sp < 0 {
			continue
		}
		series := line[:end+1+sp]
		fields := strings.Fields(line[end+1+sp:])
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		out[series] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read metrics: %w", err)
	}
	return out, nil
}

// scraper reads a node's /metrics. With more URLs (the other nodes of a
// child cluster) every series is summed over the nodes: CPU, memory and
// connection figures are then the whole cluster's, and GOMAXPROCS is the
// cores of all nodes together.
type scraper struct {
	url    string
	more   []string
	client *http.Client
}

func (s *scraper) scrape(ctx context.Context) (samples, error) {
	out, err := s.scrapeOne(ctx, s.url)
	if err != nil {
		return nil, err
	}
	for _, u := range s.more {
		m, err := s.scrapeOne(ctx, u)
		if err != nil {
			return nil, err
		}
		for k, v := range m {
			out[k] += v
		}
	}
	return out, nil
}

func (s *scraper) scrapeOne(ctx context.Context, url string) (samples, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: status %s", url, resp.Status)
	}
	return parseSamples(resp.Body)
}

// Series read from the node's /metrics.
const (
	mCPU          = "process_cpu_seconds_total"
	mRSS          = "process_resident_memory_bytes"
	mHeapInuse    = "go_memstats_heap_inuse_bytes"
	mHeapAlloc    = "go_memstats_heap_alloc_bytes"
	mStackInuse   = "go_memstats_stack_inuse_bytes"
	mAllocTotal   = "go_memstats_alloc_bytes_total"
	mGoroutines   = "go_goroutines"
	mGCCount      = "go_gc_duration_seconds_count"
	mGOMAXPROCS   = "go_sched_gomaxprocs_threads"
	mConnsActive  = "mtnode_connections_active"
	mHandshakesOK = `mtnode_handshakes_total{result="ok"}`
	mHandshakesBy = `mtnode_handshakes_total{result="busy"}`
	mHandshakesNo = `mtnode_handshakes_total{result="failed"}`
)

// delta is after-before of one series; ok is false if either lacks it.
func delta(before, after samples, series string) (float64, bool) {
	a, ok1 := after.get(series)
	b, ok2 := before.get(series)
	return a - b, ok1 && ok2
}

// counterDelta is delta for a counter that is absent until first counted
// (a CounterVec's series): absent reads as zero.
func counterDelta(before, after samples, series string) float64 {
	return after[series] - before[series]
}

// connsTotal sums mtnode_connections_total over its transport label.
func connsTotal(s samples) float64 {
	var n float64
	for k, v := range s {
		if strings.HasPrefix(k, "mtnode_connections_total{") {
			n += v
		}
	}
	return n
}

// idleSample is how long the idle node's own CPU use is sampled for.
const idleSample = 5 * time.Second

// measureIdleCPU returns the CPU the node uses while nobody talks to it,
// in seconds per second (Badger's and the runtime's background work). It
// is subtracted from the per-operation CPU figures.
func measureIdleCPU(ctx context.Context, sc *scraper) (float64, error) {
	t0 := time.Now()
	s0, err := sc.scrape(ctx)
	if err != nil {
		return 0, err
	}
	select {
	case <-time.After(idleSample):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	s1, err := sc.scrape(ctx)
	if err != nil {
		return 0, err
	}
	d, _ := delta(s0, s1, mCPU)
	return max(d, 0) / time.Since(t0).Seconds(), nil
}

// cpuWindow is the node's CPU use between two scrapes.
type cpuWindow struct {
	start  time.Time
	before samples
}

func startCPUWindow(ctx context.Context, sc *scraper) (*cpuWindow, error) {
	if sc == nil {
		return nil, nil
	}
	t := time.Now()
	s, err := sc.scrape(ctx)
	if err != nil {
		return nil, err
	}
	return &cpuWindow{start: t, before: s}, nil
}

// end scrapes again and returns the scrape, the node's CPU time over the
// window, and that time less what the idle node would have used (never
// below zero).
func (w *cpuWindow) end(ctx context.Context, sc *scraper, idle float64) (samples, time.Duration, time.Duration, error) {
	s, err := sc.scrape(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	d, _ := delta(w.before, s, mCPU)
	el := time.Since(w.start).Seconds()
	raw := time.Duration(d * float64(time.Second))
	net := time.Duration(max(d-idle*el, 0) * float64(time.Second))
	return s, raw, net, nil
}

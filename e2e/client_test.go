package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gotd/td/telegram"
	"github.com/gotd/td/tg"

	"github.com/mtnode/mtnode/internal/mtclient"
)

// callTimeout bounds one client session: dial, key exchange if needed, and
// the calls a test makes.
const callTimeout = 20 * time.Second

// waitFor polls cond until it returns nil, failing the test with cond's last
// error once timeout has passed. It is the suite's only way to wait.
func waitFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		<-tick.C
	}
}

// newClient builds a gotd client for n over tr. A non-empty sessionFile
// keeps the auth key between clients: the DC address comes from n, so a
// client built after a restart dials the new port with the old key.
func newClient(t *testing.T, n *node, tr mtclient.Transport, sessionFile string) *telegram.Client {
	t.Helper()
	c, err := mtclient.New(mtclient.Options{
		Addr:          n.ClientAddr,
		WSURL:         n.WSURL(),
		PublicKeyFile: n.PublicKey,
		Transport:     tr,
		SessionFile:   sessionFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// runClient runs c for the length of f, bounded by callTimeout.
func runClient(c *telegram.Client, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	return c.Run(ctx, f)
}

// getConfig calls help.getConfig and checks the answer names n as DC 1.
func getConfig(ctx context.Context, c *telegram.Client, n *node) error {
	cfg, err := c.API().HelpGetConfig(ctx)
	if err != nil {
		return fmt.Errorf("help.getConfig: %w", err)
	}
	return checkConfig(cfg, n)
}

func checkConfig(cfg *tg.Config, n *node) error {
	host, port, err := net.SplitHostPort(n.ClientAddr)
	if err != nil {
		return err
	}
	if cfg.ThisDC != 1 || len(cfg.DCOptions) != 1 ||
		cfg.DCOptions[0].IPAddress != host || strconv.Itoa(cfg.DCOptions[0].Port) != port {
		return fmt.Errorf("config: this_dc %d, dc_options %+v; want dc 1 at %s", cfg.ThisDC, cfg.DCOptions, n.ClientAddr)
	}
	return nil
}

// callGetConfig runs a fresh session of c that calls help.getConfig once.
func callGetConfig(t *testing.T, c *telegram.Client, n *node) {
	t.Helper()
	if err := runClient(c, func(ctx context.Context) error { return getConfig(ctx, c, n) }); err != nil {
		t.Fatal(err)
	}
}

// httpGet fetches path from the node's HTTP address.
func httpGet(n *node, path string) (int, string, error) {
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + n.HTTPAddr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, string(body), err
}

// sample is one series of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// metrics is one scrape of /metrics.
type metrics []sample

// scrape reads /metrics.
func scrape(n *node) (metrics, error) {
	code, body, err := httpGet(n, "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape: %w", err)
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("scrape: status %d", code)
	}
	return parseMetrics(body)
}

// get sums the series of name whose labels include all of match; ok is false
// when there is none.
func (m metrics) get(name string, match map[string]string) (sum float64, ok bool) {
	for _, s := range m {
		if s.name != name {
			continue
		}
		all := true
		for k, v := range match {
			if s.labels[k] != v {
				all = false
				break
			}
		}
		if all {
			sum += s.value
			ok = true
		}
	}
	return sum, ok
}

// parseMetrics parses the Prometheus text exposition format, enough of it
// for the series promhttp writes: comments are skipped, label values may
// hold escaped quotes, backslashes and newlines.
func parseMetrics(text string) (metrics, error) {
	var out metrics
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' {
			continue
		}
		s, err := parseSample(l)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d %q: %w", line, l, err)
		}
		out = append(out, s)
	}
	return out, sc.Err()
}

func parseSample(l string) (sample, error) {
	s := sample{labels: map[string]string{}}
	i := strings.IndexAny(l, "{ ")
	if i <= 0 {
		return s, fmt.Errorf("no value")
	}
	s.name = l[:i]
	rest := l[i:]
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			rest = strings.TrimLeft(rest, ", ")
			if rest == "" {
				return s, fmt.Errorf("unterminated labels")
			}
			if rest[0] == '}' {
				rest = rest[1:]
				break
			}
			eq := strings.Index(rest, `="`)
			if eq <= 0 {
				return s, fmt.Errorf("bad label")
			}
			key := rest[:eq]
			rest = rest[eq+2:]
			var val strings.Builder
			closed := false
			for j := 0; j < len(rest); j++ {
				c := rest[j]
				if c == '\\' && j+1 < len(rest) {
					j++
					switch rest[j] {
					case 'n':
						val.WriteByte('\n')
					default:
						val.WriteByte(rest[j])
					}
					continue
				}
				if c == '"' {
					rest = rest[j+1:]
					closed = true
					break
				}
				val.WriteByte(c)
			}
			if !closed {
				return s, fmt.Errorf("unterminated label value")
			}
			s.labels[key] = val.String()
		}
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return s, fmt.Errorf("no value")
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, err
	}
	s.value = v
	return s, nil
}

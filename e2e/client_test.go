package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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

// clientArgs are the flags that point "mtnode client" at n with a session.
func clientArgs(n *node, sessionFile string, cmd ...string) []string {
	return append([]string{"client", cmd[0],
		"--addr", n.ClientAddr, "--pubkey", n.PublicKey, "--session", sessionFile,
		"--timeout", callTimeout.String(),
	}, cmd[1:]...)
}

// testCode is the login code of test numbers 9996610001..: the DC digit
// repeated as many times as the node announces (5).
const testCode = "11111"

// cliTimeout bounds one short "mtnode client" command.
const cliTimeout = callTimeout + 5*time.Second

// runCLI runs one "mtnode client" command against n and fails the test
// unless it exits 0.
func runCLI(t *testing.T, n *node, sessionFile string, cmd ...string) result {
	t.Helper()
	r := runCmd(t, cliTimeout, clientArgs(n, sessionFile, cmd...)...)
	if r.code != 0 {
		t.Fatalf("mtnode client %s: %s", strings.Join(cmd, " "), r)
	}
	return r
}

// child is a long-running mtnode process (listen) whose stdout lines a test
// reads as they come.
type child struct {
	cmd    *exec.Cmd
	lines  chan string // stdout, closed at EOF
	stderr *syncBuffer
	done   chan struct{}
}

func startChild(t *testing.T, args ...string) *child {
	t.Helper()
	c := &child{
		cmd:    exec.Command(binary, args...),
		lines:  make(chan string, 100),
		stderr: &syncBuffer{},
		done:   make(chan struct{}),
	}
	c.cmd.Env = cleanEnv()
	c.cmd.Stderr = c.stderr
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		_ = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.done
	})
	return c
}

// nextLine returns the child's next stdout line, failing after timeout.
func (c *child) nextLine(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			<-c.done
			t.Fatalf("child exited (%v) before printing; stderr:\n%s", c.cmd.ProcessState, c.stderr)
		}
		return l
	case <-time.After(timeout):
		t.Fatalf("child printed nothing within %v; stderr:\n%s", timeout, c.stderr)
		return ""
	}
}

// messageLine matches what history and listen print: "date  sender: text".
var messageLine = regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  (.+?): (.*)$`)

// TestClientCommand follows the README walkthrough with the binary's own
// client: two people sign up with test numbers, one listens, the other
// sends, both read the history.
func TestClientCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// The restart below reuses the port: take it outside the ephemeral
	// range, where no parallel test's outgoing connection can grab it.
	n := startNode(t, dir, "--client-addr", freeAddr(t, "tcp"))
	sessions := t.TempDir()
	ann, bob := filepath.Join(sessions, "ann.json"), filepath.Join(sessions, "bob.json")

	// Test numbers 99966XYYYY take the digit X repeated, as long as the
	// node says codes are.
	r := runCLI(t, n, ann, "login", "--phone", "9996610001", "--code", testCode, "--first", "Ann", "--last", "Lee")
	if !strings.Contains(r.stdout, "signed up as Ann Lee") {
		t.Errorf("first login: %s", r)
	}
	if !strings.Contains(r.stderr, fmt.Sprintf("(%d digits)", len(testCode))) {
		t.Errorf("login does not say the code's length: %s", r)
	}
	r = runCLI(t, n, ann, "login", "--phone", "9996610001")
	if !strings.Contains(r.stdout, "already signed in as Ann Lee") {
		t.Errorf("second login: %s", r)
	}
	runCLI(t, n, bob, "login", "--phone", "+999 661 0002", "--code", testCode, "--first", "Bob")

	// A wrong code is refused, and says so.
	r = runCmd(t, cliTimeout, clientArgs(n, filepath.Join(sessions, "eve.json"),
		"login", "--phone", "9996610003", "--code", "00000", "--first", "Eve")...)
	if r.code != 1 || !strings.Contains(r.stderr, "PHONE_CODE_INVALID") {
		t.Errorf("wrong code: %s", r)
	}

	listen := startChild(t, clientArgs(n, bob, "listen")...)
	waitFor(t, cliTimeout, func() error {
		if !strings.Contains(listen.stderr.String(), "listening as Bob") {
			return fmt.Errorf("listen has not started; stderr %q", listen.stderr.String())
		}
		return nil
	})

	// Bob is not Ann's contact yet: send adds him under --name.
	r = runCLI(t, n, ann, "send", "9996610002", "hello", "Bob", "--name", "Bob")
	if !regexp.MustCompile(`^sent message \d+ to Bob\n$`).MatchString(r.stdout) {
		t.Errorf("send: %s", r)
	}
	line := listen.nextLine(t, callTimeout)
	if m := messageLine.FindStringSubmatch(line); m == nil || m[1] != "Ann Lee" || m[2] != "hello Bob" {
		t.Errorf("listen printed %q, want \"<date>  Ann Lee: hello Bob\"", line)
	}

	// listen outlives the node: it reconnects to the restarted node and
	// prints what was sent meanwhile.
	n.kill()
	n = startNode(t, dir, "--client-addr", n.ClientAddr)
	runCLI(t, n, ann, "send", "9996610002", "still there?")
	line = listen.nextLine(t, callTimeout)
	if m := messageLine.FindStringSubmatch(line); m == nil || m[1] != "Ann Lee" || m[2] != "still there?" {
		t.Errorf("listen after the node restarted printed %q, want \"<date>  Ann Lee: still there?\"", line)
	}
	waitFor(t, 5*time.Second, func() error {
		if e := listen.stderr.String(); !strings.Contains(e, "connection lost; reconnecting\nreconnected; catching up\n") {
			return fmt.Errorf("listen did not say it reconnected; stderr:\n%s", e)
		}
		return nil
	})
	if err := listen.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-listen.done:
		if !listen.cmd.ProcessState.Success() {
			t.Errorf("listen after SIGINT: %v; stderr:\n%s", listen.cmd.ProcessState, listen.stderr)
		}
	case <-time.After(stopTimeout):
		t.Errorf("listen still running %v after SIGINT", stopTimeout)
	}

	// Bob finds Ann by phone in his chats, where she shows her number to
	// him as he is her contact, so he does not add her: she keeps her name.
	r = runCLI(t, n, bob, "send", "9996610001", "hi Ann")
	if !regexp.MustCompile(`^sent message \d+ to Ann Lee\n$`).MatchString(r.stdout) {
		t.Errorf("reply: %s", r)
	}
	for _, tc := range []struct {
		session, peer string
	}{{ann, "9996610002"}, {bob, "9996610001"}} {
		r = runCLI(t, n, tc.session, "history", tc.peer)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		var got []string
		for _, l := range lines {
			m := messageLine.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("history line %q is not \"date  sender: text\"", l)
			}
			got = append(got, m[1]+": "+m[2])
		}
		want := []string{"Ann Lee: hello Bob", "Ann Lee: still there?", "Bob: hi Ann"}
		if !slices.Equal(got, want) {
			t.Errorf("history of %s with %s: %q, want %q (oldest first)", filepath.Base(tc.session), tc.peer, got, want)
		}
	}
	// Over WebSocket, as a web app connects.
	r = runCLI(t, n, ann, "history", "9996610002", "--limit", "1", "--transport", "websocket", "--ws-url", n.WSURL())
	if !strings.HasSuffix(strings.TrimSpace(r.stdout), ": hi Ann") || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("history --limit 1: %s", r)
	}

	// By @username, over obfuscated2. Bob takes a username with gotd,
	// using the client's session file.
	c := newClient(t, n, mtclient.Intermediate, bob)
	if err := runClient(c, func(ctx context.Context) error {
		_, err := c.API().AccountUpdateUsername(ctx, "bob_lee")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, n, ann, "send", "@bob_lee", "by name", "--transport", "obfuscated2")
	if !regexp.MustCompile(`^sent message \d+ to Bob\n$`).MatchString(r.stdout) {
		t.Errorf("send to @bob_lee: %s", r)
	}
	r = runCLI(t, n, bob, "history", "9996610001", "--limit", "1")
	if m := messageLine.FindStringSubmatch(strings.TrimSpace(r.stdout)); m == nil || m[1] != "Ann Lee" || m[2] != "by name" {
		t.Errorf("Bob's history after the send to @bob_lee: %s", r)
	}
	r = runCmd(t, cliTimeout, clientArgs(n, ann, "send", "@nobody_here", "hi")...)
	if r.code != 1 || !strings.Contains(r.stderr, "USERNAME_NOT_OCCUPIED") {
		t.Errorf("send to an unknown username: %s", r)
	}

	// Without a session, the client says what to do.
	r = runCmd(t, cliTimeout, clientArgs(n, filepath.Join(sessions, "none.json"), "send", "9996610001", "hi")...)
	if r.code != 1 || !strings.Contains(r.stderr, "run mtnode client login first") {
		t.Errorf("send without a session: %s", r)
	}
}

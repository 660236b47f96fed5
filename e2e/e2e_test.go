package e2e

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/crypto"
	"github.com/gotd/td/mt"
	"github.com/gotd/td/session"
	"github.com/gotd/td/tg"
	"github.com/gotd/td/tgerr"

	"github.com/mtnode/mtnode/internal/mtclient"
)

// stopTimeout bounds a graceful shutdown.
const stopTimeout = 10 * time.Second

// TestQuickStart follows the README path: start a node, find its address and
// public key in the log, point a client at them, watch it in /metrics.
func TestQuickStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	n := startNode(t, dir)

	if n.ClientAddr == "" || n.HTTPAddr == "" {
		t.Fatalf("serving line: client_addr %q, http_addr %q", n.ClientAddr, n.HTTPAddr)
	}
	if want := filepath.Join(dir, "server.pub"); n.PublicKey != want {
		t.Errorf("serving line: public_key %q, want %q", n.PublicKey, want)
	}
	pemData, err := os.ReadFile(n.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(pemData), "-----BEGIN RSA PUBLIC KEY-----\n") {
		t.Errorf("server.pub is not a PKCS#1 PEM:\n%s", pemData)
	}
	keys, err := crypto.ParseRSAPublicKeys(pemData)
	if err != nil || len(keys) != 1 {
		t.Fatalf("gotd parses server.pub: %d keys, %v", len(keys), err)
	}
	if fp := fingerprint(keys[0]); n.Fingerprint != fp {
		t.Errorf("serving line: fingerprint %q, server.pub has %q", n.Fingerprint, fp)
	}

	code, body, err := httpGet(n, "/healthz")
	if err != nil || code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz: %d %q %v; want 200 \"ok\"", code, body, err)
	}

	callGetConfig(t, newClient(t, n, mtclient.Intermediate, ""), n)

	waitFor(t, 5*time.Second, func() error {
		m, err := scrape(n)
		if err != nil {
			return err
		}
		if v, _ := m.get("mtnode_connections_total", nil); v < 1 {
			return fmt.Errorf("mtnode_connections_total = %v, want >= 1", v)
		}
		if v, _ := m.get("mtnode_handshakes_total", map[string]string{"result": "ok"}); v != 1 {
			return fmt.Errorf("mtnode_handshakes_total{result=\"ok\"} = %v, want 1", v)
		}
		if v, _ := m.get("mtnode_rpc_total", map[string]string{"method": "help.getConfig", "result": "ok"}); v < 1 {
			return fmt.Errorf("mtnode_rpc_total{method=\"help.getConfig\",result=\"ok\"} = %v, want >= 1", v)
		}
		return nil
	})
}

func fingerprint(k *rsa.PublicKey) string {
	return fmt.Sprintf("%016x", uint64(crypto.RSAFingerprint(k)))
}

// TestSessionSurvivesRestart checks that auth keys are durable: over each
// transport, a client creates its key, then the node is restarted twice on
// the same data dir (SIGTERM, then SIGKILL), each time on a new port, and the
// same session file resumes with its stored key. Each restarted process must
// count no key exchange.
func TestSessionSurvivesRestart(t *testing.T) {
	t.Parallel()
	for _, tr := range mtclient.Transports {
		t.Run(string(tr), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			sessionFile := filepath.Join(t.TempDir(), "session.json")

			n := startNode(t, dir)
			callGetConfig(t, newClient(t, n, tr, sessionFile), n)
			keyID := storedKeyID(t, sessionFile)
			waitFor(t, 5*time.Second, func() error {
				return wantMetric(n, "mtnode_handshakes_total", map[string]string{"result": "ok"}, 1)
			})

			for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
				st := n.stop(sig, stopTimeout)
				if sig == syscall.SIGTERM && st.ExitCode() != 0 {
					t.Fatalf("after SIGTERM: %v, want exit 0", st)
				}
				prev := n
				n = startNode(t, dir)
				if n.Fingerprint != prev.Fingerprint {
					t.Errorf("after %v: server key changed: %s, then %s", sig, prev.Fingerprint, n.Fingerprint)
				}
				if n.ClientAddr == prev.ClientAddr {
					t.Logf("after %v: the new process reused port %s", sig, n.ClientAddr)
				}
				callGetConfig(t, newClient(t, n, tr, sessionFile), n)
				if got := storedKeyID(t, sessionFile); got != keyID {
					t.Errorf("after %v: session auth key changed: %s, then %s", sig, keyID, got)
				}
				waitFor(t, 5*time.Second, func() error {
					m, err := scrape(n)
					if err != nil {
						return err
					}
					if v, _ := m.get("mtnode_rpc_total", map[string]string{"method": "help.getConfig", "result": "ok"}); v < 1 {
						return fmt.Errorf("mtnode_rpc_total{method=\"help.getConfig\",result=\"ok\"} = %v, want >= 1", v)
					}
					return nil
				})
				m, err := scrape(n)
				if err != nil {
					t.Fatal(err)
				}
				for _, res := range []string{"ok", "failed"} {
					if v, _ := m.get("mtnode_handshakes_total", map[string]string{"result": res}); v != 0 {
						t.Errorf("after %v: restarted node has mtnode_handshakes_total{result=%q} = %v, want 0: the client's key was not reused", sig, res, v)
					}
				}
			}
		})
	}
}

// storedKeyID waits for the client to have saved its session and returns
// the auth key id in it, in hex.
func storedKeyID(t *testing.T, sessionFile string) string {
	t.Helper()
	var id string
	waitFor(t, 5*time.Second, func() error {
		l := session.Loader{Storage: &session.FileStorage{Path: sessionFile}}
		data, err := l.Load(context.Background())
		if err != nil {
			return fmt.Errorf("load session: %w", err)
		}
		if len(data.AuthKeyID) != 8 || data.DC != 1 {
			return fmt.Errorf("session: dc %d, auth key id %x; want dc 1 and a key", data.DC, data.AuthKeyID)
		}
		id = fmt.Sprintf("%x", data.AuthKeyID)
		return nil
	})
	return id
}

// wantMetric checks that the series of name matching labels sum to want.
func wantMetric(n *node, name string, labels map[string]string, want float64) error {
	m, err := scrape(n)
	if err != nil {
		return err
	}
	if v, _ := m.get(name, labels); v != want {
		return fmt.Errorf("%s%v = %v, want %v", name, labels, v, want)
	}
	return nil
}

// TestDataDirLocked starts a second node on a directory in use: it must
// refuse, saying why, and leave the first node serving.
func TestDataDirLocked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	n := startNode(t, dir)

	r := runCmd(t, startTimeout, "run",
		"--data-dir", dir,
		"--client-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0",
		"--log-format", "json")
	if r.code == 0 || !strings.Contains(r.stderr, "data directory is in use") || strings.Contains(r.stderr, "panic:") {
		t.Errorf("second node on the same data dir: %v\nwant a non-zero exit, without a panic, saying the data directory is in use", r)
	}

	callGetConfig(t, newClient(t, n, mtclient.Intermediate, ""), n)
	if code, body, err := httpGet(n, "/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("first node /healthz: %d %q %v", code, body, err)
	}
}

// TestGracefulShutdown sends SIGTERM while a client is connected: the node
// must exit 0 promptly and leave a data dir the next start opens with the
// same key and the client's session.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sessionFile := filepath.Join(t.TempDir(), "session.json")
	n1 := startNode(t, dir)

	// Keep a client connected across the signal.
	c := newClient(t, n1, mtclient.Intermediate, sessionFile)
	ready := make(chan struct{})
	clientDone := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	go func() {
		clientDone <- c.Run(ctx, func(ctx context.Context) error {
			if err := getConfig(ctx, c, n1); err != nil {
				return err
			}
			close(ready)
			<-ctx.Done()
			return nil
		})
	}()
	select {
	case <-ready:
	case err := <-clientDone:
		t.Fatalf("client: %v", err)
	}

	start := time.Now()
	st := n1.stop(syscall.SIGTERM, stopTimeout)
	if st.ExitCode() != 0 {
		t.Errorf("after SIGTERM: %v, want exit 0", st)
	}
	t.Logf("SIGTERM to exit with a client connected: %v", time.Since(start).Round(time.Millisecond))
	cancel()
	select {
	case <-clientDone:
	case <-time.After(stopTimeout):
		t.Fatal("client did not stop after cancel")
	}

	n2 := startNode(t, dir)
	if n2.Fingerprint != n1.Fingerprint {
		t.Errorf("server key changed over restart: %s, then %s", n1.Fingerprint, n2.Fingerprint)
	}
	callGetConfig(t, newClient(t, n2, mtclient.Intermediate, sessionFile), n2)
	if err := wantMetric(n2, "mtnode_handshakes_total", map[string]string{"result": "ok"}, 0); err != nil {
		t.Errorf("restarted node: %v", err)
	}
}

// TestCommandLine checks exit codes and messages of the commands that do not
// serve.
func TestCommandLine(t *testing.T) {
	t.Parallel()
	const timeout = 10 * time.Second

	t.Run("unknown config key", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		cfg := filepath.Join(dir, "mtnode.toml")
		if err := os.WriteFile(cfg, []byte("dc = 1\nbogus_setting = 7\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := runCmd(t, timeout, "run", "--config", cfg,
			"--data-dir", filepath.Join(dir, "data"), "--client-addr", "127.0.0.1:0", "--http-addr", "")
		if r.code != 2 || !strings.Contains(r.stderr, "bogus_setting") {
			t.Errorf("%v\nwant exit 2 naming bogus_setting", r)
		}
		if _, err := os.Stat(filepath.Join(dir, "data")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a rejected config created the data dir (stat: %v)", err)
		}
	})
	t.Run("bad client addr", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		r := runCmd(t, timeout, "run", "--data-dir", dir, "--client-addr", "no-port-here")
		if r.code != 2 || !strings.Contains(r.stderr, "client_addr") || !strings.Contains(r.stderr, "no-port-here") {
			t.Errorf("%v\nwant exit 2 naming client_addr and its value", r)
		}
	})
	t.Run("client addr in use", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		r := runCmd(t, startTimeout, "run", "--data-dir", t.TempDir(),
			"--client-addr", ln.Addr().String(), "--http-addr", "", "--log-format", "json")
		if r.code != 1 || !strings.Contains(r.stderr, "listen client_addr") || strings.Contains(r.stderr, "panic:") {
			t.Errorf("%v\nwant exit 1, without a panic, saying client_addr cannot be listened on", r)
		}
	})
	t.Run("version", func(t *testing.T) {
		t.Parallel()
		r := runCmd(t, timeout, "version")
		if r.code != 0 || !regexp.MustCompile(`^mtnode \S+\n$`).MatchString(r.stdout) {
			t.Errorf("%v\nwant exit 0 and \"mtnode VERSION\"", r)
		}
	})
	t.Run("help", func(t *testing.T) {
		t.Parallel()
		r := runCmd(t, timeout, "help")
		if r.code != 0 || !strings.Contains(r.stdout, "Usage:") || !strings.Contains(r.stdout, "mtnode run") {
			t.Errorf("%v\nwant exit 0 and usage on stdout", r)
		}
	})
	t.Run("run help", func(t *testing.T) {
		t.Parallel()
		r := runCmd(t, timeout, "run", "-h")
		if r.code != 0 || !strings.Contains(r.stderr, "-client-addr") {
			t.Errorf("%v\nwant exit 0 and the flags", r)
		}
	})
	t.Run("unknown command", func(t *testing.T) {
		t.Parallel()
		r := runCmd(t, timeout, "frobnicate")
		if r.code != 2 || !strings.Contains(r.stderr, `unknown command "frobnicate"`) {
			t.Errorf("%v\nwant exit 2 naming the command", r)
		}
	})
	t.Run("no command", func(t *testing.T) {
		t.Parallel()
		r := runCmd(t, timeout)
		if r.code != 2 || !strings.Contains(r.stderr, "Usage:") {
			t.Errorf("%v\nwant exit 2 and usage", r)
		}
	})
}

// unknownRequest is a request whose constructor id is in no schema.
type unknownRequest struct{ id uint32 }

func (r unknownRequest) Encode(b *bin.Buffer) error {
	b.PutID(r.id)
	return nil
}

// noResult is never decoded: the calls it is used for must fail.
type noResult struct{}

func (noResult) Decode(*bin.Buffer) error { return errors.New("unexpected result") }

// TestUnknownMethod calls what the server does not serve, a schema method
// and a constructor of no schema: both must fail with a 400 rpc_error on a
// connection that keeps serving.
func TestUnknownMethod(t *testing.T) {
	t.Parallel()
	const bogusID = 0x0badc0de
	if _, ok := tg.TypesMap()[bogusID]; ok {
		t.Fatalf("%#x is a tg constructor; pick another", bogusID)
	}
	if _, ok := mt.TypesMap()[bogusID]; ok {
		t.Fatalf("%#x is an mt constructor; pick another", bogusID)
	}
	n := startNode(t, t.TempDir())
	c := newClient(t, n, mtclient.Intermediate, "")
	err := runClient(c, func(ctx context.Context) error {
		if err := getConfig(ctx, c, n); err != nil {
			return err
		}
		// A schema method far from any planned issue: stories.
		_, err := c.API().StoriesGetAllStories(ctx, &tg.StoriesGetAllStoriesRequest{})
		if e, ok := tgerr.As(err); !ok || e.Code != 400 || e.Type != "METHOD_NOT_SUPPORTED" {
			t.Errorf("stories.getAllStories: %v; want rpc_error 400 METHOD_NOT_SUPPORTED", err)
		}
		err = c.Invoke(ctx, unknownRequest{id: bogusID}, noResult{})
		if e, ok := tgerr.As(err); !ok || e.Code != 400 || e.Type != "INPUT_METHOD_INVALID" {
			t.Errorf("unknown constructor: %v; want rpc_error 400 INPUT_METHOD_INVALID", err)
		}
		return getConfig(ctx, c, n)
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() error {
		m, err := scrape(n)
		if err != nil {
			return err
		}
		if v, _ := m.get("mtnode_connections_total", nil); v != 1 {
			return fmt.Errorf("mtnode_connections_total = %v, want 1: the client had to reconnect", v)
		}
		if v, _ := m.get("mtnode_rpc_total", map[string]string{"method": "stories.getAllStories", "result": "METHOD_NOT_SUPPORTED"}); v != 1 {
			return fmt.Errorf("mtnode_rpc_total{method=\"stories.getAllStories\",result=\"METHOD_NOT_SUPPORTED\"} = %v, want 1", v)
		}
		if v, _ := m.get("mtnode_rpc_total", map[string]string{"method": "help.getConfig", "result": "ok"}); v < 2 {
			return fmt.Errorf("mtnode_rpc_total{method=\"help.getConfig\",result=\"ok\"} = %v, want >= 2", v)
		}
		return nil
	})
}

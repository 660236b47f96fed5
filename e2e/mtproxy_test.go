package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gotd/td/telegram"
	"github.com/gotd/td/telegram/auth"
	"github.com/gotd/td/telegram/dcs"
	"github.com/gotd/td/tg"

	"github.com/mtnode/mtnode/internal/mtclient"
)

// frontDomain is the site FakeTLS clients pretend to visit; the test's
// HTTPS server stands in for it.
const frontDomain = "front.example"

// proxySecrets are one secret of each kind, as proxy links carry them.
type proxySecrets struct {
	plain, dd, ee []byte
}

func newProxySecrets(t *testing.T) proxySecrets {
	t.Helper()
	key := func() []byte {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	return proxySecrets{
		plain: key(),
		dd:    append([]byte{0xdd}, key()...),
		ee:    append(append([]byte{0xee}, key()...), frontDomain...),
	}
}

// proxyKind is a secret and the test number that signs up through it.
type proxyKind struct {
	name   string
	secret []byte
	phone  string
}

// kinds pairs each secret with a test number: prefix (8 digits) then 01,
// 02, 03.
func (s proxySecrets) kinds(prefix string) []proxyKind {
	return []proxyKind{{"plain", s.plain, prefix + "01"}, {"dd", s.dd, prefix + "02"}, {"ee", s.ee, prefix + "03"}}
}

// signUpThrough signs each kind's number up through n's MTProxy port with
// its secret, keeping the session in dir/<kind>.json, and returns the
// users.
func signUpThrough(t *testing.T, n *node, kinds []proxyKind, dir string) []*tg.User {
	t.Helper()
	users := make([]*tg.User, len(kinds))
	for i, k := range kinds {
		c := proxyClient(t, n, k.secret, filepath.Join(dir, k.name+".json"))
		if err := runClient(c, func(ctx context.Context) error {
			flow := auth.NewFlow(auth.TestUser(k.phone, 1), auth.SendCodeOptions{})
			if err := c.Auth().IfNecessary(ctx, flow); err != nil {
				return fmt.Errorf("sign up through the %s secret: %w", k.name, err)
			}
			var err error
			users[i], err = c.Self(ctx)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	return users
}

func (s proxySecrets) config() string {
	return strings.Join([]string{hex.EncodeToString(s.plain), hex.EncodeToString(s.dd), hex.EncodeToString(s.ee)}, ",")
}

// startFront runs the HTTPS server that stands in for the front site,
// with a certificate for frontDomain.
func startFront(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "the real site")
	}))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// proxyDoc is a node's configuration with secrets and front.
func proxyDoc(secrets string, front *httptest.Server) string {
	return fmt.Sprintf("[auth]\ntest_numbers = \"on\"\n[proxy]\nsecrets = %q\nfront = %q\n", secrets, front.Listener.Addr().String())
}

// startProxyNode runs a standalone node whose port takes secrets and
// fronts to front; cfg is its configuration file, for reloads.
func startProxyNode(t *testing.T, front *httptest.Server, secrets proxySecrets) (n *node, cfg string) {
	t.Helper()
	cfg = filepath.Join(t.TempDir(), "mtnode.toml")
	if err := os.WriteFile(cfg, []byte(proxyDoc(secrets.config(), front)), 0o644); err != nil {
		t.Fatal(err)
	}
	n = launchNode(t, t.TempDir(), "--config", cfg)
	n.waitServing(30 * time.Second)
	return n, cfg
}

// proxyClient builds a gotd client that reaches n through its MTProxy
// port with secret, as an app given a proxy link does.
func proxyClient(t *testing.T, n *node, secret []byte, sessionFile string) *telegram.Client {
	t.Helper()
	r, err := dcs.MTProxy(n.ClientAddr, secret, dcs.MTProxyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := mtclient.New(mtclient.Options{
		Addr: n.ClientAddr, PublicKeyFile: n.PublicKey, SessionFile: sessionFile,
		Telegram: telegram.Options{Resolver: r},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestMTProxyNodePort: a node's own client port is an MTProxy. gotd
// clients with a plain, a dd and an ee secret sign up there and chat,
// live; a TLS client asking for the front's domain gets the front's page
// and certificate through the port; a wrong secret is fronted.
func TestMTProxyNodePort(t *testing.T) {
	t.Parallel()
	front := startFront(t)
	secrets := newProxySecrets(t)
	n, cfg := startProxyNode(t, front, secrets)

	dir := t.TempDir()
	kinds := secrets.kinds("99966120")
	users := signUpThrough(t, n, kinds, dir)
	m, err := scrape(n)
	if err != nil {
		t.Fatal(err)
	}
	// gotd speaks padded intermediate inside every obfuscated2 secret (a
	// FIXME in its dcs.MTProxy), so plain and dd both count as
	// padded-secret.
	for _, kind := range []string{"padded-secret", "faketls"} {
		if v, _ := m.get("mtnode_proxy_connections_total", map[string]string{"kind": kind}); v == 0 {
			t.Errorf("no %s connection counted", kind)
		}
	}

	// The ee user, online through the proxy, gets the plain user's message
	// live.
	eeSess := filepath.Join(dir, "ee.json")
	r, err := dcs.MTProxy(n.ClientAddr, secrets.ee, dcs.MTProxyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	online := startOnlineAt(t, n, 1, eeSess, users[2].ID, r)
	defer online.stop(t)
	c := proxyClient(t, n, secrets.plain, filepath.Join(dir, "plain.json"))
	if err := runClient(c, func(ctx context.Context) error {
		peer, err := importPhone(ctx, c.API(), kinds[2].phone)
		if err != nil {
			return err
		}
		_, err = c.API().MessagesSendMessage(ctx, &tg.MessagesSendMessageRequest{Peer: peer, Message: "through the proxy", RandomID: 42})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, func() error {
		if online.times("through the proxy") != 1 {
			return fmt.Errorf("the ee user was not handed the message live")
		}
		return nil
	})

	// Fronting: a TLS client naming the front's domain reaches the front
	// through the node's port and gets its page and certificate.
	pool := x509.NewCertPool()
	pool.AddCert(front.Certificate())
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "example.com"},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, n.ClientAddr)
		},
	}}
	resp, err := hc.Get("https://example.com/")
	if err != nil {
		t.Fatalf("a browser through the node's port: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "the real site" || resp.TLS == nil || !resp.TLS.PeerCertificates[0].Equal(front.Certificate()) {
		t.Fatalf("through the node's port: %q, want the front's page and certificate", body)
	}

	// A wrong secret is fronted, not served.
	wrong := append([]byte{0xee}, make([]byte, 16)...)
	wrong = append(wrong, frontDomain...)
	wc := proxyClient(t, n, wrong, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err = wc.Run(ctx, func(ctx context.Context) error { return nil })
	cancel()
	if err == nil {
		t.Fatal("a client with a wrong secret was served")
	}
	waitFor(t, 10*time.Second, func() error {
		m, err := scrape(n)
		if err != nil {
			return err
		}
		if v, _ := m.get("mtnode_proxy_rejected_total", map[string]string{"reason": "bad-hmac"}); v == 0 {
			return fmt.Errorf("no bad-hmac rejection counted")
		}
		if v, _ := m.get("mtnode_proxy_fronted_total", nil); v < 2 {
			return fmt.Errorf("%v connections fronted, want the browser's and the wrong secret's", v)
		}
		return nil
	})

	// A replayed FakeTLS ClientHello is fronted, not served: record the
	// hello a real client sends (through a recording relay), then send it
	// again.
	// So is a replayed obfuscated2 header of a dd secret.
	first := recordOpening(t, n, secrets.ee, filepath.Join(dir, "ee.json"))
	if len(first) < 5 || first[0] != 0x16 {
		t.Fatalf("recorded %d bytes, not a TLS record", len(first))
	}
	hello := first[:min(len(first), 5+(int(first[3])<<8|int(first[4])))]
	first = recordOpening(t, n, secrets.dd, filepath.Join(dir, "dd.json"))
	if len(first) < 64 {
		t.Fatalf("recorded %d bytes, not an obfuscated2 header", len(first))
	}
	for i, opening := range [][]byte{hello, first[:64]} {
		rc, err := net.DialTimeout("tcp", n.ClientAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		rc.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := rc.Write(opening); err != nil {
			t.Fatal(err)
		}
		rc.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, rc) // the front's answer, or nothing
		rc.Close()
		waitFor(t, 10*time.Second, func() error {
			m, err := scrape(n)
			if err != nil {
				return err
			}
			if v, _ := m.get("mtnode_proxy_rejected_total", map[string]string{"reason": "replay"}); v != float64(i+1) {
				return fmt.Errorf("%v replays refused, want %d", v, i+1)
			}
			return nil
		})
	}

	// Secrets are revoked by a reload: without the plain secret in the
	// file, SIGHUP makes its clients fail while the others go on.
	doc := proxyDoc(hex.EncodeToString(secrets.dd)+","+hex.EncodeToString(secrets.ee), front)
	if err := os.WriteFile(cfg, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := n.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() error {
		c := proxyClient(t, n, secrets.plain, filepath.Join(dir, "plain.json"))
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := c.Run(ctx, func(ctx context.Context) error {
			_, err := c.Self(ctx)
			return err
		}); err == nil {
			return errors.New("the revoked plain secret still works")
		}
		return nil
	})
	c = proxyClient(t, n, secrets.dd, filepath.Join(dir, "dd.json"))
	if err := runClient(c, func(ctx context.Context) error {
		_, err := c.Self(ctx)
		return err
	}); err != nil {
		t.Fatalf("the dd secret after the reload: %v", err)
	}
}

// recordOpening signs in through n's port with a proxy secret via a relay
// that records what the client sends, and returns the first bytes it sent
// (up to 32 KiB): the opening of its first connection, a ClientHello for
// an ee secret, an obfuscated2 header for the others.
func recordOpening(t *testing.T, n *node, secret []byte, sessionFile string) []byte {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var first []byte
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", n.ClientAddr)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { io.Copy(c, up); c.Close() }()
				buf := make([]byte, 32<<10)
				for {
					k, err := c.Read(buf)
					if k > 0 {
						mu.Lock()
						if len(first) < 32<<10 {
							first = append(first, buf[:k]...)
						}
						mu.Unlock()
						if _, err := up.Write(buf[:k]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	r, err := dcs.MTProxy(ln.Addr().String(), secret, dcs.MTProxyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := mtclient.New(mtclient.Options{
		Addr: n.ClientAddr, PublicKeyFile: n.PublicKey, SessionFile: sessionFile,
		Telegram: telegram.Options{Resolver: r},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := runClient(c, func(ctx context.Context) error {
		_, err := c.Self(ctx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(first)
}

// TestMTProxyProbesLeaveNothing sends two rounds of 10,000 refused probes
// (HTTP requests) to a node's port: a few are fronted within the front's
// rate limit, the rest closed by it. Afterwards the node has as many
// goroutines as before, and the second round adds no memory to the first.
func TestMTProxyProbesLeaveNothing(t *testing.T) {
	t.Parallel()
	n, _ := startProxyNode(t, startFront(t), newProxySecrets(t))
	gauge := func(name string) float64 {
		m, err := scrape(n)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := m.get(name, nil)
		return v
	}
	probe := func() {
		c, err := net.DialTimeout("tcp", n.ClientAddr, 5*time.Second)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
		io.Copy(io.Discard, c)
	}
	const probes, workers = 10000, 32
	round := func() {
		var wg sync.WaitGroup
		next := make(chan struct{}, probes)
		for range probes {
			next <- struct{}{}
		}
		close(next)
		deadline := time.Now().Add(3 * time.Minute)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range next {
					if time.Now().After(deadline) {
						return
					}
					probe()
				}
			}()
		}
		wg.Wait()
	}
	g0 := gauge("go_goroutines")
	// The first round takes the heap to its working size (the runtime
	// keeps freed memory a while); a second must not add to it, and
	// neither leaves goroutines behind.
	round()
	settled := func() {
		waitFor(t, 30*time.Second, func() error {
			if g := gauge("go_goroutines"); g > g0+5 {
				return fmt.Errorf("%v goroutines after the probes, %v before", g, g0)
			}
			return nil
		})
	}
	settled()
	// The heap's live bytes, after a collection (the pprof heap endpoint
	// runs one with gc=1): garbage not collected yet is not growth.
	live := func() float64 {
		if code, _, err := httpGet(n, "/debug/pprof/heap?gc=1"); err != nil || code != 200 {
			t.Fatalf("heap profile: %d %v", code, err)
		}
		return gauge("go_memstats_heap_alloc_bytes")
	}
	heap1 := live()
	round()
	settled()
	if heap := live(); heap > heap1+4<<20 {
		t.Errorf("live heap grew from %.1f to %.1f MB over the second %d probes", heap1/1e6, heap/1e6, probes)
	}
	if v := gauge("mtnode_proxy_rejected_total"); v < 2*probes {
		t.Errorf("%v probes refused, want at least %d", v, 2*probes)
	}
}

// TestMTProxyRelay runs `mtnode proxy`, storage-less, in front of a 3-node
// DC it learns through the WAN pool. gotd clients with each kind of
// secret sign up and chat through it, live; killing a node of the DC
// interrupts them only until they reconnect.
func TestMTProxyRelay(t *testing.T) {
	t.Parallel()
	d := newDC(t, "")
	d.form(3)
	secrets := newProxySecrets(t)
	cfg := filepath.Join(t.TempDir(), "proxy.toml")
	doc := fmt.Sprintf("[cluster]\nsecrets_dir = %q\n[proxy]\nsecrets = %q\n", d.secrets, secrets.config())
	if err := os.WriteFile(cfg, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	px := launchIn(t, nil, t.TempDir(), "proxy", "--config", cfg,
		"--mesh-addr", freeAddr(t, "udp"), "--join", d.id(0)+"@"+d.mesh[0])
	px.waitServing(30 * time.Second)
	px.PublicKey = d.nodes[0].PublicKey // the DC's key: the relay has none
	waitFor(t, 30*time.Second, func() error {
		if code, body, err := httpGet(px, "/healthz"); err != nil || code != 200 {
			return fmt.Errorf("proxy health: %d %q %v", code, body, err)
		}
		return nil
	})

	dir := t.TempDir()
	kinds := secrets.kinds("99966130")
	users := signUpThrough(t, px, kinds, dir)
	r, err := dcs.MTProxy(px.ClientAddr, secrets.ee, dcs.MTProxyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	online := startOnlineAt(t, px, 1, filepath.Join(dir, "ee.json"), users[2].ID, r)
	defer online.stop(t)
	send := func(text string, rid int64) error {
		c := proxyClient(t, px, secrets.dd, filepath.Join(dir, "dd.json"))
		return runClient(c, func(ctx context.Context) error {
			peer, err := importPhone(ctx, c.API(), kinds[2].phone)
			if err != nil {
				return err
			}
			_, err = c.API().MessagesSendMessage(ctx, &tg.MessagesSendMessageRequest{Peer: peer, Message: text, RandomID: rid})
			return err
		})
	}
	if err := send("relayed", 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, func() error {
		if online.times("relayed") != 1 {
			return fmt.Errorf("the ee user was not handed the relayed message live")
		}
		return nil
	})
	// Relayed streams take the mesh's TCP lane, not QUIC.
	if m, err := scrape(px); err != nil {
		t.Fatal(err)
	} else if v, _ := m.get("mtnode_proxy_relayed_total", map[string]string{"result": "ok", "path": "tcp"}); v == 0 {
		quic, _ := m.get("mtnode_proxy_relayed_total", map[string]string{"result": "ok", "path": "quic"})
		t.Errorf("the relay carried no client over the TCP lane (%v over QUIC)", quic)
	}

	// Each node of the DC dies in turn (kill -9) and comes back; one of
	// them carries the online client's relayed connection. Clients
	// reconnect through the relay to another node and go on.
	for i := range d.nodes {
		d.nodes[i].kill()
		text := fmt.Sprintf("after killing %s", d.id(i))
		waitFor(t, 60*time.Second, func() error {
			return send(text, int64(10+i))
		})
		waitFor(t, 30*time.Second, func() error {
			if online.times(text) != 1 {
				return fmt.Errorf("the online ee user did not get %q", text)
			}
			return nil
		})
		d.restart(i)
	}
}

package main

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gotd/td/mtproxy"
	"github.com/gotd/td/telegram/dcs"

	"github.com/mtnode/mtnode/config"
)

// counter is a deterministic stand-in for crypto/rand: bytes 1, 2, 3, ...
type counter struct{ n byte }

func (c *counter) Read(p []byte) (int, error) {
	for i := range p {
		c.n++
		p[i] = c.n
	}
	return len(p), nil
}

func proxySecret(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = runProxySecret(args, env, &counter{}, &out, &errb)
	return code, out.String(), errb.String()
}

func TestProxySecretOutput(t *testing.T) {
	code, out, errs := proxySecret(t, nil, "--dd", "--server", "203.0.113.7", "--port", "443", "--count", "2")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	const s1 = "dd0102030405060708090a0b0c0d0e0f10"
	const s2 = "dd1112131415161718191a1b1c1d1e1f20"
	want := "# 1/2 dd: obfuscated2, padded intermediate\n" +
		"secret  " + s1 + "\n" +
		"tg      tg://proxy?server=203.0.113.7&port=443&secret=" + s1 + "\n" +
		"t.me    https://t.me/proxy?server=203.0.113.7&port=443&secret=" + s1 + "\n" +
		"\n" +
		"# 2/2 dd: obfuscated2, padded intermediate\n" +
		"secret  " + s2 + "\n" +
		"tg      tg://proxy?server=203.0.113.7&port=443&secret=" + s2 + "\n" +
		"t.me    https://t.me/proxy?server=203.0.113.7&port=443&secret=" + s2 + "\n" +
		"\n" +
		"# add to [proxy] in the config (after any secrets already there), or to MTNODE_PROXY_SECRETS:\n" +
		"secrets = \"" + s1 + "," + s2 + "\"\n"
	if out != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out, want)
	}
}

// links returns the tg:// and t.me links printed for each secret.
func links(t *testing.T, out string) (tg, web []string) {
	t.Helper()
	for line := range strings.Lines(out) {
		if v, ok := strings.CutPrefix(line, "tg      "); ok {
			tg = append(tg, strings.TrimSpace(v))
		}
		if v, ok := strings.CutPrefix(line, "t.me    "); ok {
			web = append(web, strings.TrimSpace(v))
		}
	}
	if len(tg) == 0 || len(tg) != len(web) {
		t.Fatalf("links not found in:\n%s", out)
	}
	return tg, web
}

// TestProxySecretLinksGotd reads every printed link as a client would
// and hands its secret to gotd's MTProxy dialer, for each kind.
func TestProxySecretLinksGotd(t *testing.T) {
	for _, c := range []struct {
		args   []string
		typ    mtproxy.SecretType
		domain string
	}{
		{nil, mtproxy.Simple, ""},
		{[]string{"--dd"}, mtproxy.Secured, ""},
		{[]string{"--fake-tls", "www.example.com"}, mtproxy.TLS, "www.example.com"},
	} {
		args := append([]string{"--server", "2001:db8::1", "--port", "8443", "--count", "3"}, c.args...)
		code, out, errs := proxySecret(t, nil, args...)
		if code != 0 {
			t.Fatalf("%q: exit %d: %s", args, code, errs)
		}
		tg, web := links(t, out)
		for i := range tg {
			for _, link := range []string{tg[i], web[i]} {
				u, err := url.Parse(link)
				if err != nil {
					t.Fatal(err)
				}
				if !(u.Scheme == "tg" && u.Host == "proxy") && !(u.Scheme == "https" && u.Host == "t.me" && u.Path == "/proxy") {
					t.Fatalf("link %s", link)
				}
				q := u.Query()
				if q.Get("server") != "2001:db8::1" || q.Get("port") != "8443" {
					t.Fatalf("link %s: server %q port %q", link, q.Get("server"), q.Get("port"))
				}
				raw, err := hex.DecodeString(q.Get("secret"))
				if err != nil {
					t.Fatalf("link %s: %v", link, err)
				}
				s, err := mtproxy.ParseSecret(raw)
				if err != nil || s.Type != c.typ || s.CloakHost != c.domain || len(s.Secret) != 16 {
					t.Fatalf("link %s: gotd reads %+v, %v", link, s, err)
				}
				addr := net.JoinHostPort(q.Get("server"), q.Get("port"))
				if _, err := dcs.MTProxy(addr, raw, dcs.MTProxyOptions{}); err != nil {
					t.Fatalf("link %s: gotd's dialer: %v", link, err)
				}
			}
		}
		// The printed config line loads, and holds exactly these secrets.
		_, line, ok := strings.Cut(out, "secrets = ")
		if !ok {
			t.Fatalf("no secrets line:\n%s", out)
		}
		list, err := strconv.Unquote(strings.TrimSpace(line))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(nil, []string{"MTNODE_PROXY_SECRETS=" + list})
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.ProxySecrets(); len(got) != 3 || !strings.Contains(tg[2], got[2].Hex()) {
			t.Fatalf("config holds %v", got)
		}
	}
}

func TestProxySecretAddressFromConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mtnode.toml")
	if err := os.WriteFile(path, []byte("public_addr = \"198.51.100.4:8443\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := proxySecret(t, nil, "--config", path)
	if code != 0 || !strings.Contains(out, "tg://proxy?server=198.51.100.4&port=8443&secret=") {
		t.Fatalf("exit %d: %s%s", code, out, errs)
	}
	// MTNODE_CONFIG and MTNODE_* apply as for `mtnode run`; flags win.
	env := []string{config.EnvConfig + "=" + path, "MTNODE_PUBLIC_ADDR=[2001:db8::7]:443"}
	code, out, errs = proxySecret(t, env, "--port", "80")
	if code != 0 || !strings.Contains(out, "tg://proxy?server=2001%3Adb8%3A%3A7&port=80&secret=") {
		t.Fatalf("exit %d: %s%s", code, out, errs)
	}
	code, out, errs = proxySecret(t, env, "--server", "proxy.example.net")
	if code != 0 || !strings.Contains(out, "tg://proxy?server=proxy.example.net&port=443&secret=") {
		t.Fatalf("exit %d: %s%s", code, out, errs)
	}
}

func TestProxySecretErrors(t *testing.T) {
	badConfig := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(badConfig, []byte("dc = 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		env  []string
		args []string
		want string
	}{
		{nil, []string{"--port", "443"}, "no address for the links: give --server and --port, or set public_addr"},
		{nil, []string{"--server", "x.example"}, "no address for the links"},
		{nil, []string{"--config", badConfig, "--server", "x.example"}, "dc = 0: must be between 1 and 1000"},
		{[]string{"MTNODE_NOPE=1"}, []string{"--port", "1"}, "MTNODE_NOPE: unknown variable"},
		{nil, []string{"--dd", "--fake-tls", "x.example", "--server", "x.example", "--port", "1"}, "--dd and --fake-tls exclude each other"},
		{nil, []string{"--fake-tls", "https://x.example", "--server", "x.example", "--port", "1"}, `--fake-tls: domain "https://x.example": want a host name without a scheme`},
		{nil, []string{"--fake-tls", "x.example:443", "--server", "x.example", "--port", "1"}, "without a port"},
		{nil, []string{"--fake-tls", strings.Repeat("a.", 127) + "b", "--server", "x.example", "--port", "1"}, "longer than 253"},
		{nil, []string{"--server", "x.example:443", "--port", "1"}, `--server: "x.example:443": want a host name or IP alone`},
		{nil, []string{"--server", "tg://x", "--port", "1"}, "--server"},
		{nil, []string{"--server", "x y", "--port", "1"}, "not an IP address or a host name"},
		{nil, []string{"--server", "x.example", "--port", "70000"}, "--port 70000"},
		{nil, []string{"--server", "x.example", "--port", "1", "--count", "0"}, "--count 0: want 1..64"},
		{nil, []string{"--server", "x.example", "--port", "1", "--count", "65"}, "--count 65"},
		{nil, []string{"--server", "x.example", "--port", "1", "extra"}, "unexpected arguments"},
	} {
		code, out, errs := proxySecret(t, c.env, c.args...)
		if code != 2 || out != "" || !strings.Contains(errs, c.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %q", c.args, code, out, errs, c.want)
		}
	}

	var out, errb bytes.Buffer
	failing := readerFunc(func([]byte) (int, error) { return 0, errors.New("no entropy") })
	if code := runProxySecret([]string{"--server", "x.example", "--port", "1"}, nil, failing, &out, &errb); code != 1 || !strings.Contains(errb.String(), "no entropy") || out.Len() != 0 {
		t.Fatalf("failing random: exit %d, %q, %q", code, out.String(), errb.String())
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestProxyDispatch(t *testing.T) {
	var out, errb bytes.Buffer
	// The relay needs the federation's secrets directory.
	if code := run([]string{"proxy", "--client-addr", "127.0.0.1:0", "--http-addr", ""}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "needs cluster.secrets_dir") {
		t.Fatalf("mtnode proxy without --cluster: exit %d, %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"proxy", "--listen", ":443"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "-listen") {
		t.Fatalf("mtnode proxy --listen: exit %d, %q", code, errb.String())
	}
	out.Reset()
	if code := run([]string{"proxy", "secret", "--server", "x.example", "--port", "443"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "tg://proxy?server=x.example&port=443&secret=") {
		t.Fatalf("mtnode proxy secret: exit %d, %q, %q", code, out.String(), errb.String())
	}
	out.Reset()
	if code := run([]string{"help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "mtnode proxy secret") {
		t.Fatalf("usage lacks proxy secret: %q", out.String())
	}
}

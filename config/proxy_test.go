package config

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/gotd/td/mtproxy"
	"github.com/gotd/td/proto/codec"
)

// testSecrets holds one secret of each kind: plain, dd, and ee for
// www.example.com.
const (
	testPlain   = "0123456789abcdef0123456789abcdef"
	testDD      = "ddfedcba9876543210fedcba9876543210"
	testEE      = "ee00112233445566778899aabbccddeeff" + "7777772e6578616d706c652e636f6d"
	testSecrets = testPlain + "," + testDD + "," + testEE
)

func mustKey(t *testing.T, s string) [16]byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 16 {
		t.Fatalf("bad test key %q", s)
	}
	return [16]byte(b)
}

func TestParseProxySecrets(t *testing.T) {
	got, err := ParseProxySecrets(" " + testPlain + " ,, " + strings.ToUpper(testDD) + ",\n" + testEE + ", ")
	if err != nil {
		t.Fatal(err)
	}
	want := []ProxySecret{
		{Kind: ProxyPlain, Key: mustKey(t, testPlain)},
		{Kind: ProxyDD, Key: mustKey(t, testDD[2:])},
		{Kind: ProxyEE, Key: mustKey(t, testEE[2:34]), Domain: "www.example.com"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %#v\nwant %#v", got, want)
	}
	// Hex is the canonical (lower-case) form and parses back to the same.
	for i, s := range got {
		if h := s.Hex(); h != []string{testPlain, testDD, testEE}[i] {
			t.Errorf("Hex() = %q", h)
		}
		back, err := ParseProxySecrets(s.Hex())
		if err != nil || len(back) != 1 || back[0] != s {
			t.Errorf("%v: round trip %v, %v", s, back, err)
		}
	}
	if got, err := ParseProxySecrets(" , "); err != nil || got != nil {
		t.Fatalf("empty list: %v, %v", got, err)
	}
}

func TestParseProxySecretsRejects(t *testing.T) {
	ee := func(domain string) string { return "ee" + testPlain + hex.EncodeToString([]byte(domain)) }
	many := make([]string, MaxProxySecrets+1)
	for i := range many {
		many[i] = fmt.Sprintf("%032x", i+1)
	}
	for _, c := range []struct{ in, reason string }{
		{"0123456789abcdef0123456789abcdeg", "secret 1: not hex (character 32)"},
		{testPlain + ",dd" + testPlain[:31], "secret 2: odd number of hex digits (33)"},
		{testPlain[:30], "secret 1: 30 hex digits is too short"},
		{"ab" + testPlain, `secret 1: 34 hex digits starting "ab": only dd and ee prefixes exist`},
		{"dd" + testPlain + "00", "secret 1: 36 hex digits is too long for a dd secret"},
		{"ee" + testPlain, "secret 1: an ee secret needs a FakeTLS domain"},
		{ee("https://example.com"), `secret 1: domain "https://example.com": want a host name without a scheme`},
		{ee("example.com:443"), `secret 1: domain "example.com:443": want a host name without a port`},
		{ee("example.com/x"), "without a path"},
		{ee("192.0.2.1"), "not an IP address"},
		{ee("[2001:db8::1]"), "not an IP address"},
		{ee("exa mple.com"), "want only letters, digits"},
		{ee("example.com."), "labels between dots must be 1..63"},
		{ee("-example.com"), "may not start or end with '-'"},
		{ee("example.123"), "the last label may not be all digits"},
		{ee("a\nb"), `domain "a\nb"`},
		{ee(strings.Repeat("a", 64) + ".com"), "1..63"},
		{ee(strings.Repeat("abcdefg.", 32) + "com"), "domain is 259 bytes, longer than 253"},
		{strings.Repeat("0", 32), "secret 1: key is all zero"},
		{testPlain + ",dd" + testPlain, "secret 2: same key as secret 1"},
		{testEE + "," + ee("other.example") + "," + testEE[2:34], "secret 3: same key as secret 1"},
		{strings.Join(many, ","), "more than 64 secrets"},
	} {
		_, err := ParseProxySecrets(c.in)
		if err == nil || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%.40q…: err = %v, want %q", c.in, err, c.reason)
			continue
		}
		for _, e := range SplitAddrs(c.in) {
			if len(e) >= 32 && strings.Contains(err.Error(), e[:32]) {
				t.Errorf("error %q shows secret text", err)
			}
		}
	}
	if _, err := ParseProxySecrets(strings.Join(many[:MaxProxySecrets], ",")); err != nil {
		t.Fatalf("%d secrets: %v", MaxProxySecrets, err)
	}
}

func TestValidateProxyDomain(t *testing.T) {
	for _, d := range []string{"example.com", "www.Example.COM", "localhost", "xn--e1afmkfd.xn--p1ai", "a-b.c-d.e1", strings.Repeat("a.", 126) + "b"} {
		if err := ValidateProxyDomain(d); err != nil {
			t.Errorf("%q: %v", d, err)
		}
	}
	for _, d := range []string{"", "1.2.3.4", "::1", "http://x.com", "x.com:443", "x..com", ".x.com", "x_y.com", "x.com/", "ü.com", strings.Repeat("a.", 127)} {
		if err := ValidateProxyDomain(d); err == nil {
			t.Errorf("%q accepted", d)
		}
	}
}

// TestProxySecretsGotd feeds the hex forms to gotd's own MTProxy secret
// parser, the one its client (dcs.MTProxy) dials with.
func TestProxySecretsGotd(t *testing.T) {
	secrets, err := ParseProxySecrets(testSecrets)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		raw, err := hex.DecodeString(s.Hex())
		if err != nil {
			t.Fatal(err)
		}
		g, err := mtproxy.ParseSecret(raw)
		if err != nil {
			t.Fatalf("%v: gotd rejects %s: %v", s, s.Hex(), err)
		}
		if !bytes.Equal(g.Secret, s.Key[:]) || g.CloakHost != s.Domain {
			t.Errorf("%v: gotd reads key %x host %q", s, g.Secret, g.CloakHost)
		}
		switch s.Kind {
		case ProxyPlain:
			if g.Type != mtproxy.Simple {
				t.Errorf("plain: gotd type %v", g.Type)
			}
		case ProxyDD:
			cdc, ok := g.ExpectedCodec()
			if _, padded := cdc.(codec.PaddedIntermediate); g.Type != mtproxy.Secured || !ok || !padded {
				t.Errorf("dd: gotd type %v, codec %T", g.Type, cdc)
			}
		case ProxyEE:
			if g.Type != mtproxy.TLS {
				t.Errorf("ee: gotd type %v", g.Type)
			}
		}
	}
}

func TestProxySecretNeverPrintsKey(t *testing.T) {
	secrets, err := ParseProxySecrets(testSecrets)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("secret", "s", secrets[2], "all", secrets)
	text := slog.New(slog.NewTextHandler(&buf, nil))
	text.Info("secret", "s", secrets[1])
	fmt.Fprintf(&buf, "%v %+v %s\n", secrets[0], secrets[2], secrets)
	out := buf.String()
	for _, s := range secrets {
		if k := hex.EncodeToString(s.Key[:]); strings.Contains(out, k) {
			t.Fatalf("key %s printed:\n%s", k, out)
		}
	}
	if s := secrets[2].String(); !strings.HasPrefix(s, "ee:") || !strings.HasSuffix(s, "(www.example.com)") || len(s) != len("ee:12345678(www.example.com)") {
		t.Fatalf("String() = %q", s)
	}
}

// TestProxyKeyErrors checks the [proxy] keys' messages, and that a bad
// secrets value is never shown, from any layer.
func TestProxyKeyErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  []string
		want string
	}{
		{
			name: "file bad secret",
			file: "[proxy]\nsecrets = \"" + testPlain + ",ee" + testPlain + "\"\n",
			want: `config: PATH:2: proxy.secrets = (redacted): secret 2: an ee secret needs a FakeTLS domain after its 32 key digits`,
		},
		{
			name: "file secrets of the wrong type",
			file: "[proxy]\nsecrets = [\"" + testPlain + "\"]\n",
			want: `config: PATH:2: proxy.secrets: must be a string`,
		},
		{
			name: "env duplicate",
			env:  []string{"MTNODE_PROXY_SECRETS=" + testDD + "," + testDD},
			want: `config: env MTNODE_PROXY_SECRETS: proxy.secrets = (redacted): secret 2: same key as secret 1`,
		},
		{
			name: "front without port",
			file: "[proxy]\nfront = \"www.example.com\"\n",
			want: `config: PATH:2: proxy.front = "www.example.com": must be host:port (missing port in address)`,
		},
		{
			name: "front without host",
			env:  []string{"MTNODE_PROXY_FRONT=:443"},
			want: `config: env MTNODE_PROXY_FRONT: proxy.front = ":443": must be host:port of the real site, with a host and a nonzero port`,
		},
		{
			name: "front loops",
			env:  []string{"MTNODE_PROXY_FRONT=127.0.0.1:4430"},
			want: `config: env MTNODE_PROXY_FRONT: proxy.front = "127.0.0.1:4430": must not be this node's own client address; probes would loop`,
		},
		{
			name: "per ip",
			env:  []string{"MTNODE_PROXY_MAX_CONNECTIONS_PER_IP=0"},
			want: `config: env MTNODE_PROXY_MAX_CONNECTIONS_PER_IP: proxy.max_connections_per_ip = 0: must be between 1 and 1000000`,
		},
		{
			name: "front concurrency",
			file: "[proxy]\nfront_max_concurrent = 0\n",
			want: `config: PATH:2: proxy.front_max_concurrent = 0: must be between 1 and 1000000`,
		},
		{
			name: "front rate",
			env:  []string{"MTNODE_PROXY_FRONT_RATE_PER_IP=1.5"},
			want: `config: env MTNODE_PROXY_FRONT_RATE_PER_IP: proxy.front_rate_per_ip = "1.5": not an integer`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, path, err := load(t, tt.file, tt.env)
			if err == nil {
				t.Fatalf("no error, config %+v", *cfg)
			}
			if !errors.Is(err, ErrInvalidValue) {
				t.Errorf("err %v does not wrap ErrInvalidValue", err)
			}
			if want := strings.ReplaceAll(tt.want, "PATH", path); err.Error() != want {
				t.Fatalf("err = %q\nwant  %q", err, want)
			}
			if strings.Contains(err.Error(), testPlain[:16]) || strings.Contains(err.Error(), testDD[2:18]) {
				t.Fatalf("err %q shows a secret", err)
			}
		})
	}
	c := Default()
	c.Proxy.Secrets = "nothex"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "proxy.secrets = (redacted): secret 1: not hex") {
		t.Fatalf("Validate() = %v", err)
	}
	if c.ProxySecrets() != nil {
		t.Fatal("ProxySecrets of an invalid list is not nil")
	}
}

// TestReloaderRevokesSecret is the SIGHUP path: the file is read again,
// the environment and flags of the first load still apply.
func TestReloaderRevokesSecret(t *testing.T) {
	path := writeFile(t, "[proxy]\nsecrets = \""+testPlain+","+testDD+"\"\n")
	fset := flag.NewFlagSet("mtnode", flag.ContinueOnError)
	fset.SetOutput(io.Discard)
	RegisterFlags(fset)
	if err := fset.Parse([]string{"--config", path, "--dc", "5"}); err != nil {
		t.Fatal(err)
	}
	env := []string{"MTNODE_PROXY_FRONT=www.example.com:443"}
	reload := Reloader(fset, env)
	env[0] = "MTNODE_PROXY_FRONT=changed.example:443" // Reloader copied env.
	old, err := reload()
	if err != nil {
		t.Fatal(err)
	}
	if len(old.ProxySecrets()) != 2 || old.DC != 5 || old.Proxy.Front != "www.example.com:443" {
		t.Fatalf("first load %+v", *old)
	}

	// Revoke the dd secret, add an ee one.
	if err := os.WriteFile(path, []byte("[proxy]\nsecrets = \""+testPlain+","+testEE+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cur, err := reload()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range cur.ProxySecrets() {
		got = append(got, s.Hex())
	}
	if !slices.Equal(got, []string{testPlain, testEE}) {
		t.Fatalf("reloaded secrets %q", got)
	}
	if cur.DC != 5 || cur.Proxy.Front != "www.example.com:443" {
		t.Fatalf("reload lost the flag or env layer: %+v", *cur)
	}
	if ch := Changed(old, cur); !slices.Equal(ch, []string{"proxy.secrets"}) || !Reloadable(ch[0]) {
		t.Fatalf("Changed = %v", ch)
	}

	// A change that needs a restart is reported as such.
	if err := os.WriteFile(path, []byte("log.level = \"debug\"\n[proxy]\nsecrets = \""+testPlain+","+testEE+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	next, err := reload()
	if err != nil {
		t.Fatal(err)
	}
	if ch := Changed(cur, next); !slices.Equal(ch, []string{"log.level"}) || Reloadable(ch[0]) {
		t.Fatalf("Changed = %v", ch)
	}

	// A broken file fails the reload; the caller keeps what it has.
	if err := os.WriteFile(path, []byte("[proxy]\nsecrets = \"zz\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := reload(); !errors.Is(err, ErrInvalidValue) || strings.Contains(err.Error(), "zz") {
		t.Fatalf("broken file: err = %v", err)
	}

	unparsed := flag.NewFlagSet("x", flag.ContinueOnError)
	if _, err := Reloader(unparsed, nil)(); !errors.Is(err, ErrFlagsNotParsed) {
		t.Fatalf("unparsed: err = %v", err)
	}
	// MTNODE_CONFIG names the file when there is no flag set.
	cfg, err := Reloader(nil, []string{EnvConfig + "=" + path, "MTNODE_PROXY_SECRETS=" + testDD})()
	if err != nil || len(cfg.ProxySecrets()) != 1 || cfg.ProxySecrets()[0].Kind != ProxyDD {
		t.Fatalf("env layer over the file: %v, %v", cfg, err)
	}
}

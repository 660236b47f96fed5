package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/mtnode/mtnode/config"
)

const proxySecretUsage = `Usage:
  mtnode proxy secret [--fake-tls DOMAIN | --dd] [--server HOST --port N] [--count K] [--config FILE]

Makes K new MTProxy secrets with crypto/rand and prints each one's hex form
and its tg://proxy and https://t.me/proxy links, then the proxy.secrets line
that makes the node accept them. Without --fake-tls or --dd the secrets are
plain. The links carry --server and --port; either one left out comes from
the node's public_addr (read from --config or MTNODE_CONFIG and the
MTNODE_* environment, as "mtnode run" would), which must then be set.

Flags:
`

// runProxySecret is `mtnode proxy secret`: it makes proxy secrets with
// random (crypto/rand.Reader outside tests) and prints them with their
// links. It reads the node's configuration, through env, only when
// --server or --port is missing.
func runProxySecret(args, env []string, random io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mtnode proxy secret", flag.ContinueOnError)
	fs.SetOutput(stderr)
	domain := fs.String("fake-tls", "", "make ee (FakeTLS) secrets that pose as TLS to this `domain`, e.g. www.example.com")
	dd := fs.Bool("dd", false, "make dd secrets (padded intermediate: frame lengths hidden)")
	server := fs.String("server", "", "`host` name or IP clients dial; default: the host of public_addr")
	port := fs.Int("port", 0, "`port` clients dial; default: the port of public_addr")
	count := fs.Int("count", 1, fmt.Sprintf("how many secrets to make, 1..%d", config.MaxProxySecrets))
	cfgFile := fs.String(config.FlagConfig, "", "TOML config `file` to read public_addr from; env "+config.EnvConfig)
	fs.Usage = func() {
		fmt.Fprint(stderr, proxySecretUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "mtnode proxy secret: "+format+"\n", a...)
		return 2
	}
	switch {
	case fs.NArg() > 0:
		return fail("unexpected arguments %q", fs.Args())
	case *dd && *domain != "":
		return fail("--dd and --fake-tls exclude each other: a secret has one kind")
	case *count < 1 || *count > config.MaxProxySecrets:
		return fail("--count %d: want 1..%d (the most proxy.secrets holds)", *count, config.MaxProxySecrets)
	case *port < 0 || *port > 65535:
		return fail("--port %d: want 1..65535", *port)
	}
	kind := config.ProxyPlain
	if *dd {
		kind = config.ProxyDD
	}
	if *domain != "" {
		if err := config.ValidateProxyDomain(*domain); err != nil {
			return fail("--fake-tls: %v", err)
		}
		kind = config.ProxyEE
	}
	if *server != "" {
		if err := checkLinkHost(*server); err != nil {
			return fail("--server: %v", err)
		}
	}
	host, p := *server, *port
	if host == "" || p == 0 {
		pub, err := publicAddr(*cfgFile, env)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		if !pub.IsValid() {
			return fail("no address for the links: give --server and --port, or set public_addr in the config")
		}
		if host == "" {
			host = pub.Addr().String()
		}
		if p == 0 {
			p = int(pub.Port())
		}
	}

	secrets := make([]config.ProxySecret, *count)
	for i := range secrets {
		secrets[i] = config.ProxySecret{Kind: kind, Domain: *domain}
		if _, err := io.ReadFull(random, secrets[i].Key[:]); err != nil {
			fmt.Fprintln(stderr, "mtnode proxy secret: read random:", err)
			return 1
		}
	}
	hexes := make([]string, len(secrets))
	for i, s := range secrets {
		hexes[i] = s.Hex()
	}
	// What the node will parse must be exactly what is printed.
	if _, err := config.ParseProxySecrets(strings.Join(hexes, ",")); err != nil {
		fmt.Fprintln(stderr, "mtnode proxy secret: generated secrets do not parse:", err)
		return 1
	}
	printProxySecrets(stdout, secrets, host, p)
	return 0
}

// publicAddr loads the node's configuration the way `mtnode run` would
// without flags (file from --config or MTNODE_CONFIG, then MTNODE_*
// variables) and returns public_addr; the zero AddrPort if it is empty.
func publicAddr(file string, env []string) (netip.AddrPort, error) {
	fs := flag.NewFlagSet("config", flag.ContinueOnError)
	fs.String(config.FlagConfig, "", "")
	var args []string
	if file != "" {
		args = []string{"--" + config.FlagConfig, file}
	}
	if err := fs.Parse(args); err != nil {
		return netip.AddrPort{}, err
	}
	cfg, err := config.Load(fs, env)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if cfg.PublicAddr == "" {
		return netip.AddrPort{}, nil
	}
	// Validated by Load: a literal IP and a nonzero port.
	return netip.ParseAddrPort(cfg.PublicAddr)
}

// checkLinkHost allows what a client can dial from a link: an IP address
// or a host name, without brackets, port or scheme.
func checkLinkHost(h string) error {
	if ip, err := netip.ParseAddr(h); err == nil && ip.Zone() == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(h); err == nil || strings.Contains(h, "://") {
		return fmt.Errorf("%q: want a host name or IP alone, without scheme or port", h)
	}
	if err := config.ValidateProxyDomain(h); err != nil {
		return fmt.Errorf("%q is not an IP address or a host name", h)
	}
	return nil
}

// proxyLinks returns the two link forms clients open for a proxy: the
// tg:// one apps handle directly and the https://t.me one that works from
// a browser. Parameters keep the customary order server, port, secret.
func proxyLinks(host string, port int, s config.ProxySecret) (tg, web string) {
	q := "server=" + url.QueryEscape(host) + "&port=" + strconv.Itoa(port) + "&secret=" + s.Hex()
	return "tg://proxy?" + q, "https://t.me/proxy?" + q
}

// printProxySecrets writes each secret as a block of labelled lines
// (secret, tg, t.me), then the proxy.secrets line that enables them all.
func printProxySecrets(w io.Writer, secrets []config.ProxySecret, host string, port int) {
	hexes := make([]string, len(secrets))
	for i, s := range secrets {
		hexes[i] = s.Hex()
		tg, web := proxyLinks(host, port, s)
		fmt.Fprintf(w, "# %d/%d %s\nsecret  %s\ntg      %s\nt.me    %s\n\n", i+1, len(secrets), describeKind(s), hexes[i], tg, web)
	}
	fmt.Fprintf(w, "# add to [proxy] in the config (after any secrets already there), or to MTNODE_PROXY_SECRETS:\nsecrets = %q\n", strings.Join(hexes, ","))
}

func describeKind(s config.ProxySecret) string {
	switch s.Kind {
	case config.ProxyDD:
		return "dd: obfuscated2, padded intermediate"
	case config.ProxyEE:
		return "ee: FakeTLS as " + s.Domain
	}
	return "plain: obfuscated2, any transport"
}

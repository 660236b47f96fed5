package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
)

// MaxProxySecrets bounds proxy.secrets. The relay tries each key against a
// client's obfuscated2 header, so the list is kept small enough to try all.
const MaxProxySecrets = 64

// Kinds of ProxySecret, as the first byte of its hex form tells clients.
const (
	// ProxyPlain is 16 bytes: obfuscated2 with any transport inside.
	ProxyPlain = "plain"
	// ProxyDD is 0xdd + 16 bytes: obfuscated2 with padded intermediate
	// inside, whose random padding hides frame lengths.
	ProxyDD = "dd"
	// ProxyEE is 0xee + 16 bytes + a domain: FakeTLS, obfuscated2 wrapped
	// in TLS records after a ClientHello naming the domain.
	ProxyEE = "ee"
)

const (
	proxyKeyLen      = 16
	maxDomainLen     = 253
	maxDomainLabel   = 63
	proxyTagDD       = 0xdd
	proxyTagEE       = 0xee
	proxyFingerprint = 4 // bytes of SHA-256 shown by String
)

// ProxySecret is one MTProxy secret from proxy.secrets. Its hex form
// (Hex) is what clients put in tg://proxy links.
type ProxySecret struct {
	// Kind is ProxyPlain, ProxyDD or ProxyEE.
	Kind string
	// Key is the 16-byte secret both sides mix into the obfuscated2 keys
	// (and, for ee, into the FakeTLS HMAC). It identifies the secret: no
	// two secrets of a list share a key, whatever their kind.
	Key [16]byte
	// Domain is the host name an ee client sends as TLS server name and the
	// relay checks; empty for the other kinds.
	Domain string
}

// Hex returns the secret as clients take it: 32 hex digits for plain,
// "dd" + 32 for dd, "ee" + 32 + the domain's bytes in hex for ee. Lower
// case; ParseProxySecrets reads it back.
func (s ProxySecret) Hex() string {
	key := hex.EncodeToString(s.Key[:])
	switch s.Kind {
	case ProxyDD:
		return "dd" + key
	case ProxyEE:
		return "ee" + key + hex.EncodeToString([]byte(s.Domain))
	}
	return key
}

// String names the secret without its key: kind, a short fingerprint
// (SHA-256 of the key) and the domain, e.g. "ee:1a2b3c4d(www.example.com)".
// It is what %v prints, so a secret logged by mistake leaks nothing.
func (s ProxySecret) String() string {
	sum := sha256.Sum256(s.Key[:])
	id := s.Kind + ":" + hex.EncodeToString(sum[:proxyFingerprint])
	if s.Domain != "" {
		id += "(" + s.Domain + ")"
	}
	return id
}

// LogValue makes slog print String, never the key, with either handler.
func (s ProxySecret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// ParseProxySecrets parses proxy.secrets: comma-separated hex secrets, each
// 32 hex digits (plain), "dd" + 32 (dd) or "ee" + 32 + a host name in hex
// (ee); blanks around entries and empty entries are ignored, hex digits may
// be upper case. It rejects bad hex, wrong lengths, an all-zero key, a
// domain that is not a host name, a key given twice and more than
// MaxProxySecrets entries. Errors name an entry by its position, never by
// its text, so that they can be logged.
func ParseProxySecrets(s string) ([]ProxySecret, error) {
	var out []ProxySecret
	seen := map[[16]byte]int{}
	for i, e := range SplitAddrs(s) {
		n := i + 1
		if len(out) == MaxProxySecrets {
			return nil, fmt.Errorf("more than %d secrets", MaxProxySecrets)
		}
		ps, err := parseProxySecret(e)
		if err != nil {
			return nil, fmt.Errorf("secret %d: %w", n, err)
		}
		if first, dup := seen[ps.Key]; dup {
			return nil, fmt.Errorf("secret %d: same key as secret %d", n, first)
		}
		seen[ps.Key] = n
		out = append(out, ps)
	}
	return out, nil
}

func parseProxySecret(e string) (ProxySecret, error) {
	const want = "want 32 hex digits, dd + 32, or ee + 32 + the domain in hex"
	if i := strings.IndexFunc(e, func(r rune) bool { return !isHexDigit(r) }); i >= 0 {
		return ProxySecret{}, fmt.Errorf("not hex (character %d); %s", i+1, want)
	}
	if len(e)%2 != 0 {
		return ProxySecret{}, fmt.Errorf("odd number of hex digits (%d); %s", len(e), want)
	}
	b, _ := hex.DecodeString(e) // Cannot fail: checked above.
	var ps ProxySecret
	switch {
	case len(b) == proxyKeyLen:
		ps.Kind = ProxyPlain
	case len(b) == 1+proxyKeyLen && b[0] == proxyTagDD:
		ps.Kind = ProxyDD
		b = b[1:]
	case len(b) == 1+proxyKeyLen && b[0] == proxyTagEE:
		return ProxySecret{}, errors.New("an ee secret needs a FakeTLS domain after its 32 key digits")
	case len(b) > 1+proxyKeyLen && b[0] == proxyTagEE:
		ps.Kind = ProxyEE
		ps.Domain = string(b[1+proxyKeyLen:])
		if err := ValidateProxyDomain(ps.Domain); err != nil {
			return ProxySecret{}, err
		}
		b = b[1:]
	case len(b) > 1+proxyKeyLen && b[0] == proxyTagDD:
		return ProxySecret{}, fmt.Errorf("%d hex digits is too long for a dd secret; %s", len(e), want)
	case len(b) > proxyKeyLen:
		return ProxySecret{}, fmt.Errorf("%d hex digits starting %q: only dd and ee prefixes exist; %s", len(e), e[:2], want)
	default:
		return ProxySecret{}, fmt.Errorf("%d hex digits is too short; %s", len(e), want)
	}
	copy(ps.Key[:], b[:proxyKeyLen])
	if ps.Key == ([16]byte{}) {
		return ProxySecret{}, errors.New("key is all zero; make one with `mtnode proxy secret`")
	}
	return ps, nil
}

func isHexDigit(r rune) bool {
	return r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F'
}

// ValidateProxyDomain checks a FakeTLS domain: a host name of at most 253
// bytes, dot-separated labels of 1..63 letters, digits and '-' (not at
// either end of a label), no trailing dot, not an IP address (TLS server
// names are names only), and no scheme, port or path.
func ValidateProxyDomain(d string) error {
	switch {
	case d == "":
		return errors.New("domain is empty")
	case len(d) > maxDomainLen:
		return fmt.Errorf("domain is %d bytes, longer than %d", len(d), maxDomainLen)
	case strings.Contains(d, "://"):
		return fmt.Errorf("domain %q: want a host name without a scheme", d)
	case strings.ContainsAny(d, "/?#"):
		return fmt.Errorf("domain %q: want a host name without a path", d)
	case strings.Contains(d, ":"):
		if _, err := netip.ParseAddr(strings.Trim(d, "[]")); err == nil {
			return fmt.Errorf("domain %q: want a host name, not an IP address", d)
		}
		return fmt.Errorf("domain %q: want a host name without a port", d)
	}
	if _, err := netip.ParseAddr(d); err == nil {
		return fmt.Errorf("domain %q: want a host name, not an IP address", d)
	}
	labels := strings.Split(d, ".")
	for _, l := range labels {
		if l == "" || len(l) > maxDomainLabel {
			return fmt.Errorf("domain %q: labels between dots must be 1..%d characters", d, maxDomainLabel)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("domain %q: a label may not start or end with '-'", d)
		}
		for _, c := range []byte(l) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("domain %q: want only letters, digits, '-' and '.'", d)
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return fmt.Errorf("domain %q: the last label may not be all digits", d)
	}
	return nil
}

// ProxySecrets returns proxy.secrets parsed, in the order given. For a
// Config that passed Validate it cannot fail; otherwise an unparsable list
// yields nil, which the relay treats as "no secrets".
func (c *Config) ProxySecrets() []ProxySecret {
	s, err := ParseProxySecrets(c.Proxy.Secrets)
	if err != nil {
		return nil
	}
	return s
}

// checkFront allows an empty front (fronting off) or host:port with a host
// and a nonzero port that is not the node's own client address, which
// would loop probes back into the node.
func checkFront(c *Config) string {
	if c.Proxy.Front == "" {
		return ""
	}
	host, port, r := splitPort(c.Proxy.Front)
	if r != "" {
		return r
	}
	if host == "" || port == 0 {
		return "must be host:port of the real site, with a host and a nonzero port"
	}
	if c.Proxy.Front == c.ClientAddr || (c.PublicAddr != "" && c.Proxy.Front == c.PublicAddr) {
		return "must not be this node's own client address; probes would loop"
	}
	return ""
}

// redactedValue stands in messages for the value of a key that holds
// secrets, because start-up errors end up in logs.
const redactedValue = "(redacted)"

// redact hides the value of a sensitive key (proxy.secrets) in messages;
// an empty value holds nothing and is shown.
func redact(key, value string) string {
	if key == "proxy.secrets" && value != "" && value != `""` && value != "''" {
		return redactedValue
	}
	return value
}

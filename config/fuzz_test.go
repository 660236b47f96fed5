package config

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

// FuzzLoadTOML feeds arbitrary documents to the file layer. It must never
// panic, every error must be one of ours with the "config: file" prefix, and
// a document that decodes must either validate or fail with *Error values.
func FuzzLoadTOML(f *testing.F) {
	if example, err := os.ReadFile("example.toml"); err == nil {
		f.Add(example)
	}
	for _, seed := range []string{
		"",
		"dc = 2\n",
		"[log]\nlevel = \"debug\"\nformat = \"json\"\n",
		"log = { level = \"warn\", format = \"text\" }\n",
		"log.level = \"error\"\n",
		"[protocol]\nidle_timeout = \"1s\"\nhandshake_timeout = 30\n",
		"[protocol]\nmax_handshakes = -3\n",
		"dc = \"one\"\n",
		"dc = 1\ndc = 2\n",
		"[log\n",
		"[[protocol]]\nmax_handshakes = 1\n",
		"[metrics]\nport = 1\n",
		"public_addr = \"0.0.0.0:0\"\nclient_addr = \"x\"\n",
		"\"log.level\" = \"x\"\n",
		"log = 5\n",
		"protocol = { idle_timeout = { x = 1 } }\n",
		"data_dir = '''\nmulti\nline'''\n",
		"[proxy]\nsecrets = \"" + testSecrets + ",zz\"\nfront = \":0\"\n",
		"proxy = { secrets = [1], require_secret = 1 }\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "fuzz.toml"
		cfg := Default()
		sources := map[string]string{}
		err := decodeFile(name, data, &cfg, sources)
		if err != nil {
			checkErrors(t, err, "config: "+name)
			return
		}
		for key, src := range sources {
			if _, ok := lookupField(key); !ok || !strings.HasPrefix(src, name+":") {
				t.Fatalf("source %q for key %q", src, key)
			}
		}
		if err := cfg.validate(sources); err != nil {
			checkErrors(t, err, "config: ")
			if !errors.Is(err, ErrInvalidValue) {
				t.Fatalf("validation error %v is not ErrInvalidValue", err)
			}
		}
	})
}

// checkErrors requires every line of err to start with prefix and err to
// wrap one of the package's sentinels.
func checkErrors(t *testing.T, err error, prefix string) {
	t.Helper()
	if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrInvalidValue) && !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("error %v wraps no sentinel", err)
	}
	for line := range strings.Lines(err.Error()) {
		if !strings.HasPrefix(line, prefix) {
			t.Fatalf("error line %q lacks prefix %q", line, prefix)
		}
	}
}

// FuzzParseProxySecrets: no panic; a list that parses is bounded, has
// unique keys and valid kinds and domains, and its Hex forms parse back to
// the same list; an error never shows an entry's text.
func FuzzParseProxySecrets(f *testing.F) {
	for _, seed := range []string{
		"",
		",",
		testSecrets,
		strings.ToUpper(testSecrets),
		" " + testPlain + " ,\t" + testDD + "\n",
		testPlain + "," + testPlain,
		"ee" + testPlain,
		"ee" + testPlain + "6578616d706c652e636f6d3a343433", // example.com:443
		"ee" + testPlain + "3132372e302e302e31",             // 127.0.0.1
		"dd" + testPlain + "00",
		strings.Repeat("0", 32),
		testPlain[:31],
		"zz",
		strings.Repeat(testPlain+",", MaxProxySecrets+1),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseProxySecrets(s)
		if err != nil {
			for _, e := range SplitAddrs(s) {
				if len(e) >= 32 && strings.Trim(e, "0123456789abcdefABCDEF") == "" && strings.Contains(err.Error(), e) {
					t.Fatalf("error %q shows secret text", err)
				}
			}
			return
		}
		if len(got) > MaxProxySecrets {
			t.Fatalf("%d secrets", len(got))
		}
		seen := map[[16]byte]bool{}
		hexes := make([]string, len(got))
		for i, ps := range got {
			if seen[ps.Key] || ps.Key == ([16]byte{}) {
				t.Fatalf("key of %v repeated or zero", ps)
			}
			seen[ps.Key] = true
			switch ps.Kind {
			case ProxyPlain, ProxyDD:
				if ps.Domain != "" {
					t.Fatalf("%v has a domain", ps)
				}
			case ProxyEE:
				if err := ValidateProxyDomain(ps.Domain); err != nil {
					t.Fatalf("%v: %v", ps, err)
				}
			default:
				t.Fatalf("kind %q", ps.Kind)
			}
			hexes[i] = ps.Hex()
		}
		back, err := ParseProxySecrets(strings.Join(hexes, ","))
		if err != nil || !slices.Equal(back, got) {
			t.Fatalf("round trip: %v, %v; want %v", back, err, got)
		}
	})
}

package config

import (
	"errors"
	"os"
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

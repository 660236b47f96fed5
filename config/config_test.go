package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// load runs Load the way cmd/mtnode does: register, parse args, load. If
// file is not empty it is written to mtnode.toml in a temp dir and passed
// with --config; the returned path is that file's path.
func load(t *testing.T, file string, env []string, args ...string) (*Config, string, error) {
	t.Helper()
	path := ""
	if file != "" {
		path = writeFile(t, file)
		args = append([]string{"--config", path}, args...)
	}
	fset := flag.NewFlagSet("mtnode", flag.ContinueOnError)
	fset.SetOutput(io.Discard)
	RegisterFlags(fset)
	if err := fset.Parse(args); err != nil {
		t.Fatalf("parse flags %q: %v", args, err)
	}
	cfg, err := Load(fset, env)
	return cfg, path, err
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mtnode.toml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

func TestLoadNothingGivesDefault(t *testing.T) {
	cfg, _, err := load(t, "", []string{"HOME=/root", "PATH=/bin"})
	if err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(*cfg, want) {
		t.Fatalf("got %+v, want %+v", *cfg, want)
	}
	cfg, err = Load(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(*cfg, want) {
		t.Fatalf("Load(nil, nil) = %+v, want %+v", *cfg, want)
	}
}

func TestExampleFileIsDefault(t *testing.T) {
	data, err := os.ReadFile("example.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{} // Decode over zero, so a key missing from the file shows.
	if err := decodeFile("example.toml", data, &cfg, map[string]string{}); err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(cfg, want) {
		t.Fatalf("example.toml = %+v, want Default() %+v", cfg, want)
	}
	idx, err := indexKeys(data)
	if err != nil {
		t.Fatal(err)
	}
	var inFile []string
	for k := range idx {
		inFile = append(inFile, k)
	}
	sort.Strings(inFile)
	keys := Keys()
	sort.Strings(keys)
	if !slices.Equal(inFile, keys) {
		t.Fatalf("example.toml keys %v, want every key %v", inFile, keys)
	}
}

// TestKeysCoverStruct keeps the field table complete: every leaf toml tag of
// Config must be a key, with a unique env name.
func TestKeysCoverStruct(t *testing.T) {
	var leaves []string
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for f := range typ.Fields() {
			name := prefix + f.Tag.Get("toml")
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[Duration]() {
				walk(name+".", f.Type)
				continue
			}
			leaves = append(leaves, name)
		}
	}
	walk("", reflect.TypeFor[Config]())
	if keys := Keys(); !slices.Equal(leaves, keys) {
		t.Fatalf("struct keys %v, field table %v", leaves, keys)
	}
	seen := map[string]bool{EnvConfig: true}
	for _, k := range Keys() {
		if n := EnvName(k); seen[n] {
			t.Fatalf("env name %s used twice", n)
		} else {
			seen[n] = true
		}
	}
}

func TestLayersOverrideInOrder(t *testing.T) {
	file := `
data_dir = "/from/file"
dc = 2
[log]
level = "debug"
format = "json"
[protocol]
max_handshakes = 10
`
	env := []string{
		"MTNODE_DC=3",
		"MTNODE_LOG_LEVEL=warn",
		"MTNODE_PROTOCOL_MAX_HANDSHAKES=20",
	}
	cfg, _, err := load(t, file, env, "--dc", "4", "--log-format", "text")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.DataDir = "/from/file"         // file only
	want.DC = 4                         // file < env < flag
	want.Log.Level = "warn"             // file < env
	want.Log.Format = "text"            // file < flag
	want.Protocol.MaxHandshakes = 20    // file < env
	if !reflect.DeepEqual(*cfg, want) { // everything else default
		t.Fatalf("got %+v\nwant %+v", *cfg, want)
	}

	// Flags left at their defaults must not undo the file or environment.
	cfg, _, err = load(t, file, []string{"MTNODE_LOG_LEVEL=error"}, "--data-dir", "/from/flag")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DC != 2 || cfg.Log.Level != "error" || cfg.Log.Format != "json" || cfg.DataDir != "/from/flag" {
		t.Fatalf("unset flags overrode lower layers: %+v", *cfg)
	}
}

// TestEveryKeyFromEveryLayer sets each key to a non-default value from the
// file, from the environment and (where there is a flag) from a flag.
func TestEveryKeyFromEveryLayer(t *testing.T) {
	values := map[string]struct {
		text string // env/flag form
		toml string // file form
		want func(*Config) bool
	}{
		"data_dir":                   {"/d", `"/d"`, func(c *Config) bool { return c.DataDir == "/d" }},
		"dc":                         {"7", `7`, func(c *Config) bool { return c.DC == 7 }},
		"client_addr":                {"0.0.0.0:443", `"0.0.0.0:443"`, func(c *Config) bool { return c.ClientAddr == "0.0.0.0:443" }},
		"http_addr":                  {"", `""`, func(c *Config) bool { return c.HTTPAddr == "" }},
		"public_addr":                {"[2001:db8::1]:443", `"[2001:db8::1]:443"`, func(c *Config) bool { return c.PublicAddr == "[2001:db8::1]:443" }},
		"public_addr_v6":             {"[2001:db8::2]:443", `"[2001:db8::2]:443"`, func(c *Config) bool { return c.PublicAddrV6 == "[2001:db8::2]:443" }},
		"log.level":                  {"debug", `"debug"`, func(c *Config) bool { return c.Log.Level == "debug" }},
		"log.format":                 {"json", `"json"`, func(c *Config) bool { return c.Log.Format == "json" }},
		"protocol.max_connections":   {"5", `5`, func(c *Config) bool { return c.Protocol.MaxConnections == 5 }},
		"protocol.max_handshakes":    {"100000", `100000`, func(c *Config) bool { return c.Protocol.MaxHandshakes == 100000 }},
		"protocol.idle_timeout":      {"100ms", `"100ms"`, func(c *Config) bool { return c.Protocol.IdleTimeout.Duration == 100*time.Millisecond }},
		"protocol.handshake_timeout": {"10m", `"10m"`, func(c *Config) bool { return c.Protocol.HandshakeTimeout.Duration == 10*time.Minute }},
		"protocol.max_frame_size":    {"1024", `1024`, func(c *Config) bool { return c.Protocol.MaxFrameSize == 1024 }},
		"auth.test_numbers":          {"off", `"off"`, func(c *Config) bool { return c.Auth.TestNumbers == "off" }},
		"auth.code_sender":           {"log", `"log"`, func(c *Config) bool { return c.Auth.CodeSender == "log" }},
		"auth.webhook_url":           {"https://sms.example/send", `"https://sms.example/send"`, func(c *Config) bool { return c.Auth.WebhookURL == "https://sms.example/send" }},
		"auth.code_ttl":              {"1h", `"1h"`, func(c *Config) bool { return c.Auth.CodeTTL.Duration == time.Hour }},
		"auth.code_length":           {"8", `8`, func(c *Config) bool { return c.Auth.CodeLength == 8 }},
		"cluster.secrets_dir":        {"/etc/mtnode/cluster", `"/etc/mtnode/cluster"`, func(c *Config) bool { return c.Cluster.SecretsDir == "/etc/mtnode/cluster" }},
		"cluster.node_id":            {"node-1", `"node-1"`, func(c *Config) bool { return c.Cluster.NodeID == "node-1" }},
		"cluster.mesh_addr":          {"0.0.0.0:7000", `"0.0.0.0:7000"`, func(c *Config) bool { return c.Cluster.MeshAddr == "0.0.0.0:7000" }},
		// join, retry_join and bootstrap_expect need secrets_dir as well;
		// TestClusterKeys sets them together.
		"cluster.join":               {"", `""`, func(c *Config) bool { return c.Cluster.Join == "" }},
		"cluster.retry_join":         {"", `""`, func(c *Config) bool { return c.Cluster.RetryJoin == "" }},
		"cluster.bootstrap_expect":   {"0", `0`, func(c *Config) bool { return c.Cluster.BootstrapExpect == 0 }},
		"cluster.replication_factor": {"5", `5`, func(c *Config) bool { return c.Cluster.ReplicationFactor == 5 }},
		"cluster.shards":             {"64", `64`, func(c *Config) bool { return c.Cluster.Shards == 64 }},
		"cluster.hold_timeout":       {"30s", `"30s"`, func(c *Config) bool { return c.Cluster.HoldTimeout.Duration == 30*time.Second }},
		"cluster.dead_grace":         {"1h", `"1h"`, func(c *Config) bool { return c.Cluster.DeadGrace.Duration == time.Hour }},
		"cluster.snapshot_entries":   {"64", `64`, func(c *Config) bool { return c.Cluster.SnapshotEntries == 64 }},
		"cluster.snapshot_interval":  {"1s", `"1s"`, func(c *Config) bool { return c.Cluster.SnapshotInterval.Duration == time.Second }},
		"cluster.join_wan":           {"", `""`, func(c *Config) bool { return c.Cluster.JoinWAN == "" }},
		"cluster.tcp_lane":           {"false", `false`, func(c *Config) bool { return !c.Cluster.TCPLane }},
		"cluster.media_only":         {"false", `false`, func(c *Config) bool { return !c.Cluster.MediaOnly }},
		"cluster.fault_injection":    {"false", `false`, func(c *Config) bool { return !c.Cluster.FaultInjection }},
		"federation.phone_dcs":       {"1:1,44:2", `"1:1,44:2"`, func(c *Config) bool { return c.Federation.PhoneDCs == "1:1,44:2" }},
		"federation.default_dc":      {"3", `3`, func(c *Config) bool { return c.Federation.DefaultDC == 3 }},
		"federation.username_dc":     {"2", `2`, func(c *Config) bool { return c.Federation.UsernameDC == 2 }},
		"routing.assist":             {"true", `true`, func(c *Config) bool { return c.Routing.Assist }},

		// [proxy]; proxy_test.go covers the secrets' forms and checks.
		"proxy.secrets": {testSecrets, `"` + testSecrets + `"`, func(c *Config) bool {
			return c.Proxy.Secrets == testSecrets && len(c.ProxySecrets()) == 3
		}},
		"proxy.front":                  {"www.example.com:443", `"www.example.com:443"`, func(c *Config) bool { return c.Proxy.Front == "www.example.com:443" }},
		"proxy.max_connections_per_ip": {"1", `1`, func(c *Config) bool { return c.Proxy.MaxConnectionsPerIP == 1 }},
		"proxy.front_max_concurrent":   {"1000000", `1000000`, func(c *Config) bool { return c.Proxy.FrontMaxConcurrent == 1000000 }},
		"proxy.front_rate_per_ip":      {"5", `5`, func(c *Config) bool { return c.Proxy.FrontRatePerIP == 5 }},
		"proxy.require_secret":         {"true", `true`, func(c *Config) bool { return c.Proxy.RequireSecret }},
	}
	flagFor := map[string]string{}
	for _, b := range flagBindings() {
		flagFor[b.key] = b.name
	}
	for _, key := range Keys() {
		v, ok := values[key]
		if !ok {
			t.Fatalf("no test value for key %s", key)
		}
		t.Run(key, func(t *testing.T) {
			table, leaf := "", key
			if i := strings.LastIndexByte(key, '.'); i >= 0 {
				table, leaf = "["+key[:i]+"]\n", key[i+1:]
			}
			cfg, _, err := load(t, table+leaf+" = "+v.toml+"\n", nil)
			if err != nil || !v.want(cfg) {
				t.Errorf("file: %+v, %v", cfg, err)
			}
			cfg, _, err = load(t, "", []string{EnvName(key) + "=" + v.text})
			if err != nil || !v.want(cfg) {
				t.Errorf("env %s: %+v, %v", EnvName(key), cfg, err)
			}
			if name, ok := flagFor[key]; ok {
				cfg, _, err = load(t, "", nil, "--"+name+"="+v.text)
				if err != nil || !v.want(cfg) {
					t.Errorf("flag --%s: %+v, %v", name, cfg, err)
				}
			}
		})
	}
}

func TestUnknownFileKeyRejected(t *testing.T) {
	file := `dc = 1

[log]
level = "info"
colour = "red"
`
	_, path, err := load(t, file, nil)
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("err = %v, want ErrUnknownKey", err)
	}
	if want := "config: " + path + `:5: log.colour = "red": unknown key`; err.Error() != want {
		t.Fatalf("err = %q\nwant  %q", err, want)
	}

	_, path, err = load(t, "dc = 1\n[metrics]\nport = 1\n", nil)
	if !errors.Is(err, ErrUnknownKey) || !strings.Contains(err.Error(), path+":2: metrics") {
		t.Fatalf("unknown table: err = %v", err)
	}
}

func TestUnknownEnvRejected(t *testing.T) {
	_, _, err := load(t, "", []string{"HOME=/x", "MTNODE_DATADIR=/tmp/x", "mtnode_whatever=1"})
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("err = %v, want ErrUnknownKey", err)
	}
	if want := "config: env MTNODE_DATADIR: unknown variable; no such key"; err.Error() != want {
		t.Fatalf("err = %q, want %q", err, want)
	}
}

func TestConfigFileFromEnv(t *testing.T) {
	path := writeFile(t, "dc = 9\n")
	cfg, _, err := load(t, "", []string{EnvConfig + "=" + path})
	if err != nil || cfg.DC != 9 {
		t.Fatalf("MTNODE_CONFIG: %+v, %v", cfg, err)
	}
	// --config wins over MTNODE_CONFIG.
	cfg, _, err = load(t, "dc = 8\n", []string{EnvConfig + "=" + path})
	if err != nil || cfg.DC != 8 {
		t.Fatalf("--config vs MTNODE_CONFIG: %+v, %v", cfg, err)
	}
}

// TestInvalidValues checks complete messages: source, key, value, reason.
func TestInvalidValues(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  []string
		args []string
		want string // "PATH" is replaced by the file's path
	}{
		{
			name: "file range",
			file: "# comment\n\ndc = 1\n\n[protocol]\nmax_connections = 10\nmax_handshakes = -3\n",
			want: "config: PATH:7: protocol.max_handshakes = -3: must be between 1 and 100000",
		},
		{
			name: "file type",
			file: `dc = "one"`,
			want: `config: PATH:1: dc = "one": must be an integer`,
		},
		{
			name: "file bad duration",
			file: "[protocol]\nidle_timeout = \"soon\"\n",
			want: `config: PATH:2: protocol.idle_timeout = "soon": must be a duration string like "30s"`,
		},
		{
			name: "file duration without unit",
			file: "[protocol]\nhandshake_timeout = 30\n",
			want: `config: PATH:2: protocol.handshake_timeout = 30: must be a duration string like "30s"`,
		},
		{
			name: "file integer overflow",
			file: "[protocol]\nmax_frame_size = 99999999999999999999\n",
			want: `config: PATH:2: protocol.max_frame_size = 99999999999999999999: decimal number is too large to fit in a 64-bit signed integer`,
		},
		{
			name: "file duration range",
			file: "[protocol]\nidle_timeout = \"2h\"\n",
			want: `config: PATH:2: protocol.idle_timeout = "2h0m0s": must be between 100ms and 1h0m0s`,
		},
		{
			name: "file inline table",
			file: "log = { level = \"loud\" }\n",
			want: `config: PATH:1: log.level = "loud": must be one of debug, info, warn, error`,
		},
		{
			name: "file table as value",
			file: "dc = 2\nlog = 5\n",
			want: `config: PATH:2: log = 5: must be a table`,
		},
		{
			name: "env not integer",
			env:  []string{"MTNODE_DC=abc"},
			want: `config: env MTNODE_DC: dc = "abc": not an integer`,
		},
		{
			name: "env bad duration",
			env:  []string{"MTNODE_PROTOCOL_IDLE_TIMEOUT=5"},
			want: `config: env MTNODE_PROTOCOL_IDLE_TIMEOUT: protocol.idle_timeout = "5": not a duration like "30s"`,
		},
		{
			name: "env duration range",
			env:  []string{"MTNODE_PROTOCOL_HANDSHAKE_TIMEOUT=10ms"},
			want: `config: env MTNODE_PROTOCOL_HANDSHAKE_TIMEOUT: protocol.handshake_timeout = "10ms": must be between 100ms and 10m0s`,
		},
		{
			name: "env frame size",
			env:  []string{"MTNODE_PROTOCOL_MAX_FRAME_SIZE=100"},
			want: `config: env MTNODE_PROTOCOL_MAX_FRAME_SIZE: protocol.max_frame_size = 100: must be between 1024 and 16777216`,
		},
		{
			name: "flag address without port",
			args: []string{"--client-addr", "nope"},
			want: `config: flag --client-addr: client_addr = "nope": must be host:port (missing port in address)`,
		},
		{
			name: "flag port out of range",
			args: []string{"--http-addr", "127.0.0.1:70000"},
			want: `config: flag --http-addr: http_addr = "127.0.0.1:70000": port must be a number between 0 and 65535`,
		},
		{
			name: "flag named port",
			args: []string{"--client-addr", "127.0.0.1:http"},
			want: `config: flag --client-addr: client_addr = "127.0.0.1:http": port must be a number between 0 and 65535`,
		},
		{
			name: "flag dc",
			args: []string{"--dc", "0"},
			want: `config: flag --dc: dc = 0: must be between 1 and 1000`,
		},
		{
			name: "public addr host name",
			args: []string{"--public-addr", "example.com:443"},
			want: `config: flag --public-addr: public_addr = "example.com:443": host must be an IP address; clients cannot resolve names here`,
		},
		{
			name: "public addr port zero",
			env:  []string{"MTNODE_PUBLIC_ADDR=10.0.0.1:0"},
			want: `config: env MTNODE_PUBLIC_ADDR: public_addr = "10.0.0.1:0": port must be between 1 and 65535; clients cannot dial port 0`,
		},
		{
			name: "public addr unspecified",
			file: `public_addr = "0.0.0.0:443"`,
			want: `config: PATH:1: public_addr = "0.0.0.0:443": must be a reachable IP, not an unspecified address`,
		},
		{
			name: "same listen address twice",
			args: []string{"--client-addr", "127.0.0.1:8080"},
			want: `config: http_addr = "127.0.0.1:8080": must differ from client_addr; both cannot listen on one port`,
		},
		{
			name: "log format",
			args: []string{"--log-format", "xml"},
			want: `config: flag --log-format: log.format = "xml": must be one of text, json`,
		},
		{
			name: "test numbers",
			env:  []string{"MTNODE_AUTH_TEST_NUMBERS=yes"},
			want: `config: env MTNODE_AUTH_TEST_NUMBERS: auth.test_numbers = "yes": must be one of auto, on, off`,
		},
		{
			name: "code sender",
			file: "[auth]\ncode_sender = \"sms\"\n",
			want: `config: PATH:2: auth.code_sender = "sms": must be one of log, webhook`,
		},
		{
			name: "webhook without url",
			file: "[auth]\ncode_sender = \"webhook\"\n",
			want: `config: auth.webhook_url = "": must be set when auth.code_sender is webhook`,
		},
		{
			name: "webhook url scheme",
			env:  []string{"MTNODE_AUTH_WEBHOOK_URL=ftp://sms.example/"},
			want: `config: env MTNODE_AUTH_WEBHOOK_URL: auth.webhook_url = "ftp://sms.example/": must be an http:// or https:// URL`,
		},
		{
			name: "code ttl",
			env:  []string{"MTNODE_AUTH_CODE_TTL=5s"},
			want: `config: env MTNODE_AUTH_CODE_TTL: auth.code_ttl = "5s": must be between 30s and 1h0m0s`,
		},
		{
			name: "code length",
			file: "[auth]\ncode_length = 3\n",
			want: `config: PATH:2: auth.code_length = 3: must be between 4 and 8`,
		},
		{
			name: "empty data dir",
			env:  []string{"MTNODE_DATA_DIR="},
			want: `config: env MTNODE_DATA_DIR: data_dir = "": must not be empty`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, path, err := load(t, tt.file, tt.env, tt.args...)
			if err == nil {
				t.Fatalf("no error, config %+v", *cfg)
			}
			if !errors.Is(err, ErrInvalidValue) {
				t.Errorf("err %v does not wrap ErrInvalidValue", err)
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Key == "" {
				t.Errorf("err %v is not an *Error with a key", err)
			}
			if want := strings.ReplaceAll(tt.want, "PATH", path); err.Error() != want {
				t.Fatalf("err = %q\nwant  %q", err, want)
			}
		})
	}
}

func TestSyntaxErrorHasLine(t *testing.T) {
	for _, file := range []string{
		"dc = 1\n\n[log]\nlevel = = \"x\"\n",
		"dc = 1\n\n[log\nlevel = \"x\"\n",
		"dc = 1\ndc = 2\n\ndc = 3\n", // duplicate key: valid syntax per line, invalid TOML
	} {
		_, path, err := load(t, file, nil)
		if !errors.Is(err, ErrSyntax) {
			t.Errorf("%q: err = %v, want ErrSyntax", file, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), "config: "+path+":") {
			t.Errorf("%q: err = %q, want file:line prefix", file, err)
		}
	}
	_, path, err := load(t, "dc = 1\n\n[log]\nlevel = = \"x\"\n", nil)
	if !errors.Is(err, ErrSyntax) || !strings.HasPrefix(err.Error(), "config: "+path+":4: ") {
		t.Fatalf("err = %v, want ErrSyntax at line 4", err)
	}
	_, path, err = load(t, "dc = 1\n\ndc = 3\n", nil)
	if want := "config: " + path + ":3: dc = 3: key dc is already defined"; err == nil || err.Error() != want {
		t.Fatalf("duplicate key: err = %v, want %q", err, want)
	}
}

func TestSeveralErrorsReportedTogether(t *testing.T) {
	_, _, err := load(t, "", []string{"MTNODE_NOPE=1", "MTNODE_DC=x"}, "--log-level", "loud")
	for _, want := range []string{"MTNODE_NOPE", "MTNODE_DC"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v, want mention of %s", err, want)
		}
	}
	c := Default()
	c.DC = -1
	c.Protocol.MaxConnections = 0
	err = c.Validate()
	for _, want := range []string{"config: dc = -1: ", "config: protocol.max_connections = 0: "} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Validate() = %v, want %q", err, want)
		}
	}
}

func TestListenPortZeroAndEmptyPublicAddr(t *testing.T) {
	cfg, _, err := load(t, "", nil, "--client-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PublicAddr != "" {
		t.Fatalf("PublicAddr = %q, want empty (use bound address)", cfg.PublicAddr)
	}
}

func TestInlineTableKeepsOtherDefaults(t *testing.T) {
	cfg, _, err := load(t, `log = { level = "debug" }`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log.Level != "debug" || cfg.Log.Format != "text" {
		t.Fatalf("Log = %+v, want debug/text", cfg.Log)
	}
}

func TestFileErrors(t *testing.T) {
	fset := flag.NewFlagSet("x", flag.ContinueOnError)
	RegisterFlags(fset)
	if err := fset.Parse([]string{"--config", filepath.Join(t.TempDir(), "missing.toml")}); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(fset, nil); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: err = %v", err)
	}

	big := writeFile(t, strings.Repeat("#", MaxFileSize+1))
	if _, err := Load(nil, []string{EnvConfig + "=" + big}); !errors.Is(err, ErrFileTooLarge) {
		t.Fatalf("big file: err = %v", err)
	}
}

func TestUnparsedFlagSetRejected(t *testing.T) {
	fset := flag.NewFlagSet("x", flag.ContinueOnError)
	RegisterFlags(fset)
	if _, err := Load(fset, nil); !errors.Is(err, ErrFlagsNotParsed) {
		t.Fatalf("err = %v, want ErrFlagsNotParsed", err)
	}
}

func TestRegisterFlags(t *testing.T) {
	fset := flag.NewFlagSet("x", flag.ContinueOnError)
	RegisterFlags(fset)
	var names []string
	fset.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	want := []string{"bootstrap-expect", "client-addr", "cluster", "config", "data-dir", "dc", "http-addr", "join", "join-wan", "log-format", "log-level", "mesh-addr", "node-id", "public-addr"}
	if !slices.Equal(names, want) {
		t.Fatalf("flags %v, want %v", names, want)
	}
	if d := fset.Lookup("client-addr").DefValue; d != Default().ClientAddr {
		t.Fatalf("client-addr default %q", d)
	}
	if u := fset.Lookup("dc").Usage; !strings.Contains(u, "MTNODE_DC") {
		t.Fatalf("dc usage %q does not name its env variable", u)
	}
}

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	c := Default()
	c.Log.Format = "json"
	c.Log.Level = "warn"
	log := c.Logger(&buf)
	log.Info("hidden")
	log.Warn("shown", "k", 1)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not one JSON record: %q: %v", buf.String(), err)
	}
	if rec["msg"] != "shown" || rec["k"] != float64(1) {
		t.Fatalf("record %v", rec)
	}

	buf.Reset()
	c = Default()
	c.Log.Level = "debug"
	c.Logger(&buf).Debug("visible")
	if !strings.Contains(buf.String(), "level=DEBUG msg=visible") {
		t.Fatalf("text debug output %q", buf.String())
	}
}

func TestDurationText(t *testing.T) {
	var d Duration
	if err := d.UnmarshalText([]byte("1m30s")); err != nil || d.Duration != 90*time.Second {
		t.Fatalf("UnmarshalText: %v, %v", d, err)
	}
	if b, _ := d.MarshalText(); string(b) != "1m30s" {
		t.Fatalf("MarshalText = %q", b)
	}
	if err := d.Set("soon"); !errors.Is(err, ErrInvalidValue) {
		t.Fatalf("Set(soon) = %v", err)
	}
}

func TestTestNumbersEnabled(t *testing.T) {
	for _, tc := range []struct {
		mode, addr string
		want       bool
	}{
		{"auto", "127.0.0.1:4430", true},
		{"auto", "[::1]:0", true},
		{"auto", "localhost:4430", true},
		{"auto", "0.0.0.0:443", false},
		{"auto", ":443", false},
		{"auto", "10.1.2.3:443", false},
		{"on", "0.0.0.0:443", true},
		{"off", "127.0.0.1:4430", false},
	} {
		c := Default()
		c.Auth.TestNumbers, c.ClientAddr = tc.mode, tc.addr
		if got := c.TestNumbersEnabled(); got != tc.want {
			t.Errorf("%s on %s: %v", tc.mode, tc.addr, got)
		}
	}
}

func TestClusterKeys(t *testing.T) {
	cfg, _, err := load(t, "[cluster]\nsecrets_dir = \"/s\"\njoin = \"127.0.0.1:7001, n2@127.0.0.1:7002\"\nretry_join = \"10.0.0.1:7946\"\nbootstrap_expect = 3\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Clustered() || cfg.Cluster.BootstrapExpect != 3 {
		t.Fatalf("cluster %+v", cfg.Cluster)
	}
	if got := SplitAddrs(cfg.Cluster.Join); !slices.Equal(got, []string{"127.0.0.1:7001", "n2@127.0.0.1:7002"}) {
		t.Fatalf("join %q", got)
	}
	for _, c := range []struct{ doc, key, reason string }{
		{"[cluster]\njoin = \"127.0.0.1:7001\"\n", "cluster.join", "needs cluster.secrets_dir"},
		{"[cluster]\nbootstrap_expect = 3\n", "cluster.bootstrap_expect", "needs cluster.secrets_dir"},
		{"[cluster]\nsecrets_dir = \"/s\"\njoin = \"127.0.0.1\"\n", "cluster.join", "host:port"},
		{"[cluster]\nsecrets_dir = \"/s\"\nretry_join = \"bad id@127.0.0.1:1\"\n", "cluster.retry_join", "node id"},
		{"[cluster]\nnode_id = \"a/b\"\n", "cluster.node_id", "letters"},
		{"[cluster]\nreplication_factor = 0\n", "cluster.replication_factor", ""},
	} {
		_, _, err := load(t, c.doc, nil)
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != c.key || !strings.Contains(ce.Reason, c.reason) {
			t.Errorf("%q: %v", c.doc, err)
		}
	}
}

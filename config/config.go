// Package config defines the one Config type of an mtnode node and loads it
// in layers: built-in defaults, then a TOML file, then MTNODE_* environment
// variables, then the command-line flags the user actually set.
//
// Every key has exactly one name ("protocol.max_handshakes"), from which its
// environment variable (MTNODE_PROTOCOL_MAX_HANDSHAKES) is derived, so the
// file, the environment and the error messages always agree. Errors name the
// key, the offending value and where it came from (file:line, env variable or
// flag) because an operator reading a failed start-up should not have to guess
// which of four layers is wrong.
package config

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors. Every error returned by Load and Validate wraps one of
// them (through *Error), so callers can tell an operator mistake in the
// configuration from, say, an unreadable file.
var (
	// ErrUnknownKey is wrapped when the file has a key, or the environment an
	// MTNODE_* variable, that does not name any setting. Rejecting them
	// catches typos that would otherwise silently leave a default in place.
	ErrUnknownKey = errors.New("unknown key")
	// ErrInvalidValue is wrapped when a value cannot be parsed into its
	// key's type or lies outside the key's allowed range.
	ErrInvalidValue = errors.New("invalid value")
	// ErrSyntax is wrapped when the TOML file is not valid TOML.
	ErrSyntax = errors.New("syntax error")
)

// Error describes one bad setting. Its message has the fixed shape
//
//	config: SOURCE: KEY = VALUE: REASON
//
// (parts that are unknown are left out) so it can be read by people and
// matched by tests alike.
type Error struct {
	// Source says where the value came from: "FILE:LINE", "env NAME" or
	// "flag --NAME". Empty for defaults and for Validate on a Config that
	// was not built by Load.
	Source string
	// Key is the dotted TOML key, e.g. "protocol.max_handshakes". Empty for
	// errors that concern no single key (TOML syntax errors, unknown env
	// variables, where Source names the culprit).
	Key string
	// Value is the offending value as text, strings quoted.
	Value string
	// Reason says what is wrong or what is expected.
	Reason string
	// Err is one of the package's sentinel errors.
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config: ")
	if e.Source != "" {
		b.WriteString(e.Source)
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		if e.Value != "" {
			b.WriteString(" = ")
			b.WriteString(e.Value)
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Unwrap returns the sentinel error so errors.Is works.
func (e *Error) Unwrap() error { return e.Err }

// Config is the complete configuration of one node. The zero value is not
// useful; start from Default or Load.
type Config struct {
	// DataDir holds the node's persistent state (Badger databases, keys).
	// Relative paths are relative to the working directory, not to the
	// config file, like every other path given on a command line.
	DataDir string `toml:"data_dir"`
	// DC is the data-centre id this node serves and advertises; 1..1000.
	DC int `toml:"dc"`
	// ClientAddr is the MTProto TCP listen address. Port 0 picks a free
	// port, which tests rely on.
	ClientAddr string `toml:"client_addr"`
	// HTTPAddr serves health, metrics and WebSocket /apiws. Empty disables
	// the HTTP listener.
	HTTPAddr string `toml:"http_addr"`
	// PublicAddr is the IP:port advertised to clients in help.getConfig.
	// Clients need a literal IP, not a host name. Empty means "advertise the
	// address the client listener actually bound to", so that
	// ClientAddr "127.0.0.1:0" works without knowing the port in advance.
	PublicAddr string `toml:"public_addr"`
	// PublicAddrV6 is an [IPv6]:port clients may also use, listed in
	// help.getConfig with the ipv6 flag; empty lists none.
	PublicAddrV6 string `toml:"public_addr_v6"`
	// Log configures the node's logger.
	Log Log `toml:"log"`
	// Protocol bounds what clients may cost the node.
	Protocol Protocol `toml:"protocol"`
	// Auth configures sign-in: login codes and how they reach people.
	Auth Auth `toml:"auth"`
	// Cluster makes the node a member of a multi-node data center. Without
	// SecretsDir the node is standalone: the embedded one-node default.
	Cluster Cluster `toml:"cluster"`
	// Federation says where phone numbers are homed when DCs federate.
	Federation Federation `toml:"federation"`
	// Routing says how calls for another DC are handled.
	Routing Routing `toml:"routing"`
	// Proxy configures the MTProxy front door on the client port.
	Proxy Proxy `toml:"proxy"`
}

// Proxy configures the node's MTProxy front door: the client port also
// accepts connections made with a proxy secret (obfuscated2 keyed by it,
// or FakeTLS), so a client that can reach only this node reaches its DC.
// Every key here may change on a config reload (see Reloader): revoking a
// secret must not need a restart.
type Proxy struct {
	// Secrets lists the accepted proxy secrets, comma-separated, each in
	// hex as clients take it (see ParseProxySecrets and ProxySecrets).
	// Empty accepts none.
	Secrets string `toml:"secrets"`
	// Front is host:port of the real site an ee (FakeTLS) secret imitates.
	// A connection that is not a valid FakeTLS handshake (a censor's
	// probe) is relayed there, so the port looks like that site. Empty
	// disables fronting: ee secrets still work, but probes are closed.
	Front string `toml:"front"`
	// MaxConnectionsPerIP caps the connections one client IP may hold open
	// through the front door. Clients behind one NAT share an address, so
	// keep it generous.
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"`
	// FrontMaxConcurrent caps fronted connections open at once, all IPs
	// together; probes beyond it are closed.
	FrontMaxConcurrent int `toml:"front_max_concurrent"`
	// FrontRatePerIP caps the connections one IP may have fronted per
	// minute; further probes from it within the minute are closed. An
	// integer per minute, because settings carry no fractions.
	FrontRatePerIP int `toml:"front_rate_per_ip"`
	// RequireSecret rejects obfuscated2 without a proxy secret on the
	// client port. Official apps connecting directly use exactly that, so
	// only set it on a node that should be reachable as a proxy alone.
	RequireSecret bool `toml:"require_secret"`
}

// Federation configures how the DCs of a federation share users. Every
// node of every DC must have the same values: a number's home DC must be
// the same wherever it signs up, or it could sign up twice.
type Federation struct {
	// PhoneDCs maps phone number prefixes (digits, country code first) to
	// home DCs, comma-separated "prefix:dc" pairs; the longest matching
	// prefix wins. Test numbers 99966XYYYY are homed in DC X whatever
	// this says.
	PhoneDCs string `toml:"phone_dcs"`
	// DefaultDC homes a number no prefix matches.
	DefaultDC int `toml:"default_dc"`
	// UsernameDC keeps the federation's usernames: a username is claimed
	// there, so two DCs can never hand out the same one.
	UsernameDC int `toml:"username_dc"`
}

// Routing configures calls that belong to another DC.
type Routing struct {
	// Assist makes the node carry a call that belongs to another DC there
	// itself and answer as if local, instead of answering PHONE_MIGRATE_X
	// or USER_MIGRATE_X, for clients that can reach only this DC.
	Assist bool `toml:"assist"`
}

// Cluster configures membership of a data center of identical nodes.
type Cluster struct {
	// SecretsDir holds the cluster's secrets from `mtnode keygen`: ca.crt,
	// gossip.key, and either node.crt/node.key (issued offline for this
	// node) or ca.key (the node issues its own certificate). Empty means
	// standalone: no mesh, no gossip, no replication.
	SecretsDir string `toml:"secrets_dir"`
	// NodeID is this node's stable identity (letters, digits, '-', '_').
	// Empty means the one stored in the data directory, generated on first
	// start; it survives address changes.
	NodeID string `toml:"node_id"`
	// MeshAddr is the UDP host:port of the QUIC mesh: raft, node RPC, the
	// push bus and gossip all use it.
	MeshAddr string `toml:"mesh_addr"`
	// TCPLane lets relayed proxy clients' streams run over TCP (with the
	// mesh's mutual TLS) on mesh_addr's port number, instead of QUIC:
	// the kernel then does the per-packet work. Peers without it (the
	// port closed or taken) get QUIC streams.
	TCPLane bool `toml:"tcp_lane"`
	// Join lists mesh addresses (host:port, or id@host:port) of members to
	// join at start, comma-separated. Needed only the first time: a
	// restarted node finds its peers from its own state.
	Join string `toml:"join"`
	// RetryJoin is like Join but keeps retrying in the background until one
	// member answers, so all nodes can share one config listing them all.
	RetryJoin string `toml:"retry_join"`
	// JoinWAN lists mesh addresses of nodes of other DCs, comma-separated:
	// this DC joins their federation (the WAN pool) and, when it forms,
	// adopts the federation's shared secrets. Retried in the background;
	// a restarted node also rejoins the WAN members it last knew.
	JoinWAN string `toml:"join_wan"`
	// MediaOnly marks this node, in help.getConfig, as serving files only.
	MediaOnly bool `toml:"media_only"`
	// FaultInjection enables POST /debug/faults on the HTTP listener,
	// which drops or delays mesh traffic to chosen peers (tests and WAN
	// benchmarks only; see cluster.ParseFaultRules).
	FaultInjection bool `toml:"fault_injection"`
	// BootstrapExpect forms a new data center once this many nodes
	// (counting this one) see each other; 0 joins an existing one. Refused
	// by raft once the node has state, so restarts with it are safe.
	BootstrapExpect int `toml:"bootstrap_expect"`
	// ReplicationFactor is the number of raft voters per group.
	ReplicationFactor int `toml:"replication_factor"`
	// Shards is the number of shard groups of a new data center, fixed when
	// it is formed: every node must be started with the value the DC was
	// made with.
	Shards int `toml:"shards"`
	// HoldTimeout bounds how long a call waits for a leader (across
	// elections and leader changes) before the client gets an error.
	HoldTimeout Duration `toml:"hold_timeout"`
	// DeadGrace is how long a member may be down before its replicas are
	// moved to other nodes; shorter outages (restarts) move nothing.
	DeadGrace Duration `toml:"dead_grace"`
	// SnapshotEntries is how many log entries a replica keeps before it
	// snapshots its state and truncates the log (and how many it keeps
	// after, for followers that are a little behind). A replica further
	// behind, or a new one, is sent a snapshot.
	SnapshotEntries int `toml:"snapshot_entries"`
	// SnapshotInterval is how often a replica checks whether to snapshot.
	SnapshotInterval Duration `toml:"snapshot_interval"`
}

// Clustered reports whether the node runs as a member of a multi-node DC.
func (c *Config) Clustered() bool { return c.Cluster.SecretsDir != "" }

// SplitAddrs splits a comma-separated address list, dropping empties.
func SplitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// Log selects level and format of the node's slog logger.
type Log struct {
	// Level is one of debug, info, warn, error.
	Level string `toml:"level"`
	// Format is text (human readable) or json (for log collectors).
	Format string `toml:"format"`
}

// Protocol holds the MTProto transport limits. They exist so that a flood of
// clients degrades service instead of exhausting memory or CPU.
type Protocol struct {
	// MaxConnections caps concurrently open client connections.
	MaxConnections int `toml:"max_connections"`
	// MaxHandshakes caps concurrent key exchanges, which cost RSA and DH
	// work; clients beyond it get -429 and retry.
	MaxHandshakes int `toml:"max_handshakes"`
	// IdleTimeout closes a connection that delivers no complete frame for
	// this long, so half-open and slow-loris connections do not pile up.
	IdleTimeout Duration `toml:"idle_timeout"`
	// HandshakeTimeout bounds a whole key exchange, so a client cannot hold
	// a MaxHandshakes slot forever.
	HandshakeTimeout Duration `toml:"handshake_timeout"`
	// MaxFrameSize is the largest transport frame accepted; larger frames
	// close the connection before their body is buffered.
	MaxFrameSize int `toml:"max_frame_size"`
}

// Auth configures sign-in by phone number and login code.
type Auth struct {
	// TestNumbers lets phone numbers 99966XYYYY sign in with the code X
	// repeated, as Telegram's test servers do (gotd's auth.Test flow relies
	// on it). "on", "off", or "auto": on when ClientAddr is a loopback
	// address, so a development node works out of the box and a public one
	// does not hand out accounts to anyone who knows the rule.
	TestNumbers string `toml:"test_numbers"`
	// CodeSender delivers login codes: "log" writes them to the node's log
	// (development), "webhook" POSTs {"phone","code"} as JSON to WebhookURL
	// for the operator's SMS gateway.
	CodeSender string `toml:"code_sender"`
	// WebhookURL is where the webhook sender posts; http or https.
	WebhookURL string `toml:"webhook_url"`
	// CodeTTL is how long a login code works.
	CodeTTL Duration `toml:"code_ttl"`
	// CodeLength is the number of digits of a login code.
	CodeLength int `toml:"code_length"`
}

// TestNumbersEnabled resolves Auth.TestNumbers: "auto" is on only when the
// client listener is bound to a loopback address.
func (c *Config) TestNumbersEnabled() bool {
	switch c.Auth.TestNumbers {
	case "on":
		return true
	case "auto":
		host, _, err := net.SplitHostPort(c.ClientAddr)
		if err != nil {
			return false
		}
		if host == "localhost" {
			return true
		}
		ip, err := netip.ParseAddr(host)
		return err == nil && ip.IsLoopback()
	}
	return false
}

// Duration is a time.Duration written as a Go duration string ("30s") in
// TOML, environment variables and flags, because bare integers leave the
// unit to guesswork.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string such as "30s" or "1m30s".
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("%w: %q is not a duration like \"30s\"", ErrInvalidValue, text)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration in Go syntax, the same form UnmarshalText
// reads.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.Duration.String()), nil
}

// Set implements flag.Value so a Duration can be a flag of its own.
func (d *Duration) Set(s string) error { return d.UnmarshalText([]byte(s)) }

// Default returns the built-in configuration: a single node on loopback that
// works out of the box for development.
func Default() Config {
	return Config{
		DataDir:    "./mtnode-data",
		DC:         1,
		ClientAddr: "127.0.0.1:4430",
		HTTPAddr:   "127.0.0.1:8080",
		PublicAddr: "",
		Log: Log{
			Level:  "info",
			Format: "text",
		},
		Protocol: Protocol{
			MaxConnections:   100000,
			MaxHandshakes:    64,
			IdleTimeout:      Duration{120 * time.Second},
			HandshakeTimeout: Duration{30 * time.Second},
			MaxFrameSize:     1<<20 + 4096,
		},
		Auth: Auth{
			TestNumbers: "auto",
			CodeSender:  "log",
			WebhookURL:  "",
			CodeTTL:     Duration{5 * time.Minute},
			CodeLength:  5,
		},
		Cluster: Cluster{
			MeshAddr:          "127.0.0.1:7946",
			TCPLane:           true,
			ReplicationFactor: 3,
			Shards:            16,
			HoldTimeout:       Duration{10 * time.Second},
			DeadGrace:         Duration{2 * time.Minute},
			SnapshotEntries:   16384,
			SnapshotInterval:  Duration{2 * time.Minute},
		},
		Federation: Federation{DefaultDC: 1, UsernameDC: 1},
		Proxy: Proxy{
			MaxConnectionsPerIP: 64,
			FrontMaxConcurrent:  256,
			FrontRatePerIP:      60,
		},
	}
}

// Allowed ranges, named so DESIGN.md, tests and messages share them.
const (
	minDC, maxDC                   = 1, 1000
	minConnections, maxConnections = 1, 10_000_000
	minHandshakes, maxHandshakes   = 1, 100000
	minIdleTimeout, maxIdleTimeout = 100 * time.Millisecond, time.Hour
	minHandshakeTO, maxHandshakeTO = 100 * time.Millisecond, 10 * time.Minute
	minFrameSize, maxFrameSize     = 1024, 16 << 20
	maxPort                        = 65535
	minCodeTTL, maxCodeTTL         = 30 * time.Second, time.Hour
	minCodeLength, maxCodeLength   = 4, 8
	testNumbersNames               = "auto, on, off"
	codeSenderNames                = "log, webhook"
	minRF, maxRF                   = 1, 7
	minShards, maxShards           = 1, 1024
	maxBootstrapExpect             = 64
	minHold, maxHold               = 100 * time.Millisecond, 5 * time.Minute
	minGrace, maxGrace             = time.Second, 7 * 24 * time.Hour
	minSnapEntries, maxSnapEntries = 16, 10_000_000
	minSnapEvery, maxSnapEvery     = time.Second, 24 * time.Hour
	minPerIP, maxPerIP             = 1, 1_000_000
	minFrontConc, maxFrontConc     = 1, 1_000_000
	minFrontRate, maxFrontRate     = 1, 1_000_000
	levelNames                     = "debug, info, warn, error"
	formatNames                    = "text, json"
)

// Validate checks every setting and returns all problems joined, each an
// *Error naming key and value. Listen addresses may use port 0; PublicAddr,
// if set, must be a literal IP with a nonzero port.
func (c *Config) Validate() error {
	return c.validate(nil)
}

// validate is Validate with a map from key to the layer that set it, so
// messages can point at a file line, env variable or flag.
func (c *Config) validate(sources map[string]string) error {
	var errs []error
	for _, f := range fields() {
		reason := f.check(c)
		if reason == "" {
			continue
		}
		errs = append(errs, &Error{
			Source: sources[f.key],
			Key:    f.key,
			Value:  redact(f.key, formatValue(f.ptr(c))),
			Reason: reason,
			Err:    ErrInvalidValue,
		})
	}
	return errors.Join(errs...)
}

// Logger builds the node's root logger writing to w. Callers add their own
// "component" attribute. An invalid Level falls back to info and an invalid
// Format to text, so a Config that skipped Validate still logs.
func (c *Config) Logger(w io.Writer) *slog.Logger {
	level, ok := parseLevel(c.Log.Level)
	if !ok {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func parseLevel(s string) (slog.Level, bool) {
	switch s {
	case "debug":
		return slog.LevelDebug, true
	case "info":
		return slog.LevelInfo, true
	case "warn":
		return slog.LevelWarn, true
	case "error":
		return slog.LevelError, true
	}
	return 0, false
}

// field binds one dotted key to its place in Config and its rule. The table
// in fields is the single list of settings: env names, error messages and
// the completeness test are all derived from it.
type field struct {
	key   string
	ptr   func(*Config) any // *string, *int, *bool or *Duration
	check func(*Config) string
}

func fields() []field {
	return []field{
		{"data_dir", func(c *Config) any { return &c.DataDir }, func(c *Config) string {
			if c.DataDir == "" {
				return "must not be empty"
			}
			return ""
		}},
		{"dc", func(c *Config) any { return &c.DC }, func(c *Config) string {
			return checkIntRange(c.DC, minDC, maxDC)
		}},
		{"client_addr", func(c *Config) any { return &c.ClientAddr }, func(c *Config) string {
			return checkListenAddr(c.ClientAddr)
		}},
		{"http_addr", func(c *Config) any { return &c.HTTPAddr }, func(c *Config) string {
			if c.HTTPAddr == "" {
				return "" // HTTP disabled.
			}
			if r := checkListenAddr(c.HTTPAddr); r != "" {
				return r
			}
			if c.HTTPAddr == c.ClientAddr && !strings.HasSuffix(c.HTTPAddr, ":0") {
				return "must differ from client_addr; both cannot listen on one port"
			}
			return ""
		}},
		{"public_addr", func(c *Config) any { return &c.PublicAddr }, func(c *Config) string {
			return checkPublicAddr(c.PublicAddr)
		}},
		{"public_addr_v6", func(c *Config) any { return &c.PublicAddrV6 }, func(c *Config) string {
			if r := checkPublicAddr(c.PublicAddrV6); r != "" || c.PublicAddrV6 == "" {
				return r
			}
			if host, _, _ := splitPort(c.PublicAddrV6); !strings.Contains(host, ":") {
				return "must be an IPv6 address"
			}
			return ""
		}},
		{"log.level", func(c *Config) any { return &c.Log.Level }, func(c *Config) string {
			if _, ok := parseLevel(c.Log.Level); !ok {
				return "must be one of " + levelNames
			}
			return ""
		}},
		{"log.format", func(c *Config) any { return &c.Log.Format }, func(c *Config) string {
			if c.Log.Format != "text" && c.Log.Format != "json" {
				return "must be one of " + formatNames
			}
			return ""
		}},
		{"protocol.max_connections", func(c *Config) any { return &c.Protocol.MaxConnections }, func(c *Config) string {
			return checkIntRange(c.Protocol.MaxConnections, minConnections, maxConnections)
		}},
		{"protocol.max_handshakes", func(c *Config) any { return &c.Protocol.MaxHandshakes }, func(c *Config) string {
			return checkIntRange(c.Protocol.MaxHandshakes, minHandshakes, maxHandshakes)
		}},
		{"protocol.idle_timeout", func(c *Config) any { return &c.Protocol.IdleTimeout }, func(c *Config) string {
			return checkDurationRange(c.Protocol.IdleTimeout.Duration, minIdleTimeout, maxIdleTimeout)
		}},
		{"protocol.handshake_timeout", func(c *Config) any { return &c.Protocol.HandshakeTimeout }, func(c *Config) string {
			return checkDurationRange(c.Protocol.HandshakeTimeout.Duration, minHandshakeTO, maxHandshakeTO)
		}},
		{"protocol.max_frame_size", func(c *Config) any { return &c.Protocol.MaxFrameSize }, func(c *Config) string {
			return checkIntRange(c.Protocol.MaxFrameSize, minFrameSize, maxFrameSize)
		}},
		{"auth.test_numbers", func(c *Config) any { return &c.Auth.TestNumbers }, func(c *Config) string {
			switch c.Auth.TestNumbers {
			case "auto", "on", "off":
				return ""
			}
			return "must be one of " + testNumbersNames
		}},
		{"auth.code_sender", func(c *Config) any { return &c.Auth.CodeSender }, func(c *Config) string {
			if c.Auth.CodeSender != "log" && c.Auth.CodeSender != "webhook" {
				return "must be one of " + codeSenderNames
			}
			return ""
		}},
		{"auth.webhook_url", func(c *Config) any { return &c.Auth.WebhookURL }, func(c *Config) string {
			return checkWebhookURL(c.Auth.WebhookURL, c.Auth.CodeSender == "webhook")
		}},
		{"auth.code_ttl", func(c *Config) any { return &c.Auth.CodeTTL }, func(c *Config) string {
			return checkDurationRange(c.Auth.CodeTTL.Duration, minCodeTTL, maxCodeTTL)
		}},
		{"auth.code_length", func(c *Config) any { return &c.Auth.CodeLength }, func(c *Config) string {
			return checkIntRange(c.Auth.CodeLength, minCodeLength, maxCodeLength)
		}},
		{"cluster.secrets_dir", func(c *Config) any { return &c.Cluster.SecretsDir }, func(c *Config) string { return "" }},
		{"cluster.node_id", func(c *Config) any { return &c.Cluster.NodeID }, func(c *Config) string {
			return checkNodeID(c.Cluster.NodeID)
		}},
		{"cluster.mesh_addr", func(c *Config) any { return &c.Cluster.MeshAddr }, func(c *Config) string {
			return checkListenAddr(c.Cluster.MeshAddr)
		}},
		{"cluster.tcp_lane", func(c *Config) any { return &c.Cluster.TCPLane }, func(c *Config) string { return "" }},
		{"cluster.join", func(c *Config) any { return &c.Cluster.Join }, func(c *Config) string {
			return checkJoin(c, c.Cluster.Join)
		}},
		{"cluster.retry_join", func(c *Config) any { return &c.Cluster.RetryJoin }, func(c *Config) string {
			return checkJoin(c, c.Cluster.RetryJoin)
		}},
		{"cluster.join_wan", func(c *Config) any { return &c.Cluster.JoinWAN }, func(c *Config) string {
			if c.Cluster.JoinWAN != "" && !c.Clustered() {
				return "needs cluster.secrets_dir"
			}
			return ""
		}},
		{"cluster.media_only", func(c *Config) any { return &c.Cluster.MediaOnly }, func(c *Config) string {
			if c.Cluster.MediaOnly && !c.Clustered() {
				return "needs cluster.secrets_dir"
			}
			return ""
		}},
		{"cluster.fault_injection", func(c *Config) any { return &c.Cluster.FaultInjection }, func(c *Config) string {
			if c.Cluster.FaultInjection && !c.Clustered() {
				return "needs cluster.secrets_dir"
			}
			return ""
		}},
		{"cluster.bootstrap_expect", func(c *Config) any { return &c.Cluster.BootstrapExpect }, func(c *Config) string {
			if c.Cluster.BootstrapExpect != 0 && !c.Clustered() {
				return "needs cluster.secrets_dir"
			}
			return checkIntRange(c.Cluster.BootstrapExpect, 0, maxBootstrapExpect)
		}},
		{"cluster.replication_factor", func(c *Config) any { return &c.Cluster.ReplicationFactor }, func(c *Config) string {
			return checkIntRange(c.Cluster.ReplicationFactor, minRF, maxRF)
		}},
		{"cluster.shards", func(c *Config) any { return &c.Cluster.Shards }, func(c *Config) string {
			return checkIntRange(c.Cluster.Shards, minShards, maxShards)
		}},
		{"cluster.hold_timeout", func(c *Config) any { return &c.Cluster.HoldTimeout }, func(c *Config) string {
			return checkDurationRange(c.Cluster.HoldTimeout.Duration, minHold, maxHold)
		}},
		{"cluster.dead_grace", func(c *Config) any { return &c.Cluster.DeadGrace }, func(c *Config) string {
			return checkDurationRange(c.Cluster.DeadGrace.Duration, minGrace, maxGrace)
		}},
		{"cluster.snapshot_entries", func(c *Config) any { return &c.Cluster.SnapshotEntries }, func(c *Config) string {
			return checkIntRange(c.Cluster.SnapshotEntries, minSnapEntries, maxSnapEntries)
		}},
		{"cluster.snapshot_interval", func(c *Config) any { return &c.Cluster.SnapshotInterval }, func(c *Config) string {
			return checkDurationRange(c.Cluster.SnapshotInterval.Duration, minSnapEvery, maxSnapEvery)
		}},
		{"federation.phone_dcs", func(c *Config) any { return &c.Federation.PhoneDCs }, func(c *Config) string {
			if _, err := ParsePhoneDCs(c.Federation.PhoneDCs); err != nil {
				return err.Error()
			}
			return ""
		}},
		{"federation.default_dc", func(c *Config) any { return &c.Federation.DefaultDC }, func(c *Config) string {
			return checkIntRange(c.Federation.DefaultDC, minDC, maxDC)
		}},
		{"federation.username_dc", func(c *Config) any { return &c.Federation.UsernameDC }, func(c *Config) string {
			return checkIntRange(c.Federation.UsernameDC, minDC, maxDC)
		}},
		{"routing.assist", func(c *Config) any { return &c.Routing.Assist }, func(c *Config) string { return "" }},
		{"proxy.secrets", func(c *Config) any { return &c.Proxy.Secrets }, func(c *Config) string {
			if _, err := ParseProxySecrets(c.Proxy.Secrets); err != nil {
				return err.Error()
			}
			return ""
		}},
		{"proxy.front", func(c *Config) any { return &c.Proxy.Front }, func(c *Config) string {
			return checkFront(c)
		}},
		{"proxy.max_connections_per_ip", func(c *Config) any { return &c.Proxy.MaxConnectionsPerIP }, func(c *Config) string {
			return checkIntRange(c.Proxy.MaxConnectionsPerIP, minPerIP, maxPerIP)
		}},
		{"proxy.front_max_concurrent", func(c *Config) any { return &c.Proxy.FrontMaxConcurrent }, func(c *Config) string {
			return checkIntRange(c.Proxy.FrontMaxConcurrent, minFrontConc, maxFrontConc)
		}},
		{"proxy.front_rate_per_ip", func(c *Config) any { return &c.Proxy.FrontRatePerIP }, func(c *Config) string {
			return checkIntRange(c.Proxy.FrontRatePerIP, minFrontRate, maxFrontRate)
		}},
		{"proxy.require_secret", func(c *Config) any { return &c.Proxy.RequireSecret }, func(c *Config) string { return "" }},
	}
}

// checkNodeID allows what cluster.NodeID allows: 1..64 letters, digits,
// '-' and '_'.
func checkNodeID(id string) string {
	if id == "" {
		return ""
	}
	if len(id) > 64 {
		return "must be at most 64 characters"
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return "may hold only letters, digits, '-' and '_'"
		}
	}
	return ""
}

// checkJoin requires a clustered node and host:port (or id@host:port)
// entries.
func checkJoin(c *Config, list string) string {
	addrs := SplitAddrs(list)
	if len(addrs) == 0 {
		return ""
	}
	if !c.Clustered() {
		return "needs cluster.secrets_dir"
	}
	for _, a := range addrs {
		if id, hp, ok := strings.Cut(a, "@"); ok {
			if r := checkNodeID(id); r != "" || id == "" {
				return fmt.Sprintf("%q: node id %s", a, cmp.Or(r, "is empty"))
			}
			a = hp
		}
		if _, port, r := splitPort(a); r != "" || port == 0 {
			return fmt.Sprintf("%q: want host:port with a nonzero port", a)
		}
	}
	return ""
}

// checkWebhookURL requires an absolute http(s) URL when the webhook sender
// is chosen; an empty URL is fine otherwise.
func checkWebhookURL(s string, required bool) string {
	if s == "" {
		if required {
			return "must be set when auth.code_sender is webhook"
		}
		return ""
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "must be an http:// or https:// URL"
	}
	return ""
}

// lookupField finds a field by dotted key.
func lookupField(key string) (field, bool) {
	for _, f := range fields() {
		if f.key == key {
			return f, true
		}
	}
	return field{}, false
}

func checkIntRange(v, lo, hi int) string {
	if v < lo || v > hi {
		return fmt.Sprintf("must be between %d and %d", lo, hi)
	}
	return ""
}

func checkDurationRange(v, lo, hi time.Duration) string {
	if v < lo || v > hi {
		return fmt.Sprintf("must be between %s and %s", lo, hi)
	}
	return ""
}

// splitPort splits host:port and parses the port as a decimal number. Service
// names ("http") are refused: they depend on /etc/services and hide the port
// from the operator.
func splitPort(addr string) (host string, port int, reason string) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return "", 0, "must be host:port (" + ae.Err + ")"
		}
		return "", 0, "must be host:port"
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > maxPort {
		return "", 0, fmt.Sprintf("port must be a number between 0 and %d", maxPort)
	}
	return host, n, ""
}

// checkListenAddr accepts anything net.Listen("tcp", addr) would take with a
// numeric port, including port 0 (pick a free port) and an empty host (all
// interfaces).
func checkListenAddr(addr string) string {
	_, _, reason := splitPort(addr)
	return reason
}

// checkPublicAddr requires a literal, specified IP and a nonzero port,
// because clients dial exactly what help.getConfig tells them.
func checkPublicAddr(addr string) string {
	if addr == "" {
		return "" // Use the client listener's bound address.
	}
	host, port, reason := splitPort(addr)
	if reason != "" {
		return reason
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return "host must be an IP address; clients cannot resolve names here"
	}
	if ip.IsUnspecified() {
		return "must be a reachable IP, not an unspecified address"
	}
	if port == 0 {
		return fmt.Sprintf("port must be between 1 and %d; clients cannot dial port 0", maxPort)
	}
	return ""
}

// formatValue renders a field's value for messages: strings and durations
// quoted as they would be written in TOML, numbers bare.
func formatValue(p any) string {
	switch v := p.(type) {
	case *string:
		return strconv.Quote(*v)
	case *int:
		return strconv.Itoa(*v)
	case *Duration:
		return strconv.Quote(v.Duration.String())
	case *bool:
		return strconv.FormatBool(*v)
	}
	return fmt.Sprint(p)
}

// setFromText parses s into the field pointed to by p, for the env and flag
// layers which carry all values as text. It returns a reason on failure.
func setFromText(p any, s string) string {
	switch v := p.(type) {
	case *string:
		*v = s
	case *int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return "not an integer"
		}
		*v = n
	case *Duration:
		if err := v.Set(s); err != nil {
			return "not a duration like \"30s\""
		}
	case *bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return "not true or false"
		}
		*v = b
	default:
		return fmt.Sprintf("unsupported field type %T", p)
	}
	return ""
}

// MaxPhoneDCs bounds the prefix table of federation.phone_dcs.
const MaxPhoneDCs = 1024

// PhoneDC is one entry of federation.phone_dcs: numbers starting with
// Prefix are homed in DC.
type PhoneDC struct {
	Prefix string
	DC     int
}

// ParsePhoneDCs parses federation.phone_dcs ("1:1,44:2"): comma-separated
// "prefix:dc" pairs, prefixes of 1..15 digits, each at most once.
func ParsePhoneDCs(s string) ([]PhoneDC, error) {
	var out []PhoneDC
	seen := map[string]bool{}
	for _, p := range SplitAddrs(s) {
		prefix, dc, ok := strings.Cut(p, ":")
		n, err := strconv.Atoi(dc)
		if !ok || err != nil || n < minDC || n > maxDC {
			return nil, fmt.Errorf("%q is not prefix:dc with a dc in %d..%d", p, minDC, maxDC)
		}
		if len(prefix) == 0 || len(prefix) > 15 || strings.Trim(prefix, "0123456789") != "" {
			return nil, fmt.Errorf("prefix %q is not 1..15 digits", prefix)
		}
		if seen[prefix] {
			return nil, fmt.Errorf("prefix %q given twice", prefix)
		}
		if len(out) == MaxPhoneDCs {
			return nil, fmt.Errorf("more than %d prefixes", MaxPhoneDCs)
		}
		seen[prefix] = true
		out = append(out, PhoneDC{Prefix: prefix, DC: n})
	}
	return out, nil
}
